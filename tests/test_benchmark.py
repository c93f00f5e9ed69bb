"""Benchmark suites on the generated datasets: the paper's averages recomputed plainly from the
metrics.json files, resuming without retraining, conflicts refused, and the three table files."""

from __future__ import annotations

import csv
import io
import json
import shutil
import statistics
from pathlib import Path

import pytest
import torch

from clipmpcad import experiment
from clipmpcad.benchmark import (
    RANDOM_NOTE,
    TEST_SELECTED_NOTE,
    SuiteSpec,
    parse_dataset,
    plan,
    rebuild_tables,
    run_benchmark,
    summarize_folder,
)
from clipmpcad.config import RunConfig
from clipmpcad.data.synthetic import SynthConfig, generate_benchmark
from clipmpcad.errors import ConfigError, DataError

BASE = RunConfig.from_dict(
    {
        "backbone": {"model": "clipmpcad-tiny", "weights": "random", "image_size": 64},
        "train": {"epochs": 1},
    }
)
SMALL = SynthConfig(image_size=64, n_pool=4, n_test_normal=4, n_test_abnormal=4)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: several torch threads per process only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return generate_benchmark(tmp_path_factory.mktemp("bench") / "data", seed=0, config=SMALL).root


@pytest.fixture(scope="module")
def spec(data) -> SuiteSpec:
    datasets = (("bmad", str(data / "bmad")), ("mvtec", str(data / "mvtec")))
    return SuiteSpec(datasets=datasets, shots=(1, 2), seeds=(1, 2))


@pytest.fixture(scope="module")
def suite(spec, tmp_path_factory):
    return run_benchmark(BASE, spec, tmp_path_factory.mktemp("suite") / "out", progress=False)


def tile_spec(data: Path, seeds=(1, 2)) -> SuiteSpec:
    return SuiteSpec(datasets=(("mvtec", str(data / "mvtec")),), shots=(1,), seeds=seeds)


def fail(*args, **kwargs):
    raise AssertionError("this cell must not be recomputed")


def metrics_of(out: Path, dataset: str, category: str, shot: int, seed: int) -> dict:
    return json.loads((out / dataset / category / f"{shot}-shot" / f"seed-{seed}" / "metrics.json").read_text())


def row(table, dataset: str, category: str, shot: int):
    (match,) = [r for r in table.rows if (r.dataset, r.category, r.shot) == (dataset, category, shot)]
    return match


def test_plan_lists_every_category_in_order(spec):
    cells = plan(spec)
    assert [(c.dataset, c.category) for c in cells[::4]] == [
        ("bmad", "SynthBrain"),
        ("bmad", "SynthChest"),
        ("mvtec", "synth_tile"),
    ]
    assert [(c.shot, c.seed) for c in cells[:4]] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert str(cells[5].run_dir(Path("o"))) == "o/bmad/SynthChest/1-shot/seed-2"


def test_table_is_the_paper_average_of_the_metrics_files(suite):
    out = suite.out
    assert [r.status for r in suite.cells] == ["trained"] * 12
    for shot in (1, 2):
        m = {
            (c, s): metrics_of(out, d, c, shot, s)
            for d, c in (("bmad", "SynthBrain"), ("bmad", "SynthChest"), ("mvtec", "synth_tile"))
            for s in (1, 2)
        }
        # per seed: dataset = mean over its categories, overall = mean over datasets
        image = {
            s: (
                (m["SynthBrain", s]["image_auroc"] + m["SynthChest", s]["image_auroc"]) / 2
                + m["synth_tile", s]["image_auroc"]
            )
            / 2
            for s in (1, 2)
        }
        pixel = {s: (m["SynthBrain", s]["pixel_auroc"] + m["synth_tile", s]["pixel_auroc"]) / 2 for s in (1, 2)}
        overall = row(suite.table, "all", "average", shot).values
        assert overall["image_auroc"].mean == pytest.approx(statistics.mean(image.values()))
        assert overall["image_auroc"].std == pytest.approx(statistics.stdev(image.values()))
        assert overall["pixel_auroc"].mean == pytest.approx(statistics.mean(pixel.values()))
        assert overall["pixel_auroc"].std == pytest.approx(statistics.stdev(pixel.values()))
        bmad = row(suite.table, "bmad", "average", shot).values
        brain_pixel = [m["SynthBrain", s]["pixel_auroc"] for s in (1, 2)]  # SynthChest has no masks
        assert bmad["pixel_auroc"].mean == pytest.approx(statistics.mean(brain_pixel))
        assert bmad["pixel_auroc"].std == pytest.approx(statistics.stdev(brain_pixel))
        assert row(suite.table, "bmad", "SynthChest", shot).values["pixel_auroc"] is None
        tile = row(suite.table, "mvtec", "synth_tile", shot).values["image_auroc"]
        assert (tile.mean, tile.n) == (
            pytest.approx(statistics.mean(m["synth_tile", s]["image_auroc"] for s in (1, 2))),
            2,
        )
    # per shot: categories, dataset averages, the medical and industrial averages, overall
    assert len(suite.table.rows) == 2 * (3 + 2 + 2 + 1)
    medical = row(suite.table, "medical", "average", 1).values["image_auroc"]
    assert medical == row(suite.table, "bmad", "average", 1).values["image_auroc"]  # bmad is the one medical set


