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
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, ConfigError

CHECKPOINT_FORMAT = 1


def _temp_sibling(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write to a temporary file beside `path`, then rename over it: readers never see half a file."""
    path = Path(path)
    fd, tmp = _temp_sibling(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def save_torch(path: str | Path, obj: Any) -> Path:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getvalue())


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
    """Yield a temporary folder beside `path`; on success it replaces `path`, on error it vanishes.

    No partial run folder is ever left behind.
    """
    path = Path(path)
    check_new_run_dir(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield stage
        if path.exists():
            shutil.rmtree(path)
        os.replace(stage, path)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def require_run_dir(path: str | Path) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "model.pt").is_file():
        raise CheckpointError(f"{path} is not a run folder (it needs config.json and model.pt from `clipmpcad train`)")
    return path
