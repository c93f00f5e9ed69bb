"""BMAD medical sets in MVFA's preprocessed layout and in BMAD's original layout (METHOD §10).

MVFA layout (what MVFA's released archives unpack to)::

    <root>/<Name>_AD/{valid,test}/{good,Ungood}/img/*.png
    <root>/<Name>_AD/{valid,test}/Ungood/anomaly_mask/*.png      same file names as the images
    <root>/fewshot_seed/<Name>/<k>-shot.txt                      optional MVFA shot lists
                                                                 (or under `shot_lists`)

BMAD's original release, detected automatically per folder, varies by set: the category folder
may be `<root>/<Name>_AD/<source>/` or `<root>/<source>/` (source names such as BraTS2021_slice,
hist_DIY, RESC, OCT2017, Chest-RSNA, camelyon16_256 map to the six names); the validation split
is `valid` or `val`; the abnormal group `Ungood` or `ungood`; images sit in `<group>/img/`,
`img/<group>/` or directly in `<group>/`; masks in `<group>/label/` or `label/<group>/`.
`train/good` (normal images for full-data training) is not used by the few-shot protocol.

Shots: normal from valid/good, abnormal from valid/Ungood; test = test/good + test/Ungood.
"""

from __future__ import annotations

from pathlib import Path

from clipmpcad.data.files import find_child, find_dir, list_image_files, masked_samples, show_names
from clipmpcad.data.naming import bmad_names, check_domain
from clipmpcad.data.sample import ANOMALOUS, NORMAL, CategoryData, Sample
from clipmpcad.errors import DataError

SOURCE_NAMES = {  # folder names of BMAD's original release → MVFA's category names
    "BraTS2021_slice": "Brain",
    "hist_DIY": "Liver",
    "RESC": "Retina_RESC",
    "OCT2017": "Retina_OCT2017",
    "Chest-RSNA": "Chest",
    "RSNA": "Chest",
    "camelyon16": "Histopathology",
    "camelyon16_256": "Histopathology",
}
VALID_SPLITS = ("valid", "val")
MASK_FOLDERS = ("anomaly_mask", "label")
MASK_SUFFIXES = ("", "_mask")


def list_categories(root: str | Path) -> list[str]:
    """Names of the BMAD categories found under `root`, sorted."""
    return sorted(_category_folders(Path(root)))


def load_category(
    root: str | Path, category: str, domain: str = "medical", shot_lists: str | Path | None = None
) -> CategoryData:
    """Samples of one BMAD category; `category` may also be its folder's own name.

    Args:
        shot_lists: folder holding `<Name>/<k>-shot.txt` (e.g. an MVFA checkout's
            dataset/fewshot_seed); default `<root>/fewshot_seed`.
    """
    root = Path(root)
    folders = _category_folders(root)
    name = _resolve_name(category, folders, root)
    data_dir = folders[name]
    classname, prompt_set, known_masks = bmad_names(name)
    valid = _split_dir(data_dir, VALID_SPLITS)
    test = _split_dir(data_dir, ("test",))
    has_masks = known_masks if known_masks is not None else _has_mask_folder(valid, test)
    lists = Path(shot_lists or root / "fewshot_seed") / name
    if shot_lists and not lists.is_dir():  # asked for by name: never a silent fall back to the sampler
        raise DataError(
            f"{lists}: no shot-list folder for {name}; shot_lists must name the folder that holds "
            "<Name>/<k>-shot.txt (e.g. an MVFA checkout's dataset/fewshot_seed)"
        )
    return CategoryData(
        dataset="bmad",
        category=name,
        root=root,
        domain=check_domain(domain),
        classname=classname,
        has_masks=has_masks,
        normal_pool=_group(valid, "good", has_masks),
        abnormal_pool=_group(valid, "Ungood", has_masks),
        test=_group(test, "good", has_masks) + _group(test, "Ungood", has_masks),
        abnormal_pool_is_test=False,
        shot_lists=lists if lists.is_dir() else None,
        prompt_set=prompt_set,
    )


def _category_folders(root: Path) -> dict[str, Path]:
    """Category name → folder holding its splits, for every category folder under `root`."""
    if not root.is_dir():
        raise DataError(f"{root}: BMAD dataset folder not found")
    found: dict[str, Path] = {}
    for child in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "fewshot_seed"):
        data_dir = _data_dir(child)
        if data_dir is not None:
            name = child.name.removesuffix("_AD")
            name = SOURCE_NAMES.get(name, name)
            if name in found:  # e.g. Brain_AD/ and BraTS2021_slice/: which one is meant cannot be known
                raise DataError(f"{root}: two folders hold the BMAD set {name}: {found[name]} and {data_dir}")
            found[name] = data_dir
    if not found:
        raise DataError(f"{root}: no BMAD category folders (<Name>_AD/ with test/ and valid/)")
    return found


def _data_dir(folder: Path) -> Path | None:
    """`folder` if it has a test split, else its only subfolder that has one (original layout)."""
    if (folder / "test").is_dir():
        return folder
    inner = [p for p in folder.iterdir() if p.is_dir() and (p / "test").is_dir()]
    return inner[0] if len(inner) == 1 else None


def _resolve_name(category: str, folders: dict[str, Path], root: Path) -> str:
    if category in folders:
        return category
    for name, data_dir in folders.items():  # also accept the folder names themselves
        if category in (data_dir.name, data_dir.name.removesuffix("_AD")):
            return name
    raise DataError(f"{root}: no BMAD category {category!r}; found: {', '.join(sorted(folders))}")


def _split_dir(data_dir: Path, names: tuple[str, ...]) -> Path:
    found = find_dir(data_dir, *names)
    if found is not None:
        return found
    raise DataError(f"{data_dir}: split folder not found (looked for {' or '.join(names)})")


def _group_dirs(split: Path, group: str) -> tuple[Path, Path | None]:
    """(image folder, mask folder or None) of `group` (good or Ungood) in a split folder."""
    own = find_child(split, group)
    img_top, label_top = find_child(split, "img"), find_child(split, "label")
    nested = find_child(img_top, group) if img_top else None
    candidates = [own / "img" if own else None, nested, own]
    images = next((p for p in candidates if p is not None and p.is_dir()), None)
    if images is None:
        raise DataError(
            f"{split / group}: image folder not found (looked for {group}/img, img/{group} and {group}/ under {split})"
        )
    masks = [own / m if own else None for m in MASK_FOLDERS]
    masks.append(find_child(label_top, group) if label_top else None)
    return images, next((p for p in masks if p is not None and p.is_dir()), None)


def _has_mask_folder(*splits: Path) -> bool:
    return any(_group_dirs(s, "Ungood")[1] is not None for s in splits)


def _group(split: Path, group: str, has_masks: bool) -> tuple[Sample, ...]:
    images_dir, mask_dir = _group_dirs(split, group)
    images = list_image_files(images_dir)
    if group == "good":
        return tuple(Sample(image=p, label=NORMAL) for p in images)
    if not has_masks:
        return tuple(Sample(image=p, label=ANOMALOUS, defect="Ungood") for p in images)
    if mask_dir is None:
        raise DataError(
            f"{images_dir}: no mask folder ({', '.join(MASK_FOLDERS)}) for "
            f"{len(images)} anomalous images: {show_names([p.name for p in images])}"
        )
    return masked_samples(images, mask_dir, MASK_SUFFIXES, "Ungood")
