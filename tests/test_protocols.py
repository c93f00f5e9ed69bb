"""The protocols end to end on generated data: clean, paper (flagged), normal-only, zero-shot
(training-free and trained on other categories), several seeds; and their guards."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from clipmpcad import experiment
from clipmpcad.errors import ClipMPCADError
from clipmpcad.synthesis import synthesise_anomalies
from tinyrun import tiny_run_config


def brain(bench):
    return next(s for s in bench.sets if s.category == "SynthBrain")


def read(path):
    return json.loads(path.read_text())


def test_paper_protocol_selects_on_the_test_set_and_says_so(synthetic_benchmark, tmp_path) -> None:
    s = brain(synthetic_benchmark)
    run = experiment.train_run(
        tiny_run_config(s.dataset, s.root, s.category, protocol="paper", train={"epochs": 3}),
        tmp_path / "paper",
        progress=False,
    )
    assert read(run / "train.json")["best_epoch"] in (0, 1, 2)
    record = experiment.test_run(run, progress=False)  # its report scores the worst cases again: no kept maps
    assert record["protocol"] == "paper" and record["test_selected"] is True
    assert (run / "report.html").stat().st_size > 10_000
    assert record["calibration"]["source"] == "test"
    assert "test-selected" in experiment.describe_record(record)
    assert read(run / "config.json")["backbone"]["quick_gelu"] is None  # OpenAI-only rule; random weights: GELU


def test_normal_only_trains_on_synthesised_anomalies(synthetic_benchmark, tmp_path) -> None:
    s = brain(synthetic_benchmark)
    run = experiment.train_run(
        tiny_run_config(s.dataset, s.root, s.category, protocol="normal-only", train={"epochs": 3}),
        tmp_path / "normal-only",
        progress=False,
    )
    shots = read(run / "shots.json")
    assert shots["abnormal"] == [] and len(shots["normal"]) == 2
    assert read(run / "train.json")["support_views"] == 2 * 2 * 11  # normals and their synthetic twins
    record = experiment.test_run(run, progress=False, report=False)
    assert record["image_auroc"] is not None and record["test_selected"] is False


def test_synthesised_anomalies_change_only_their_mask() -> None:
    images = torch.rand(3, 3, 32, 32)
    fake, masks = synthesise_anomalies(images, seed=5)
    assert masks.shape == (3, 1, 32, 32)
    for i in range(3):
        m = masks[i, 0].bool()
        assert 0 < m.float().mean() <= 0.25
        assert torch.equal(fake[i][:, ~m], images[i][:, ~m])
        assert (fake[i][:, m] - images[i][:, m]).abs().mean() > 0.05
    again, _ = synthesise_anomalies(images, seed=5)
    assert torch.equal(again, fake)
    brighter, _ = synthesise_anomalies(torch.cat([images[:1], 10 * images[1:]]), seed=5)
    assert torch.equal(brighter[0], fake[0]), "a shot's anomaly does not depend on the other shots' values"


def test_training_free_zero_shot(synthetic_benchmark, tmp_path) -> None:
    s = brain(synthetic_benchmark)
    cfg = tiny_run_config(s.dataset, s.root, s.category, protocol="zero-shot")  # shot 2, epochs 2: not used
    with pytest.warns(UserWarning, match=r"zero-shot protocol does not use data.shot, train.epochs: set, but left"):
        run = experiment.train_run(cfg, tmp_path / "zs", progress=False)
    assert not (run / "bank.pt").exists()
    state = torch.load(run / "model.pt", weights_only=True)
    assert not any(k.startswith(("seg_adapters", "det_adapters")) for k in state["state"])
    record = experiment.test_run(run, progress=False, report=False)
    assert record["adapter"] is None and record["calibration"]["source"] == "fixed"
    assert record["removed_from_test"] == 0 and record["n_test_images"] == 44


def test_zero_shot_trained_on_other_categories(synthetic_benchmark, tmp_path) -> None:
    s = brain(synthetic_benchmark)
    cfg = tiny_run_config(s.dataset, s.root, s.category, protocol="zero-shot", train={"epochs": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # shots and epochs train the adapters elsewhere: used, no warning
        run = experiment.train_run(cfg, tmp_path / "loo", progress=False, train_on=["SynthChest"])
    with pytest.warns(UserWarning, match=r"zero-shot protocol does not use bank.coreset: set, but left unused$"):
        experiment.train_run(
            cfg.with_overrides({"bank.coreset": 0.5}), tmp_path / "loo2", progress=False, train_on=["SynthChest"]
        )
    train = read(run / "train.json")
    assert train["train_on"] == ["SynthChest"] and train["support_views"] == 2 * 2 * 11 and train["steps"] > 0
    (given,) = train["train_on_shots"]  # the source's shots are recorded as a run's own are
    assert given["category"] == "SynthChest" and len(given["normal"]) == len(given["abnormal"]) == 2
    assert not (run / "bank.pt").exists()
    assert experiment.test_run(run, progress=False, report=False)["adapter"] == "madff"
    with pytest.raises(ClipMPCADError, match="test category itself"):
        experiment.train_run(cfg, tmp_path / "leak", progress=False, train_on=["SynthBrain"])
    for spelling in (f"{s.root}/", f"{s.root}/../{s.root.name}"):  # the same root, spelled otherwise
        with pytest.raises(ClipMPCADError, match="test category itself"):
            experiment.train_run(cfg, tmp_path / "leak", progress=False, train_on=[f"bmad:{spelling}:SynthBrain"])
    with pytest.raises(ClipMPCADError, match="--protocol zero-shot"):
        experiment.train_run(
            tiny_run_config(s.dataset, s.root, s.category), tmp_path / "x", progress=False, train_on=["SynthChest"]
        )
    assert not (tmp_path / "leak").exists() and not (tmp_path / "x").exists()


def test_several_seeds_report_mean_and_std(synthetic_benchmark, tmp_path) -> None:
    s = brain(synthetic_benchmark)
    cfg = tiny_run_config(s.dataset, s.root, s.category, data={"shot": 1, "shot_source": "sample"}, train={"epochs": 1})
    text = experiment.train_seeds(cfg, [1, 2], tmp_path / "seeds", progress=False)
    assert "±" in text and "RANDOM" in text
    shots = [read(tmp_path / "seeds" / f"seed-{n}" / "shots.json") for n in (1, 2)]
    assert shots[0]["seed"] == 1 and shots[1]["seed"] == 2 and shots[0]["normal"] != shots[1]["normal"]
    summary = read(tmp_path / "seeds" / "seeds.json")  # the table as JSON, with what to read it by
    assert (summary["protocol"], summary["test_selected"], summary["random_weights"]) == ("clean", False, True)
    assert summary["seeds"] == [1, 2] and summary["rows"][0]["metrics"]["image_auroc"]["n"] == 2
    assert "NOTE: RANDOM" in (tmp_path / "seeds" / "seeds.md").read_text()
    with pytest.raises(ClipMPCADError, match="--seeds names 3 more than once"):
        experiment.train_seeds(cfg, [3, 3], tmp_path / "twice", progress=False)
    assert not (tmp_path / "twice").exists()


def test_list_files_fix_the_shots_and_seeds_the_training(synthetic_benchmark, tmp_path) -> None:
    s = brain(synthetic_benchmark)
    runs = [
        experiment.train_run(
            tiny_run_config(s.dataset, s.root, s.category, seed=n, train={"epochs": 1}),
            tmp_path / f"seed-{n}",
            progress=False,
        )
        for n in (1, 2)
    ]
    shots = [read(run / "shots.json") for run in runs]
    assert shots[0]["source"].startswith("list:") and shots[0]["normal"] == shots[1]["normal"]
    assert read(runs[0] / "train.json")["losses"] != read(runs[1] / "train.json")["losses"]


def test_repeat_a_run_from_its_shot_file(synthetic_benchmark, tmp_path) -> None:
    s = brain(synthetic_benchmark)
    first = experiment.train_run(
        tiny_run_config(s.dataset, s.root, s.category, seed=3, train={"epochs": 0}), tmp_path / "a", progress=False
    )
    again = experiment.train_run(
        tiny_run_config(
            s.dataset, s.root, s.category, seed=9, train={"epochs": 0}, data={"shot_file": str(first / "shots.json")}
        ),
        tmp_path / "b",
        progress=False,
    )
    a, b = read(first / "shots.json"), read(again / "shots.json")
    assert (a["normal"], a["abnormal"]) == (b["normal"], b["abnormal"])


def test_a_shot_file_is_held_to_the_protocols_rule_on_abnormal_shots(synthetic_benchmark, tmp_path) -> None:
    s = brain(synthetic_benchmark)
    clean = experiment.train_run(tiny_run_config(s.dataset, s.root, s.category, train={"epochs": 0}), tmp_path / "c")
    normal_only = tiny_run_config(
        s.dataset, s.root, s.category, protocol="normal-only", data={"shot_file": str(clean / "shots.json")}
    )
    with pytest.warns(UserWarning, match=r"the 2 abnormal shots are not used: the normal-only protocol trains on none"):
        run = experiment.train_run(normal_only.with_overrides({"train.epochs": 0}), tmp_path / "n", progress=False)
    shots = read(run / "shots.json")
    assert shots["abnormal"] == [] and shots["normal"] == read(clean / "shots.json")["normal"]
    back = tiny_run_config(s.dataset, s.root, s.category, data={"shot_file": str(run / "shots.json")})
    with pytest.raises(ClipMPCADError, match=r"lists no abnormal shots, but the clean protocol trains on k of them"):
        experiment.train_run(back, tmp_path / "c2", progress=False)
    assert not (tmp_path / "c2").exists()
