"""Runs a detector over a split in batches into the streaming metric accumulator (METHOD §11).

Images load in DataLoader workers while the model runs; pixel metrics are computed at the
model's input size, or at each mask's original size on request (the MVTec evaluation's rule). At
the model's size AUPRO's regions are the mask's 8-connected regions at its original size, resized
with it: a thin defect the resize breaks into pieces still counts as one region.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .config import EvalConfig
from .data.dataset import Batch, SampleDataset, collate
from .data.sample import Sample
from .decoder import resize_maps
from .detector import Detector, Scores
from .metrics import Metrics, MetricsAccumulator, MetricsCurves, wrongness
from .runtime import default_workers, metric_threads
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
    worst_maps: dict[int, np.ndarray] = field(default_factory=dict)  # sample index → fused map (S, S): WorstMaps

    @property
    def images_per_second(self) -> float:
        return len(self.scores) / max(self.seconds, 1e-9)


REPORT_CASES = 48  # the worst cases report.html draws


class WorstMaps:
    """The fused maps (S, S) of the images the report may draw (metrics.report_picks): of each
    label, the `count` furthest on the wrong side of the image threshold (of equals, the earlier
    image), kept while a test pass scores them, so that the report draws them without scoring
    them again."""

    def __init__(self, threshold: float, count: int) -> None:
        self.threshold, self.count = threshold, count
        self._heaps: dict[int, list[tuple[float, int, np.ndarray]]] = {0: [], 1: []}  # least wrong first

    def add(self, first: int, scores: np.ndarray, labels: np.ndarray, maps: np.ndarray) -> None:
        """A batch of images first, first+1, …: scores (B,), labels (B,), maps (B, S, S)."""
        for j, wrong in enumerate(wrongness(labels, scores, self.threshold)):
            heap = self._heaps[int(labels[j])]
            key = (float(wrong), -(first + j))  # indices differ, so maps are never compared
            if len(heap) < self.count:
                heapq.heappush(heap, (*key, maps[j].copy()))
            elif heap and key > heap[0][:2]:
                heapq.heapreplace(heap, (*key, maps[j].copy()))

    def maps(self) -> dict[int, np.ndarray]:
        return {-negative: amap for heap in self._heaps.values() for _, negative, amap in heap}


def batches(
    samples: Sequence[Sample],
    prep: Preprocess,
    batch_size: int,
    workers: int | None,
    device: torch.device | None = None,
    original_masks: bool = False,
    regions: bool = False,
) -> Iterator[Batch]:
    """Batches of a split in order; worker processes decode while the model computes.

    original_masks: batches also carry each mask at its image's own size (Batch.original_masks).
    regions: batches also carry each mask's region ids at the model's size (Batch.regions).
    """
    if workers is None:
        workers = default_workers(device or torch.device("cpu"))
    dataset = SampleDataset(samples, prep.image_size, prep.normalize, prep.mean, prep.std, original_masks, regions)
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
    """Feeds a MetricsAccumulator from background threads, so that the CPU work of a batch (sorting
    keys, labelling regions) overlaps the accelerator's work on the next batches. `threads` batches
    are prepared at once; they are committed in the order added, so the result is the same for any
    number of threads. At most `depth` batches wait; an error in a thread surfaces in add or finish."""

    def __init__(self, accumulator: MetricsAccumulator, threads: int = 1, depth: int | None = None) -> None:
        self.accumulator = accumulator
        self.depth = depth if depth is not None else threads + 1
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="metrics")
        self.pending: deque[Future] = deque()

    def add(self, *arrays: object) -> None:
        while len(self.pending) >= self.depth:
            self.accumulator.commit(self.pending.popleft().result())
        self.pending.append(self.pool.submit(self.accumulator.prepare, *arrays))

    def wait(self) -> None:
        """Until every batch added so far is in the accumulator."""
        while self.pending:
            self.accumulator.commit(self.pending.popleft().result())

    def finish(self) -> MetricsAccumulator:
        try:
            self.wait()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        return self.accumulator


@dataclass
class HostScores:
    """A batch's results on the host: image scores (B,) and, when asked for, fused maps (B, S, S)."""

    image_scores: np.ndarray
    maps: np.ndarray | None


