"""Figures, the offline HTML report and results tables (METHOD §11)."""

from .figures import (
    anomaly_map_to_png16,
    draw_contour,
    heatmap_overlay,
    png16_to_anomaly_map,
    roc_pr_figure,
    save_png,
)
from .html import Case, write_report
from .tables import BenchmarkTable, RunTable, benchmark_table, run_table

__all__ = [
    "BenchmarkTable",
    "Case",
    "RunTable",
    "anomaly_map_to_png16",
    "benchmark_table",
    "draw_contour",
    "heatmap_overlay",
    "png16_to_anomaly_map",
    "roc_pr_figure",
    "run_table",
    "save_png",
    "write_report",
]
