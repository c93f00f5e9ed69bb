"""VisA and its split CSV (METHOD §10).

    <root>/split_csv/1cls.csv                    columns object,split,label,image,mask
    <root>/<object>/Data/Images/{Normal,Anomaly}/*.JPG
    <root>/<object>/Data/Masks/Anomaly/*.png     values 0 and a class index: binarised > 0

Paths in the CSV are relative to `root`. `label` is "normal" or "anomaly"; `split` is "train"
or "test". Normal shots come from the train normals. Abnormal shots come from train anomalies
when the split file has any (e.g. VisA's 2cls splits), otherwise from the test anomalies, which
are then removed from evaluation. A `defect_type` column, if present, names the defect.
"""

from __future__ import annotations

import csv
from pathlib import Path

from clipmpcad.data.files import show_names
from clipmpcad.data.naming import check_domain, industrial_names
from clipmpcad.data.sample import ANOMALOUS, NORMAL, CategoryData, Sample
from clipmpcad.errors import DataError

SPLIT_FILE = "split_csv/1cls.csv"
COLUMNS = ("object", "split", "label", "image", "mask")
LABELS = {"normal": NORMAL, "anomaly": ANOMALOUS}


def list_categories(root: str | Path, split_file: str = SPLIT_FILE) -> list[str]:
    """Objects named in the split file, sorted."""
    return sorted({row["object"] for row in _read_rows(Path(root), split_file)})


def load_category(
    root: str | Path, category: str, split_file: str = SPLIT_FILE, domain: str = "industrial"
) -> CategoryData:
    """Samples of one VisA object as the split file assigns them."""
    root = Path(root)
    rows = _read_rows(root, split_file)
    objects = sorted({row["object"] for row in rows})
    if category not in objects:
        raise DataError(f"{root / split_file}: no VisA object {category!r}; found: {', '.join(objects)}")
    samples = {"train": [], "test": []}
    for row in (r for r in rows if r["object"] == category):
        samples[row["split"]].append(_sample(root, row))
    _check_files(root / split_file, samples["train"] + samples["test"])
    train = sorted(samples["train"], key=lambda s: s.image)
    test = tuple(sorted(samples["test"], key=lambda s: (s.label, s.image)))
    train_anomalies = tuple(s for s in train if s.label == ANOMALOUS)
    classname, prompt_set = industrial_names("visa", category, check_domain(domain))
    return CategoryData(
        dataset="visa",
        category=category,
        root=root,
        domain=domain,
        classname=classname,
        has_masks=any(s.mask is not None for s in samples["train"] + samples["test"]),
        normal_pool=tuple(s for s in train if s.label == NORMAL),
        abnormal_pool=train_anomalies or tuple(s for s in test if s.label == ANOMALOUS),
        test=test,
        abnormal_pool_is_test=not train_anomalies,
        shot_lists=None,
        prompt_set=prompt_set,
    )


def _read_rows(root: Path, split_file: str) -> list[dict[str, str]]:
    path = root / split_file
    if not path.is_file():
        raise DataError(f"{path}: VisA split file not found (expected {SPLIT_FILE} under the root)")
    with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: tolerate a BOM
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"{path}: split file lacks column(s) {', '.join(missing)}; expected header {','.join(COLUMNS)}"
            )
        rows = [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]
    if not rows:
        raise DataError(f"{path}: split file has no rows")
    first_line: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        if row["split"] not in ("train", "test") or row["label"] not in LABELS:
            raise DataError(
                f"{path}:{line}: split must be train/test and label normal/anomaly, "
                f"got {row['split']!r}, {row['label']!r}"
            )
        if row["image"] in first_line:  # twice in a pool: it could be drawn as two shots, or scored twice
            raise DataError(f"{path}:{line}: image {row['image']} is already listed on line {first_line[row['image']]}")
        first_line[row["image"]] = line
    return rows


def _sample(root: Path, row: dict[str, str]) -> Sample:
    label = LABELS[row["label"]]
    mask = root / row["mask"] if label == ANOMALOUS and row["mask"] else None
    defect = (row.get("defect_type") or "anomaly") if label == ANOMALOUS else "good"
    return Sample(image=root / row["image"], label=label, mask=mask, defect=defect)


def _check_files(split_path: Path, samples: list[Sample]) -> None:
    """Every file named must exist, and if any anomaly has a mask, every anomaly must."""
    missing = [str(p) for s in samples for p in (s.image, s.mask) if p and not p.is_file()]
    if missing:
        raise DataError(f"{split_path}: names {len(missing)} file(s) that do not exist: {show_names(missing)}")
    anomalies = [s for s in samples if s.label == ANOMALOUS]
    maskless = [s.image.name for s in anomalies if s.mask is None]
    if maskless and len(maskless) < len(anomalies):
        raise DataError(f"{split_path}: {len(maskless)} anomalous image(s) have no mask: {show_names(maskless)}")
