"""What a trained run stores and how it is rebuilt: adapters, level weights, text prototypes,
memory bank and calibration (the backbone is rebuilt from the config and checked against a
fingerprint, never stored).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .atomic import save_torch
from .backbone import BackboneInfo, load_backbone, same_weights
from .config import RunConfig, load_config, to_jsonable
from .detector import Detector
from .errors import CheckpointError
from .evaluation import Preprocess
from .memory_bank import MemoryBank
from .model import ClipMPCAD
from .protocols import get_protocol
from .runs import load_torch, read_json, require_run_dir
from .runtime import configure_cpu, resolve_device
from .scoring import Calibration

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class RunMeta:
    """What a run learned about its data, so that test and predict need no dataset scan."""

    dataset: str
    category: str
    domain: str
    classname: str
    prompt_set: str | None  # None: base mode, no set
    has_masks: bool
    normalize: bool


@dataclass
class TrainedRun:
    run_dir: Path
    config: RunConfig
    meta: RunMeta
    detector: Detector
    prep: Preprocess

    @property
    def info(self) -> BackboneInfo:
        return self.detector.model.backbone.info


def save_model(
    folder: Path, model: ClipMPCAD, calibration: Calibration | None, meta: RunMeta, bank: MemoryBank | None = None
) -> None:
    """model.pt (and bank.pt when the model has a bank) into a staged run folder; `bank`: the bank
    as built (fp32), saved in place of the model's own when that is stored in bf16 for the search."""
    state = {k: v.detach().cpu() for k, v in model.trained_state().items()}
    save_torch(
        folder / "model.pt",
        {
            "format": CHECKPOINT_FORMAT,
            "state": state,
            "calibration": None if calibration is None else calibration.to_dict(),
            "meta": asdict(meta),
            "backbone": to_jsonable(asdict(model.backbone.info)),
            "fingerprint": model.backbone.fingerprint,
        },
    )
    bank = bank if bank is not None else model.bank
    if bank is not None:
        save_torch(folder / "bank.pt", bank.to(torch.device("cpu")).state())


def load_run(
    run_dir: str | Path, device: str | None = None, precision: str | None = None, weights: str | None = None
) -> TrainedRun:
    """Rebuild a trained run's detector from its folder, on `device` at `precision` (default: the run's).

    weights: where the run's backbone weights are now (a checkpoint file that moved); they must be
    the weights it was trained with (the fingerprint is checked)."""
    run_dir = require_run_dir(run_dir)
    config = load_config(run_dir / "config.json")
    if precision is not None:
        config = replace(config, precision=precision)
    if weights is not None:
        config = config.with_overrides({"backbone.weights": weights}).with_absolute_paths()
    saved = load_torch(run_dir / "model.pt")
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{run_dir / 'model.pt'} is not a ClipMPCAD checkpoint of format {CHECKPOINT_FORMAT}")
    meta = RunMeta(**saved["meta"])
    trained_levels = saved.get("backbone", {}).get("levels")
    if config.backbone.levels is None and trained_levels:  # the blocks it was trained after, whatever
        config = config.with_overrides({"backbone.levels": list(trained_levels)})  # default_levels says now
    protocol = get_protocol(config.protocol)
    backbone = load_backbone(config.backbone, quick_gelu_for_openai=protocol.quick_gelu_for_openai, with_text=False)
    if not same_weights(backbone, saved["fingerprint"]):
        raise CheckpointError(
            f"the backbone weights ({backbone.info.describe()}) differ from those {run_dir} was trained with; "
            "point --weights at the same checkpoint"
        )
    state = saved["state"]
    adapter = config.adapter if any(k.startswith("seg_adapters.") for k in state) else None  # zero-shot: none
    model = ClipMPCAD(backbone, state["prototypes"], adapter, config.decoder)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("backbone.")]
    if missing or unexpected:
        raise CheckpointError(
            f"{run_dir / 'model.pt'} does not fit the configured model: "
            f"missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    if (run_dir / "bank.pt").is_file():
        model.bank = MemoryBank.from_state(load_torch(run_dir / "bank.pt"))
    model.bank_block_size = config.bank.block_size
    torch_device = resolve_device(device or config.device)
    configure_cpu()  # as training ran: a run scores alike in the process that trained it and in a fresh one
    backbone.store_products(torch_device, config.precision)
    if model.bank is not None:
        model.bank = model.bank.placed(torch_device, config.bank.precision, config.precision)
    calibration = None if saved["calibration"] is None else Calibration.from_dict(saved["calibration"])
    detector = Detector(
        model,
        calibration,
        has_masks=meta.has_masks,
        image_size=backbone.info.image_size,
        device=torch_device,
        score_sigma=config.eval.score_sigma,  # as the calibration was fitted
        precision=config.precision,
    )
    prep = Preprocess(backbone.info.image_size, meta.normalize, backbone.mean, backbone.std)
    return TrainedRun(run_dir, config, meta, detector, prep)


def read_train_record(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "train.json"
    return read_json(path) if path.is_file() else {}
