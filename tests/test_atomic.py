"""Folders written whole or not at all, wherever the target lives: a plain folder, a link to one,
or a mount point that cannot be renamed."""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

import pytest

from clipmpcad.atomic import remove_leftovers, staged_folder


def fill(stage, names) -> None:
    for name in names:
        (stage / name).write_text(name)
        time.sleep(0.01)  # distinct modification times: the order of writing


def test_a_folder_is_replaced_whole_and_an_error_keeps_the_old_one(tmp_path) -> None:
    target = tmp_path / "out"
    with staged_folder(target) as stage:
        fill(stage, ["a.png", "predictions.csv"])
    assert sorted(p.name for p in target.iterdir()) == ["a.png", "predictions.csv"]
    with pytest.raises(RuntimeError), staged_folder(target) as stage:
        fill(stage, ["b.png"])
        raise RuntimeError("scoring failed")
    assert sorted(p.name for p in target.iterdir()) == ["a.png", "predictions.csv"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no stage left beside it


def test_a_link_to_a_folder_stays_a_link_and_its_folder_gets_the_files(tmp_path) -> None:
    real = tmp_path / "big_disk" / "results"
    real.mkdir(parents=True)
    (real / "old.png").write_text("old")
    link = tmp_path / "results"
    link.symlink_to(real)
    with staged_folder(link) as stage:
        fill(stage, ["new.png"])
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert [p.name for p in real.iterdir()] == ["new.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big_disk", "results"]
    assert [p.name for p in (tmp_path / "big_disk").iterdir()] == ["results"]


def test_a_mount_point_is_filled_in_place_with_the_marker_last(tmp_path, monkeypatch) -> None:
    mount = tmp_path / "mnt"
    mount.mkdir()
    (mount / "stale.png").write_text("old")
    (mount / "stale_dir").mkdir()
    (mount / "lost+found").mkdir()  # a fresh volume's own folder
    monkeypatch.setattr(os.path, "ismount", lambda p: os.fspath(p) == os.fspath(mount))
    moved = []
    real_move = shutil.move
    monkeypatch.setattr(shutil, "move", lambda a, b: moved.append(os.path.basename(b)) or real_move(a, b))
    with staged_folder(mount, last=("predictions.csv",)) as stage:
        assert stage.parent == mount  # built inside: a mount point cannot be renamed away
        fill(stage, ["predictions.csv", "x.png", "y.png"])
        for name in ("predictions.csv", "x.png", "y.png"):
            os.utime(stage / name, ns=(10**18, 10**18))  # one timestamp for all, as on a coarse file system
    assert sorted(p.name for p in mount.iterdir()) == ["lost+found", "predictions.csv", "x.png", "y.png"]
    assert moved == ["x.png", "y.png", "predictions.csv"]  # the marker, which says "complete", comes last
    with pytest.raises(RuntimeError), staged_folder(mount) as stage:
        fill(stage, ["z.png"])
        raise RuntimeError("scoring failed")
    assert sorted(p.name for p in mount.iterdir()) == ["lost+found", "predictions.csv", "x.png", "y.png"]


def test_a_target_that_is_busy_to_rename_is_filled_in_place(tmp_path, monkeypatch) -> None:
    target = tmp_path / "bind"  # a bind mount of the same file system: os.path.ismount cannot tell
    target.mkdir()
    (target / "old.png").write_text("old")
    real_rename = Path.rename

    def rename(self, to):
        if self == target:
            raise OSError(errno.EBUSY, "Device or resource busy")
        return real_rename(self, to)

    monkeypatch.setattr(Path, "rename", rename)
    with staged_folder(target, last=("predictions.csv",)) as stage:
        fill(stage, ["a.png", "predictions.csv"])
    assert sorted(p.name for p in target.iterdir()) == ["a.png", "predictions.csv"]
    assert [p.name for p in tmp_path.iterdir()] == ["bind"]


def test_leftovers_are_found_where_their_stage_was_built(tmp_path) -> None:
    real = tmp_path / "disk" / "results"
    real.mkdir(parents=True)
    link = tmp_path / "results"
    link.symlink_to(real)
    leftover = real.parent / ".results.abc123.partial"  # a killed run's stage, beside the link's folder
    leftover.mkdir()
    remove_leftovers(link)
    assert not leftover.exists() and real.is_dir()


def test_without_replace_a_folder_filled_meanwhile_is_kept(tmp_path) -> None:
    from clipmpcad.errors import ConfigError

    target = tmp_path / "run"
    with (
        pytest.raises(ConfigError, match="written by another process meanwhile"),
        staged_folder(target, replace=False) as stage,
    ):
        fill(stage, ["mine.pt"])
        target.mkdir()
        (target / "theirs.pt").write_text("another run finished first")
    assert [p.name for p in target.iterdir()] == ["theirs.pt"]  # kept, not replaced
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # and no stage left
    with staged_folder(tmp_path / "fresh", replace=False) as stage:
        fill(stage, ["a.png"])
    assert [p.name for p in (tmp_path / "fresh").iterdir()] == ["a.png"]


def test_a_folder_moved_aside_when_the_process_died_is_restored_or_removed(tmp_path) -> None:
    target = tmp_path / "run"
    aside = tmp_path / ".run.old-1234abcd"
    aside.mkdir()
    (aside / "model.pt").write_text("the only copy")
    remove_leftovers(target)  # killed between the renames: the old folder is all there is
    assert (target / "model.pt").read_text() == "the only copy" and not aside.exists()
    aside.mkdir()
    remove_leftovers(target)  # the new folder is in place: the old one goes
    assert not aside.exists() and (target / "model.pt").is_file()


def test_without_replace_an_empty_busy_target_or_fresh_volume_is_filled_in_place(tmp_path, monkeypatch) -> None:
    volume = tmp_path / "volume"  # a fresh file system: only lost+found, so the rename finds it not empty
    (volume / "lost+found").mkdir(parents=True)
    with staged_folder(volume, last=("predictions.csv",), replace=False) as stage:
        fill(stage, ["a.png", "predictions.csv"])
    assert sorted(p.name for p in volume.iterdir()) == ["a.png", "lost+found", "predictions.csv"]
    bind = tmp_path / "bind"  # an empty bind mount: renaming onto it is refused as busy
    bind.mkdir()
    real_rename = Path.rename

    def rename(self, to):
        if Path(to) == bind:
            raise OSError(errno.EBUSY, "Device or resource busy")
        return real_rename(self, to)

    monkeypatch.setattr(Path, "rename", rename)
    with staged_folder(bind, replace=False) as stage:
        fill(stage, ["b.png"])
    assert [p.name for p in bind.iterdir()] == ["b.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bind", "volume"]
