"""Markdown, CSV and JSON tables for a run and for a benchmark."""

from __future__ import annotations

import csv
import io
import json

from clipmpcad.metrics.summary import RunResult
from clipmpcad.report import benchmark_table, run_table


def cell(dataset, category, seed, image, pixel):
    metrics = {"image_auroc": image, "pixel_auroc": pixel, "pixel_aupro": pixel}
    return RunResult(dataset=dataset, category=category, shot=4, seed=seed, metrics=metrics)


RESULTS = [
    cell("mvtec", "bottle", 0, 0.90, 0.95),
    cell("mvtec", "bottle", 1, 0.80, 0.85),
    cell("mvtec", "cable", 0, 0.70, 0.75),
    cell("mvtec", "cable", 1, 0.60, 0.65),
    cell("chest", "chest", 0, 1.00, None),  # a dataset without masks
    cell("chest", "chest", 1, 0.50, None),
]
METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")


def test_markdown_rows_averages_and_missing_cells():
    lines = benchmark_table(RESULTS, METRICS).to_markdown().splitlines()
    assert lines[0] == "| dataset | category | shot | seeds | image AUROC | pixel AUROC | pixel AUPRO |"
    assert lines[2] == "| mvtec | bottle | 4 | 2 | 85.00 ± 7.07 | 90.00 ± 7.07 | 90.00 ± 7.07 |"
    assert lines[4] == "| mvtec | average | 4 | 2 | 75.00 ± 7.07 | 80.00 ± 7.07 | 80.00 ± 7.07 |"
    assert lines[5] == "| chest | chest | 4 | 2 | 75.00 ± 35.36 | – | – |"
    # overall per seed: image (0.8 + 1.0)/2, (0.7 + 0.5)/2; pixel from mvtec alone
    assert lines[7] == "| all | average | 4 | 2 | 75.00 ± 21.21 | 80.00 ± 7.07 | 80.00 ± 7.07 |"
    assert len(lines) == 8


def test_csv_has_numbers_and_empty_missing_cells():
    rows = list(csv.DictReader(io.StringIO(benchmark_table(RESULTS, METRICS).to_csv())))
    chest = next(r for r in rows if r["dataset"] == "chest" and r["level"] == "category")
    assert (chest["image_auroc_mean"], chest["image_auroc_std"]) == ("75.00", "35.36")
    assert (chest["pixel_auroc_mean"], chest["pixel_auroc_std"]) == ("", "")
    overall = rows[-1]
    assert (overall["level"], overall["pixel_aupro_mean"]) == ("overall", "80.00")


def test_json_keeps_raw_fractions_and_null():
    records = json.loads(benchmark_table(RESULTS, METRICS).to_json())
    overall = records[-1]
    assert overall["level"] == "overall" and overall["metrics"]["image_auroc"]["n"] == 2
    assert abs(overall["metrics"]["image_auroc"]["mean"] - 0.75) < 1e-12
    assert records[3]["metrics"]["pixel_auroc"] is None


def test_single_seed_shows_no_std():
    table = benchmark_table([cell("mvtec", "bottle", 0, 0.9123, 0.5)], ("image_auroc",))
    assert "| mvtec | bottle | 4 | 1 | 91.23 |" in table.to_markdown()


def test_run_table_formats_percentages_and_flags_test_set_thresholds():
    metrics = {
        "image_auroc": 0.912345,
        "pixel_aupro": None,
        "image_f1_threshold": 0.123456789,
        "n_images": 83,
        "pixel_resolution": "240x240",
    }
    table = run_table(metrics)
    markdown = table.to_markdown()
    assert "| image AUROC (%) | 91.23 |" in markdown
    assert "| pixel AUPRO (%) | – |" in markdown
    assert "| image_f1_threshold (chosen on the test set) | 0.123457 |" in markdown
    assert "| n_images | 83 |" in markdown
    assert json.loads(table.to_json()) == metrics
    rows = list(csv.reader(io.StringIO(table.to_csv())))
    assert rows[1] == ["image_auroc", "0.912345"] and rows[2] == ["pixel_aupro", ""]


def test_run_table_shows_nested_entries_as_json_not_python_reprs():
    rows = dict(run_table({"backbone": {"model": "m", "random": True}, "levels": [6, 12]}).rows())
    assert rows == {"backbone": '{"model": "m", "random": true}', "levels": "[6, 12]"}


def test_counts_read_as_words() -> None:
    from clipmpcad.report.tables import counted

    assert [counted(n, "shot") for n in (0, 1, 2)] == ["0 shots", "1 shot", "2 shots"]