def test_three_files_and_suite_record(suite):
    out = suite.out
    markdown = (out / "benchmark.md").read_text()
    assert RANDOM_NOTE in markdown and TEST_SELECTED_NOTE not in markdown
    assert "memory bank: exact" in markdown and "(no masks: bmad/SynthChest)" in markdown
    assert "; computed in fp32 on cpu" in markdown  # what every cell ran at, from its metrics record
    assert "12 cells: datasets bmad, mvtec; shots 1, 2; seeds 1, 2" in markdown
    assert suite.table.to_markdown() in markdown
    rows = list(csv.DictReader(io.StringIO((out / "benchmark.csv").read_text())))
    assert len(rows) == len(suite.table.rows) and rows[-1]["dataset"] == "all"
    document = json.loads((out / "benchmark.json").read_text())
    assert document["rows"] == json.loads(suite.table.to_json()) and document["notes"] == list(suite.notes)
    assert document["cells"][0] == "bmad/SynthBrain/1-shot/seed-1"
    record = json.loads((out / "suite.json").read_text())
    assert record["base_config"] == BASE.to_dict() and len(record["cells"]) == 12
    assert record["backbone"]["random"] is True and record["coreset"] == 1.0


def test_summarize_folder_rebuilds_the_same_table(suite):
    assert summarize_folder(suite.out) == suite.table
    (suite.out / "benchmark.md").unlink()
    assert rebuild_tables(suite.out) == suite.table and (suite.out / "benchmark.md").is_file()


def test_second_run_reuses_every_cell(suite, spec, monkeypatch, capsys):
    stamps = {c.run_dir: (c.run_dir / "model.pt").stat().st_mtime_ns for c in suite.cells}
    for name in ("train_model", "test_run", "evaluate_run"):
        monkeypatch.setattr(experiment, name, fail)
    again = run_benchmark(BASE.with_overrides({"device": "cpu", "eval.batch_size": 3}), spec, suite.out)
    assert [r.status for r in again.cells] == ["reused"] * 12 and again.table == suite.table
    assert stamps == {c.run_dir: (c.run_dir / "model.pt").stat().st_mtime_ns for c in again.cells}
    brain = metrics_of(suite.out, "bmad", "SynthBrain", 2, 1)
    line = (
        f"bmad/SynthBrain 2-shot seed 1: image AUROC {100 * brain['image_auroc']:.2f}, "
        f"pixel AUROC {100 * brain['pixel_auroc']:.2f} (reused)"
    )
    assert line in capsys.readouterr().out.splitlines()


