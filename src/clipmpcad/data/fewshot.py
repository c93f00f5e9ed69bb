"""Shots from MVFA list files or a seeded sampler; their removal from evaluation (METHOD §8, §10).

The support set is k normal and k abnormal images (k ∈ {1, 2, 4, 8, 16}), or k normal images
only in normal-only mode. They come from
- an MVFA list file `<k>-shot.txt` (lines `n-<i>: name …` and `a-<i>: name …`, names looked up
  in the pools by file name), or
- a sampler seeded by the run's seed: normal and abnormal shots are drawn from independent
  streams, so normal-only mode picks the same normal shots as the full mode.
Shots that are also test samples (industrial abnormal shots, custom folders without a test
folder) leave evaluation: `evaluation_samples` drops them and `removed_from_test` counts them.
The shots used are written to the run folder as JSON (`shots_to_json`) and read back exactly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipmpcad.config import SHOT_SOURCES, SHOTS  # SHOT_SOURCES "auto": the list file when there is one
from clipmpcad.data.files import show_names
from clipmpcad.data.sample import CategoryData, Sample
from clipmpcad.errors import ConfigError, DataError

_LINE = re.compile(r"^([na])-(\d+):(.*)$")


@dataclass(frozen=True)
class Shots:
    """The support images of one run."""

    k: int
    seed: int | None  # sampler seed; None for shots read from a list file
    source: str  # "sampler", or "list:<file>#<i>" for lines n-<i>/a-<i> of a list file
    normal: tuple[Sample, ...]  # k normal shots
    abnormal: tuple[Sample, ...]  # k abnormal shots; () in normal-only mode
    removed_from_test: int  # test samples left out of evaluation because they are shots


def check_k(k: int) -> int:
    """`k` if it is one of SHOTS; else a ConfigError."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"shots k must be a positive integer, got {k!r}")
    if k not in SHOTS:
        raise ConfigError(f"shots k={k} is not one of {', '.join(map(str, SHOTS))}")
    return k


def select_shots(
    data: CategoryData,
    k: int,
    seed: int,
    source: str = "auto",
    normal_only: bool = False,
) -> Shots:
    """Shots of a run: from `<shot_lists>/<k>-shot.txt` or from a sampler seeded by `seed`."""
    check_k(k)
    if source not in SHOT_SOURCES:
        raise ConfigError(f"unknown shot source {source!r}; choices: {', '.join(SHOT_SOURCES)}")
    list_file = data.shot_lists / f"{k}-shot.txt" if data.shot_lists else None
    listed = list_file is not None and list_file.is_file()
    if source == "list" and not listed:
        where = list_file or data.root / "fewshot_seed" / data.category / f"{k}-shot.txt"
        raise DataError(f"{where}: shot list file not found (source 'list')")
    if listed and source != "sample":
        return shots_from_list(data, k, list_file, normal_only=normal_only)
    return sample_shots(data, k, seed, normal_only)


def sample_shots(data: CategoryData, k: int, seed: int, normal_only: bool = False) -> Shots:
    """k shots per pool, drawn without replacement by generators seeded with (seed, pool)."""
    normal = _draw(data.normal_pool, k, np.random.default_rng([seed, 0]), "normal", data)
    abnormal = () if normal_only else _draw(data.abnormal_pool, k, np.random.default_rng([seed, 1]), "abnormal", data)
    return _shots(data, k, seed, "sampler", normal, abnormal)


def read_shot_list(path: Path, iterate: int = 0) -> tuple[list[str], list[str] | None]:
    """(normal names, abnormal names or None) of lines `n-<iterate>:` / `a-<iterate>:`."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: tolerate a byte-order mark
    except OSError as exc:
        raise DataError(f"{path}: cannot read shot list ({exc.strerror or exc})") from None
    found: dict[str, list[str]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _LINE.match(line.strip())
        if match is None:
            raise DataError(
                f"{path}:{number}: not a shot-list line 'n-<i>: name …' or 'a-<i>: name …': {line.strip()[:60]!r}"
            )
        if int(match.group(2)) == iterate:
            found[match.group(1)] = match.group(3).split()
    if "n" not in found:
        raise DataError(f"{path}: no line 'n-{iterate}:' of normal shots")
    return found["n"], found.get("a")


def shots_from_list(data: CategoryData, k: int, path: Path, iterate: int = 0, normal_only: bool = False) -> Shots:
    """The shots a list file names, looked up by file name in the category's pools."""
    normal_names, abnormal_names = read_shot_list(path, iterate)
    normal = _named(normal_names, data.normal_pool, k, path, "normal")
    if normal_only:
        abnormal = ()
    elif abnormal_names is None:
        raise DataError(f"{path}: no line 'a-{iterate}:' of abnormal shots")
    else:
        abnormal = _named(abnormal_names, data.abnormal_pool, k, path, "abnormal")
    return _shots(data, k, None, f"list:{path}#{iterate}", normal, abnormal)


