"""The run folder's safety and portability: what --overwrite may replace, paths that work from
any folder, a shot file that fixes k, and results that say when a metric cannot exist."""

from __future__ import annotations

import json
import shutil

import pytest

from clipmpcad import experiment
from clipmpcad.cli import main
from clipmpcad.errors import ConfigError
from clipmpcad.runs import check_new_run_dir
from tinyrun import tiny_run_config


def tile(bench):
    return next(s for s in bench.sets if s.dataset == "mvtec")


def test_overwrite_replaces_only_an_earlier_run_that_holds_none_of_its_inputs(tmp_path) -> None:
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "a.png").write_bytes(b"mine")
    with pytest.raises(ConfigError, match=r"photos exists and is not empty.*--overwrite"):
        check_new_run_dir(mine, overwrite=False)
    with pytest.raises(ConfigError, match=r"photos holds no config\.json, so it is not an earlier run folder"):
        check_new_run_dir(mine, overwrite=True)
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "model.pt"):
        (run / name).write_text("{}")
    check_new_run_dir(run, overwrite=True)  # an earlier run: may go
    (run / "data").mkdir()
    with pytest.raises(ConfigError, match=r"input .*data lies in .*run, which --overwrite would replace"):
        check_new_run_dir(run, overwrite=True, inputs=[run / "data"])
    check_new_run_dir(tmp_path / "new", overwrite=False)  # nothing there: nothing to refuse
    assert (mine / "a.png").read_bytes() == b"mine"


def test_train_overwrite_never_deletes_the_dataset_it_reads(synthetic_benchmark, tmp_path) -> None:
    s = tile(synthetic_benchmark)
    copy = tmp_path / "data"
    shutil.copytree(s.root, copy)
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    argv = ["train", "--dataset", "mvtec", "--root", str(copy), "--category", s.category, "--quiet"]
    argv += ["--model", "clipmpcad-tiny", "--image-size", "64", "--epochs", "1", "--shot", "1"]
    assert main([*argv, "--out", str(copy), "--overwrite"]) == 2  # the user's folder, not a run
    assert main([*argv, "--out", str(tmp_path), "--overwrite"]) == 2  # a folder above the data
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before


