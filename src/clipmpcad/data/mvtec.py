"""MVTec-AD layout and its relatives MPDD and BTAD (METHOD §10).

    <root>/<category>/train/good/*                       normal images: the normal shot pool
    <root>/<category>/test/good/*                        normal test images
    <root>/<category>/test/<defect>/*                    anomalous test images
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png

BTAD uses `ok` for good and `ko` for its one defect folder, and names its masks `<stem>.png`
or `<stem>.bmp`; both mask names (with and without `_mask`, any image suffix) are accepted for
every flavour. Masks are paired by stem. A category without a `ground_truth` folder is
classification-only; with one, every anomalous image must have its mask.

Abnormal shots come from the test anomalies (abnormal_pool_is_test=True): the few-shot step
removes them from evaluation (METHOD §10; the published code left them in).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from clipmpcad.data.files import find_child, find_dir, list_image_files, masked_samples, show_names
from clipmpcad.data.imageio import is_image_file
from clipmpcad.data.naming import check_domain, industrial_names
from clipmpcad.data.sample import ANOMALOUS, NORMAL, CategoryData, Sample
from clipmpcad.errors import DataError

NORMAL_FOLDERS = {"mvtec": ("good",), "mpdd": ("good",), "btad": ("ok", "good")}
MASK_SUFFIXES = ("_mask", "")
NO_CATEGORY = "(no folder with train/ and test/)"  # why a root lists no category


def list_categories(root: str | Path) -> list[str]:
    """Folders under `root` that have both train/ and test/, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    # split folders in any case (Train/, TEST/ from other tools), as find_dir matches them
    return sorted(p.name for p in root.iterdir() if p.is_dir() and find_dir(p, "train") and find_dir(p, "test"))


def root_hint(root: Path, categories: list[str]) -> str:
    """Where the categories are when --root missed them by one level (else "")."""
    if find_dir(root, "train") and find_dir(root, "test"):
        return f"; {root} is itself a category folder: use --root {root.parent} --category {root.name}"
    if categories:
        return ""
    with contextlib.suppress(OSError):  # an unreadable folder below: no hint, the error stands
        for child in sorted(p for p in root.iterdir() if p.is_dir()):
            found = list_categories(child)
            if found:
                return f"; {child} holds categories ({', '.join(found[:5])}): use --root {child}"
    return ""


def load_category(root: str | Path, category: str, dataset: str = "mvtec", domain: str = "industrial") -> CategoryData:
    """Samples of one category of an MVTec-layout dataset ("mvtec", "mpdd" or "btad")."""
    root = Path(root)
    if dataset not in NORMAL_FOLDERS:
        raise DataError(f"{dataset!r} is not an MVTec-layout dataset; choices: {', '.join(NORMAL_FOLDERS)}")
    categories = list_categories(root)
    if category not in categories:
        found = ", ".join(categories) or "none " + NO_CATEGORY
        raise DataError(f"{root}: no {dataset} category {category!r}; found: {found}{root_hint(root, categories)}")
    folder = root / category
    normal_names = NORMAL_FOLDERS[dataset]
    ground_truth = find_child(folder, "ground_truth")
    has_masks = ground_truth is not None and ground_truth.is_dir()
    test_dir, train_dir = find_dir(folder, "test"), find_dir(folder, "train")
    assert test_dir is not None and train_dir is not None  # list_categories found both
    test = _normal(test_dir, normal_names)
    for defect_dir in _defect_dirs(test_dir, normal_names):
        test += _anomalous(defect_dir, ground_truth if has_masks else None)
    classname, prompt_set = industrial_names(dataset, category, check_domain(domain))
    return CategoryData(
        dataset=dataset,
        category=category,
        root=root,
        domain=domain,
        classname=classname,
        has_masks=has_masks,
        normal_pool=_normal(train_dir, normal_names),
        abnormal_pool=tuple(s for s in test if s.label == ANOMALOUS),
        test=test,
        abnormal_pool_is_test=True,
        shot_lists=None,
        prompt_set=prompt_set,
    )


def _normal(split: Path, names: tuple[str, ...]) -> tuple[Sample, ...]:
    loose = sorted(p.name for p in split.iterdir() if p.is_file() and is_image_file(p))
    if loose:  # MVTec keeps every image in a class folder: these would be silently left out
        raise DataError(
            f"{split}: {len(loose)} image(s) lie outside its class folders ({show_names(loose)}); "
            f"move them into {split.name}/{names[0]} or {split.name}/<defect>"
        )
    good = find_dir(split, *names)
    if good is None:
        raise DataError(f"{split}: normal image folder not found (looked for {' or '.join(names)})")
    return tuple(Sample(image=p, label=NORMAL) for p in list_image_files(good))


def _defect_dirs(test: Path, normal_names: tuple[str, ...]) -> list[Path]:
    skip = {n.lower() for n in normal_names}
    return sorted(
        p for p in test.iterdir() if p.is_dir() and p.name.lower() not in skip and not p.name.startswith(".")
    )  # hidden folders (.ipynb_checkpoints, ...) are not defect classes


def _anomalous(defect_dir: Path, ground_truth: Path | None) -> tuple[Sample, ...]:
    images = list_image_files(defect_dir)
    defect = defect_dir.name
    if ground_truth is None:
        return tuple(Sample(image=p, label=ANOMALOUS, defect=defect) for p in images)
    mask_dir = find_dir(ground_truth, defect)
    if mask_dir is None:
        raise DataError(
            f"{ground_truth / defect}: mask folder not found for the {len(images)} "
            f"anomalous images of {defect_dir}: {show_names([p.name for p in images])}"
        )
    return masked_samples(images, mask_dir, MASK_SUFFIXES, defect)
