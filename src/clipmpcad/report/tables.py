"""Results tables in Markdown, CSV, JSON (and HTML) for one test run and for a benchmark.

Ratios print as percentages with two decimals, benchmark cells as "mean ± std" over seeds (sample
std, see metrics.summary), and "–" where a value does not exist. CSV leaves such cells empty and
splits mean and std into two columns; JSON keeps the raw fractions and null.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..metrics.summary import RATIO_METRICS, MeanStd, RunResult, SummaryRow, summarize

MISSING = "–"
LABELS = {
    "image_auroc": "image AUROC",
    "image_ap": "image AP",
    "image_f1_max": "image F1-max",
    "pixel_auroc": "pixel AUROC",
    "pixel_ap": "pixel AP",
    "pixel_f1_max": "pixel F1-max",
    "pixel_aupro": "pixel AUPRO",
}


def counted(n: int, noun: str) -> str:
    """3, "image" → "3 images"; 1, "image" → "1 image" (nouns that take an s)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def percent(value: float | None) -> str:
    """0.91234 → "91.23"; None → "–"."""
    return MISSING if value is None else f"{100.0 * value:.2f}"


def percent_pm(value: MeanStd | None) -> str:
    """Mean ± std in percent; the std is left out for a single seed."""
    if value is None:
        return MISSING
    if value.std is None:
        return percent(value.mean)
    return f"{percent(value.mean)} ± {percent(value.std)}"


def _with_count(value: MeanStd | None, seeds: int) -> str:
    """percent_pm, and the number of seeds behind it when a seed of the row lacks the value."""
    text = percent_pm(value)
    return text if value is None or value.n == seeds else f"{text} (n={value.n})"


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _html(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


@dataclass(frozen=True)
class RunTable:
    """Metrics of one test run, one row per quantity."""

    metrics: Mapping[str, Any]  # Metrics.to_dict()

    def rows(self) -> list[tuple[str, str]]:
        out = []
        for key, value in self.metrics.items():
            if key in LABELS:
                out.append((LABELS[key] + " (%)", percent(value)))
            elif value is None:
                out.append((key, MISSING))
            elif isinstance(value, float):
                note = " (chosen on the test set)" if key.endswith("f1_threshold") else ""
                out.append((key + note, f"{value:.6g}"))
            elif isinstance(value, Mapping | list | tuple):  # a run record's nested entries (backbone, levels)
                out.append((key, json.dumps(value, ensure_ascii=False, default=str)))
            else:
                out.append((key, str(value)))
        return out

    def to_markdown(self) -> str:
        return _markdown(("metric", "value"), self.rows())

    def to_html(self) -> str:
        return _html(("metric", "value"), self.rows())

    def to_csv(self) -> str:
        """Raw values (fractions, not percent); empty cells where undefined."""
        values = [(k, "" if v is None else v) for k, v in self.metrics.items()]
        return _csv(("metric", "value"), values)

    def to_json(self) -> str:
        return json.dumps(dict(self.metrics), indent=2)


def run_table(metrics: Mapping[str, Any]) -> RunTable:
    """Table of one run's Metrics.to_dict()."""
    return RunTable(metrics=dict(metrics))


@dataclass(frozen=True)
class BenchmarkTable:
    """Category rows, per-dataset averages and the overall average, per shot."""

    rows: tuple[SummaryRow, ...]
    metrics: tuple[str, ...]

    def _key_cells(self, row: SummaryRow) -> list[str]:
        seeds = max((v.n for v in row.values.values() if v is not None), default=0)
        return [row.dataset, row.category, str(row.shot), str(seeds)]

    def to_markdown(self) -> str:
        """One row per SummaryRow; a value over fewer seeds than its row's says so: "(n=1)"."""
        header = ["dataset", "category", "shot", "seeds", *(LABELS.get(m, m) for m in self.metrics)]
        rows = []
        for r in self.rows:
            keys = self._key_cells(r)
            seeds = int(keys[-1])
            rows.append(keys + [_with_count(r.values[m], seeds) for m in self.metrics])
        return _markdown(header, rows)

    def to_csv(self) -> str:
        """Percent with two decimals, mean and std in separate columns, empty where missing."""
        header = ["dataset", "category", "shot", "seeds", "level"]
        for m in self.metrics:
            header += [f"{m}_mean", f"{m}_std"]
        rows = []
        for r in self.rows:
            cells = [*self._key_cells(r), r.level]
            for m in self.metrics:
                value = r.values[m]
                cells += [
                    "" if value is None else percent(value.mean),
                    "" if value is None or value.std is None else percent(value.std),
                ]
            rows.append(cells)
        return _csv(header, rows)

    def to_json(self) -> str:
        """Raw fractions: {"mean", "std", "n"} per metric, null where missing."""
        records = []
        for r in self.rows:
            values = {m: None if v is None else {"mean": v.mean, "std": v.std, "n": v.n} for m, v in r.values.items()}
            record = {"level": r.level, "dataset": r.dataset, "category": r.category}
            records.append({**record, "shot": r.shot, "metrics": values})
        return json.dumps(records, indent=2)


def benchmark_table(results: Sequence[RunResult], metrics: Sequence[str] = RATIO_METRICS) -> BenchmarkTable:
    """Summarise benchmark cells (see metrics.summary.summarize) into a printable table."""
    return BenchmarkTable(rows=summarize(results, metrics), metrics=tuple(metrics))
