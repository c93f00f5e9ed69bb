"""The run folder: resolved config, checkpoint, bank, shot lists and metrics; every file written
atomically, and a run folder built aside and moved into place only when complete.

    <run>/config.json     resolved RunConfig
    <run>/model.pt        adapters, level weights, text prototypes, calibration, backbone identity
    <run>/bank.pt         few-shot memory bank (absent for zero-shot runs)
    <run>/shots.json      the support images actually used (repeat a run with --shot-file)
    <run>/train.json      loss per epoch, wall time
    <run>/metrics.json    written by `clipmpcad test`
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .atomic import staged_folder
from .errors import CheckpointError, ConfigError


def load_torch(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; is {path.parent} a complete run folder from `clipmpcad train`?")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged or foreign file
        raise CheckpointError(f"cannot read {path}: {error}") from error


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; is {path.parent} a run folder?") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from None


def check_new_run_dir(path: Path, overwrite: bool) -> None:
    """Refuse to replace an existing, non-empty folder unless the user asked (before any work)."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"run folder {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ConfigError(f"run folder {path} already exists; choose another --out or pass --overwrite")


@contextlib.contextmanager
def staged_run_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a folder to fill; on success it becomes `path`, on error it vanishes: no partial run
    folder is ever left behind (atomic.staged_folder), and nothing is replaced unless asked."""
    path = Path(path)
    check_new_run_dir(path, overwrite)
    with staged_folder(path) as stage:
        yield stage


def require_run_dir(path: str | Path) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "model.pt").is_file():
        raise CheckpointError(f"{path} is not a run folder (it needs config.json and model.pt from `clipmpcad train`)")
    return path
