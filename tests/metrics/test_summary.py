"""Category → dataset → overall averages and mean ± std over seeds."""

from __future__ import annotations

import pytest

from clipmpcad.errors import DataError
from clipmpcad.metrics.summary import RunResult, mean_std, summarize

# MVFA, k = 4 (METHOD §12): image AUROC of six medical datasets, pixel AUROC of the three with masks
MVFA = {
    "HIS": (82.71, None),
    "ChestXray": (81.95, None),
    "OCT17": (99.38, None),
    "BrainMRI": (92.44, 97.30),
    "LiverCT": (81.18, 99.73),
    "RESC": (96.18, 98.97),
}


def result(dataset, category, seed, image, pixel=None, shot=4):
    metrics = {"image_auroc": image, "pixel_auroc": pixel}
    return RunResult(dataset=dataset, category=category, shot=shot, seed=seed, metrics=metrics)


def test_reproduces_the_published_medical_averages():
    rows = summarize(
        [result(d, d, 0, i / 100, p and p / 100) for d, (i, p) in MVFA.items()],
        metrics=("image_auroc", "pixel_auroc"),
    )
    overall = rows[-1]
    assert (overall.level, overall.dataset) == ("overall", "all")
    assert round(100 * overall.values["image_auroc"].mean, 2) == 88.97
    assert round(100 * overall.values["pixel_auroc"].mean, 2) == 98.67  # three datasets, not six
    assert overall.values["image_auroc"].std is None  # one seed
    his_average = next(r for r in rows if r.level == "dataset" and r.dataset == "HIS")
    assert his_average.values["pixel_auroc"] is None


def test_sample_std_over_seeds():
    assert mean_std([0.8, 0.9, 1.0]).std == pytest.approx(0.1)  # ddof=1; ddof=0 would be 0.0816
    assert mean_std([0.5]).std is None
    with pytest.raises(DataError, match="at least one"):
        mean_std([])


def test_dataset_average_per_seed_then_std_over_seeds():
    results = [
        result("mvtec", "bottle", 0, 0.90, 0.95),
        result("mvtec", "bottle", 1, 0.80, 0.85),
        result("mvtec", "cable", 0, 0.70, 0.75),
        result("mvtec", "cable", 1, 0.60, 0.65),
        result("btad", "01", 0, 1.00, None),  # no masks in this (pretend) dataset
        result("btad", "01", 1, 0.50, None),
    ]
    rows = summarize(results, metrics=("image_auroc", "pixel_auroc"))
    assert [(r.level, r.dataset, r.category) for r in rows] == [
        ("category", "mvtec", "bottle"),
        ("category", "mvtec", "cable"),
        ("dataset", "mvtec", "average"),
        ("category", "btad", "01"),
        ("dataset", "btad", "average"),
        ("overall", "all", "average"),
    ]
    mvtec = rows[2].values["image_auroc"]  # per seed: (0.9+0.7)/2 = 0.8 and (0.8+0.6)/2 = 0.7
    assert (mvtec.mean, mvtec.std, mvtec.n) == (pytest.approx(0.75), pytest.approx(0.0707107), 2)
    overall = rows[-1].values
    # per seed: (0.8 + 1.0)/2 = 0.9 and (0.7 + 0.5)/2 = 0.6
    assert overall["image_auroc"].mean == pytest.approx(0.75)
    assert overall["image_auroc"].std == pytest.approx(0.2121320)
    assert overall["pixel_auroc"].mean == pytest.approx(0.80)  # mvtec only: 0.85 and 0.75
    assert rows[4].values["pixel_auroc"] is None


def test_shots_are_kept_apart_and_partial_seeds_use_the_shared_ones():
    results = [
        result("mvtec", "bottle", 0, 0.9, shot=2),
        result("mvtec", "bottle", 1, 0.7, shot=2),
        result("mvtec", "cable", 0, 0.5, shot=2),  # seed 1 not run yet
        result("mvtec", "bottle", 0, 0.1, shot=4),
    ]
    rows = summarize(results, metrics=("image_auroc",))
    shot2 = next(r for r in rows if r.shot == 2 and r.level == "dataset").values["image_auroc"]
    assert (shot2.mean, shot2.n) == (pytest.approx(0.7), 1)  # seed 0 only: (0.9 + 0.5) / 2
    shot4 = next(r for r in rows if r.shot == 4 and r.level == "overall").values["image_auroc"]
    assert shot4.mean == pytest.approx(0.1)


def test_a_cell_given_twice_is_refused():
    with pytest.raises(DataError, match="two results for mvtec/bottle shot 4 seed 0"):
        summarize([result("mvtec", "bottle", 0, 0.9), result("mvtec", "bottle", 0, 0.8)])


def test_a_suite_of_both_domains_averages_each_apart_before_the_whole():
    def r(dataset, category, image, domain):
        return RunResult(dataset, category, 4, 0, {"image_auroc": image}, domain)

    results = [
        r("bmad", "Brain", 0.9, "medical"),
        r("bmad", "Liver", 0.7, "medical"),
        r("mvtec", "bottle", 1.0, "industrial"),
        r("mpdd", "bracket", 0.6, "industrial"),
    ]
    rows = summarize(results, metrics=("image_auroc",))
    means = {(x.level, x.dataset): x.values["image_auroc"].mean for x in rows if x.level in ("domain", "overall")}
    assert means == {
        ("domain", "medical"): pytest.approx(0.8),  # bmad's average: one medical dataset
        ("domain", "industrial"): pytest.approx(0.8),  # (1.0 + 0.6) / 2 over the two industrial datasets
        ("overall", "all"): pytest.approx((0.8 + 1.0 + 0.6) / 3),
    }
    assert [x.level for x in rows][-3:] == ["domain", "domain", "overall"]
    one_domain = summarize([x for x in results if x.domain == "industrial"], metrics=("image_auroc",))
    assert "domain" not in {x.level for x in one_domain}
