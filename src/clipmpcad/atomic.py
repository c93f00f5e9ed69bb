"""Files and folders written whole or not at all: each is built beside its target under a
temporary name and renamed into place, so readers never see half a file and an error leaves
nothing behind. Permissions follow the umask, like any file the user writes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

STAGE_SUFFIX = ".partial"  # a folder being built: safe to delete when no process is writing it


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes private files
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def save_torch(path: str | Path, obj: Any) -> Path:
    """torch.save into memory, then one atomic write (load it back with weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getvalue())


@contextlib.contextmanager
def staged_folder(target: str | Path) -> Iterator[Path]:
    """Yield an empty folder beside `target` to fill; on success it takes `target`'s place (an old
    `target` is moved aside first and deleted last), on error it is removed. The caller decides
    beforehand whether replacing `target` is allowed.

    A `target` that is a link to a folder is written where it points (the link stays). A mount
    point cannot be renamed, so there the folder is built inside `target` and its files are moved
    up one by one, in the order they were written, once all are done."""
    target, home = staging_place(target)
    inside = home == target
    home.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=STAGE_SUFFIX, dir=home))
    try:
        yield stage
        stage.chmod(0o777 & ~_umask())  # mkdtemp makes private folders
        if inside:
            _replace_contents(target, stage)
            return
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        if target.exists():
            target.rename(old)
        stage.rename(target)
        if old.exists():
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def staging_place(target: str | Path) -> tuple[Path, Path]:
    """(the folder staged_folder writes, the folder its stage is built in): a link is followed,
    and a mount point holds its own stage."""
    target = Path(target)
    if target.is_symlink():
        target = target.resolve()
    return target, target if target.is_dir() and os.path.ismount(target) else target.parent


def _replace_contents(target: Path, stage: Path) -> None:
    """Empty `target` but for `stage`, then move the staged entries into it, oldest first."""
    for child in target.iterdir():
        if child != stage:
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    for child in sorted(stage.iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name)):
        child.rename(target / child.name)


def remove_leftovers(target: str | Path) -> None:
    """What a killed process left of writing `target`: its staged folders beside it and the
    temporary files inside it (the names write_bytes and staged_folder give them)."""
    target = Path(target)
    if target.parent.is_dir():
        for stage in target.parent.glob(f".{target.name}.*{STAGE_SUFFIX}"):
            shutil.rmtree(stage, ignore_errors=True)
    if target.is_dir():
        for temp in target.glob(".*.tmp"):
            temp.unlink(missing_ok=True)
