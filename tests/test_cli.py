"""Every verb end to end through main(argv) on the tiny model, and every run option reaching the config."""

from __future__ import annotations

import argparse
import csv
import json
import shutil

import pytest
from PIL import Image

from clipmpcad.cli import build_parser, main
from clipmpcad.config import RunConfig
from clipmpcad.data.folder import LAYOUT_OPTIONS
from clipmpcad.options import FOLDER_HELP, RUN_OPTIONS, config_from_args
from clipmpcad.runtime import native_bf16

TINY = ["--model", "clipmpcad-tiny", "--weights", "random", "--image-size", "64", "--device", "cpu"]


def sample_value(flags, key: str, kwargs: dict):
    """A legal value that differs from the default, as a command-line token list and its config value."""
    if kwargs.get("action") in ("store_true", argparse.BooleanOptionalAction):
        return [], True
    if "choices" in kwargs:
        default = RunConfig()
        for part in key.split("."):
            default = getattr(default, part)
        choice = next(c for c in kwargs["choices"] if c != default)
        return [str(choice)], choice
    if kwargs.get("nargs") == "+":
        return ["1", "3"], [1, 3]
    if kwargs.get("type") is int:
        return ["3"], 3
    if kwargs.get("type") is float:
        return ["0.25"], 0.25
    return ["some/value"], "some/value"


def test_every_run_option_reaches_the_config() -> None:
    parser = build_parser()
    for flags, key, kwargs in RUN_OPTIONS:
        tokens, expected = sample_value(flags, key, kwargs)
        args = parser.parse_args(["train", "--out", "x", flags[0], *tokens])
        try:
            cfg = config_from_args(args)
        except Exception as error:  # a value legal for argparse but refused by the config
            pytest.fail(f"{flags[0]} {tokens}: {error}")
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        assert (list(value) if isinstance(value, tuple) else value) == expected, flags[0]


def test_every_option_of_every_verb_says_what_it_does() -> None:
    """--help is the reference users read: no option, run option or folder option without a line."""
    silent = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif action.option_strings and action.help in (None, "") and action.dest != "help":
                silent.append(f"{path} {action.option_strings[0]}")

    walk(build_parser(), "clipmpcad")
    assert not silent, f"options without help: {silent}"
    assert set(FOLDER_HELP) == set(LAYOUT_OPTIONS)


def test_config_file_then_flags_then_set(tmp_path) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"train": {"epochs": 7, "lr": 0.5}, "seed": 3}))
    args = build_parser().parse_args(
        [
            "train",
            "--out",
            "x",
            "--config",
            str(path),
            "--epochs",
            "9",
            "--set",
            "train.betas=[0.9,0.99]",
            "--normal-dir",
            "ok",
            "--mask-suffix",
            "_gt",
        ]
    )
    cfg = config_from_args(args)
    assert (cfg.train.epochs, cfg.train.lr, cfg.seed, cfg.train.betas) == (9, 0.5, 3, (0.9, 0.99))
    assert dict(cfg.data.options) == {"normal_dir": "ok", "mask_suffix": "_gt"}