def test_a_run_stores_absolute_paths_and_tests_from_another_folder(
    synthetic_benchmark, tmp_path, monkeypatch, capsys
) -> None:
    s = tile(synthetic_benchmark)
    shutil.copytree(s.root, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    cfg = tiny_run_config("mvtec", "data", s.category, train={"epochs": 1})
    run = experiment.train_run(cfg, "run", progress=False)
    stored = json.loads((run / "config.json").read_text())
    assert stored["data"]["root"] == str((tmp_path / "data").resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["test", str(tmp_path / "run"), "--quiet", "--no-report"]) == 0
    again = ["train", "--config", str(tmp_path / "run" / "config.json"), "--out", "again", "--quiet"]
    assert main([*again, "--set", "train.epochs=0"]) == 0
    capsys.readouterr()


def test_a_shot_file_fixes_k_and_an_explicit_shot_that_disagrees_is_refused(
    synthetic_benchmark, tmp_path, capsys
) -> None:
    s = tile(synthetic_benchmark)
    first = experiment.train_run(
        tiny_run_config("mvtec", s.root, s.category, data={"shot": 1}, train={"epochs": 0}), tmp_path / "one"
    )
    shot_file = str(first / "shots.json")
    cfg = tiny_run_config("mvtec", s.root, s.category, data={"shot": 4, "shot_file": shot_file}, train={"epochs": 0})
    again = experiment.train_run(cfg, tmp_path / "again", progress=False)
    assert json.loads((again / "config.json").read_text())["data"]["shot"] == 1  # as shots.json says
    argv = ["train", "--dataset", "mvtec", "--root", str(s.root), "--category", s.category, "--quiet"]
    argv += ["--model", "clipmpcad-tiny", "--out", str(tmp_path / "x"), "--shot-file", shot_file, "--shot", "2"]
    assert main(argv) == 2
    assert "--shot (data.shot) and the shot file" in capsys.readouterr().err
    argv[-2:] = ["--set", "data.shot=8"]  # the same through --set
    assert main(argv) == 2 and "both set k" in capsys.readouterr().err


@pytest.mark.parametrize(("normal", "anomalous", "says"), [(5, 0, "no anomalous image"), (0, 5, "no normal image")])
def test_the_summary_says_why_image_metrics_are_missing(normal, anomalous, says) -> None:
    record = {
        "dataset": "mvtec",
        "category": "tile",
        "shot": 2,
        "protocol": "clean",
        "backbone": {"model": "m", "weights": "w", "random": False},
        "adapter": "madff",
        "prompts": {"mode": "base+p"},
        "test_selected": False,
        "n_test_images": normal + anomalous,
        "n_normal": normal,
        "n_anomalous": anomalous,
        "removed_from_test": 4,
        "test_seconds": 1.0,
    }
    text = experiment.describe_record(record)
    assert says in text and "undefined" in text and "use fewer shots or more test images" in text
    assert "undefined" not in experiment.describe_record({**record, "n_normal": 3, "n_anomalous": 3})
    untouched = experiment.describe_record({**record, "removed_from_test": 0})  # no shot came from the test split
    assert "once the shots are removed" not in untouched and "fewer shots" not in untouched
    assert f"add {'normal' if normal == 0 else 'anomalous'} test images" in untouched
    for dataset, hint in (("mvtec", "no ground_truth/ folder"), ("folder", "give --mask-dir"), ("visa", "no masks\n")):
        assert (
            f"the category has no masks{'' if dataset == 'visa' else ' ('}"
            in (text := experiment.describe_record({**record, "dataset": dataset}))
            and hint in text
        )
    assert "coarse" not in experiment.describe_record({**record, "n_normal": 10, "n_anomalous": 10})
    few = experiment.describe_record({**record, "n_normal": 4, "n_anomalous": 2})
    assert "NOTE: 4 normal and 2 anomalous test images: image AUROC moves in steps of 12 points" in few
    at = experiment.describe_record({**record, "pixel_metrics_at": "original", "pixel_resolution": "mixed"})
    assert "(at each mask's own size)" in at


def test_train_test_on_a_corrupt_test_image_names_it_and_keeps_the_run(synthetic_benchmark, tmp_path, capsys) -> None:
    s = tile(synthetic_benchmark)
    copy = tmp_path / "data"
    shutil.copytree(s.root, copy)
    victim = sorted((copy / s.category / "test" / "good").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])  # the header survives
    argv = ["train", "--dataset", "mvtec", "--root", str(copy), "--category", s.category, "--quiet"]
    argv += ["--model", "clipmpcad-tiny", "--image-size", "64", "--epochs", "1", "--shot", "1"]
    assert main([*argv, "--out", str(tmp_path / "run"), "--test"]) == 2
    err = capsys.readouterr().err
    assert victim.name in err and "the trained run is saved in" in err
    assert (tmp_path / "run" / "model.pt").is_file() and not (tmp_path / "run" / "metrics.json").exists()


def test_absolute_paths_cover_shot_lists_but_not_the_root_relative_folders(tmp_path, monkeypatch) -> None:
    from clipmpcad.config import RunConfig

    (tmp_path / "lists").mkdir()
    (tmp_path / "good").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = (
        RunConfig()
        .with_overrides({"data.root": ".", "data.options": [["normal_dir", "good"], ["shot_lists", "lists"]]})
        .with_absolute_paths()
    )
    assert cfg.data.root == str(tmp_path.resolve())
    assert dict(cfg.data.options) == {"normal_dir": "good", "shot_lists": str((tmp_path / "lists").resolve())}


def test_a_package_prompt_set_stays_a_name_beside_a_folder_of_that_name(tmp_path, monkeypatch) -> None:
    from clipmpcad.config import RunConfig

    monkeypatch.chdir(tmp_path)
    (tmp_path / "chest_xray").mkdir()  # a medical user's data folder, named like the package set
    (tmp_path / "mine.json").write_text("{}")
    cfg = RunConfig().with_overrides({"prompts.prompt_set": "chest_xray"}).with_absolute_paths()
    assert cfg.prompts.prompt_set == "chest_xray"
    cfg = RunConfig().with_overrides({"prompts.prompt_set": "mine.json"}).with_absolute_paths()
    assert cfg.prompts.prompt_set == str(tmp_path.resolve() / "mine.json")  # a file is still made absolute


