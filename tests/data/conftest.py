"""Fixtures for the data tests: small trees in each layout, written under tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipmpcad.data.synthetic import SynthConfig, SyntheticBenchmark, generate_benchmark

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # read-only real sets


class Files:
    """Writers of tiny image and mask files."""

    @staticmethod
    def image(path: Path, size: tuple[int, int] = (32, 24), value: int = 128, mode: str = "L") -> Path:
        """A constant image of `size` (W, H); `value` is the gray level (every channel)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new(mode, size, value if mode == "L" else (value,) * len(mode)).save(path)
        return path

    @staticmethod
    def mask(
        path: Path, size: tuple[int, int] = (32, 24), box: tuple[int, int, int, int] = (0, 0, 8, 8), on: int = 255
    ) -> Path:
        """A 0/`on` mask of `size` (W, H) with the box (x0, y0, x1, y1) set."""
        path.parent.mkdir(parents=True, exist_ok=True)
        values = np.zeros((size[1], size[0]), dtype=np.uint8)
        x0, y0, x1, y1 = box
        values[y0:y1, x0:x1] = on
        Image.fromarray(values).save(path)
        return path


@pytest.fixture
def shared_data() -> Path:
    """The project's read-only real sets (../shared/data); skips where they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture
def files() -> type[Files]:
    return Files


@pytest.fixture(scope="session")
def synth_bench(tmp_path_factory: pytest.TempPathFactory) -> SyntheticBenchmark:
    """The default synthetic benchmark, written once per test session."""
    return generate_benchmark(tmp_path_factory.mktemp("synth") / "bench", seed=0)


@pytest.fixture(scope="session")
def tiny_config() -> SynthConfig:
    """A small synthetic configuration for tests that generate several times."""
    return SynthConfig(image_size=48, n_pool=4, n_test_normal=3, n_test_abnormal=4)


@pytest.fixture
def mvtec_root(tmp_path: Path) -> Path:
    """MVTec layout, category `bottle`: 3 train, 2 test good, 3 `broken` with masks.

    Image names 1, 2, 10 sort differently from their masks (1_mask, 10_mask, 2_mask), so
    pairing by position would go wrong where pairing by stem does not.
    """
    cat = tmp_path / "mvtec" / "bottle"
    for i in range(3):
        Files.image(cat / "train" / "good" / f"{i:03d}.png", value=10 + i)
    for i in range(2):
        Files.image(cat / "test" / "good" / f"{i:03d}.png", value=50 + i)
    for i, stem in enumerate(("1", "2", "10")):
        Files.image(cat / "test" / "broken" / f"{stem}.png", value=100 + i)
        Files.mask(cat / "ground_truth" / "broken" / f"{stem}_mask.png", box=(0, 0, 1 + i, 1))
    return tmp_path / "mvtec"


@pytest.fixture
def bmad_root(tmp_path: Path) -> Path:
    """MVFA layout: Brain_AD (with masks, 4+3 valid, 2+2 test), Chest_AD (no masks), lists."""
    root = tmp_path / "bmad"
    for name, masks in (("Brain", True), ("Chest", False)):
        for split, n_good, n_bad in (("valid", 4, 3), ("test", 2, 2)):
            base = root / f"{name}_AD" / split
            for i in range(n_good):
                Files.image(base / "good" / "img" / f"{split}_n{i}.png", value=20 + i)
            for i in range(n_bad):
                Files.image(base / "Ungood" / "img" / f"{split}_a{i}.png", value=200 + i)
                if masks:
                    Files.mask(base / "Ungood" / "anomaly_mask" / f"{split}_a{i}.png")
    lists = root / "fewshot_seed" / "Brain"
    lists.mkdir(parents=True)
    text = "a-0: valid_a2.png valid_a0.png\nn-0: valid_n3.png valid_n1.png"  # as MVFA: no last \n
    (lists / "2-shot.txt").write_text(text)
    return root
