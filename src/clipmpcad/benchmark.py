"""Benchmark suites: categories × shots × seeds of one or more datasets, resumable, summarised
into the paper's tables (METHOD §11–§12; the averaging itself lives in metrics.summary).

    <out>/suite.json                                  base config, spec and cells of the last run
    <out>/<dataset>/<category>/<k>-shot/seed-<s>/     one run folder per cell (see runs.py)
    <out>/benchmark.{md,csv,json}                     the table, from the cells' metrics.json

A cell is reused when its folder holds a config.json equal to the requested one (runtime-only
keys aside) and a metrics.json of the same cell; it is only tested again when metrics.json is
missing or stale, and trained when its folder is absent or empty. A saved config that differs
is an error unless `overwrite`; every cell is checked before any training starts. So is a
suite.json of another suite (datasets and roots, categories, shots or seeds): suite.json is
rewritten only once every check has passed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from . import experiment
from .atomic import remove_leftovers, sole_writer, write_json, write_text
from .config import SEED_LIMIT, SHOTS, RunConfig, flatten, load_config
from .data import list_categories
from .errors import ConfigError, DataError
from .metrics.summary import RATIO_METRICS, RunResult
from .protocols import RANDOM_WEIGHTS_NOTE, get_protocol
from .protocols import TEST_SELECTED_NOTE as _TEST_SELECTED_NOTE
from .report.tables import LABELS, BenchmarkTable, benchmark_table, percent
from .runs import read_json
from .weights import concrete_weights, is_random

SUITE_FORMAT = 1
CELL_KEYS = ("data.dataset", "data.root", "data.category", "data.shot", "seed")
# Keys that change speed, memory or where files live, not results: a resumed suite may change them.
RUNTIME_KEYS = (
    "device",
    "eval.workers",
    "eval.batch_size",
    "train.micro_batch",
    "bank.block_size",
    "backbone.cache_dir",
    "backbone.download",
)
RANDOM_NOTE = f"**{RANDOM_WEIGHTS_NOTE}**"
TEST_SELECTED_NOTE = f"**{_TEST_SELECTED_NOTE}**"


@dataclass(frozen=True)
class SuiteSpec:
    """What a suite covers; every combination of its members is one cell."""

    datasets: tuple[tuple[str, str], ...]  # (registry name, root); one root per name
    categories: tuple[str, ...] | None = None  # None: every category found under each root
    shots: tuple[int, ...] = (4,)
    seeds: tuple[int, ...] = (111,)

    def __post_init__(self) -> None:
        names = [name for name, _ in self.datasets]
        _check(bool(names), "a benchmark needs at least one dataset, given as NAME=ROOT")
        _check(len(set(names)) == len(names), f"datasets {names} name one more than once; one root per dataset name")
        _check(self.categories is None or len(self.categories) > 0, "categories: give at least one, or None for all")
        _check(len(self.shots) > 0 and set(self.shots) <= set(SHOTS), f"shots must be among {SHOTS}, got {self.shots}")
        _check(len(self.seeds) > 0, "a benchmark needs at least one seed")
        _check(all(0 <= s < SEED_LIMIT for s in self.seeds), f"seeds must be in [0, 2**63), got {list(self.seeds)}")
        for label, values in (("shots", self.shots), ("seeds", self.seeds), ("categories", self.categories or ())):
            _check(len(set(values)) == len(values), f"{label} {list(values)} repeat a value")


@dataclass(frozen=True)
class Cell:
    """One run of a suite: a category of a dataset at one shot count and seed."""

    dataset: str
    root: str  # absolute dataset root
    category: str
    shot: int
    seed: int

    def run_dir(self, out: Path) -> Path:
        return Path(out) / self.dataset / self.category / f"{self.shot}-shot" / f"seed-{self.seed}"

    def overrides(self) -> dict[str, Any]:
        return dict(zip(CELL_KEYS, (self.dataset, self.root, self.category, self.shot, self.seed), strict=True))

    def __str__(self) -> str:
        return f"{self.dataset}/{self.category} {self.shot}-shot seed {self.seed}"


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    run_dir: Path
    status: str  # "reused", "tested" (metrics only) or "trained"
    record: Mapping[str, Any]  # the cell's metrics.json


@dataclass(frozen=True)
class BenchmarkResult:
    out: Path
    cells: tuple[CellResult, ...]  # in plan order
    table: BenchmarkTable
    notes: tuple[str, ...]  # the lines above the Markdown table


def parse_dataset(text: str) -> tuple[str, str]:
    """ "bmad=/data/BMAD" → ("bmad", "/data/BMAD"), for the CLI's --suite items."""
    name, sep, root = text.partition("=")
    if not sep or not name or not root:
        raise ConfigError(f"--suite {text!r}: write NAME=ROOT, e.g. bmad=/data/BMAD")
    return name, root


