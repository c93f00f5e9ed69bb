"""Evaluation protocols: what `clean`, `paper`, `normal-only` and `zero-shot` change (METHOD §7–§9)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class Protocol:
    """The rules one protocol fixes; everything else is the run's configuration."""

    name: str
    description: str
    trains: bool = True  # adapters are trained on the support set
    abnormal_shots: bool = True  # k abnormal shots are used (else anomalies are synthesised)
    uses_bank: bool = True  # the few-shot memory bank is built and fused
    calibration: str = "reference"  # "reference": normal support images; "test": test-set min-max; "fixed": none needed
    epoch_rule: str = "last"  # "last" epoch, or "best" on the test set
    clip_normalise_medical: bool = True  # CLIP mean/std normalisation for medical images
    quick_gelu_for_openai: bool = True  # OpenAI weights run with the QuickGELU they were trained with

    @property
    def uses_shots(self) -> bool:
        """Support images of the target category are drawn (to train on, or to fill the bank)."""
        return self.trains or self.uses_bank

    @property
    def test_selected(self) -> bool:
        """Results depend on test labels or test statistics: must be flagged wherever printed."""
        return self.calibration == "test" or self.epoch_rule == "best"


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("clean", "deployable: last epoch, calibration on normal references, CLIP normalisation"),
        Protocol(
            "paper",
            "the published protocol: best epoch on the test set, test-set min-max, "
            "no CLIP normalisation for medical data, exact GELU (test-selected)",
            calibration="test",
            epoch_rule="best",
            clip_normalise_medical=False,
            quick_gelu_for_openai=False,
        ),
        Protocol(
            "normal-only",
            "k normal shots only; anomalies synthesised on them to train the adapters",
            abnormal_shots=False,
        ),
        Protocol(
            "zero-shot",
            "training-free text branch only (or adapters trained on other datasets)",
            trains=False,
            abnormal_shots=False,
            uses_bank=False,
            calibration="fixed",
        ),
    )
}


RANDOM_WEIGHTS_NOTE = "RANDOM backbone weights — these numbers say nothing about the method."
TEST_SELECTED_NOTE = (
    "test-selected protocol: the epoch and/or the score normalisation were chosen on the test set; "
    "these numbers are not a deployable result."
)


def get_protocol(name: str) -> Protocol:
    """Look a protocol up by name; the error lists the choices."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}") from None
