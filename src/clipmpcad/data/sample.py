"""What every dataset loader returns: samples of one category and where shots come from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

NORMAL, ANOMALOUS = 0, 1


@dataclass(frozen=True)
class Sample:
    """One image on disk with its label and, where the dataset has them, its pixel mask."""

    image: Path
    label: int  # NORMAL (0) or ANOMALOUS (1)
    mask: Path | None = None  # pixel mask of an anomalous image; None for normal images
    defect: str = "good"  # defect type, "good" for normal images


@dataclass(frozen=True)
class CategoryData:
    """One category of one dataset, as a loader found it on disk (METHOD §10)."""

    dataset: str  # registry name, e.g. "mvtec", "bmad"
    category: str  # e.g. "bottle", "Brain"
    root: Path  # the dataset root the category was read from
    domain: str  # "medical" or "industrial": sets learning rate and generic prompts
    classname: str  # object name put into prompts (METHOD §4), e.g. "metal nut"
    has_masks: bool  # pixel masks exist: segmentation metrics and the seg branch apply
    normal_pool: tuple[Sample, ...]  # where normal shots are drawn from
    abnormal_pool: tuple[Sample, ...]  # where abnormal shots are drawn from
    test: tuple[Sample, ...]  # evaluation split, before removing shots drawn from it
    abnormal_pool_is_test: bool  # abnormal shots come from `test` and must leave evaluation
    shot_lists: Path | None = None  # folder of MVFA list files `<k>-shot.txt`, if any
    prompt_set: str = "generic_industrial"  # name of the P-Prompt set for this category