def plan(spec: SuiteSpec, options: Mapping[str, Any] | None = None) -> list[Cell]:
    """The suite's cells: dataset, category, shot, seed order. Unknown names fail here.

    options: the loader options the cells run with (RunConfig.data.options); those that decide a
    dataset's categories (VisA's split_file) decide them here too."""
    found = {name: list_categories(name, root, **(options or {})) for name, root in spec.datasets}
    if spec.categories is not None:
        missing = [c for c in spec.categories if not any(c in names for names in found.values())]
        if missing:
            have = "; ".join(f"{name}: {', '.join(names)}" for name, names in found.items())
            raise DataError(
                f"no dataset has the categor{'ies' if len(missing) > 1 else 'y'} {', '.join(missing)}; found {have}"
            )
    cells = []
    for name, root in spec.datasets:
        chosen = found[name] if spec.categories is None else [c for c in spec.categories if c in found[name]]
        if not chosen:
            raise DataError(
                f"dataset {name} at {root} has none of the categories {', '.join(spec.categories or ())}; "
                f"it has {', '.join(found[name])}; drop it or name some of its categories"
            )
        root_path = str(Path(root).resolve())
        cells += [Cell(name, root_path, c, k, s) for c in chosen for k in spec.shots for s in spec.seeds]
    return cells


def run_benchmark(
    base: RunConfig,
    spec: SuiteSpec,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    report: bool = False,
    on_cell: Callable[[CellResult], None] | None = None,
) -> BenchmarkResult:
    """Run (or resume) every cell of `spec` with `base`'s settings; write suite.json and the tables.

    Args:
        overwrite: redo cells whose folder holds other settings (else an error); finished cells
            with the requested settings are always reused.
        report: write each cell's HTML report as well.
        on_cell: called with each cell's result as it finishes.
    """
    out = Path(out)
    _check(base.data.shot_file is None, "a benchmark picks the shots of each cell; unset data.shot_file")
    training_free = base.protocol == "zero-shot"  # it uses no shots: every shot count is the same run
    _check(
        not training_free or len(spec.shots) == 1,
        f"the zero-shot protocol uses no shots, so --shots {' '.join(map(str, spec.shots))} would repeat one run; "
        "give one shot count",
    )
    cells = plan(spec, dict(base.data.options))
    configs = [base.with_overrides(cell.overrides()) for cell in cells]
    _check_suite_folder(out, base, spec, cells, overwrite)
    for cell in cells:  # what a killed run left (a folder it was replacing comes back) before deciding
        remove_leftovers(cell.run_dir(out))
    actions = [_action(cell.run_dir(out), cfg, overwrite, report) for cell, cfg in zip(cells, configs, strict=True)]
    _check_data(configs, actions)
    for name in TABLE_FILES:  # rebuilt at the end: an interrupted run leaves none that contradict suite.json
        (out / name).unlink(missing_ok=True)
    write_json(out / "suite.json", _suite_record(base, spec, cells, out))
    results = []
    for cell, cfg, action in tqdm(
        list(zip(cells, configs, actions, strict=True)), desc="benchmark", unit="cell", disable=not progress
    ):
        result = _run_cell(cell, cfg, action, out, report)
        results.append(result)
        if progress:
            tqdm.write(_cell_line(result))
        if on_cell is not None:
            on_cell(result)
    table, notes = summarize_records([r.record for r in results], configs)
    write_tables(out, table, notes, [r.run_dir for r in results])
    return BenchmarkResult(out, tuple(results), table, notes)


