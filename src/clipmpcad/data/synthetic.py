"""Seeded generator of small BMAD- and MVTec-layout datasets with structured anomalies (METHOD §10).

Three sets, written in the layouts the real loaders read, for the tests and the demo:

    <root>/bmad/SynthBrain_AD/{valid,test}/{good,Ungood}/img/*.png      MRI-like, with masks
    <root>/bmad/SynthBrain_AD/{valid,test}/Ungood/anomaly_mask/*.png    same names as images
    <root>/bmad/SynthChest_AD/{valid,test}/{good,Ungood}/img/*.png      X-ray-like, no masks
    <root>/bmad/fewshot_seed/<Name>/<k>-shot.txt                        MVFA lists, k ≤ pool
    <root>/mvtec/synth_tile/{train/good, test/good, test/scratch, test/stain}/*.png
    <root>/mvtec/synth_tile/ground_truth/{scratch,stain}/<stem>_mask.png

Every image has its own generator, seeded by (seed, set, folder, number): the same seed gives
byte-identical files, and changing one count leaves the other images unchanged. Folders are
written under a temporary name and renamed into place; a non-empty target is refused unless
`overwrite` is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from clipmpcad.atomic import staged_folder
from clipmpcad.data.synthetic_images import Drawn, draw_brain, draw_chest, draw_tile
from clipmpcad.errors import ConfigError, DataError

SHOT_COUNTS = (1, 2, 4, 8, 16)  # list files written for each k that the pool can serve
TILE_DEFECTS = ("scratch", "stain")
_BRAIN, _CHEST, _TILE = 1, 2, 3  # set codes that enter every image's seed


@dataclass(frozen=True)
class SynthConfig:
    """Sizes and counts of every synthetic set."""

    image_size: int = 128  # S: every image is S×S pixels
    n_pool: int = 16  # BMAD: images in valid/good and in valid/Ungood; MVTec: train/good
    n_test_normal: int = 20  # test/good
    n_test_abnormal: int = 24  # BMAD: test/Ungood; MVTec: split evenly over TILE_DEFECTS

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ConfigError(f"synthetic image_size must be at least 32, got {self.image_size}")
        for name in ("n_pool", "n_test_normal", "n_test_abnormal"):
            if getattr(self, name) < 1:
                raise ConfigError(f"synthetic {name} must be at least 1, got {getattr(self, name)}")
        if self.n_test_abnormal < len(TILE_DEFECTS):
            raise ConfigError(f"synthetic n_test_abnormal must be at least {len(TILE_DEFECTS)}")


@dataclass(frozen=True)
class SyntheticSet:
    """One written category: what to pass to `clipmpcad.data.load_category`."""

    dataset: str  # registry name: "bmad" or "mvtec"
    root: Path  # dataset root
    category: str  # e.g. "SynthBrain"


@dataclass(frozen=True)
class SyntheticBenchmark:
    """The whole generated benchmark."""

    root: Path
    seed: int
    config: SynthConfig
    sets: tuple[SyntheticSet, ...]  # (dataset, root, category) of each set to run


def generate_benchmark(
    root: str | Path, seed: int = 0, config: SynthConfig | None = None, overwrite: bool = False
) -> SyntheticBenchmark:
    """Write SynthBrain and SynthChest (BMAD layout) and synth_tile (MVTec layout) under `root`."""
    root, config = Path(root), config or SynthConfig()
    with _atomic_folder(root, overwrite) as tmp:
        write_synth_brain(tmp / "bmad", seed, config)
        write_synth_chest(tmp / "bmad", seed, config)
        write_synth_tile(tmp / "mvtec", seed, config)
    sets = (
        SyntheticSet("bmad", root / "bmad", "SynthBrain"),
        SyntheticSet("bmad", root / "bmad", "SynthChest"),
        SyntheticSet("mvtec", root / "mvtec", "synth_tile"),
    )
    return SyntheticBenchmark(root=root, seed=seed, config=config, sets=sets)


def write_synth_brain(
    root: str | Path, seed: int = 0, config: SynthConfig | None = None, overwrite: bool = False
) -> SyntheticSet:
    """MRI-like brain slices with lesion masks, BMAD/MVFA layout, under the dataset root `root`."""
    return _write_bmad_set(Path(root), "SynthBrain", _BRAIN, draw_brain, True, seed, config or SynthConfig(), overwrite)


def write_synth_chest(
    root: str | Path, seed: int = 0, config: SynthConfig | None = None, overwrite: bool = False
) -> SyntheticSet:
    """X-ray-like chest films with opacities, BMAD layout without masks (classification only)."""
    return _write_bmad_set(
        Path(root), "SynthChest", _CHEST, draw_chest, False, seed, config or SynthConfig(), overwrite
    )


def write_synth_tile(
    root: str | Path, seed: int = 0, config: SynthConfig | None = None, overwrite: bool = False
) -> SyntheticSet:
    """Tiled surfaces with scratches and stains, MVTec layout, as category `synth_tile`."""
    root, config = Path(root), config or SynthConfig()
    counts = np.array_split(np.arange(config.n_test_abnormal), len(TILE_DEFECTS))
    folders = [("train/good", None, config.n_pool), ("test/good", None, config.n_test_normal)]
    folders += [(f"test/{d}", d, len(c)) for d, c in zip(TILE_DEFECTS, counts, strict=True)]
    with _atomic_folder(root / "synth_tile", overwrite) as tmp:
        for code, (folder, defect, count) in enumerate(folders):
            for i in range(count):
                drawn = draw_tile(config.image_size, _image_rng(seed, _TILE, code, i), defect)
                _save(drawn.pixels, tmp / folder / f"{i:03d}.png")
                if defect is not None:
                    _save(drawn.mask, tmp / "ground_truth" / defect / f"{i:03d}_mask.png")
    return SyntheticSet("mvtec", root, "synth_tile")


def _write_bmad_set(
    root: Path,
    name: str,
    code: int,
    draw: Callable[..., Drawn],
    with_masks: bool,
    seed: int,
    config: SynthConfig,
    overwrite: bool,
) -> SyntheticSet:
    data_dir, list_dir = root / f"{name}_AD", root / "fewshot_seed" / name
    for target in (data_dir, list_dir):  # both refused before either is built
        _refuse_existing(target, overwrite)
    folders = [
        ("valid", "good", config.n_pool),
        ("valid", "Ungood", config.n_pool),
        ("test", "good", config.n_test_normal),
        ("test", "Ungood", config.n_test_abnormal),
    ]
    pools: dict[str, list[str]] = {"good": [], "Ungood": []}
    with staged_folder(data_dir, replace=overwrite) as tmp, staged_folder(list_dir, replace=overwrite) as lists:
        for folder_code, (split, group, count) in enumerate(folders):
            for i in range(count):
                drawn = draw(config.image_size, _image_rng(seed, code, folder_code, i), group == "Ungood")
                fname = f"{folder_code}{i:04d}.png"
                _save(drawn.pixels, tmp / split / group / "img" / fname)
                if with_masks and group == "Ungood":
                    _save(drawn.mask, tmp / split / group / "anomaly_mask" / fname)
                if split == "valid":
                    pools[group].append(fname)
        _write_shot_lists(lists, pools, np.random.default_rng([seed, code, 100]))
    return SyntheticSet("bmad", root, name)


def _write_shot_lists(folder: Path, pools: dict[str, list[str]], rng: np.random.Generator) -> None:
    """MVFA's `<k>-shot.txt`: a line `n-0: name …` of normals and `a-0: name …` of anomalies."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in SHOT_COUNTS:
        if k > min(len(pools["good"]), len(pools["Ungood"])):
            continue
        normal = rng.choice(pools["good"], size=k, replace=False)
        abnormal = rng.choice(pools["Ungood"], size=k, replace=False)
        text = f"n-0: {' '.join(normal)}\na-0: {' '.join(abnormal)}\n"
        (folder / f"{k}-shot.txt").write_text(text, encoding="utf-8")


def _image_rng(seed: int, set_code: int, folder_code: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, set_code, folder_code, index])


def _save(pixels: np.ndarray, path: Path) -> None:
    """uint8 (H, W) / (H, W, 3), or a bool mask saved as 0/255, to a PNG at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    Image.fromarray(pixels).save(path, format="PNG")


def _refuse_existing(target: Path, overwrite: bool) -> None:
    if target.exists() and not overwrite and (not target.is_dir() or any(target.iterdir())):
        raise DataError(f"{target}: already exists and is not empty; pass overwrite=True (--overwrite) to replace it")


@contextmanager
def _atomic_folder(target: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; on success it replaces `target` by rename."""
    _refuse_existing(target, overwrite)
    with staged_folder(target, replace=overwrite) as tmp:
        yield tmp
