"""Folders written whole or not at all, wherever the target lives: a plain folder, a link to one,
or a mount point that cannot be renamed."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clipmpcad.atomic import remove_leftovers, sole_writer, staged_folder
from clipmpcad.errors import ConfigError


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


HOLD = (
    "import sys, time; from clipmpcad.atomic import sole_writer\n"
    "with sole_writer(sys.argv[1]):\n print('held', flush=True); time.sleep(60)"
)


def holder(target: Path) -> subprocess.Popen:
    """Another process that holds the right to write `target` until it is killed."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_writer_of_one_folder_is_refused_until_the_first_is_gone(tmp_path) -> None:
    target = tmp_path / "run"
    child = holder(target)
    try:
        refused = rf"{target} is being written by another process \(pid {child.pid}\)"
        with pytest.raises(ConfigError, match=refused), sole_writer(target):
            pass
        with sole_writer(tmp_path / "other"):  # another folder beside it: free
            pass
    finally:
        child.send_signal(signal.SIGKILL)  # a killed writer leaves no lock held
        child.wait()
    with sole_writer(target):
        assert (tmp_path / ".run.lock").read_text() == f"pid {os.getpid()}"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the lock file goes with the block


def test_folders_made_for_the_lock_are_removed_again_when_nothing_was_written(tmp_path) -> None:
    with sole_writer(tmp_path / "a" / "b" / "run"):
        assert (tmp_path / "a" / "b" / ".run.lock").is_file()
    assert list(tmp_path.iterdir()) == []
    with sole_writer(tmp_path / "a" / "b" / "run"), staged_folder(tmp_path / "a" / "b" / "run") as stage:
        (stage / "x").write_text("x")
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["run"]


def test_a_run_into_a_folder_being_written_stops_before_any_work(synthetic_benchmark, tmp_path, monkeypatch) -> None:
    from clipmpcad import experiment
    from tinyrun import tiny_run_config

    s = next(s for s in synthetic_benchmark.sets if s.dataset == "mvtec")
    monkeypatch.setattr(experiment, "load_backbone", lambda *a, **k: pytest.fail("trained into a locked folder"))
    child = holder(tmp_path / "run")
    try:
        with pytest.raises(ConfigError, match="is being written by another process"):
            experiment.train_model(tiny_run_config("mvtec", s.root, s.category), tmp_path / "run", progress=False)
    finally:
        child.kill()
        child.wait()


def test_the_hold_is_reentrant_and_covers_a_test_into_the_run(synthetic_benchmark, tmp_path) -> None:
    from clipmpcad import experiment
    from tinyrun import tiny_run_config

    target = tmp_path / "run"
    with sole_writer(target), sole_writer(target):  # train, then test into it, under one hold
        assert (tmp_path / ".run.lock").is_file()
    assert not (tmp_path / ".run.lock").exists()
    s = next(s for s in synthetic_benchmark.sets if s.dataset == "mvtec")
    experiment.train_run(tiny_run_config("mvtec", s.root, s.category, train={"epochs": 0}), target, progress=False)
    child = holder(target)  # another process writes the run: a test would write metrics.json into it
    try:
        with pytest.raises(ConfigError, match="is being written by another process"):
            experiment.test_run(target, progress=False, report=False)
    finally:
        child.kill()
        child.wait()
    assert not (target / "metrics.json").exists()


def test_a_file_system_without_locks_runs_unlocked_and_leaves_nothing(tmp_path, monkeypatch) -> None:
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    opened, closed, real_open, real_close = [], [], os.open, os.close

    def tracked_open(path, *args, **kwargs):
        fd = real_open(path, *args, **kwargs)
        if str(path).endswith(".lock"):  # the lock file's descriptors, not other threads' files
            opened.append(fd)
        return fd

    monkeypatch.setattr(os, "open", tracked_open)
    monkeypatch.setattr(os, "close", lambda fd: closed.append(fd) or real_close(fd))
    with sole_writer(tmp_path / "run"):
        pass
    assert opened and set(opened) <= set(closed) and list(tmp_path.iterdir()) == []


def test_the_stage_of_a_live_writer_is_no_leftover(tmp_path) -> None:
    target = tmp_path / "run"
    stage = tmp_path / ".run.abc123.partial"
    stage.mkdir()
    child = holder(target)
    try:
        with pytest.raises(ConfigError, match="is being written by another process"):
            remove_leftovers(target)
        assert stage.is_dir()
    finally:
        child.kill()
        child.wait()
    remove_leftovers(target)  # its writer gone: a leftover
    assert not stage.exists()
