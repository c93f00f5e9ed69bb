"""Finding image files in folders and pairing masks with images by file stem (METHOD §10).

Masks are paired by name, never by sorted position (STYLE (c), "Pairing by position"): an
image `007.png` gets the mask whose stem, less an accepted suffix, is `007`.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from clipmpcad.data.imageio import IMAGE_SUFFIXES, image_size, is_image_file
from clipmpcad.data.sample import ANOMALOUS, Sample
from clipmpcad.errors import DataError

_SHOW = 8  # names shown in an error before "… and N more"


def list_image_files(folder: Path, *, recursive: bool = False, what: str = "image") -> list[Path]:
    """Image files of `folder`, sorted by path; a missing or empty folder is a DataError.

    Hidden files and folders are passed over (and everything under a hidden folder); anything
    else left out (files of other formats, sub-folders when not recursive) is named in a warning.
    """
    if not folder.is_dir():
        problem = "is a file, not a folder" if folder.exists() else "not found"
        raise DataError(f"{folder}: {what} folder {problem}")
    entries = [p for p in (folder.rglob("*") if recursive else folder.iterdir()) if not _hidden(p, folder)]
    plain = [p for p in entries if p.is_file()]  # each entry looked at once: folders may hold thousands
    images = {p for p in plain if is_image_file(p)}
    files = sorted(images)
    others = sorted(
        p.relative_to(folder).as_posix() for p in plain if p not in images and p.name.lower() not in _SYSTEM_FILES
    )
    folders = [] if recursive else sorted(p.name + "/" for p in entries if p.is_dir())
    if not files:
        held = others + folders
        found = f"; it holds {show_names(held)}" if held else ""
        deeper = " (sub-folders are not searched here; predict searches them with --recursive)" if folders else ""
        raise DataError(f"{folder}: {what} folder has no image files ({', '.join(IMAGE_SUFFIXES)}){found}{deeper}")
    links = sorted(
        p.relative_to(folder).as_posix() + "/" for p in entries if recursive and p.is_symlink() and p.is_dir()
    )
    left_out = [f"{len(others)} file(s) of no supported image format ({show_names(others)})"] if others else []
    if folders:
        left_out.append(f"{len(folders)} sub-folder(s), which are not searched ({show_names(folders)})")
    if links:
        left_out.append(f"{len(links)} linked sub-folder(s), which are not followed ({show_names(links)})")
    if left_out:
        warnings.warn(f"{folder}: left out {' and '.join(left_out)}", stacklevel=2)
    return files


_SYSTEM_FILES = {"thumbs.db", "desktop.ini"}  # written by file browsers, never data


def _hidden(path: Path, folder: Path) -> bool:
    """A dot-name at or above `path` below `folder` (.DS_Store, .ipynb_checkpoints/...)."""
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def find_child(folder: Path, name: str) -> Path | None:
    """The child of `folder` called `name`, matched without regard to case (Ungood, ungood)."""
    exact = folder / name
    if exact.exists():
        return exact
    if not folder.is_dir():
        return None
    matches = sorted(p for p in folder.iterdir() if p.name.lower() == name.lower())
    return matches[0] if matches else None


def find_dir(folder: Path, *names: str) -> Path | None:
    """The first of `names` that is a sub-folder of `folder` (each matched as find_child does)."""
    return next((p for n in names if (p := find_child(folder, n)) is not None and p.is_dir()), None)


def masked_samples(images: Sequence[Path], mask_dir: Path, suffixes: Sequence[str], defect: str) -> tuple[Sample, ...]:
    """Anomalous samples of `images`, each with its mask from `mask_dir` (paired by stem, `suffixes` tried in order)."""
    index = index_masks(mask_dir, suffixes)
    masks = pair_masks(images, index, mask_dir, suffixes)
    unpaired = sorted({p.name for p in index.values()} - {p.name for p in masks})
    if unpaired:  # their images are missing: the test set is smaller than the masks say
        warnings.warn(
            f"{mask_dir}: {len(unpaired)} mask(s) have no image of the same stem in {images[0].parent}, "
            f"so they are not used: {show_names(unpaired)}",
            stacklevel=2,
        )
    return tuple(Sample(image=p, label=ANOMALOUS, mask=m, defect=defect) for p, m in zip(images, masks, strict=True))


def index_masks(mask_dir: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """Map image stem → mask file for the masks in `mask_dir`, trying each suffix in order.

    A mask `007_mask.png` is indexed as `007` when "_mask" is among `suffixes`; the first
    suffix that applies wins, so ("_mask", "") prefers `007_mask.png` over `007.png`. Two masks
    of one stem under the same suffix (`007.png`, `007.bmp`) are a DataError.
    """
    masks = list_image_files(mask_dir, what="mask")
    index: dict[str, Path] = {}
    for suffix in reversed(suffixes):  # earlier suffixes overwrite later ones: they win
        level: dict[str, Path] = {}
        for mask in masks:
            stem = mask.stem
            if suffix and not stem.endswith(suffix):
                continue
            key = stem[: len(stem) - len(suffix)] if suffix else stem
            if key in level:  # 007.png and 007.bmp: which one is meant cannot be known
                raise DataError(f"{mask_dir}: two masks for images named {key!r}: {level[key].name}, {mask.name}")
            level[key] = mask
        index.update(level)
    return index


def pair_masks(
    images: Iterable[Path], masks: dict[str, Path], where: Path, suffixes: Sequence[str] = ("",)
) -> list[Path]:
    """The mask of each image by stem; any image without one is a DataError listing them all and
    the names looked for (`suffixes`, as index_masks tried them)."""
    images = list(images)
    counts = Counter(p.stem for p in images)
    twins = sorted(p.name for p in images if counts[p.stem] > 1)
    if twins:
        raise DataError(
            f"{images[0].parent}: images share a stem, so masks cannot be paired by name: {show_names(twins)}"
        )
    missing = [p for p in images if p.stem not in masks]
    if missing:
        looked = " or ".join(f"{missing[0].stem}{suffix}.*" for suffix in suffixes)
        raise DataError(
            f"{where}: {len(missing)} anomalous image(s) have no mask with the same stem "
            f"(for {missing[0].name}: {looked}): {show_names([p.name for p in missing])}"
        )
    return [masks[p.stem] for p in images]


def check_mask_sizes(samples: Iterable[Sample]) -> None:
    """Every mask has its image's size (header reads only); else a DataError naming both."""
    for sample in samples:
        if sample.mask is None:
            continue
        img_size, mask_size = image_size(sample.image), image_size(sample.mask)
        if img_size != mask_size:
            raise DataError(mask_size_message(sample.image, img_size, sample.mask, mask_size))


def mask_size_message(image: Path, img_size: tuple[int, int], mask: Path, mask_size: tuple[int, int]) -> str:
    """The one wording of the mask-size error, shared by loaders and the Dataset."""
    return (
        f"{mask}: mask is {mask_size[0]}x{mask_size[1]} (WxH) but its image {image} is "
        f"{img_size[0]}x{img_size[1]}; a mask must have its image's size"
    )


def show_names(names: Sequence[str]) -> str:
    """Comma-separated names, shortened to the first few with a count of the rest."""
    shown = ", ".join(names[:_SHOW])
    return shown + (f" … and {len(names) - _SHOW} more" if len(names) > _SHOW else "")
