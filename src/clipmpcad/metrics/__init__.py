"""Detection and segmentation metrics (METHOD §11): exact, streamed, in bounded memory.

The evaluation loop creates one MetricsAccumulator per test run, calls add() per batch and
compute() at the end; summary.py averages the results over categories, datasets and seeds.
"""

from .accumulator import Metrics, MetricsAccumulator, MetricsCurves
from .aupro import aupro_from_sorted, label_regions
from .ranking import (
    Curves,
    Ranking,
    curves_from_sorted,
    decision_counts,
    rank_scores,
    ranking_from_sorted,
    report_picks,
    wrongness,
)

__all__ = [
    "Curves",
    "Metrics",
    "MetricsAccumulator",
    "MetricsCurves",
    "Ranking",
    "aupro_from_sorted",
    "curves_from_sorted",
    "decision_counts",
    "label_regions",
    "rank_scores",
    "ranking_from_sorted",
    "report_picks",
    "wrongness",
]
