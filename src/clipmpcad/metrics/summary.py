"""Averages over categories, datasets and seeds, the way the paper reports them (METHOD §11–§12).

For each shot and metric: a dataset's value for one seed is the mean over its categories' values
for that seed; the overall value for one seed is the mean over datasets. Each row then reports the
mean ± sample standard deviation (ddof=1) of its per-seed values; one seed gives no std (None).
Members whose value is None everywhere (pixel metrics of a dataset without masks) are left out of
the average, so pixel averages cover only the categories and datasets that have masks — e.g. the
MVFA medical averages: image AUROC over six datasets, pixel AUROC over the three with masks.
When members were run with different seeds, a group averages over the seeds they all share. A
suite of medical and industrial datasets also gets one average per domain, as the paper reports
them, before the overall one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import DataError

RATIO_METRICS = (
    "image_auroc",
    "image_ap",
    "image_f1_max",
    "pixel_auroc",
    "pixel_ap",
    "pixel_f1_max",
    "pixel_aupro",
)
DDOF = 1  # sample standard deviation over seeds


@dataclass(frozen=True)
class RunResult:
    """One cell of a benchmark: a test run of one category, shot count and seed."""

    dataset: str
    category: str
    shot: int
    seed: int
    metrics: Mapping[str, float | None]  # e.g. Metrics.to_dict()
    domain: str | None = None  # "medical" or "industrial": a suite of both also gets one average per domain


@dataclass(frozen=True)
class MeanStd:
    """Mean and sample std (ddof=1) over seeds; std None for a single seed."""

    mean: float
    std: float | None
    n: int  # number of seeds averaged


@dataclass(frozen=True)
class SummaryRow:
    """One table row: a category, a dataset average (category "average") or the overall average."""

    level: str  # "category", "dataset", "domain" (the domain's name as dataset) or "overall"
    dataset: str  # "all" on the overall row
    category: str  # "average" on dataset and overall rows
    shot: int
    values: Mapping[str, MeanStd | None]  # None: not available (no masks, one class)


def mean_std(values: Sequence[float]) -> MeanStd:
    """Mean and sample standard deviation (ddof=1) of per-seed values."""
    if len(values) == 0:
        raise DataError("mean_std needs at least one value")
    array = np.asarray(values, dtype=np.float64)
    std = float(np.std(array, ddof=DDOF)) if len(array) > 1 else None
    return MeanStd(mean=float(array.mean()), std=std, n=len(array))


PerSeed = dict[int, float]  # seed → value


def _group(members: Iterable[PerSeed]) -> PerSeed:
    """Per-seed means over the members that have values, on the seeds they all share."""
    present = [m for m in members if m]
    if not present:
        return {}
    seeds = sorted(set.intersection(*(set(m) for m in present)))
    return {s: float(np.mean([m[s] for m in present])) for s in seeds}


def _category_values(results: Sequence[RunResult], metric: str) -> dict[tuple, PerSeed]:
    """(dataset, category, shot) → seed → value, refusing a cell given twice."""
    table: dict[tuple, PerSeed] = {}
    for r in results:
        cell = table.setdefault((r.dataset, r.category, r.shot), {})
        if r.seed in cell:
            raise DataError(f"two results for {r.dataset}/{r.category} shot {r.shot} seed {r.seed}")
        value = r.metrics.get(metric)
        if value is not None:
            cell[r.seed] = float(value)
    return table


def _row(level: str, dataset: str, category: str, shot: int, per_metric: dict) -> SummaryRow:
    """per_metric: metric → seed → value; empty when not available."""
    values = {m: mean_std(list(v.values())) if v else None for m, v in per_metric.items()}
    return SummaryRow(level, dataset, category, shot, values)


def summarize(results: Sequence[RunResult], metrics: Sequence[str] = RATIO_METRICS) -> tuple[SummaryRow, ...]:
    """Category rows, then each dataset's average row, per shot, then the overall rows.

    Rows keep the order in which datasets, categories and shots first appear in `results`.
    """
    cells = {m: _category_values(results, m) for m in metrics}
    keys = list(dict.fromkeys((r.dataset, r.category, r.shot) for r in results))
    rows: list[SummaryRow] = []
    for shot in dict.fromkeys(r.shot for r in results):
        dataset_averages: list[dict[str, PerSeed]] = []  # one metric → per-seed dict per dataset
        domains: list[str | None] = []  # each averaged dataset's domain
        for dataset in dict.fromkeys(r.dataset for r in results):
            members = [k for k in keys if k[0] == dataset and k[2] == shot]
            for key in members:
                rows.append(_row("category", dataset, key[1], shot, {m: cells[m][key] for m in metrics}))
            if members:
                averages = {m: _group(cells[m][k] for k in members) for m in metrics}
                dataset_averages.append(averages)
                domains.append(next(r.domain for r in results if r.dataset == dataset))
                rows.append(_row("dataset", dataset, "average", shot, averages))
        if len(set(domains)) > 1:  # the paper reports medical and industrial averages apart (METHOD §12)
            for domain in dict.fromkeys(domains):
                mine = [a for a, d in zip(dataset_averages, domains, strict=True) if d == domain]
                rows.append(
                    _row("domain", str(domain), "average", shot, {m: _group(a[m] for a in mine) for m in metrics})
                )
        overall = {m: _group(a[m] for a in dataset_averages) for m in metrics}
        rows.append(_row("overall", "all", "average", shot, overall))
    return tuple(rows)