def test_named_weights_stay_names_beside_files_of_that_name(tmp_path, monkeypatch) -> None:
    from clipmpcad.config import RunConfig
    from clipmpcad.errors import CheckpointError
    from clipmpcad.weights import resolve_weights

    monkeypatch.chdir(tmp_path)
    for name in ("random", "openai", "auto"):
        (tmp_path / name).write_text("a file that happens to share the name")
        cfg = RunConfig().with_overrides({"backbone.model": "ViT-B-16", "backbone.weights": name})
        assert cfg.with_absolute_paths().backbone.weights == name
    (tmp_path / "ckpt.pt").write_bytes(b"")
    cfg = RunConfig().with_overrides({"backbone.weights": "ckpt.pt"}).with_absolute_paths()
    assert cfg.backbone.weights == str(tmp_path.resolve() / "ckpt.pt")  # a file is still made absolute
    (tmp_path / "weights_folder").mkdir()
    with pytest.raises(CheckpointError, match=r"--weights weights_folder is a folder; give the checkpoint file"):
        resolve_weights("ViT-B-16", "weights_folder")


def test_moved_weights_are_given_again_and_must_be_the_same_in_every_tensor(
    synthetic_benchmark, tmp_path, capsys
) -> None:
    import open_clip
    import torch

    from clipmpcad.backbone import legacy_fingerprint, register_model_configs
    from clipmpcad.checkpoint import load_run
    from clipmpcad.errors import CheckpointError

    register_model_configs()
    torch.manual_seed(5)
    clip = open_clip.create_model("clipmpcad-tiny", force_image_size=64)
    weights = tmp_path / "tiny.pt"
    torch.save(clip.state_dict(), weights)
    s = tile(synthetic_benchmark)
    cfg = tiny_run_config("mvtec", s.root, s.category, backbone={"weights": str(weights)}, train={"epochs": 0})
    run = experiment.train_run(cfg, tmp_path / "run", progress=False)
    moved = tmp_path / "moved.pt"
    weights.rename(moved)
    assert main(["test", str(run), "--quiet", "--no-report"]) == 2
    assert "tiny.pt does not exist" in capsys.readouterr().err
    assert main(["test", str(run), "--quiet", "--no-report", "--weights", str(moved)]) == 0
    assert main(["predict", str(run), str(s.root / s.category / "test"), "--recursive", "--weights", str(moved),
                 "--out", str(tmp_path / "preds"), "--quiet"]) == 0  # fmt: skip
    state = clip.state_dict()
    state["visual.transformer.resblocks.0.ln_1.weight"] = state["visual.transformer.resblocks.0.ln_1.weight"] + 0.01
    other = tmp_path / "other.pt"
    torch.save(state, other)  # one LayerNorm of the first block differs
    with pytest.raises(CheckpointError, match=r"differ from those .* was trained with"):
        load_run(run, weights=str(other))
    saved = torch.load(run / "model.pt", weights_only=True)  # a run saved before fingerprint v2
    torch.save({**saved, "fingerprint": legacy_fingerprint(clip.visual.eval())}, run / "model.pt")
    assert load_run(run, weights=str(moved)).config.backbone.weights == str(moved)
    capsys.readouterr()