def summarize_records(
    records: Sequence[Mapping[str, Any]], configs: Sequence[RunConfig]
) -> tuple[BenchmarkTable, tuple[str, ...]]:
    """The table of the cells' metrics records, and the notes that must stand above it."""
    results = [
        RunResult(
            r["dataset"], r["category"], r["shot"], r["seed"], {m: r.get(m) for m in RATIO_METRICS}, r.get("domain")
        )
        for r in records
    ]
    return benchmark_table(results), suite_notes(records, configs)


def suite_notes(records: Sequence[Mapping[str, Any]], configs: Sequence[RunConfig]) -> tuple[str, ...]:
    """Protocol, backbone, bank and averaging, with the flags that change how to read the numbers."""
    first, cfg = records[0], configs[0]
    protocol = get_protocol(first["protocol"])
    backbone = first["backbone"]
    seeds = sorted({r["seed"] for r in records})
    shots = sorted({r["shot"] for r in records})
    notes = [
        f"{len(records)} cells: datasets {', '.join(dict.fromkeys(r['dataset'] for r in records))}; "
        f"shots {', '.join(map(str, shots))}; seeds {', '.join(map(str, seeds))}",
        f"protocol: {protocol.name} — {protocol.description}",
    ]
    if any(r.get("test_selected") for r in records):
        notes.append(TEST_SELECTED_NOTE)
    computed = sorted({f"{r['precision']} on {r['device']}" for r in records if r.get("precision")})
    notes.append(
        f"backbone: {backbone['model']}, weights {backbone['weights']}, image size {backbone['image_size']}"
        + (f"; computed in {', '.join(computed)}" if computed else "")
    )
    if any(r["backbone"].get("random") for r in records):
        notes.append(RANDOM_NOTE)
    coreset = cfg.bank.coreset
    notes.append(
        "memory bank: exact (bank.coreset = 1.0)"
        if coreset == 1.0
        else f"**memory bank: APPROXIMATE — greedy coreset keeps {coreset:.0%} of the bank tokens "
        f"(bank.coreset = {coreset}); the exact bank may give other numbers**"
    )
    no_masks = sorted({f"{r['dataset']}/{r['category']}" for r in records if r.get("pixel_resolution") is None})
    sizes = sorted({r["pixel_resolution"] for r in records if r.get("pixel_resolution") is not None})  # "HxW"
    notes.append(
        "averages: over a dataset's categories, then over datasets; mean ± sample std (ddof=1) over seeds, in %"
    )
    notes.append(
        "F1-max: the best F1 over all thresholds, picked on the test set (separability, not an operating point)"
    )
    missing = missing_values(records)
    if missing:
        notes.append(
            "**missing values, left out of the averages** (a value over fewer seeds than its row says "
            f"so, e.g. (n=1); a group averages the seeds all its members have): {'; '.join(missing)}"
        )
    uneven = uneven_seeds(records)
    if uneven:
        notes.append(
            "**categories run with different seeds**: a group averages only the seeds all its members have "
            f'("–" where they share none): {"; ".join(uneven)}'
        )
    if sizes:
        without = f" (no masks: {', '.join(no_masks)})" if no_masks else ""
        notes.append(
            f"pixel metrics at the {cfg.eval.pixel_resolution} resolution ({', '.join(sizes)}); pixel "
            f"averages cover only the categories with masks{without}"
        )
    return tuple(notes)