def test_deleted_metrics_retests_only_that_cell(data, tmp_path, monkeypatch):
    first = run_benchmark(BASE, tile_spec(data), tmp_path, progress=False)
    gone = first.cells[1].run_dir
    (gone / "metrics.json").unlink()
    tested, real_test = [], experiment.test_run
    monkeypatch.setattr(experiment, "train_model", fail)
    monkeypatch.setattr(experiment, "test_run", lambda run, **kw: tested.append(run) or real_test(run, **kw))
    seen = []
    again = run_benchmark(BASE, tile_spec(data), tmp_path, progress=False, on_cell=seen.append)
    assert [r.status for r in again.cells] == ["reused", "tested"] and tested == [gone]
    assert [r.cell for r in seen] == [r.cell for r in again.cells]
    assert again.cells[1].record["image_auroc"] == first.cells[1].record["image_auroc"]
    assert again.table == first.table


def test_crashed_cell_is_trained_again_alone(data, tmp_path, monkeypatch):
    first = run_benchmark(BASE, tile_spec(data), tmp_path, progress=False)
    crashed = first.cells[0].run_dir
    shutil.rmtree(crashed)
    stage = crashed.parent / f".{crashed.name}.abc123.partial"  # what runs.staged_run_dir leaves on a kill
    stage.mkdir()
    (stage / "config.json").write_text("{}")
    trained, train = [], experiment.train_model
    monkeypatch.setattr(experiment, "train_model", lambda cfg, out, **kw: trained.append(out) or train(cfg, out, **kw))
    again = run_benchmark(BASE, tile_spec(data), tmp_path, progress=False)
    assert [r.status for r in again.cells] == ["trained", "reused"] and trained == [crashed]
    assert not stage.exists() and (crashed / "metrics.json").is_file()


def test_changed_settings_are_refused_unless_overwrite(data, tmp_path, monkeypatch):
    run_benchmark(BASE, tile_spec(data), tmp_path, progress=False)
    longer = BASE.with_overrides({"train.epochs": 2})
    with monkeypatch.context() as patch:
        patch.setattr(experiment, "train_model", fail)
        with pytest.raises(ConfigError, match=r"suite run with other settings \(train.epochs: saved 1, requested 2"):
            run_benchmark(longer, tile_spec(data, seeds=(3,)), tmp_path, progress=False)
    assert not (tmp_path / "mvtec" / "synth_tile" / "1-shot" / "seed-3").exists()
    # one cell's folder edited behind the suite's back: its own check refuses it
    cell = tmp_path / "mvtec" / "synth_tile" / "1-shot" / "seed-1"
    saved = json.loads((cell / "config.json").read_text())
    saved["train"]["epochs"] = 2
    (cell / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match=r"seed-1 was run with other settings \(train.epochs: saved 2, requested 1"):
        run_benchmark(BASE, tile_spec(data), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="different settings"):
        summarize_folder(tmp_path)
    redone = run_benchmark(BASE, tile_spec(data), tmp_path, progress=False, overwrite=True)
    assert [r.status for r in redone.cells] == ["trained", "reused"]
    assert json.loads((cell / "config.json").read_text())["train"]["epochs"] == 1