def _fetch_later(scores: Scores, with_maps: bool) -> Callable[[], HostScores]:
    """Start copying a batch's results to the host; the returned call waits for them. On a GPU the
    copies go asynchronously into pinned memory, so the device runs on meanwhile."""
    tensors = [scores.image_score] + ([scores.anomaly_map] if with_maps else [])
    if tensors[0].device.type != "cuda":
        arrays = [t.float().numpy() for t in tensors]
        return lambda: HostScores(arrays[0], arrays[1] if with_maps else None)
    pinned = [torch.empty(t.shape, dtype=torch.float32, pin_memory=True) for t in tensors]
    for host, device in zip(pinned, tensors, strict=True):
        host.copy_(device, non_blocking=True)
    done = torch.cuda.Event()
    done.record(torch.cuda.current_stream(tensors[0].device))  # the copies' stream, on cuda:N too

    def fetch() -> HostScores:
        done.synchronize()
        return HostScores(pinned[0].numpy(), pinned[1].numpy() if with_maps else None)

    return fetch


def score_batches(
    detector: Detector, loader: Iterable[Batch], *, with_maps: bool
) -> Iterator[tuple[Batch, HostScores]]:
    """Every batch with its results on the host, in order. The next batch is queued on the device
    before the results of the last one are waited for: the accelerator does not idle while the host
    copies them out or hands them to the metrics."""
    pending: tuple[Batch, Callable[[], HostScores]] | None = None
    for batch in loader:
        fetch = _fetch_later(detector.score(batch.images), with_maps)
        if pending is not None:
            yield pending[0], pending[1]()
        pending = (batch, fetch)
    if pending is not None:
        yield pending[0], pending[1]()


def evaluate(
    detector: Detector,
    samples: Sequence[Sample],
    prep: Preprocess,
    cfg: EvalConfig,
    *,
    progress: bool = True,
    worst: WorstMaps | None = None,
) -> Evaluation:
    """Score every sample and compute image (and, with masks, pixel) metrics; `worst` keeps the
    maps of the images the report will draw."""
    start = time.perf_counter()
    acc = BackgroundAdder(MetricsAccumulator(pixel_metrics=detector.has_masks), metric_threads(detector.device))
    bar = tqdm(total=len(samples), desc="test", unit="img", disable=not progress, leave=False)
    original = detector.has_masks and cfg.pixel_resolution == "original"
    batch_size = cfg.batch_for(detector.device.type)
    at_model_size = detector.has_masks and not original  # ground truth as regions labelled at full size
    loader = batches(
        samples, prep, batch_size, cfg.workers, detector.device, original_masks=original, regions=at_model_size
    )
    seen = 0
    for batch, host in score_batches(detector, loader, with_maps=detector.has_masks or worst is not None):
        labels = batch.labels.numpy()
        if worst is not None:
            worst.add(seen, host.image_scores, labels, host.maps)
        seen += len(labels)
        if not detector.has_masks:
            acc.add(host.image_scores, labels)
        elif original:  # each map bilinearly resized to its mask's own (H, W)
            maps = [
                resize_maps(amap, mask.shape)
                for amap, mask in zip(torch.from_numpy(host.maps), batch.original_masks, strict=True)
            ]
            acc.add(host.image_scores, labels, maps, list(batch.original_masks))
        else:
            acc.add(host.image_scores, labels, host.maps, None, batch.regions[:, 0].numpy())
        bar.update(len(labels))
    bar.close()
    done = acc.finish()
    seconds = time.perf_counter() - start
    kept = worst.maps() if worst is not None else {}
    return Evaluation(done.compute(), done.curves(), done.image_scores, done.image_labels, seconds, kept)


def fit_test_calibration(
    detector: Detector, samples: Sequence[Sample], prep: Preprocess, cfg: EvalConfig, *, progress: bool = True
) -> Calibration:
    """The `paper` protocol's transductive min-max of every branch over the whole test set."""
    tracker = RangeTracker()
    bar = tqdm(total=len(samples), desc="test min-max", unit="img", disable=not progress, leave=False)
    for batch in batches(samples, prep, cfg.batch_for(detector.device.type), cfg.workers, detector.device):
        tracker.add(detector.branch_maps(batch.images))
        bar.update(len(batch.labels))
    bar.close()
    nan = float("nan")
    return Calibration("test", tracker.scales(), image_threshold=nan, pixel_threshold=nan, n_reference=len(samples))