def missing_values(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Cells whose metric is None although it exists elsewhere in the suite (no anomalous test image
    left, say); pixel metrics of a category without masks are absent by design, not missing."""
    present = {m for r in records for m in RATIO_METRICS if r.get(m) is not None}
    found = []
    for r in records:
        gaps = [
            LABELS.get(m, m)
            for m in RATIO_METRICS
            if m in present and r.get(m) is None and not (m.startswith("pixel_") and r.get("pixel_resolution") is None)
        ]
        if gaps:
            found.append(f"{r['dataset']}/{r['category']} {r['shot']}-shot seed {r['seed']}: {', '.join(gaps)}")
    return found


def uneven_seeds(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Datasets (per shot) whose categories were not all run with the same seeds."""
    seeds: dict[tuple, dict[str, set[int]]] = {}
    for r in records:
        seeds.setdefault((r["dataset"], r["shot"]), {}).setdefault(r["category"], set()).add(r["seed"])
    found = []
    for (dataset, shot), per_category in seeds.items():
        if len({frozenset(s) for s in per_category.values()}) > 1:
            listed = ", ".join(f"{c} {' '.join(map(str, sorted(s)))}" for c, s in per_category.items())
            found.append(f"{dataset} {shot}-shot: seeds {listed}")
    return found


TABLE_FILES = ("benchmark.md", "benchmark.csv", "benchmark.json")


def write_tables(
    out: str | Path, table: BenchmarkTable, notes: Sequence[str], run_dirs: Sequence[Path]
) -> tuple[Path, ...]:
    """benchmark.md (notes, then the table), benchmark.csv and benchmark.json, each atomically."""
    out = Path(out)
    markdown = "# ClipMPCAD benchmark\n\n" + "".join(f"- {n}\n" for n in notes) + "\n" + table.to_markdown()
    cells = [str(Path(d).relative_to(out)) for d in run_dirs]
    document = {"notes": list(notes), "cells": cells, "rows": json.loads(table.to_json())}
    md, csv, js = (out / name for name in TABLE_FILES)
    return write_text(md, markdown), write_text(csv, table.to_csv()), write_json(js, document)


def summarize_folder(out: str | Path) -> BenchmarkTable:
    """Rebuild the table from the metrics.json files found under a suite folder, without running."""
    return _folder_summary(Path(out))[0]


def rebuild_tables(out: str | Path) -> BenchmarkTable:
    """Write benchmark.{md,csv,json} again from the finished cells found under `out`."""
    table, notes, run_dirs = _folder_summary(Path(out))
    write_tables(out, table, notes, run_dirs)
    return table


def config_differences(
    saved: RunConfig, requested: RunConfig, ignore: Sequence[str] = RUNTIME_KEYS
) -> dict[str, tuple[Any, Any]]:
    """Dotted key → (saved, requested) for every setting that differs, `ignore` aside."""
    a, b = _comparable(saved, ignore), _comparable(requested, ignore)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _comparable(cfg: RunConfig, ignore: Sequence[str]) -> dict[str, Any]:
    flat = flatten(cfg.to_dict())
    if flat.get("data.root"):
        flat["data.root"] = str(Path(flat["data.root"]).resolve())
    flat["backbone.weights"] = concrete_weights(cfg.backbone.model, cfg.backbone.weights)  # "auto" is "openai", ...
    return {k: v for k, v in flat.items() if k not in ignore}


def _describe(differences: Mapping[str, tuple[Any, Any]]) -> str:
    return "; ".join(f"{k}: saved {a!r}, requested {b!r}" for k, (a, b) in differences.items())


def _check_suite_folder(out: Path, base: RunConfig, spec: SuiteSpec, cells: Sequence[Cell], overwrite: bool) -> None:
    """An earlier suite in `out` must have had the same settings, and its cells must be among the
    requested ones (a suite grows by more seeds, shots or categories): cells of two settings never
    mix, and suite.json never describes a suite other than the tables' one."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"benchmark folder {out} exists and is not a folder; choose another --out")
    suite = out / "suite.json"
    if not suite.is_file():
        if out.is_dir() and any(out.iterdir()) and not overwrite:
            raise ConfigError(f"{out} is not empty and holds no suite.json; choose another --out or pass --overwrite")
        return
    try:
        record = read_json(suite)
        saved = RunConfig.from_dict(record["base_config"])
        saved_members = _suite_members(record["spec"]["datasets"], record["cells"])
    except (ConfigError, KeyError, TypeError, ValueError, IndexError) as error:
        raise ConfigError(f"{suite} cannot be read ({error}); choose another --out") from None
    differences = config_differences(saved, base, (*RUNTIME_KEYS, *CELL_KEYS))
    members = _suite_members(spec.datasets, [str(cell.run_dir(Path())) for cell in cells])
    # more datasets, categories, shots or seeds of the same settings: the suite grows by the new cells
    dropped = {k: (saved_members[k], v) for k, v in members.items() if not set(saved_members[k]) <= set(v)}
    if (differences or dropped) and not overwrite:
        growing = "" if differences else "a suite may grow, but not drop cells; "
        raise ConfigError(
            f"{out} holds a suite run with other settings ({_describe({**differences, **dropped})}); {growing}"
            "pass --overwrite to make it this suite (cells already run with these settings are kept), "
            "or choose another --out"
        )


def _suite_members(datasets: Sequence[Sequence[str]], cells: Sequence[str]) -> dict[str, list[Any]]:
    """What a suite covers, order aside: its datasets with their roots, categories, shots and
    seeds, from (name, root) pairs and the cells' relative folders."""
    parts = [Path(cell).parts for cell in cells]  # (<dataset>, <category>, <k>-shot, seed-<s>)
    return {
        "datasets": sorted(f"{name}={Path(root).resolve()}" for name, root in datasets),
        "categories": sorted({f"{p[0]}/{p[1]}" for p in parts}),
        "shots": sorted({int(p[2].removesuffix("-shot")) for p in parts}),
        "seeds": sorted({int(p[3].removeprefix("seed-")) for p in parts}),
    }


def _action(run_dir: Path, cfg: RunConfig, overwrite: bool, report: bool = False) -> str:
    """What a cell needs: "reuse", "test" (metrics, and the report when asked for and missing) or
    "train"; conflicts fail here."""
    if not run_dir.is_dir() or not any(p for p in run_dir.iterdir() if not p.name.startswith(".")):
        return "train"
    redo = "pass --overwrite to redo it, or choose another --out"
    if not (run_dir / "config.json").is_file() or not (run_dir / "model.pt").is_file():
        if overwrite:
            return "train"
        raise ConfigError(f"{run_dir} holds files but is not a finished run folder (config.json, model.pt); {redo}")
    try:
        differences = config_differences(load_config(run_dir / "config.json"), cfg)
    except ConfigError as error:
        if overwrite:
            return "train"
        raise ConfigError(f"{error}; {redo}") from None
    if differences:
        if overwrite:
            return "train"
        raise ConfigError(f"{run_dir} was run with other settings ({_describe(differences)}); {redo}")
    reported = not report or (run_dir / "report.html").is_file()
    return "reuse" if _finished(run_dir, cfg) and reported else "test"


def _finished(run_dir: Path, cfg: RunConfig) -> bool:
    """metrics.json exists, parses, and is the test of this cell with these settings."""
    path = run_dir / "metrics.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    expected = {
        "dataset": cfg.data.dataset,
        "category": cfg.data.category,
        "shot": cfg.data.shot,
        "seed": cfg.seed,
        "protocol": cfg.protocol,
    }
    return isinstance(record, dict) and all(record.get(k) == v for k, v in expected.items())


