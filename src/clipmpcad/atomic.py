"""Files and folders written whole or not at all: each is built beside its target under a
temporary name and renamed into place, so readers never see half a file and an error leaves
nothing behind. Permissions follow the umask, like any file the user writes."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent writers are caught when the stage is renamed
    fcntl = None  # type: ignore[assignment]

OLD_INFIX = ".old-"  # `.<target>.old-<id>`: the folder staged_folder moves aside while replacing it
STAGE_SUFFIX = ".partial"  # a folder being built: safe to delete when no process is writing it
LOCK_SUFFIX = ".lock"  # `.<target>.lock`: held by the process writing <target> (sole_writer)


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


def torch_bytes(obj: Any) -> bytes:
    """What torch.save writes for `obj` (load it back with weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save_torch(path: str | Path, obj: Any) -> Path:
    """torch.save into memory, then one atomic write (load it back with weights_only=True)."""
    return write_bytes(path, torch_bytes(obj))


@contextlib.contextmanager
def staged_folder(target: str | Path, last: Sequence[str] = (), replace: bool = True) -> Iterator[Path]:
    """Yield an empty folder beside `target` to fill; on success it takes `target`'s place (an old
    `target` is moved aside first and deleted last), on error it is removed. The caller decides
    beforehand whether replacing `target` is allowed; with replace=False, a `target` that another
    process filled meanwhile is not replaced: that is a ConfigError, and the stage is removed.

    A `target` that is a link to a folder is written where it points (the link stays). A mount
    point cannot be renamed, so there (or where renaming `target` fails as busy: a bind mount) the
    folder's old entries are removed and the new ones moved in, oldest first and the files named
    in `last` (the markers that say the folder is complete) after all others."""
    target, home = staging_place(target)
    home.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=STAGE_SUFFIX, dir=home))
    try:
        yield stage
        stage.chmod(0o777 & ~_umask())  # mkdtemp makes private folders
        if home == target:
            _replace_contents(target, stage, last)
            return
        if not replace:
            _take_place(stage, target, last)
            return
        old = target.with_name(f".{target.name}{OLD_INFIX}{uuid.uuid4().hex[:8]}")
        if target.exists():
            try:
                target.rename(old)
            except OSError as error:
                if error.errno != errno.EBUSY:
                    raise
                _replace_contents(target, stage, last)
                return
        stage.rename(target)
        if old.exists():
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def _take_place(stage: Path, target: Path, last: Sequence[str]) -> None:
    """Rename `stage` to `target`, which must be absent or empty (the rename itself checks,
    atomically). A target the rename cannot replace but that is still empty (a bind mount, a fresh
    volume holding lost+found) is filled in place; one another process filled meanwhile is kept."""
    try:
        stage.rename(target)
        return
    except OSError as error:
        if error.errno not in (errno.EBUSY, errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise
    if target.is_dir() and all(p.name in FILESYSTEM_ENTRIES for p in target.iterdir()):
        _replace_contents(target, stage, last)
        return
    raise ConfigError(f"{target} was written by another process meanwhile; it is kept as it is")


@contextlib.contextmanager
def sole_writer(target: str | Path) -> Iterator[None]:
    """Hold, for the block, the right to write `target`: an advisory lock on `.<name>.lock` where
    its stage is built, taken at once or refused (ConfigError) while another process holds it, so a
    second run into the same folder stops before its work, not after. Re-entrant within a process
    (train, then test into the same folder, under one hold). The lock goes with its process (a
    killed writer leaves none held), and the file with the block; folders made for it are removed
    again if still empty. No lock where `target` is a mount point (its stage lives inside it), the
    system has none (Windows) or its file system refuses one (NFS without a lock daemon)."""
    target, home = staging_place(target)
    path = home / f".{target.name}{LOCK_SUFFIX}"
    key = os.path.abspath(path)
    if fcntl is None or home == target or _HELD.get(key):
        _HELD[key] = _HELD.get(key, 0) + 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    made = [p for p in (home, *home.parents) if not p.exists()]
    handle = _lock(path, target)
    _HELD[key] = 1
    try:
        yield
    finally:
        _HELD[key] = 0
        if handle is not None:
            path.unlink(missing_ok=True)  # while held: a process that opened this file retries on a new one
            os.close(handle)
        for folder in made:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()


_HELD: dict[str, int] = {}  # lock files this process holds, with the depth of sole_writer blocks on each


def _lock(path: Path, target: Path) -> int | None:
    """An open descriptor of `path` holding its exclusive lock, the holder's pid written in it; None
    where no lock can be had here (the block then runs without one)."""
    for _ in range(8):  # another writer's cleanup may remove the folder between the mkdir and the open
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        except FileNotFoundError:
            continue
        except OSError:  # no folder or file can be made there: the caller's checks say why, in its words
            return None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(handle, 64).decode("ascii", "replace").strip() or "a process"
            os.close(handle)
            raise ConfigError(
                f"{target} is being written by another process ({holder}); wait for it to end or choose another --out"
            ) from None
        except OSError:  # no locks on this file system
            os.close(handle)
            with contextlib.suppress(OSError):
                if path.stat().st_size == 0:  # made just now for nothing: a holder would have written its pid
                    path.unlink()
            return None
        try:
            current = os.stat(path).st_ino == os.fstat(handle).st_ino
        except FileNotFoundError:
            current = False
        if current:  # else its holder removed the file after we opened it: lock the new one
            with contextlib.suppress(OSError):  # the pid is for the message of a refused writer only
                os.ftruncate(handle, 0)
                os.write(handle, f"pid {os.getpid()}".encode("ascii"))
            return handle
        os.close(handle)
    return None


def staging_place(target: str | Path) -> tuple[Path, Path]:
    """(the folder staged_folder writes, the folder its stage is built in): a link is followed,
    and a mount point holds its own stage."""
    target = Path(target)
    if target.is_symlink():
        target = target.resolve()
    return target, target if target.is_dir() and os.path.ismount(target) else target.parent


FILESYSTEM_ENTRIES = ("lost+found",)  # a fresh volume's own: never user data, never removed


def _replace_contents(target: Path, stage: Path, last: Sequence[str]) -> None:
    """Empty `target` but for `stage` (and FILESYSTEM_ENTRIES), then move the staged entries in:
    oldest first, those named in `last` at the end in that order."""
    for child in target.iterdir():
        if child != stage and child.name not in FILESYSTEM_ENTRIES:
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    rank = {name: i + 1 for i, name in enumerate(last)}  # 0: any other entry, moved before these
    for child in sorted(stage.iterdir(), key=lambda p: (rank.get(p.name, 0), p.stat().st_mtime_ns, p.name)):
        shutil.move(child, target / child.name)  # a rename, or a copy where the stage lies on another device


def remove_leftovers(target: str | Path) -> None:
    """What a killed process left of writing `target`: its staged folders where staged_folder
    builds them and the temporary files inside it (the names write_bytes and staged_folder give them).
    Refused (ConfigError) while another process writes `target`: its stage is no leftover."""
    target, home = staging_place(target)
    if not home.is_dir():
        return
    with sole_writer(target):
        _remove_leftovers(target, home)


def _remove_leftovers(target: Path, home: Path) -> None:
    for stage in home.glob(f".{target.name}.*{STAGE_SUFFIX}"):
        shutil.rmtree(stage, ignore_errors=True)
    for old in sorted(home.glob(f".{target.name}{OLD_INFIX}*")):  # a folder being replaced when killed
        if target.exists():
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        else:  # killed between the two renames: the old folder is the only one, so it goes back
            old.rename(target)
    if target.is_dir():
        for temp in target.glob(".*.tmp"):
            temp.unlink(missing_ok=True)
