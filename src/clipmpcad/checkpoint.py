"""What a trained run stores and how it is rebuilt: adapters, level weights, text prototypes,
memory bank and calibration (the backbone is rebuilt from the config and checked against a
fingerprint, never stored).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .atomic import save_torch, torch_bytes, write_bytes
from .backbone import BackboneInfo, load_backbone, same_weights
from .config import RunConfig, load_config, to_jsonable
from .detector import Detector
from .errors import CheckpointError
from .evaluation import Preprocess
from .memory_bank import MemoryBank
from .model import ClipMPCAD
from .protocols import Protocol, get_protocol
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
    bank = bank if bank is not None else model.bank
    bank_file = None if bank is None else torch_bytes(bank.to(torch.device("cpu")).state())
    save_torch(
        folder / "model.pt",
        {
            "format": CHECKPOINT_FORMAT,
            "state": state,
            "calibration": None if calibration is None else calibration.to_dict(),
            "meta": asdict(meta),
            "backbone": to_jsonable(asdict(model.backbone.info)),
            "fingerprint": model.backbone.fingerprint,
            # which bank.pt belongs to this model (None: it has none): a missing or foreign one is refused
            "bank_sha256": None if bank_file is None else hashlib.sha256(bank_file).hexdigest(),
        },
    )
    if bank_file is not None:
        write_bytes(folder / "bank.pt", bank_file)


def load_bank(run_dir: Path, saved: dict, protocol: Protocol) -> MemoryBank | None:
    """The run's bank.pt, checked to be the one saved with its model.pt; None for a run without one.
    Runs saved before model.pt named its bank: a protocol that uses a bank needs the file."""
    path = run_dir / "bank.pt"
    if "bank_sha256" in saved:
        digest = saved["bank_sha256"]
        if digest is None:
            if path.exists():
                raise CheckpointError(f"{path}: this run was saved without a bank; the file comes from elsewhere")
            return None
    else:
        digest = None
        if not protocol.uses_bank and not path.exists():
            return None
    if not path.exists():
        raise CheckpointError(
            f"{path} is missing: the run's few-shot memory bank (its thresholds were calibrated with it); "
            "copy the whole run folder"
        )
    return MemoryBank.from_state(load_torch(path, sha256=digest))


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
    model.bank = load_bank(run_dir, saved, protocol)
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
