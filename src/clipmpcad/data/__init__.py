"""The DATASETS registry: dataset name → loader, category lister and description (METHOD §10).

    data = load_category("mvtec", "/data/mvtec_ad", "bottle")     # → CategoryData
    shots = select_shots(data, k=4, seed=111)                      # → Shots
    test = evaluation_samples(data, shots)                         # shots left out

`load_category` checks the dataset name, the root, the category and each option name, and
reads every mask's header to check it has its image's size, so that bad input fails here,
before a run writes anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from clipmpcad.data import bmad, folder, mvtec, visa
from clipmpcad.data.fewshot import Shots, evaluation_samples, select_shots
from clipmpcad.data.files import check_mask_sizes
from clipmpcad.data.sample import ANOMALOUS, NORMAL, CategoryData, Sample
from clipmpcad.errors import ConfigError, DataError

__all__ = [
    "ANOMALOUS",
    "DATASETS",
    "NORMAL",
    "CategoryData",
    "DatasetSpec",
    "Sample",
    "Shots",
    "evaluation_samples",
    "list_categories",
    "load_category",
    "select_shots",
]


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one kind of dataset."""

    load: Callable[..., CategoryData]  # (root, category, **options) → CategoryData
    list_categories: Callable[[Path], list[str]]  # root → category names
    description: str
    options: tuple[str, ...]  # keyword options `load` accepts
    listing_options: tuple[str, ...] = ()  # those of them that `list_categories` takes too


_MVTEC_DESCRIPTIONS = {
    "mvtec": "MVTec-AD layout: train/good, test/<defect>, ground_truth/<defect>",
    "mpdd": "MPDD, in the MVTec-AD layout",
    "btad": "BTAD: MVTec-AD layout with ok/ko folders and .bmp or .png masks",
}

DATASETS: dict[str, DatasetSpec] = {
    "bmad": DatasetSpec(
        bmad.load_category,
        bmad.list_categories,
        "BMAD medical sets, MVFA's <Name>_AD layout or BMAD's original one",
        ("domain", "shot_lists"),
    ),
    **{
        name: DatasetSpec(partial(mvtec.load_category, dataset=name), mvtec.list_categories, text, ("domain",))
        for name, text in _MVTEC_DESCRIPTIONS.items()
    },
    "visa": DatasetSpec(
        visa.load_category,
        visa.list_categories,
        "VisA with its split CSV (split_csv/1cls.csv)",
        ("split_file", "domain"),
        ("split_file",),
    ),
    "folder": DatasetSpec(
        folder.load_category,
        folder.list_categories,
        "custom folders: normal, abnormal, masks paired by stem, test folders",
        ("layout", "domain", "classname", *folder.LAYOUT_OPTIONS),
    ),
}


def load_category(dataset: str, root: str | Path, category: str, /, **options: Any) -> CategoryData:
    """One category of a registered dataset, checked (see the module docstring)."""
    spec = _spec(dataset)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ConfigError(
            f"dataset {dataset!r} takes no option(s) {', '.join(unknown)}; its options: {', '.join(spec.options)}"
        )
    data = spec.load(Path(root), category, **options)
    check_mask_sizes(dict.fromkeys(data.normal_pool + data.abnormal_pool + data.test))  # each sample once
    return data


def list_categories(dataset: str, root: str | Path, /, **options: Any) -> list[str]:
    """Category names of a registered dataset found under `root`; of `options` (those a run
    loads with), the ones that decide the categories are used (VisA's split_file)."""
    spec = _spec(dataset)
    return spec.list_categories(Path(root), **{k: v for k, v in options.items() if k in spec.listing_options})


def _spec(dataset: str) -> DatasetSpec:
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choices: {', '.join(DATASETS)}")
    return DATASETS[dataset]
