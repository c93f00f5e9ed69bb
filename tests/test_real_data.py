"""The two real sets of ../shared/data through the MVTec loader, end to end with the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipmpcad import experiment
from tinyrun import tiny_run_config

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.parametrize(
    ("folder", "category", "domain", "n_test"),
    [("magnetic_tile", "magnetic_tile", None, 586), ("busi", "breast_ultrasound", "medical", 200)],
)
def test_real_set_end_to_end(tmp_path, folder, category, domain, n_test) -> None:
    root = SHARED / folder
    if not root.is_dir():
        pytest.skip(f"{root} is not on this machine")
    data = {"shot": 2, **({"domain": domain} if domain else {})}
    cfg = tiny_run_config("mvtec", root, category, data=data, train={"epochs": 1}, eval={"batch_size": 32})
    run = experiment.train_run(cfg, tmp_path / category, progress=False)
    record = experiment.test_run(run, progress=False, pixel_resolution="original")
    assert record["removed_from_test"] == 2 and record["n_test_images"] == n_test - 2
    assert record["domain"] == (domain or "industrial")
    assert 0.0 <= record["pixel_auroc"] <= 1.0 and record["pixel_resolution"] == "mixed"
    assert record["pixel_metrics_at"] == "each mask's original size"
    assert (run / "report.html").stat().st_size > 50_000
