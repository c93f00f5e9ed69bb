"""The report of a tested run: its grid heading counts the whole test split, not the drawn cases."""

from __future__ import annotations

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