def test_a_suite_grows_and_other_changes_are_refused_unless_overwrite(data, tmp_path, monkeypatch):
    """A suite's folder takes more seeds, shots or categories of the same settings (its cells are
    reused); other roots or fewer cells are refused before suite.json is touched; the same suite in
    another order resumes; --overwrite goes ahead."""
    out = tmp_path / "out"
    run_benchmark(BASE, tile_spec(data), out, progress=False)
    saved = (out / "suite.json").read_text()
    copy = shutil.copytree(data / "mvtec", tmp_path / "mvtec-copy")
    changed = {
        r"datasets: saved \['mvtec=.*/mvtec'\], requested \['mvtec=.*/mvtec-copy'\]": SuiteSpec(
            datasets=(("mvtec", str(copy)),), shots=(1,), seeds=(1, 2)
        ),
        r"seeds: saved \[1, 2\], requested \[1\]": tile_spec(data, seeds=(1,)),
    }
    with monkeypatch.context() as patch:
        patch.setattr(experiment, "train_model", fail)
        for message, spec in changed.items():
            refused = f"suite run with other settings \\({message}\\); a suite may grow, but not drop cells; pass"
            with pytest.raises(ConfigError, match=refused):
                run_benchmark(BASE, spec, out, progress=False)
            assert (out / "suite.json").read_text() == saved
        again = run_benchmark(BASE, tile_spec(data, seeds=(2, 1)), out, progress=False)  # resumes: same cells
        assert [r.status for r in again.cells] == ["reused", "reused"]
    grown = run_benchmark(BASE, tile_spec(data, seeds=(1, 2, 3)), out, progress=False)  # no --overwrite needed
    assert [r.status for r in grown.cells] == ["reused", "reused", "trained"]
    assert len(json.loads((out / "suite.json").read_text())["cells"]) == 3
    tile = ("mvtec", str(data / "mvtec"))
    both = (tile, ("bmad", str(data / "bmad")))
    wider = SuiteSpec(datasets=both, categories=("synth_tile", "SynthBrain"), shots=(1,), seeds=(1, 2, 3))
    assert [r.status for r in run_benchmark(BASE, wider, out, progress=False).cells].count("reused") == 3
    fewer = run_benchmark(BASE, tile_spec(data, seeds=(1,)), out, progress=False, overwrite=True)
    assert [r.status for r in fewer.cells] == ["reused"]
    assert json.loads((out / "suite.json").read_text())["cells"] == ["mvtec/synth_tile/1-shot/seed-1"]
    assert (out / "mvtec/synth_tile/1-shot/seed-2/metrics.json").is_file()  # the larger suite's cell stays
    rebuild_tables(out)  # from the folder: only the cells of the suite it now holds
    assert json.loads((out / "benchmark.json").read_text())["cells"] == ["mvtec/synth_tile/1-shot/seed-1"]


def test_markdown_flags_paper_protocol_and_coreset(data, tmp_path):
    base = BASE.with_overrides({"protocol": "paper", "bank.coreset": 0.5})
    spec = SuiteSpec(
        datasets=(("mvtec", str(data / "mvtec")), ("bmad", str(data / "bmad"))),
        categories=("synth_tile", "SynthChest"),
        shots=(1,),
        seeds=(1,),
    )
    result = run_benchmark(base, spec, tmp_path, progress=False)
    markdown = (tmp_path / "benchmark.md").read_text()
    assert TEST_SELECTED_NOTE in markdown and RANDOM_NOTE in markdown
    assert "APPROXIMATE — greedy coreset keeps 50% of the bank tokens (bank.coreset = 0.5)" in markdown
    assert "protocol: paper" in markdown and result.cells[0].record["test_selected"] is True
    assert [r.dataset for r in result.table.rows] == [  # plan order, then the domains
        "mvtec",
        "mvtec",
        "bmad",
        "bmad",
        "industrial",
        "medical",
        "all",
    ]
    assert summarize_folder(tmp_path) == result.table


