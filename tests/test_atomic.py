"""Folders written whole or not at all, wherever the target lives: a plain folder, a link to one,
or a mount point that cannot be renamed."""

from __future__ import annotations

import os
import time

import pytest

from clipmpcad.atomic import staged_folder


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


def test_a_mount_point_is_filled_in_place_last_written_last(tmp_path, monkeypatch) -> None:
    mount = tmp_path / "mnt"
    mount.mkdir()
    (mount / "stale.png").write_text("old")
    (mount / "stale_dir").mkdir()
    monkeypatch.setattr(os.path, "ismount", lambda p: os.fspath(p) == os.fspath(mount))
    renamed = []
    real_rename = os.rename
    monkeypatch.setattr(os, "rename", lambda a, b: renamed.append(os.path.basename(b)) or real_rename(a, b))
    with staged_folder(mount) as stage:
        assert stage.parent == mount  # built inside: a mount point cannot be renamed away
        fill(stage, ["x.png", "y.png", "predictions.csv"])
    assert sorted(p.name for p in mount.iterdir()) == ["predictions.csv", "x.png", "y.png"]
    assert renamed == ["x.png", "y.png", "predictions.csv"]  # the CSV, written last, appears last
    with pytest.raises(RuntimeError), staged_folder(mount) as stage:
        fill(stage, ["z.png"])
        raise RuntimeError("scoring failed")
    assert sorted(p.name for p in mount.iterdir()) == ["predictions.csv", "x.png", "y.png"]