def test_bad_input_is_one_line_and_status_2(tmp_path, capsys) -> None:
    code = main(
        [
            "train",
            "--dataset",
            "mvtec",
            "--root",
            str(tmp_path / "nowhere"),
            "--category",
            "x",
            "--out",
            str(tmp_path / "run"),
            *TINY,
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("clipmpcad: error:") and "nowhere" in err[0]
    assert not (tmp_path / "run").exists()
    assert main(["train", "--out", str(tmp_path / "r"), "--set", "train.nope=1"]) == 2
    assert "unknown configuration key" in capsys.readouterr().err


def train_argv(bench, run, *extra: str) -> list[str]:
    tile = next(s for s in bench.sets if s.dataset == "mvtec")
    where = ["--dataset", "mvtec", "--root", str(tile.root), "--category", tile.category]
    return ["train", *where, "--out", str(run), "--quiet", *TINY, *extra]


def test_train_test_predict_end_to_end(synthetic_benchmark, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main(train_argv(synthetic_benchmark, run, "--shot", "2", "--epochs", "2")) == 0
    out = capsys.readouterr().out
    assert "8 adapters of" in out
    assert ("--precision bf16" in out) == native_bf16()  # the faster choice, named where the CPU has it
    assert {p.name for p in run.iterdir()} >= {"config.json", "model.pt", "bank.pt", "shots.json", "train.json"}
    assert main(train_argv(synthetic_benchmark, run)) == 2  # no silent overwrite
    assert main(["test", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "RANDOM backbone" in out and "image AUROC" in out
    metrics = json.loads((run / "metrics.json").read_text())
    for key in (
        "dataset",
        "category",
        "shot",
        "seed",
        "protocol",
        "backbone",
        "image_auroc",
        "pixel_auroc",
        "n_test_images",
        "train_seconds",
        "test_seconds",
    ):
        assert key in metrics, key
    assert metrics["backbone"]["random"] is True and metrics["removed_from_test"] == 2
    assert (metrics["device"], metrics["precision"]) == ("cpu", "fp32")  # auto on a CPU: exact fp32
    assert (metrics["adapter"], metrics["prompts"]["mode"], metrics["levels"]) == ("madff", "base+p", [1, 2, 3, 4])
    assert (run / "report.html").stat().st_size > 10_000
    d = metrics["decisions"]
    assert d["anomalous"] + d["normal"] == metrics["n_test_images"] and d["image_threshold"] == pytest.approx(
        metrics["calibration"]["image_threshold"]
    )
    page = (run / "report.html").read_text()
    assert f"{d['missed_anomalies']} of {d['anomalous']} anomalous images missed" in page
    assert "no more than half of the grid from one label" in page and "Green outline: the ground truth" in page
    assert "on which the normal reference images span about 0 to 1" in page
    assert main(["test", str(run), "--quiet", "--no-report", "--precision", "bf16"]) == 0
    low = json.loads((run / "metrics.json").read_text())
    assert low["precision"] == "bf16" and abs(low["pixel_auroc"] - metrics["pixel_auroc"]) < 0.03
    capsys.readouterr()
    tile = next(s for s in synthetic_benchmark.sets if s.dataset == "mvtec")
    images = sorted((tile.root / tile.category / "test").rglob("*.png"))[:3]
    preds = tmp_path / "preds"
    assert main(["predict", str(run), *map(str, images), "--out", str(preds), "--quiet"]) == 0
    rows = list(csv.DictReader((preds / "predictions.csv").open()))
    assert [r["name"] for r in rows] == [p.stem for p in images] or len(rows) == 3
    assert all(r["anomalous"] in ("True", "False", "true", "false", "1", "0") for r in rows)
    assert len(list(preds.glob("*_overlay.png"))) == 3
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(images[0], folder / "scan.png")
    (folder / "notes.txt").write_text("seen on Monday")
    (folder / "patient7.png").symlink_to(folder / "scan.png")  # links keep their own names
    capsys.readouterr()
    assert main(["predict", str(run), str(folder), "--out", str(tmp_path / "preds2"), "--quiet"]) == 0
    err = capsys.readouterr().err.splitlines()  # the package's warnings are one line, like its errors
    assert err == [f"clipmpcad: warning: {folder}: left out 1 file(s) of no supported image format (notes.txt)"]
    rows = list(csv.DictReader((tmp_path / "preds2" / "predictions.csv").open()))
    assert [r["name"] for r in rows] == ["patient7", "scan"] and rows[0]["score"] == rows[1]["score"]


def test_mvfa_baseline_linear_adapter_and_base_prompts(synthetic_benchmark, tmp_path) -> None:
    run = tmp_path / "mvfa"
    assert (
        main(
            train_argv(synthetic_benchmark, run, "--adapter", "linear", "--prompts", "base", "--epochs", "1", "--test")
        )
        == 0
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["adapter"], metrics["prompts"]["mode"], metrics["prompts"]["set"]) == ("linear", "base", None)
    assert len(json.loads((run / "train.json").read_text())["prompt_sentences_sha256"]) == 64
    assert json.loads((run / "train.json").read_text())["adapter_parameters"]["per_adapter"] == 2 * 64 * 64


def test_k_larger_than_the_pool_leaves_no_run_folder(tmp_path, capsys) -> None:
    root = tmp_path / "mvtec"
    for folder, count in (("train/good", 3), ("test/good", 2), ("test/crack", 2)):
        (root / "part" / folder).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (32, 32), (i * 40, 90, 90)).save(root / "part" / folder / f"{i}.png")
    (root / "part" / "ground_truth" / "crack").mkdir(parents=True)
    for i in range(2):
        Image.new("L", (32, 32), 255).save(root / "part" / "ground_truth" / "crack" / f"{i}_mask.png")
    argv = ["train", "--dataset", "mvtec", "--root", str(root), "--category", "part", "--shot", "4"]
    assert main([*argv, "--out", str(tmp_path / "big"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "train/good" in err and "4" in err and "3" in err
    assert not (tmp_path / "big").exists()


def test_demo_runs_and_prints_the_table(tmp_path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path / "demo"), "--epochs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "RANDOM backbone" in out
    for name in ("SynthBrain", "SynthChest", "synth_tile", "image AUROC", "pixel AUROC"):
        assert name in out
    assert (tmp_path / "demo" / "demo.md").is_file()


def test_prompts_and_datasets_verbs(tmp_path, capsys) -> None:
    assert main(["prompts", "list"]) == 0
    assert "brain_mri" in capsys.readouterr().out
    assert main(["prompts", "show", "liver_ct"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "liver_ct"
    assert main(["prompts", "lint"]) == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "normal": ["x"], "abnormal": ["x"]}))
    assert main(["prompts", "lint", str(bad)]) == 1
    assert main(["prompts", "show", "no_such_set"]) == 2
    assert main(["datasets"]) == 0
    assert "bmad" in capsys.readouterr().out


def test_precision_hint_names_the_faster_choice(monkeypatch) -> None:
    from clipmpcad import runtime
    from clipmpcad.cli import bf16_hint

    monkeypatch.setattr(runtime, "native_bf16", lambda: True)
    assert "--precision bf16 runs about 1.4–1.5 × faster" in bf16_hint("cpu", "fp32")
    assert bf16_hint("cpu", "bf16") == bf16_hint("cuda:0", "fp32") == ""
    monkeypatch.setattr(runtime, "native_bf16", lambda: False)
    assert "slower here than fp32" in bf16_hint("cpu", "bf16")
    assert bf16_hint("cpu", "fp32") == bf16_hint("cuda", "bf16") == ""


def test_the_command_line_starts_without_torch() -> None:
    """--help, argument errors and the option table answer at once: torch and OpenCLIP (seconds to
    import) load only when a verb needs them, and the package's API names on first use."""
    import subprocess
    import sys

    code = (
        "import sys, clipmpcad, clipmpcad.cli as cli; cli.build_parser(); "
        "from clipmpcad.config import RunConfig; RunConfig(); "
        "print(sorted({'torch', 'open_clip'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    import clipmpcad

    assert clipmpcad.Predictor.from_run and clipmpcad.load_run.__name__ == "load_run"


def test_a_closed_output_pipe_ends_quietly() -> None:
    """`clipmpcad prompts list | head -1`: no traceback when the reader stops early."""
    import subprocess
    import sys

    code = (
        "import clipmpcad.cli as cli\n"
        "def closed(args):\n"
        "    raise BrokenPipeError\n"
        "cli.cmd_prompts_list = closed\n"
        "raise SystemExit(cli.main(['prompts', 'list']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (1, "")


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["train", "--shot", "3"], "clipmpcad train: error: argument --shot: invalid choice: 3 (choose from "),
        (["train"], "clipmpcad train: error: the following arguments are required: --out (see clipmpcad train --help)"),
        ([], "clipmpcad: error: the following arguments are required: VERB (see clipmpcad --help)"),
        (["prompts", "nope"], "clipmpcad prompts: error: argument ACTION: invalid choice: 'nope'"),
        (["prompts", "generate"], "clipmpcad prompts generate: error: the following arguments are required: --domain"),
        (["test", "run", "--bad"], "clipmpcad: error: unrecognized arguments: --bad (see clipmpcad --help)"),
    ],
)
def test_argument_errors_are_one_line_and_status_2(argv, line, capsys) -> None:
    """No usage block: one line, at every level of the verb tree, and status 2 as for other bad input."""
    with pytest.raises(SystemExit) as exit:
        main(argv)
    err = capsys.readouterr().err.splitlines()
    assert exit.value.code == 2 and len(err) == 1 and err[0].startswith(line), err


def test_datasets_says_when_a_root_holds_no_category(tmp_path, capsys) -> None:
    (tmp_path / "stray").mkdir()  # a folder without train/ and test/ is no category
    assert main(["datasets", "mvtec", str(tmp_path)]) == 0  # an empty answer, not an error
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout stays a list of categories for scripts
    assert captured.err == f"{tmp_path}: no mvtec categories; found: none (no folder with train/ and test/)\n"
    assert main(["datasets", "mvtec", str(tmp_path / "absent")]) == 2
    assert capsys.readouterr().err.startswith("clipmpcad: error: ")
    for split in ("train/good", "test/good"):
        (tmp_path / "stray" / "bottle" / split).mkdir(parents=True)  # the categories lie one level down
    assert main(["datasets", "mvtec", str(tmp_path)]) == 0
    assert capsys.readouterr().err.endswith(
        f"; {tmp_path / 'stray'} holds categories (bottle): use --root {tmp_path / 'stray'}\n"
    )


def test_prompts_lint_of_an_unreadable_file_is_bad_input(tmp_path, capsys) -> None:
    """1 means lint found problems; a file that cannot be read is bad input: one line, status 2."""
    for target, why in ((tmp_path / "absent.json", "No such file or directory"), (tmp_path, "Is a directory")):
        assert main(["prompts", "lint", str(target)]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == f"clipmpcad: error: {target}: cannot read the prompt file ({why})\n"
    bad = tmp_path / "bad.json"
    bad.write_text("{", encoding="utf-8")
    assert main(["prompts", "lint", str(bad)]) == 1  # unreadable as JSON is a lint problem
    assert "not valid JSON" in capsys.readouterr().out


def test_sigterm_ends_a_verb_like_ctrl_c_and_leaves_no_staged_folder(tmp_path, monkeypatch, capsys) -> None:
    import os
    import signal

    from clipmpcad import cli
    from clipmpcad.atomic import staged_folder

    def killed_midway(args) -> int:
        with staged_folder(tmp_path / "out") as stage:
            (stage / "half.png").write_text("x")
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler or `kill` sends it
        return 0

    monkeypatch.setattr(cli, "cmd_datasets", killed_midway)
    assert main(["datasets"]) == 143  # 128 + SIGTERM, as a shell reports a terminated process
    assert "terminated" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no .out.*.partial left behind
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back


def test_a_full_disk_is_one_line_and_other_os_errors_keep_their_traceback(monkeypatch, capsys) -> None:
    import errno

    from clipmpcad import cli

    def full(args) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/runs/x/model.pt")

    monkeypatch.setattr(cli, "cmd_datasets", full)
    assert main(["datasets"]) == 1
    assert capsys.readouterr().err.strip() == (
        "clipmpcad: error: No space left on device (/data/runs/x/model.pt); nothing half-written was left"
    )

    def denied(args) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", "/data/private/config.json")

    monkeypatch.setattr(cli, "cmd_datasets", denied)
    assert main(["datasets"]) == 2  # a read as much as a write: the input's problem, said plainly
    assert capsys.readouterr().err.strip() == "clipmpcad: error: Permission denied (/data/private/config.json)"

    def bug(args) -> int:
        raise FileNotFoundError(errno.ENOENT, "a path the code got wrong")

    monkeypatch.setattr(cli, "cmd_datasets", bug)
    with pytest.raises(FileNotFoundError):
        main(["datasets"])
