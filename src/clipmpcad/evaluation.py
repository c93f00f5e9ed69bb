"""Runs a detector over a split in batches into the streaming metric accumulator (METHOD §11).

Images load in DataLoader workers while the model runs; pixel metrics are computed at the
model's input size, or at each mask's original size on request (the MVTec evaluation's rule).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .config import EvalConfig
from .data.dataset import Batch, SampleDataset, collate, read_original_mask
from .data.sample import Sample
from .decoder import resize_maps
from .detector import Detector
from .metrics import Metrics, MetricsAccumulator, MetricsCurves
from .runtime import default_workers
from .scoring import Calibration, RangeTracker


@dataclass(frozen=True)
class Preprocess:
    """How images become model inputs for one run."""

    image_size: int
    normalize: bool  # CLIP mean/std normalisation (off for medical data under `paper`)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass
class Evaluation:
    metrics: Metrics
    curves: MetricsCurves
    scores: np.ndarray  # (N,) image scores in sample order
    labels: np.ndarray  # (N,)
    seconds: float  # wall time of the pass, loading included

    @property
    def images_per_second(self) -> float:
        return len(self.scores) / max(self.seconds, 1e-9)


def batches(
    samples: Sequence[Sample],
    prep: Preprocess,
    batch_size: int,
    workers: int | None,
    device: torch.device | None = None,
) -> Iterator[Batch]:
    """Batches of a split in order; worker processes decode while the model computes."""
    if workers is None:
        workers = default_workers(device or torch.device("cpu"))
    dataset = SampleDataset(samples, prep.image_size, prep.normalize, prep.mean, prep.std)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device is not None and device.type == "cuda",
        collate_fn=collate,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )
    yield from loader


class BackgroundAdder:
    """Feeds a MetricsAccumulator from one background thread, so that the CPU work of a batch
    (sorting keys, labelling regions) overlaps the accelerator's work on the next batch. Batches
    are added in order; at most `depth` wait; an error in the thread surfaces in add or finish."""

    def __init__(self, accumulator: MetricsAccumulator, depth: int = 2) -> None:
        self.accumulator = accumulator
        self.depth = depth
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics")
        self.pending: deque[Future] = deque()

    def add(self, *arrays: object) -> None:
        while len(self.pending) >= self.depth:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(self.accumulator.add, *arrays))

    def wait(self) -> None:
        """Until every batch added so far is in the accumulator."""
        while self.pending:
            self.pending.popleft().result()

    def finish(self) -> MetricsAccumulator:
        try:
            self.wait()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        return self.accumulator


def evaluate(
    detector: Detector,
    samples: Sequence[Sample],
    prep: Preprocess,
    cfg: EvalConfig,
    *,
    progress: bool = True,
) -> Evaluation:
    """Score every sample and compute image (and, with masks, pixel) metrics."""
    start = time.perf_counter()
    acc = BackgroundAdder(MetricsAccumulator(pixel_metrics=detector.has_masks))
    bar = tqdm(total=len(samples), desc="test", unit="img", disable=not progress, leave=False)
    for batch in batches(samples, prep, cfg.batch_size, cfg.workers, detector.device):
        scores = detector.score(batch.images)
        image_scores = scores.image_score.float().cpu().numpy()
        labels = batch.labels.numpy()
        if not detector.has_masks:
            acc.add(image_scores, labels)
        elif cfg.pixel_resolution == "original":
            chosen = [samples[i] for i in batch.indices.tolist()]
            maps, masks = _at_original_size(scores.anomaly_map, chosen)
            acc.add(image_scores, labels, maps, masks)
        else:
            acc.add(image_scores, labels, scores.anomaly_map.float().cpu().numpy(), batch.masks[:, 0].numpy())
        bar.update(len(labels))
    bar.close()
    done = acc.finish()
    seconds = time.perf_counter() - start
    return Evaluation(done.compute(), done.curves(), done.image_scores, done.image_labels, seconds)


def _at_original_size(maps: torch.Tensor, samples: Sequence[Sample]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each map bilinearly resized to its mask's original (H, W), with that mask."""
    out_maps, out_masks = [], []
    for amap, sample in zip(maps, samples, strict=True):
        mask = read_original_mask(sample)
        out_maps.append(resize_maps(amap, mask.shape))
        out_masks.append(mask)
    return out_maps, out_masks


def fit_test_calibration(
    detector: Detector, samples: Sequence[Sample], prep: Preprocess, cfg: EvalConfig, *, progress: bool = True
) -> Calibration:
    """The `paper` protocol's transductive min-max of every branch over the whole test set."""
    tracker = RangeTracker()
    bar = tqdm(total=len(samples), desc="test min-max", unit="img", disable=not progress, leave=False)
    for batch in batches(samples, prep, cfg.batch_size, cfg.workers, detector.device):
        tracker.add(detector.branch_maps(batch.images))
        bar.update(len(batch.labels))
    bar.close()
    nan = float("nan")
    return Calibration("test", tracker.scales(), image_threshold=nan, pixel_threshold=nan, n_reference=len(samples))
