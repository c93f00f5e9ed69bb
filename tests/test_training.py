"""Learning on generated data: the loss falls and localisation beats the untrained model;
micro-batches change nothing; a sample's scores do not depend on its batch."""

from __future__ import annotations

import json

import pytest
import torch

from clipmpcad import experiment
from clipmpcad.checkpoint import load_run
from clipmpcad.config import RunConfig
from clipmpcad.errors import ConfigError
from clipmpcad.experiment import train_run
from tinyrun import tiny_run_config


def brain(bench):
    return next(s for s in bench.sets if s.category == "SynthBrain")


def test_loss_falls_and_pixel_auroc_beats_the_untrained_model(synthetic_benchmark, tmp_path) -> None:
    s = brain(synthetic_benchmark)
    records = {}
    for epochs in (0, 12):
        cfg = tiny_run_config(s.dataset, s.root, s.category, data={"shot": 4}, train={"epochs": epochs})
        run = train_run(cfg, tmp_path / f"e{epochs}", progress=False)
        records[epochs] = experiment.test_run(run, progress=False, report=False)
    losses = json.loads((tmp_path / "e12" / "train.json").read_text())["losses"]
    assert losses[-1] < 0.8 * losses[0], losses
    assert records[12]["pixel_auroc"] > records[0]["pixel_auroc"] + 0.01, (
        records[0]["pixel_auroc"],
        records[12]["pixel_auroc"],
    )
    assert records[12]["pixel_aupro"] > records[0]["pixel_aupro"]