def test_bad_suites_fail_before_any_work(data, tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "train_model", fail)
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        plan(SuiteSpec(datasets=(("nope", str(data)),)))
    with pytest.raises(DataError, match="no dataset has the category Nope; found bmad: SynthBrain, SynthChest"):
        plan(SuiteSpec(datasets=(("bmad", str(data / "bmad")),), categories=("SynthBrain", "Nope")))
    with pytest.raises(DataError, match=r"mvtec at .* has none of the categories SynthBrain"):
        plan(
            SuiteSpec(
                datasets=(("bmad", str(data / "bmad")), ("mvtec", str(data / "mvtec"))), categories=("SynthBrain",)
            )
        )
    with pytest.raises(ConfigError, match="name one more than once"):
        SuiteSpec(datasets=(("bmad", "a"), ("bmad", "b")))
    with pytest.raises(ConfigError, match=r"shots must be among \(1, 2, 4, 8, 16\), got \(3,\)"):
        SuiteSpec(datasets=(("bmad", "a"),), shots=(3,))
    with pytest.raises(ConfigError, match=r"unset data\.shot_file"):
        run_benchmark(BASE.with_overrides({"data.shot_file": "shots.json"}), tile_spec(data), tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds no suite\.json"):
        run_benchmark(BASE, tile_spec(data), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="write NAME=ROOT"):
        parse_dataset("bmad")
    assert parse_dataset("bmad=/d=x") == ("bmad", "/d=x")


def test_auto_weights_compare_as_the_weights_they_stand_for():
    from clipmpcad.benchmark import config_differences

    auto = BASE.with_overrides({"backbone.weights": "auto"})  # the default since weights became "auto"
    assert config_differences(BASE, auto) == {}  # the tiny model's auto is random: a suite resumes
    openai = BASE.with_overrides({"backbone.model": "ViT-B-16", "backbone.weights": "openai"})
    assert config_differences(openai, openai.with_overrides({"backbone.weights": "auto"})) == {}
    assert "backbone.weights" in config_differences(openai, openai.with_overrides({"backbone.weights": "random"}))


def test_a_missing_value_is_counted_and_named_not_averaged_away(data, tmp_path):
    out = tmp_path / "suite"
    run_benchmark(BASE, tile_spec(data), out, progress=False)
    cell = out / "mvtec/synth_tile/1-shot/seed-2/metrics.json"
    record = json.loads(cell.read_text())
    kept = metrics_of(out, "mvtec", "synth_tile", 1, 1)["image_auroc"]
    cell.write_text(json.dumps({**record, "image_auroc": None}))  # e.g. no anomalous test image left
    rebuild_tables(out)
    markdown = (out / "benchmark.md").read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| mvtec | synth_tile |"))
    assert f"| 2 | {kept * 100:.2f} (n=1) |" in row  # the seeds column and the one value it rests on
    assert "missing values, left out of the averages" in markdown
    assert "mvtec/synth_tile 1-shot seed 2: image AUROC" in markdown
    assert "F1-max: the best F1 over all thresholds, picked on the test set" in markdown


def test_categories_run_with_different_seeds_are_named():
    from clipmpcad.benchmark import uneven_seeds

    cell = lambda category, seed, shot=1: {"dataset": "bmad", "category": category, "shot": shot, "seed": seed}  # noqa: E731
    even = [cell(c, s) for c in ("a", "b") for s in (1, 2)] + [cell("a", 5, shot=4)]
    assert uneven_seeds(even) == []
    assert uneven_seeds([*even, cell("c", 3)]) == ["bmad 1-shot: seeds a 1 2, b 1 2, c 3"]


def test_a_changed_suite_that_stops_midway_leaves_no_stale_tables(data, tmp_path, monkeypatch):
    out = tmp_path / "suite"
    run_benchmark(BASE, tile_spec(data, seeds=(1,)), out, progress=False)
    assert (out / "benchmark.md").is_file()
    monkeypatch.setattr(experiment, "train_model", fail)  # the first new cell stops the run
    changed = BASE.with_overrides({"train.epochs": BASE.train.epochs + 1})
    with pytest.raises(AssertionError, match="must not be recomputed"):
        run_benchmark(changed, tile_spec(data, seeds=(1,)), out, overwrite=True, progress=False)
    assert not any((out / name).exists() for name in ("benchmark.md", "benchmark.csv", "benchmark.json"))


def test_a_cell_whose_report_is_missing_is_tested_again_when_reports_are_asked_for(data, tmp_path):
    out = tmp_path / "suite"
    run_benchmark(BASE, tile_spec(data, seeds=(1,)), out, progress=False, report=True)
    cell = out / "mvtec" / "synth_tile" / "1-shot" / "seed-1"
    (cell / "report.html").unlink()  # as when the process died while drawing it, after metrics.json
    result = run_benchmark(BASE, tile_spec(data, seeds=(1,)), out, progress=False, report=True)
    assert [c.status for c in result.cells] == ["tested"] and (cell / "report.html").is_file()
    assert [c.status for c in run_benchmark(BASE, tile_spec(data, seeds=(1,)), out, progress=False).cells] == ["reused"]


def test_a_zero_shot_suite_takes_one_shot_count(data, tmp_path):
    zero = BASE.with_overrides({"protocol": "zero-shot"})
    with pytest.raises(ConfigError, match="zero-shot protocol uses no shots"):
        run_benchmark(zero, SuiteSpec(datasets=(("mvtec", str(data / "mvtec")),), shots=(1, 4)), tmp_path / "z")
    assert not (tmp_path / "z").exists()