def test_a_timm_vit_model_trains_tests_and_predicts(synthetic_benchmark, tmp_path, capsys) -> None:
    from test_backbone import timm_clip_folder

    timm_clip_folder(tmp_path / "biomed-like")
    s = tile(synthetic_benchmark)
    model = f"local-dir:{tmp_path / 'biomed-like'}"
    cfg = tiny_run_config("mvtec", s.root, s.category, backbone={"model": model, "weights": None, "image_size": 64})
    run = experiment.train_run(cfg.with_overrides({"train.epochs": 1}), tmp_path / "run", progress=False)
    assert main(["test", str(run), "--quiet", "--no-report"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["backbone"]["weights"] == "local-dir:biomed-like" and metrics["pixel_auroc"] is not None
    out = tmp_path / "preds"
    test_folder = str(s.root / s.category / "test")
    assert main(["predict", str(run), test_folder, "--recursive", "--out", str(out), "--quiet"]) == 0
    rows = (out / "predictions.csv").read_text().splitlines()[1:]
    assert len(rows) == metrics["n_test_images"] + metrics["removed_from_test"]  # the whole folder, shots too
    capsys.readouterr()


def test_a_run_loads_with_the_levels_it_was_trained_after(synthetic_benchmark, tmp_path, monkeypatch) -> None:
    from clipmpcad import backbone
    from clipmpcad.checkpoint import load_run

    s = tile(synthetic_benchmark)
    cfg = tiny_run_config("mvtec", s.root, s.category, backbone={"model": "clipmpcad-small", "image_size": 56})
    run = experiment.train_run(cfg.with_overrides({"train.epochs": 0}), tmp_path / "run", progress=False)
    assert load_run(run).info.levels == (2, 4, 6, 8)
    monkeypatch.setattr(backbone, "default_levels", lambda depth: (1, 3, 5, 8))  # a later rule for the default
    assert load_run(run).info.levels == (2, 4, 6, 8)  # the saved ones, not whatever the rule says now


def test_a_bank_searched_in_bf16_is_saved_as_built(synthetic_benchmark, tmp_path) -> None:
    import torch

    from clipmpcad.checkpoint import load_run

    s = tile(synthetic_benchmark)
    cfg = tiny_run_config("mvtec", s.root, s.category, bank={"precision": "bf16"}, train={"epochs": 0})
    run = experiment.train_model(cfg, tmp_path / "run", progress=False)
    assert all(t.dtype == torch.bfloat16 for t in run.detector.model.bank.tokens["seg"])  # searched in bf16
    saved = torch.load(tmp_path / "run" / "bank.pt", weights_only=True)
    assert all(t.dtype == torch.float32 for t in saved["tokens"]["seg"])  # kept as built: a later fp32 test is exact
    again = load_run(tmp_path / "run", precision="fp32").detector.model.bank
    assert all(t.dtype == torch.bfloat16 for t in again.tokens["seg"])  # the run's bank precision still applies
    built, searched = saved["tokens"]["seg"][0], run.detector.model.bank.tokens["seg"][0]
    assert torch.equal(built.to(torch.bfloat16), searched)  # the searched rows are the saved ones, rounded
    assert not torch.equal(built.to(torch.bfloat16).float(), built)  # and the saved ones are not rounded


def test_a_missing_or_foreign_bank_is_refused_not_silently_dropped(synthetic_benchmark, tmp_path) -> None:
    import torch

    from clipmpcad.checkpoint import load_run
    from clipmpcad.errors import CheckpointError

    s = tile(synthetic_benchmark)
    cfg = tiny_run_config("mvtec", s.root, s.category, train={"epochs": 0})
    runs = [experiment.train_run(cfg.with_overrides({"seed": s}), tmp_path / f"run{s}", progress=False) for s in (1, 2)]
    assert load_run(runs[0]).detector.model.bank is not None
    shutil.copy(runs[1] / "bank.pt", runs[0] / "bank.pt")  # another run's bank, same shapes
    with pytest.raises(CheckpointError, match=r"bank.pt is not the file this run saved"):
        load_run(runs[0])
    (runs[0] / "bank.pt").unlink()
    with pytest.raises(CheckpointError, match=r"bank.pt is missing: the run's few-shot memory bank"):
        load_run(runs[0])
    # a run saved before model.pt named its bank: a protocol with a bank still needs the file
    saved = torch.load(runs[1] / "model.pt", weights_only=True)
    del saved["bank_sha256"]
    torch.save(saved, runs[1] / "model.pt")
    assert load_run(runs[1]).detector.model.bank is not None
    (runs[1] / "bank.pt").unlink()
    with pytest.raises(CheckpointError, match=r"bank.pt is missing"):
        load_run(runs[1])


def test_a_bank_in_a_run_saved_without_one_is_refused(synthetic_benchmark, tmp_path) -> None:
    from clipmpcad.checkpoint import load_run
    from clipmpcad.errors import CheckpointError

    s = tile(synthetic_benchmark)
    cfg = tiny_run_config("mvtec", s.root, s.category, train={"epochs": 0})
    other = experiment.train_run(cfg, tmp_path / "b", progress=False)
    zero = experiment.train_run(cfg.with_overrides({"protocol": "zero-shot"}), tmp_path / "zs", progress=False)
    assert load_run(zero).detector.model.bank is None
    shutil.copy(other / "bank.pt", zero / "bank.pt")
    with pytest.raises(CheckpointError, match=r"this run was saved without a bank; the file comes from elsewhere"):
        load_run(zero)


def test_a_missing_damaged_or_cut_short_run_file_is_named_plainly(synthetic_benchmark, tmp_path) -> None:
    from clipmpcad.checkpoint import load_run
    from clipmpcad.errors import CheckpointError

    with pytest.raises(CheckpointError, match=rf"^run folder {tmp_path / 'nope'} not found$"):
        load_run(tmp_path / "nope")
    s = tile(synthetic_benchmark)
    run = experiment.train_run(tiny_run_config("mvtec", s.root, s.category, train={"epochs": 0}), tmp_path / "r")
    whole = (run / "model.pt").read_bytes()
    for damaged in (whole[: len(whole) // 2], b"hello world", b""):
        (run / "model.pt").write_bytes(damaged)
        with pytest.raises(CheckpointError, match=r"model.pt: not a complete file saved by torch: damaged, cut short"):
            load_run(run)
