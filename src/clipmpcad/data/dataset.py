"""Torch Dataset over Samples: resize, normalise, align masks, collate to a Batch (METHOD §10).

Image: bicubic resize to a square S×S (as MVFA), to float (3, S, S) in [0, 1], then, when
`normalize` is set, CLIP's mean/std (the `clean` protocol; `paper` feeds unnormalised images).
Mask: read, checked to have its image's size, nearest-neighbour resize to S×S (as MVFA; no
bilinear blur to re-threshold), float (1, S, S) in {0, 1}. Normal or maskless samples get zeros.
Pixel metrics at the original resolution use `read_original_mask` instead; at S×S they use the
mask's 8-connected regions labelled at its own size and resized alike (`regions_to_tensor`), so a
thin defect stays one AUPRO region however the resize breaks it up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from clipmpcad.data.files import mask_size_message
from clipmpcad.data.imageio import image_size, read_image, read_mask
from clipmpcad.data.sample import Sample
from clipmpcad.errors import DataError
from clipmpcad.metrics.aupro import label_regions

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Item:
    """One sample ready for the model."""

    image: torch.Tensor  # (3, S, S) float32
    mask: torch.Tensor  # (1, S, S) float32 in {0, 1}
    label: int  # NORMAL (0) or ANOMALOUS (1)
    index: int  # position in the Dataset's sample list
    original_mask: np.ndarray | None = None  # (H, W) bool at the image's own size, on request
    regions: torch.Tensor | None = None  # (1, S, S) int32 region ids (regions_to_tensor), on request


@dataclass(frozen=True)
class Batch:
    """Items stacked along a leading batch axis B."""

    images: torch.Tensor  # (B, 3, S, S) float32
    masks: torch.Tensor  # (B, 1, S, S) float32
    labels: torch.Tensor  # (B,) int64
    indices: torch.Tensor  # (B,) int64
    original_masks: tuple[np.ndarray, ...] | None = None  # B (H_i, W_i) bool masks, on request
    regions: torch.Tensor | None = None  # (B, 1, S, S) int32 region ids of the masks, on request

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on `device` (original masks stay numpy arrays)."""
        return self._map(lambda t: t.to(device))

    def pin_memory(self) -> Batch:
        """The same batch in page-locked memory: the DataLoader calls this (pin_memory=True), so that
        copies to the GPU can run asynchronously."""
        return self._map(torch.Tensor.pin_memory)

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        """`fn` applied to every tensor field; the original masks are kept as they are."""
        tensors = (fn(t) for t in (self.images, self.masks, self.labels, self.indices))
        return Batch(*tensors, self.original_masks, None if self.regions is None else fn(self.regions))


def image_to_tensor(
    image: Image.Image,
    image_size: int,
    normalize: bool,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> torch.Tensor:
    """RGB PIL image → (3, S, S) float32: bicubic resize, [0, 1], optional mean/std."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")  # convert copies even an RGB image
    resized = rgb.resize((image_size, image_size), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    if normalize:
        x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return x.contiguous()  # (3, S, S)


def mask_to_tensor(mask: np.ndarray, image_size: int) -> torch.Tensor:
    """Bool mask (H, W) → (1, S, S) float32 in {0, 1} by nearest-neighbour resize."""
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    resized = img.resize((image_size, image_size), Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(resized) > 127).float().unsqueeze(0)  # (1, S, S)


def regions_to_tensor(mask: np.ndarray, image_size: int) -> torch.Tensor:
    """Bool mask (H, W) → (1, S, S) int32: the ids of its 8-connected regions, labelled at the
    mask's own size and resized as `mask_to_tensor` resizes the mask (the same pixels are kept:
    ids > 0 equal its mask). A region that no kept pixel samples is gone from the S×S grid."""
    labels = label_regions(mask[None])[0][0]  # (H, W) int32, 0 background
    resized = Image.fromarray(labels).resize((image_size, image_size), Image.Resampling.NEAREST)
    return torch.from_numpy(np.array(resized, dtype=np.int32)).unsqueeze(0)


def read_original_mask(sample: Sample) -> np.ndarray:
    """Mask (H, W) bool at the image's own resolution; all False for maskless samples."""
    width, height = image_size(sample.image)
    if sample.mask is None:
        return np.zeros((height, width), dtype=bool)
    mask = read_mask(sample.mask)
    _check_same_size(sample.image, (width, height), sample.mask, mask)
    return mask


class SampleDataset(Dataset):
    """Samples as model inputs; pair with `collate` in a DataLoader."""

    def __init__(
        self,
        samples: Sequence[Sample],
        image_size: int,
        normalize: bool = True,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        original_masks: bool = False,
        regions: bool = False,
    ) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.samples = tuple(samples)
        self.image_size = image_size
        self.normalize = normalize
        self.mean, self.std = tuple(mean), tuple(std)
        self.original_masks = original_masks  # also the mask at the image's own size (pixel metrics there)
        self.regions = regions  # also the mask's region ids at S×S (pixel metrics there)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Item:
        sample = self.samples[index]
        image = read_image(sample.image)
        x = image_to_tensor(image, self.image_size, self.normalize, self.mean, self.std)
        mask, regions = None, None
        if sample.mask is None:
            m = torch.zeros(1, self.image_size, self.image_size)
            if self.regions:
                regions = torch.zeros(1, self.image_size, self.image_size, dtype=torch.int32)
        else:
            mask = read_mask(sample.mask)
            _check_same_size(sample.image, image.size, sample.mask, mask)
            if self.regions:  # one resize: the region ids' nonzero pixels are the resized mask's
                regions = regions_to_tensor(mask, self.image_size)
                m = (regions > 0).float()
            else:
                m = mask_to_tensor(mask, self.image_size)
        original = None
        if self.original_masks:
            original = mask if mask is not None else np.zeros((image.size[1], image.size[0]), dtype=bool)
        return Item(x, m, int(sample.label), index, original, regions)


def collate(items: Sequence[Item]) -> Batch:
    """Stack Items into a Batch (the DataLoader's `collate_fn`)."""
    return Batch(
        images=torch.stack([it.image for it in items]),  # (B, 3, S, S)
        masks=torch.stack([it.mask for it in items]),  # (B, 1, S, S)
        labels=torch.tensor([it.label for it in items], dtype=torch.long),
        indices=torch.tensor([it.index for it in items], dtype=torch.long),
        original_masks=None if items[0].original_mask is None else tuple(it.original_mask for it in items),
        regions=None if items[0].regions is None else torch.stack([it.regions for it in items]),
    )


def load_batch(
    samples: Sequence[Sample],
    image_size: int,
    normalize: bool = True,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> Batch:
    """All `samples` read at once into one Batch (small sets, e.g. the k support shots)."""
    dataset = SampleDataset(samples, image_size, normalize, mean, std)
    return collate([dataset[i] for i in range(len(dataset))])


def _check_same_size(image: Path, size: tuple[int, int], mask_path: Path, mask: np.ndarray) -> None:
    """A mask must have its image's (W, H); else a DataError naming both files and sizes."""
    mask_size = (mask.shape[1], mask.shape[0])
    if mask_size != tuple(size):
        raise DataError(mask_size_message(image, tuple(size), mask_path, mask_size))
