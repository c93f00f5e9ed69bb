"""The run folder: resolved config, checkpoint, bank, shot lists and metrics; every file written
atomically, and a run folder built aside and moved into place only when complete.

    <run>/config.json     resolved RunConfig
    <run>/model.pt        adapters, level weights, text prototypes, calibration, backbone identity,
                          and the SHA-256 of its bank.pt (checkpoint.load_bank refuses any other)
    <run>/bank.pt         few-shot memory bank (absent for zero-shot runs)
    <run>/shots.json      the support images actually used (repeat a run with --shot-file)
    <run>/train.json      loss per epoch, wall time
    <run>/metrics.json    written by `clipmpcad test`
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .atomic import FILESYSTEM_ENTRIES, staged_folder, staging_place
from .errors import CheckpointError, ConfigError, load_failure


def load_torch(path: str | Path, sha256: str | None = None) -> Any:
    """A file torch.save wrote, loaded as plain tensors; sha256: the digest its bytes must have
    (a file from elsewhere, or damaged, is refused before it is read)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; is {path.parent} a complete run folder from `clipmpcad train`?")
    if sha256 is not None and file_sha256(path) != sha256:
        raise CheckpointError(
            f"{path} is not the file this run saved (its content differs: copied from another run, or damaged)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged or foreign file
        raise CheckpointError(f"cannot read {path}: {load_failure(error)}") from error


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in blocks (a bank may be a gigabyte)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; is {path.parent} a run folder?") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from None


RUN_FILES = ("config.json", "model.pt")  # what every run folder holds (require_run_dir)


def check_output_folder(
    out: Path, overwrite: bool, *, what: str, markers: Sequence[str] = (), inputs: Iterable[str | Path] = ()
) -> None:
    """Refuse a non-empty `out` unless `overwrite` (before any work). With `markers`, --overwrite
    replaces the whole folder, so even then only an earlier `what` folder (it holds every marker
    file) that holds none of `inputs`: never a user's own folder, never the data being read."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{what} folder {out} exists and is not a folder; choose another --out")
    home = staging_place(out.absolute())[1]
    nearest = next(p for p in (home, *home.parents) if p.exists())  # the folder the stage gets made in
    if not nearest.is_dir():
        raise ConfigError(f"{what} folder {out} would lie under {nearest}, which is a file; choose another --out")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} folder {out}: no permission to write in {nearest}; choose another --out")
    if not out.is_dir() or all(p.name in FILESYSTEM_ENTRIES for p in out.iterdir()):  # empty, or a fresh volume
        return
    if not overwrite:
        raise ConfigError(f"{what} folder {out} exists and is not empty; choose another --out or pass --overwrite")
    missing = [name for name in markers if not (out / name).is_file()]
    if missing:
        raise ConfigError(
            f"{out} holds no {missing[0]}, so it is not an earlier {what} folder; --overwrite replaces the whole "
            "folder and is refused here: choose another --out"
        )
    here = out.resolve()
    inside = [p for p in map(Path, inputs) if p.resolve().is_relative_to(here)]
    if inside:
        raise ConfigError(f"input {inside[0]} lies in {out}, which --overwrite would replace; choose another --out")


def check_new_run_dir(path: Path, overwrite: bool, inputs: Iterable[str | Path] = ()) -> None:
    """A run folder may replace only an earlier run folder that holds none of its inputs."""
    check_output_folder(path, overwrite, what="run", markers=RUN_FILES, inputs=inputs)


@contextlib.contextmanager
def staged_run_dir(path: str | Path, overwrite: bool = False, inputs: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Yield a folder to fill; on success it becomes `path`, on error it vanishes: no partial run
    folder is ever left behind (atomic.staged_folder), and nothing is replaced unless asked."""
    path = Path(path)
    check_new_run_dir(path, overwrite, inputs)
    with staged_folder(path, last=RUN_FILES, replace=overwrite) as stage:
        yield stage


def require_run_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"run folder {path} not found")
    if not all((path / name).is_file() for name in RUN_FILES):
        raise CheckpointError(f"{path} is not a run folder (it needs config.json and model.pt from `clipmpcad train`)")
    return path
