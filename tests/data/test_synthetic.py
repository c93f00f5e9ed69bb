"""The synthetic generator: layouts, determinism, visible structured anomalies, atomic writes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from clipmpcad.data import load_category
from clipmpcad.data import synthetic as synth
from clipmpcad.data.imageio import read_image, read_mask
from clipmpcad.data.perlin import fractal_noise, perlin_noise
from clipmpcad.data.synthetic_images import draw_brain, draw_chest, draw_tile
from clipmpcad.errors import ConfigError, DataError


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_benchmark_layout_and_counts(synth_bench):
    assert [(s.dataset, s.category) for s in synth_bench.sets] == [
        ("bmad", "SynthBrain"),
        ("bmad", "SynthChest"),
        ("mvtec", "synth_tile"),
    ]
    bmad = synth_bench.root / "bmad"
    brain = bmad / "SynthBrain_AD"
    assert len(list((brain / "valid" / "good" / "img").iterdir())) == 16
    assert len(list((brain / "test" / "Ungood" / "img").iterdir())) == 24
    images = sorted(p.name for p in (brain / "test" / "Ungood" / "img").iterdir())
    masks = sorted(p.name for p in (brain / "test" / "Ungood" / "anomaly_mask").iterdir())
    assert images == masks  # same file names
    assert not list((bmad / "SynthChest_AD").rglob("anomaly_mask"))  # classification only
    tile = synth_bench.root / "mvtec" / "synth_tile"
    stems = sorted(p.stem for p in (tile / "test" / "scratch").iterdir())
    assert sorted(p.stem for p in (tile / "ground_truth" / "scratch").iterdir()) == [f"{s}_mask" for s in stems]
    assert read_image(tile / "train" / "good" / "000.png").size == (128, 128)


def test_shot_lists_are_in_mvfa_format(synth_bench):
    lists = synth_bench.root / "bmad" / "fewshot_seed" / "SynthBrain"
    assert sorted(p.name for p in lists.iterdir()) == [f"{k}-shot.txt" for k in (1, 16, 2, 4, 8)]
    valid = synth_bench.root / "bmad" / "SynthBrain_AD" / "valid"
    for k in (1, 2, 4, 8, 16):
        lines = (lists / f"{k}-shot.txt").read_text().splitlines()
        assert [ln[:5] for ln in lines] == ["n-0: ", "a-0: "]
        normal, abnormal = lines[0][5:].split(), lines[1][5:].split()
        assert len(set(normal)) == len(set(abnormal)) == k
        assert all((valid / "good" / "img" / n).is_file() for n in normal)
        assert all((valid / "Ungood" / "img" / n).is_file() for n in abnormal)
        assert all(re.fullmatch(r"\d{5}\.png", n) for n in normal + abnormal)


def test_sets_load_with_their_loaders(synth_bench):
    brain, chest, tile = (load_category(s.dataset, s.root, s.category) for s in synth_bench.sets)
    assert brain.has_masks and not chest.has_masks and tile.has_masks
    assert brain.shot_lists is not None and chest.shot_lists is not None
    assert (len(tile.normal_pool), len(tile.test), len(tile.abnormal_pool)) == (16, 44, 24)
    assert {s.defect for s in tile.abnormal_pool} == {"scratch", "stain"}


def test_same_seed_gives_identical_files(tmp_path, tiny_config):
    synth.generate_benchmark(tmp_path / "a", seed=3, config=tiny_config)
    synth.generate_benchmark(tmp_path / "b", seed=3, config=tiny_config)
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert len(a) > 40 and a == b


def test_different_seeds_give_different_images(tmp_path, tiny_config):
    synth.generate_benchmark(tmp_path / "a", seed=0, config=tiny_config)
    synth.generate_benchmark(tmp_path / "b", seed=1, config=tiny_config)
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a.keys() == b.keys()
    images = [k for k in a if k.endswith(".png") and "mask" not in k]
    assert all(a[k] != b[k] for k in images)


@pytest.mark.parametrize(
    ("draw", "arg", "normal_arg", "brighter"),
    [
        (draw_brain, True, False, True),
        (draw_chest, True, False, True),
        (draw_tile, "scratch", None, True),
        (draw_tile, "stain", None, False),
    ],
)
def test_anomalies_are_local_visible_and_sized(draw, arg, normal_arg, brighter):
    for i in range(6):
        anomalous = draw(128, np.random.default_rng(i), arg)
        normal = draw(128, np.random.default_rng(i), normal_arg)  # the same picture, unchanged
        mask = anomalous.mask
        assert 0.01 <= mask.mean() <= 0.15, mask.mean()
        diff = anomalous.pixels.astype(float) - normal.pixels.astype(float)
        diff = diff.mean(axis=-1) if diff.ndim == 3 else diff
        assert (1 if brighter else -1) * diff[mask].mean() > 20  # of 255 levels
        far = ~ndimage.binary_dilation(mask, np.ones((3, 3)), iterations=7)  # past the blur
        assert np.abs(diff[far]).max() == 0  # local: nothing changes away from the mask
        _, count = ndimage.label(mask)
        assert count <= 3  # a few structured regions, not speckle


def test_normal_pictures_have_empty_masks_and_vary():
    a = draw_brain(64, np.random.default_rng(0), False)
    b = draw_brain(64, np.random.default_rng(1), False)
    assert not a.mask.any() and not np.array_equal(a.pixels, b.pixels)


def test_perlin_noise_is_smooth_bounded_and_seeded():
    n = perlin_noise((64, 64), (4, 4), np.random.default_rng(0))
    assert np.abs(n).max() <= 1.0 + 1e-9 and n.std() > 0.1
    assert np.abs(np.diff(n, axis=1)).max() < 0.2  # smooth at 16 px per cell
    np.testing.assert_array_equal(n, perlin_noise((64, 64), (4, 4), np.random.default_rng(0)))
    assert fractal_noise((32, 48), 2, 3, np.random.default_rng(1)).shape == (32, 48)


def test_masks_written_as_0_255(synth_bench):
    folder = synth_bench.root / "mvtec" / "synth_tile" / "ground_truth" / "stain"
    path = next(iter(sorted(folder.iterdir())))
    values = np.unique(np.asarray(read_image(path))[..., 0])
    assert values.tolist() == [0, 255] and read_mask(path).any()


def test_refuses_to_overwrite_a_non_empty_target(tmp_path, tiny_config):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match=r"bench: already exists and is not empty"):
        synth.generate_benchmark(tmp_path / "bench", config=tiny_config)
    assert (tmp_path / "bench" / "keep.txt").read_text() == "mine"
    synth.generate_benchmark(tmp_path / "bench", config=tiny_config, overwrite=True)
    assert not (tmp_path / "bench" / "keep.txt").exists()
    assert (tmp_path / "bench" / "mvtec" / "synth_tile").is_dir()
    assert [p.name for p in tmp_path.iterdir()] == ["bench"]  # no temporary folders left


def test_an_empty_existing_target_is_filled(tmp_path, tiny_config):
    (tmp_path / "empty").mkdir()
    synth.write_synth_tile(tmp_path / "empty", config=tiny_config)
    synth.write_synth_tile(tmp_path / "empty2", config=tiny_config)
    assert (tmp_path / "empty" / "synth_tile" / "train" / "good").is_dir()


def test_a_failed_write_leaves_nothing_behind(tmp_path, tiny_config, monkeypatch):
    def broken(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synth, "draw_tile", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        synth.generate_benchmark(tmp_path / "bench", config=tiny_config)
    assert list(tmp_path.iterdir()) == []


def test_per_set_writer_refuses_existing_category(tmp_path, tiny_config):
    synth.write_synth_brain(tmp_path, config=tiny_config)
    with pytest.raises(DataError, match=r"SynthBrain_AD: already exists"):
        synth.write_synth_brain(tmp_path, config=tiny_config)


def test_bad_config_is_a_config_error():
    with pytest.raises(ConfigError, match="image_size must be at least 32"):
        synth.SynthConfig(image_size=8)
    with pytest.raises(ConfigError, match="n_pool must be at least 1"):
        synth.SynthConfig(n_pool=0)
