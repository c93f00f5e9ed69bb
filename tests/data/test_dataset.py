"""SampleDataset: resize, normalisation, mask alignment and size check, collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from torch.utils.data import DataLoader

from clipmpcad.data.dataset import (
    CLIP_MEAN,
    CLIP_STD,
    SampleDataset,
    collate,
    load_batch,
    mask_to_tensor,
    read_original_mask,
    regions_to_tensor,
)
from clipmpcad.data.sample import ANOMALOUS, NORMAL, Sample
from clipmpcad.errors import DataError


def test_image_is_bicubic_resized_to_unit_range(tmp_path):
    values = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    Image.fromarray(values).save(tmp_path / "x.png")
    item = SampleDataset([Sample(tmp_path / "x.png", NORMAL)], 16, normalize=False)[0]
    expected = np.asarray(Image.fromarray(values).resize((16, 16), Image.Resampling.BICUBIC))
    assert item.image.shape == (3, 16, 16) and item.image.dtype == torch.float32
    np.testing.assert_allclose(item.image.permute(1, 2, 0).numpy(), expected / 255.0, atol=1e-6)


def test_normalisation_uses_clip_mean_and_std(tmp_path, files):
    files.image(tmp_path / "g.png", value=200)
    item = SampleDataset([Sample(tmp_path / "g.png", NORMAL)], 8, normalize=True)[0]
    for c in range(3):
        expected = (200 / 255 - CLIP_MEAN[c]) / CLIP_STD[c]
        assert torch.allclose(item.image[c], torch.full((8, 8), expected), atol=1e-5)


def test_mask_is_nearest_resized_and_aligned(tmp_path, files):
    files.image(tmp_path / "a.png", size=(64, 32))
    files.mask(tmp_path / "a_mask.png", size=(64, 32), box=(0, 0, 32, 32))  # left half
    item = SampleDataset([Sample(tmp_path / "a.png", ANOMALOUS, tmp_path / "a_mask.png")], 16)[0]
    assert item.mask.shape == (1, 16, 16)
    assert set(item.mask.unique().tolist()) == {0.0, 1.0}
    assert item.mask[0, :, :8].min() == 1 and item.mask[0, :, 8:].max() == 0
    assert item.label == ANOMALOUS and item.index == 0


def test_normal_sample_gets_a_zero_mask(tmp_path, files):
    files.image(tmp_path / "n.png")
    item = SampleDataset([Sample(tmp_path / "n.png", NORMAL)], 12)[0]
    assert item.mask.shape == (1, 12, 12) and item.mask.sum() == 0


def test_mask_of_another_size_is_a_data_error(tmp_path, files):
    files.image(tmp_path / "img.png", size=(32, 24))
    files.mask(tmp_path / "msk.png", size=(30, 24))
    dataset = SampleDataset([Sample(tmp_path / "img.png", ANOMALOUS, tmp_path / "msk.png")], 8)
    with pytest.raises(DataError, match=r"msk\.png: mask is 30x24 .*img\.png is 32x24"):
        dataset[0]
    with pytest.raises(DataError, match=r"msk\.png: mask is 30x24"):
        read_original_mask(dataset.samples[0])


def test_collate_through_a_dataloader(tmp_path, files):
    samples = [Sample(files.image(tmp_path / f"{i}.png", value=i * 40), i % 2) for i in range(5)]
    loader = DataLoader(SampleDataset(samples, 8), batch_size=2, collate_fn=collate)
    batches = list(loader)
    assert [b.images.shape[0] for b in batches] == [2, 2, 1]
    assert batches[0].images.shape == (2, 3, 8, 8) and batches[0].masks.shape == (2, 1, 8, 8)
    assert torch.cat([b.labels for b in batches]).tolist() == [0, 1, 0, 1, 0]
    assert torch.cat([b.indices for b in batches]).tolist() == [0, 1, 2, 3, 4]
    assert batches[0].to("cpu").images.device.type == "cpu"


def test_load_batch_stacks_all_samples(tmp_path, files):
    samples = [Sample(files.image(tmp_path / f"{i}.png"), NORMAL) for i in range(3)]
    batch = load_batch(samples, 8, normalize=False)
    assert batch.images.shape == (3, 3, 8, 8)
    assert torch.allclose(batch.images, torch.full_like(batch.images, 128 / 255))


def test_original_mask_keeps_the_image_resolution(tmp_path, files):
    files.image(tmp_path / "o.png", size=(40, 10))
    files.mask(tmp_path / "o_mask.png", size=(40, 10), box=(5, 2, 7, 3))
    mask = read_original_mask(Sample(tmp_path / "o.png", ANOMALOUS, tmp_path / "o_mask.png"))
    assert mask.shape == (10, 40) and mask.sum() == 2 and mask[2, 5] and mask[2, 6]
    empty = read_original_mask(Sample(tmp_path / "o.png", NORMAL))
    assert empty.shape == (10, 40) and not empty.any()


def test_regions_are_labelled_at_full_size_and_keep_the_masks_pixels(tmp_path):
    rng = np.random.default_rng(0)
    for h, w, size in ((128, 223, 240), (664, 671, 96), (13, 700, 64)):  # sizes where rounding is delicate
        mask = rng.random((h, w)) < 0.2
        regions = regions_to_tensor(mask, size)
        assert regions.shape == (1, size, size) and regions.dtype == torch.int32
        assert torch.equal(regions > 0, mask_to_tensor(mask, size) > 0)  # the very pixels of the mask
    scratch = np.zeros((1024, 1024), dtype=bool)  # one 2-pixel-thick scratch at a slope of 1/3
    for x in range(100, 900):
        scratch[100 + x // 3 : 102 + x // 3, x] = True
    blob = scratch.copy()
    blob[50:90, 700:760] = True  # and a blob apart from it
    ids = regions_to_tensor(blob, 240)
    assert sorted(ids.unique().tolist()) == [0, 1, 2]  # two regions, as at full size
    small = mask_to_tensor(scratch, 240)[0].numpy() > 0
    assert ndimage.label(small, structure=np.ones((3, 3)))[1] > 10  # labelled after the resize it breaks up
    image = Image.fromarray(np.zeros((1024, 1024), np.uint8))
    image.save(tmp_path / "s.png")
    Image.fromarray(blob.astype(np.uint8) * 255).save(tmp_path / "s_mask.png")
    samples = [Sample(tmp_path / "s.png", ANOMALOUS, tmp_path / "s_mask.png"), Sample(tmp_path / "s.png", NORMAL)]
    batch = collate([SampleDataset(samples, 240, regions=True)[i] for i in range(2)])
    assert batch.regions.shape == (2, 1, 240, 240) and torch.equal(batch.regions[0], ids)
    assert not batch.regions[1].any() and torch.equal(batch.regions > 0, batch.masks > 0)
    assert collate([SampleDataset(samples, 240)[0]]).regions is None  # only on request