def _check_data(configs: Sequence[RunConfig], actions: Sequence[str]) -> None:
    """Load one category per dataset still to run, so that bad roots or options fail before any work."""
    seen = set()
    for cfg, action in zip(configs, actions, strict=True):
        if action != "reuse" and cfg.data.dataset not in seen:
            seen.add(cfg.data.dataset)
            experiment.load_data(cfg)


def _suite_record(base: RunConfig, spec: SuiteSpec, cells: Sequence[Cell], out: Path) -> dict[str, Any]:
    protocol = get_protocol(base.protocol)
    return {
        "format": SUITE_FORMAT,
        "base_config": base.to_dict(),
        "spec": {
            "datasets": [[name, str(Path(root).resolve())] for name, root in spec.datasets],
            "categories": spec.categories and list(spec.categories),
            "shots": list(spec.shots),
            "seeds": list(spec.seeds),
        },
        "protocol": protocol.name,
        "test_selected": protocol.test_selected,
        "backbone": {
            "model": base.backbone.model,
            "weights": base.backbone.weights,
            "random": is_random(base.backbone.model, base.backbone.weights),
            "image_size": base.backbone.image_size,
        },
        "coreset": base.bank.coreset,
        "cells": [str(cell.run_dir(out).relative_to(out)) for cell in cells],
    }


