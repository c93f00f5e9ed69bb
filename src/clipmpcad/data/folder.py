"""Custom folders (normal, abnormal, masks paired by stem) and image lists for predict (METHOD §10).

A custom dataset is a few folders (a FolderLayout), each relative to a root or absolute:

    normal_dir         normal images: the normal shot pool                     (default "normal")
    abnormal_dir       anomalous images: the abnormal shot pool                (default "abnormal")
    mask_dir           masks of abnormal_dir's images, paired by stem          (optional)
    mask_suffix        mask name = <image stem><suffix>.<any image suffix>; None accepts both
                       "<stem>" and "<stem>_mask"
    test_normal_dir    normal test images                                      (optional)
    test_abnormal_dir  anomalous test images                                   (optional)
    test_mask_dir      masks of test_abnormal_dir's images (default mask_dir)  (optional)

Without a separate test folder, that part of the test split is the shot pool itself: shots
are drawn from it and `fewshot.evaluation_samples` removes them from evaluation. The category
name is free: it names the object in prompts unless `classname` is given.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from clipmpcad.data.files import list_image_files, masked_samples
from clipmpcad.data.imageio import IMAGE_SUFFIXES, is_image_file
from clipmpcad.data.naming import check_domain, generic_prompt_set, plain_name
from clipmpcad.data.sample import ANOMALOUS, NORMAL, CategoryData, Sample
from clipmpcad.errors import ConfigError, DataError

DEFAULT_MASK_SUFFIXES = ("", "_mask")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class FolderLayout:
    """Where a custom dataset's images and masks are: paths relative to the root, or absolute."""

    normal_dir: Path = Path("normal")
    abnormal_dir: Path | None = Path("abnormal")  # None: no anomalous shots (normal-only)
    mask_dir: Path | None = None
    mask_suffix: str | None = None  # None: "<stem>" or "<stem>_mask"
    test_normal_dir: Path | None = None  # None: normal_dir doubles as the normal test images
    test_abnormal_dir: Path | None = None  # None: abnormal_dir doubles as the test anomalies
    test_mask_dir: Path | None = None  # None: mask_dir

    def under(self, root: Path) -> FolderLayout:
        """The same layout with every folder joined to `root` (absolute folders stay)."""

        def join(p: Path | str | None) -> Path | None:
            return None if p is None else root / p

        return FolderLayout(
            normal_dir=root / self.normal_dir,
            abnormal_dir=join(self.abnormal_dir),
            mask_dir=join(self.mask_dir),
            mask_suffix=self.mask_suffix,
            test_normal_dir=join(self.test_normal_dir),
            test_abnormal_dir=join(self.test_abnormal_dir),
            test_mask_dir=join(self.test_mask_dir),
        )


LAYOUT_OPTIONS = tuple(f.name for f in fields(FolderLayout))


def list_categories(root: str | Path) -> list[str]:
    """A custom folder holds one category; it is named after the folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    return [root.name]


def layout_from_options(options: Mapping[str, str | Path | None]) -> FolderLayout:
    """A FolderLayout from option names and values (CLI flags or config pairs); a folder
    option given as "" or None means "none" (e.g. abnormal_dir="" for normal-only)."""
    unknown = sorted(set(options) - set(LAYOUT_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown folder option(s) {', '.join(unknown)}; choices: {', '.join(LAYOUT_OPTIONS)}")
    values: dict[str, str | Path | None] = {}
    for name, value in options.items():
        if name == "mask_suffix":
            values[name] = None if value is None else str(value)
        else:
            values[name] = Path(value) if value not in (None, "") else None
    if values.get("normal_dir", "normal") is None:
        raise ConfigError("folder option normal_dir cannot be empty")
    return FolderLayout(**values)


def load_category(
    root: str | Path,
    category: str,
    layout: FolderLayout | None = None,
    domain: str = "industrial",
    classname: str | None = None,
    **layout_options: str | Path | None,
) -> CategoryData:
    """Samples of a custom folder layout under `root`: `layout`, or FolderLayout fields given
    one by one as `layout_options` (see layout_from_options), or FolderLayout() by default."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if not category.strip():
        raise DataError(f"{root}: a custom folder dataset needs a non-empty category name")
    if layout is not None and layout_options:
        raise ConfigError("give the folder layout either as `layout` or as separate options")
    layout = (layout or layout_from_options(layout_options)).under(root)
    suffixes = DEFAULT_MASK_SUFFIXES if layout.mask_suffix is None else (layout.mask_suffix,)
    normal = _normal(layout.normal_dir)
    abnormal = _anomalous(layout.abnormal_dir, layout.mask_dir, suffixes)
    test_normal = _normal(layout.test_normal_dir) if layout.test_normal_dir else normal
    test_abnormal = abnormal
    if layout.test_abnormal_dir is not None:
        test_abnormal = _anomalous(layout.test_abnormal_dir, layout.test_mask_dir or layout.mask_dir, suffixes)
    anomalies = abnormal + (test_abnormal if layout.test_abnormal_dir else ())
    maskless = [s.image for s in anomalies if s.mask is None]
    if maskless and len(maskless) < len(anomalies):  # masks for some anomalies but not all
        raise DataError(
            f"{maskless[0].parent}: {len(maskless)} anomalous image(s) have no mask "
            "folder while others have one; give mask_dir and test_mask_dir"
        )
    return CategoryData(
        dataset="folder",
        category=category,
        root=root,
        domain=check_domain(domain),
        classname=classname or plain_name(category),
        has_masks=bool(anomalies) and not maskless,
        normal_pool=normal,
        abnormal_pool=abnormal,
        test=test_normal + test_abnormal,
        abnormal_pool_is_test=layout.test_abnormal_dir is None,
        shot_lists=None,
        prompt_set=generic_prompt_set(domain),
    )


def list_images(path_or_glob: str | Path, recursive: bool = False) -> list[Path]:
    """Image files named by a file, a folder (optionally recursive) or a glob pattern, sorted."""
    text = str(path_or_glob)
    if _GLOB_CHARS & set(text) and not Path(text).exists():
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
        images = [p for p in matches if p.is_file() and is_image_file(p)]
        if not images:
            raise DataError(f"{text}: pattern matched no image files ({len(matches)} path(s) matched, none an image)")
        return images
    path = Path(text)
    if path.is_dir():
        return list_image_files(path, recursive=recursive)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.suffix.lower() not in IMAGE_SUFFIXES:  # a file named outright counts even when hidden
        raise DataError(f"{path}: not an image file (suffixes: {', '.join(IMAGE_SUFFIXES)})")
    return [path]


def _normal(folder: Path) -> tuple[Sample, ...]:
    return tuple(Sample(image=p, label=NORMAL) for p in list_image_files(folder, what="normal"))


def _anomalous(folder: Path | None, mask_dir: Path | None, suffixes: tuple[str, ...]) -> tuple[Sample, ...]:
    if folder is None:
        return ()
    images = list_image_files(folder, what="abnormal")
    if mask_dir is None:
        return tuple(Sample(image=p, label=ANOMALOUS, defect="anomaly") for p in images)
    return masked_samples(images, mask_dir, suffixes, "anomaly")