def evaluation_samples(data: CategoryData, shots: Shots) -> tuple[Sample, ...]:
    """The test samples that are not shots: what metrics are computed on."""
    used = _files(shots.normal + shots.abnormal)
    return tuple(s for s in data.test if s.image.resolve() not in used)


def _files(samples: tuple[Sample, ...]) -> set[Path]:
    """The images' files, resolved: a shot is the same file however its folder was spelled
    (a symlink, `..`, a test folder option naming the shot pool's folder another way)."""
    return {s.image.resolve() for s in samples}


def shots_to_json(shots: Shots, data: CategoryData) -> dict:
    """A JSON-ready record of the shots, paths relative to the dataset root."""
    return {
        "dataset": data.dataset,
        "category": data.category,
        "k": shots.k,
        "seed": shots.seed,
        "source": shots.source,
        "removed_from_test": shots.removed_from_test,
        "normal": [_relative(s.image, data.root) for s in shots.normal],
        "abnormal": [_relative(s.image, data.root) for s in shots.abnormal],
    }


def read_shots(path: str | Path, data: CategoryData) -> Shots:
    """The Shots recorded in a JSON file (a run's shots.json), to repeat a run exactly."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read shots JSON ({exc})") from None
    return shots_from_json(record, data, where=path)


def shots_from_json(record: dict, data: CategoryData, where: str | Path = "shots") -> Shots:
    """The Shots a `shots_to_json` record names, found again in `data`'s pools."""
    try:
        k, seed, source = int(record["k"]), record["seed"], str(record["source"])
        names = {part: [str(p) for p in record[part]] for part in ("normal", "abnormal")}
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{where}: not a shots record ({type(exc).__name__}: {exc})") from None
    if (record.get("dataset"), record.get("category")) != (data.dataset, data.category):
        raise DataError(
            f"{where}: shots of {record.get('dataset')}/{record.get('category')}, not of {data.dataset}/{data.category}"
        )
    picked = []
    for part, pool in (("normal", data.normal_pool), ("abnormal", data.abnormal_pool)):
        by_path = {_relative(s.image, data.root): s for s in pool}
        missing = [n for n in names[part] if n not in by_path]
        if missing:
            raise DataError(
                f"{where}: {len(missing)} {part} shot(s) are not in the {part} pool "
                f"under {data.root}: {show_names(missing)}"
            )
        picked.append(tuple(by_path[n] for n in names[part]))
    return _shots(data, k, seed, source, picked[0], picked[1])


def _draw(
    pool: tuple[Sample, ...], k: int, rng: np.random.Generator, part: str, data: CategoryData
) -> tuple[Sample, ...]:
    if k > len(pool):
        where = _pool_folders(pool) or f"{data.root} ({data.dataset}/{data.category})"
        none = part == "abnormal" and not pool
        hint = "; without abnormal images, --protocol normal-only trains on synthetic anomalies" if none else ""
        raise DataError(
            f"{where}: k={k} {part} shots asked for but the {part} pool has only {len(pool)} image(s){hint}"
        )
    chosen = np.sort(rng.choice(len(pool), size=k, replace=False))  # pool order
    return tuple(pool[int(i)] for i in chosen)


def _named(names: list[str], pool: tuple[Sample, ...], k: int, path: Path, part: str) -> tuple[Sample, ...]:
    if len(names) != k or len(set(names)) != k:
        raise DataError(
            f"{path}: the {part} line names {len(names)} image(s) "
            f"({len(set(names))} distinct); k={k} needs {k} distinct"
        )
    by_name = {s.image.name: s for s in pool}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise DataError(
            f"{path}: {len(missing)} {part} shot(s) not found in the {part} pool "
            f"({_pool_folders(pool)}): {show_names(missing)}"
        )
    return tuple(by_name[n] for n in names)


def normal_shots_only(shots: Shots, data: CategoryData) -> Shots:
    """`shots` without its abnormal ones, and with the count removed from the test split recounted."""
    return _shots(data, shots.k, shots.seed, shots.source, shots.normal, ())


def _shots(
    data: CategoryData, k: int, seed: int | None, source: str, normal: tuple[Sample, ...], abnormal: tuple[Sample, ...]
) -> Shots:
    used = _files(normal + abnormal)
    removed = sum(1 for s in data.test if s.image.resolve() in used)
    return Shots(k, seed, source, normal, abnormal, removed)


def _pool_folders(pool: tuple[Sample, ...]) -> str:
    """The folders a pool's images lie in ("" for an empty pool)."""
    folders = sorted({str(s.image.parent) for s in pool})
    return ", ".join(folders[:3]) + (f" and {len(folders) - 3} more" if len(folders) > 3 else "")


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()