def _run_cell(cell: Cell, cfg: RunConfig, action: str, out: Path, report: bool) -> CellResult:
    run_dir = cell.run_dir(out)
    with sole_writer(run_dir):  # trained and tested under one hold: no other writer between the two
        if action == "train":  # the folder is absent, empty, or the user asked to replace it
            run = experiment.train_model(cfg, run_dir, overwrite=True, progress=False)
            record = experiment.evaluate_run(run, progress=False, report=report)  # no second backbone load
        elif action == "reuse":
            record = read_json(run_dir / "metrics.json")
        else:
            record = experiment.test_run(run_dir, device=cfg.device, progress=False, report=report)
    status = {"train": "trained", "test": "tested", "reuse": "reused"}[action]
    return CellResult(cell, run_dir, status, record)


def _cell_line(result: CellResult) -> str:
    r = result.record
    return (
        f"{result.cell}: image AUROC {percent(r.get('image_auroc'))}, "
        f"pixel AUROC {percent(r.get('pixel_auroc'))} ({result.status})"
    )


def _folder_summary(out: Path) -> tuple[BenchmarkTable, tuple[str, ...], list[Path]]:
    """Finished cells under `out`, in the order of suite.json's plan, checked to share one setting."""
    found = sorted(p.parent for p in out.glob("*/*/*-shot/seed-*/metrics.json"))
    if not found:
        raise DataError(
            f"{out}: no finished cells (<dataset>/<category>/<k>-shot/seed-<s>/metrics.json); "
            "run `clipmpcad benchmark` first"
        )
    suite = out / "suite.json"
    order = {name: i for i, name in enumerate(read_json(suite).get("cells", []))} if suite.is_file() else {}
    if order:  # the suite's own cells: a folder left by an earlier, larger suite is not one of them
        found = [d for d in found if str(d.relative_to(out)) in order]
    found.sort(key=lambda d: (order.get(str(d.relative_to(out)), len(order)), str(d)))
    configs = [load_config(d / "config.json") for d in found]
    for run_dir, cfg in zip(found[1:], configs[1:], strict=True):
        differences = config_differences(configs[0], cfg, (*RUNTIME_KEYS, *CELL_KEYS))
        if differences:
            raise ConfigError(
                f"{found[0]} and {run_dir} were run with different settings ({_describe(differences)}); "
                "remove or redo the cells that differ before summarising"
            )
    table, notes = summarize_records([read_json(d / "metrics.json") for d in found], configs)
    return table, notes, found


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
