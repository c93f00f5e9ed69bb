"""The report of a tested run: its grid heading counts the whole test split, not the drawn cases."""

from __future__ import annotations

import html
import re

from clipmpcad import experiment
from clipmpcad.report import run_report
from tinyrun import tiny_run_config


def test_heading_names_the_drawn_cases_of_all_test_images(synthetic_benchmark, tmp_path, monkeypatch) -> None:
    s = next(s for s in synthetic_benchmark.sets if s.dataset == "mvtec")
    run = experiment.train_model(
        tiny_run_config(s.dataset, s.root, s.category, train={"epochs": 1}), tmp_path / "run", progress=False
    )
    real = run_report.write_run_report
    monkeypatch.setattr(run_report, "write_run_report", lambda *a, **kw: real(*a, **kw, max_cases=3))
    record = experiment.evaluate_run(run, progress=False)
    text = (run.run_dir / "report.html").read_text(encoding="utf-8")
    assert record["n_test_images"] > 3
    assert f"<h2>Test images: 3 of {record['n_test_images']}, worst first</h2>" in text
    assert len(re.findall(r"<figure", text)) == 3


def test_cases_name_their_class_and_a_placeholder_pixel_threshold_draws_no_outline(
    synthetic_benchmark, tmp_path, monkeypatch
) -> None:
    tile = next(s for s in synthetic_benchmark.sets if s.dataset == "mvtec")
    run = experiment.train_model(
        tiny_run_config(tile.dataset, tile.root, tile.category, train={"epochs": 1}), tmp_path / "tile", progress=False
    )
    experiment.evaluate_run(run, progress=False)
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", (run.run_dir / "report.html").read_text(encoding="utf-8"))
    names = [re.sub(r"</?b>", "", c).split("<br>")[0] for c in captions]
    assert names and all(re.fullmatch(r"[a-z_]+/\S+\.png", n) for n in names)
    assert len(set(names)) == len(names)  # scratch/001.png and stain/001.png stay apart
    assert all((tile.root / html.unescape(n)).is_file() for n in names)  # a caption is where the file is

    chest = next(s for s in synthetic_benchmark.sets if s.category == "SynthChest")  # no masks
    paper = tiny_run_config(chest.dataset, chest.root, chest.category, protocol="paper", train={"epochs": 1})
    run = experiment.train_model(paper, tmp_path / "chest", progress=False)
    outlines = []
    real = run_report.case_for
    monkeypatch.setattr(run_report, "case_for", lambda *a: outlines.append(a[4]) or real(*a))
    experiment.evaluate_run(run, progress=False)
    assert run.detector.calibration.source == "test"
    assert outlines and not any(outlines), "no predicted-mask outline at a placeholder pixel threshold"