def test_micro_batches_give_the_same_training(synthetic_benchmark, tmp_path) -> None:
    s = brain(synthetic_benchmark)
    states = []
    for micro in (8, 3):
        cfg = tiny_run_config(
            s.dataset, s.root, s.category, data={"shot": 1}, train={"epochs": 1, "micro_batch": micro}
        )
        run = train_run(cfg, tmp_path / f"m{micro}", progress=False)
        states.append(torch.load(run / "model.pt", weights_only=True)["state"])
    for key, value in states[0].items():
        torch.testing.assert_close(states[1][key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_detector_scores_do_not_depend_on_the_batch(synthetic_benchmark, tmp_path) -> None:
    s = brain(synthetic_benchmark)
    run_dir = train_run(tiny_run_config(s.dataset, s.root, s.category), tmp_path / "run", progress=False)
    run = load_run(run_dir)
    images = torch.rand(5, 3, 64, 64)
    whole = run.detector.score(images)
    for i in (0, 4):
        one = run.detector.score(images[i : i + 1])
        torch.testing.assert_close(one.anomaly_map[0], whole.anomaly_map[i], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(one.image_score[0], whole.image_score[i], rtol=1e-4, atol=1e-5)


def test_scored_maps_are_smoothed_only_on_request(synthetic_benchmark, tmp_path) -> None:
    s = brain(synthetic_benchmark)
    cfg = tiny_run_config(s.dataset, s.root, s.category, eval={"sigma": 2.0})
    run = load_run(train_run(cfg, tmp_path / "run", progress=False))
    assert run.detector.score_sigma == 0.0  # eval.sigma alone smooths the display, not the scores
    images = torch.rand(2, 3, 64, 64)
    plain = run.detector.score(images).anomaly_map
    run.detector.score_sigma = 2.0
    smoothed = run.detector.score(images).anomaly_map

    def roughness(maps: torch.Tensor) -> float:
        return float((maps[:, 1:] - maps[:, :-1]).abs().mean())

    assert roughness(smoothed) < 0.8 * roughness(plain)
    on = tiny_run_config(s.dataset, s.root, s.category, eval={"sigma": 2.0, "smooth_scores": True})
    assert load_run(train_run(on, tmp_path / "on", progress=False)).detector.score_sigma == 2.0


def test_bf16_on_a_cpu_learns_as_fp32_does(synthetic_benchmark, tmp_path) -> None:
    """--precision bf16 (fast on CPUs with native bf16): the loss falls and the metrics stay near
    the fp32 run's; the records say which precision ran."""
    s = brain(synthetic_benchmark)
    records, losses = {}, {}
    for precision in ("fp32", "bf16"):
        cfg = tiny_run_config(s.dataset, s.root, s.category, data={"shot": 4}, train={"epochs": 8}, precision=precision)
        run = train_run(cfg, tmp_path / precision, progress=False)
        train = json.loads((run / "train.json").read_text())
        assert train["precision"] == precision
        losses[precision] = train["losses"]
        records[precision] = experiment.test_run(run, progress=False, report=False)
        assert records[precision]["precision"] == precision
    assert losses["bf16"][-1] < 0.8 * losses["bf16"][0], losses["bf16"]
    assert losses["bf16"] != losses["fp32"]  # it really computed in bf16
    for key in ("image_auroc", "pixel_auroc", "pixel_aupro"):
        assert abs(records["bf16"][key] - records["fp32"][key]) < 0.03, (key, records)


def test_precision_names_are_checked_and_resolved() -> None:
    from clipmpcad.runtime import compute_dtype

    with pytest.raises(ConfigError, match="auto, fp32, bf16"):
        RunConfig(precision="fp16")
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert compute_dtype(cpu, "auto") is None and compute_dtype(gpu, "auto") == torch.bfloat16
    assert compute_dtype(cpu, "bf16") == torch.bfloat16 and compute_dtype(gpu, "fp32") is None


def test_the_trained_run_in_memory_tests_as_its_folder_does(synthetic_benchmark, tmp_path) -> None:
    """train --test, seeds, the demo and suite cells evaluate the run still in memory instead of
    reloading it: every metric equals the one the folder gives."""
    s = brain(synthetic_benchmark)
    run = experiment.train_model(tiny_run_config(s.dataset, s.root, s.category), tmp_path / "run", progress=False)
    fresh = experiment.evaluate_run(run, progress=False, report=False)
    loaded = experiment.test_run(run.run_dir, progress=False, report=False)
    timings = {"test_seconds", "test_images_per_second"}
    assert fresh.keys() == loaded.keys()
    for key in fresh.keys() - timings:
        assert fresh[key] == loaded[key], key


def test_a_gpu_index_is_checked_against_the_gpus_there(monkeypatch) -> None:
    import torch

    from clipmpcad.errors import ConfigError
    from clipmpcad.runtime import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1) and resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(ConfigError, match=r"'cuda:2' does not exist: 2 CUDA GPU\(s\) are visible \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")
    with pytest.raises(ConfigError, match="write cuda or cuda:N"):
        resolve_device("cuda:x")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        resolve_device("cuda")


def test_bad_settings_are_refused_by_name_before_any_work(tmp_path) -> None:
    from clipmpcad.config import RunConfig, load_config
    from clipmpcad.errors import ConfigError

    base = RunConfig().with_overrides({"train.lr": 0.01, "train.batch_size": 4})
    kept = base.with_overrides({"train": {"epochs": 2}})  # a section given whole: its other keys stay
    assert (kept.train.epochs, kept.train.lr, kept.train.batch_size) == (2, 0.01, 4)
    for override, says in [
        ({"train": {"epoch": 2}}, "unknown configuration key train.epoch"),
        ({"train.lr": float("inf")}, "train.lr must be a finite number"),
        ({"train.betas": [float("nan"), 0.9]}, r"train.betas\[0\] must be a finite number"),
        ({"train.betas": [0.5, 1.0]}, r"train.betas must each be in \[0, 1\)"),
        ({"adapter.residual": [0, 0, 0]}, "adapter.residual weights must be ≥ 0 with the first > 0"),
        ({"seed": -1}, r"seed must be in \[0, 2\*\*63\)"),
        ({"backbone.init_seed": 2**64}, r"backbone.init_seed must be in \[0, 2\*\*63\)"),
    ]:
        with pytest.raises(ConfigError, match=says):
            base.with_overrides(override)
    with pytest.raises(ConfigError, match=r"is a folder; give its config\.json"):
        load_config(tmp_path)


def test_a_diverging_run_stops_and_names_the_learning_rate(synthetic_benchmark, tmp_path) -> None:
    from clipmpcad import experiment
    from clipmpcad.errors import ConfigError
    from tinyrun import tiny_run_config

    s = next(s for s in synthetic_benchmark.sets if s.dataset == "mvtec")
    cfg = tiny_run_config("mvtec", s.root, s.category, train={"epochs": 4, "lr": 1e6})
    with pytest.raises(ConfigError, match=r"training diverged in epoch \d .*lower the learning rate \(--lr"):
        experiment.train_model(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_seeds_and_kernels_out_of_range_are_refused_before_any_work(tmp_path) -> None:
    from clipmpcad.benchmark import SuiteSpec
    from clipmpcad.config import RunConfig
    from clipmpcad.demo import run_demo
    from clipmpcad.errors import ConfigError
    from clipmpcad.experiment import train_seeds

    with pytest.raises(ConfigError, match=r"adapter.spatial_kernel must be odd and ≥ 1, got -1"):
        RunConfig().with_overrides({"adapter.spatial_kernel": -1})
    with pytest.raises(ConfigError, match=r"seeds must be in \[0, 2\*\*63\)"):
        SuiteSpec(datasets=(("bmad", "x"),), seeds=(-1,))
    with pytest.raises(ConfigError, match=r"seed must be in \[0, 2\*\*63\)"):
        train_seeds(RunConfig(), [1, -1], tmp_path / "seeds", progress=False)
    for options in ({"seed": -1}, {"epochs": -1}):
        with pytest.raises(ConfigError):
            run_demo(tmp_path / "demo", progress=False, **options)
    assert list(tmp_path.iterdir()) == []  # nothing generated, nothing trained


@pytest.mark.parametrize(
    "key", ["data.shot_file", "prompts.prompt_set", "prompts.classname", "backbone.model", "backbone.weights"]
)
def test_an_empty_name_is_refused_not_read_as_unset(key) -> None:
    for empty in ("", "  "):
        with pytest.raises(ConfigError, match=rf"{key} is empty; give a name or leave it out"):
            RunConfig().with_overrides({key: empty})
