"""115 M pixels (2,000 images at 240×240) evaluate exactly within 4 GiB of peak RSS.

The evaluation runs in a fresh interpreter, whose peak RSS is read from /proc (VmHWM) and, as an
upper bound that may include the forking parent, from ru_maxrss. Scores take 2**16 levels, so the
same process also computes every metric independently from per-level counts (a histogram of each
class, and of the AUPRO region weights) and compares. A second run jitters the scores within
their level (about 115 M distinct values, the hardest case for time) and must stay close.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time

    def peak_gib():  # VmHWM: this process's own peak (ru_maxrss may carry the parent's over exec)
        try:
            with open("/proc/self/status") as status:
                line = next(l for l in status if l.startswith("VmHWM:"))
            return int(line.split()[1]) / 2**20
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    import numpy as np
    from scipy import ndimage
    from clipmpcad.metrics import MetricsAccumulator

    LEVELS, N, S, B = 2**16, 2000, 240, 50
    rng = np.random.default_rng(0)
    h0, h1, weight = np.zeros(LEVELS), np.zeros(LEVELS), np.zeros(LEVELS)
    n_regions = 0
    yy, xx = np.mgrid[:S, :S]
    accumulator = MetricsAccumulator(pixel_metrics=True)
    rss_start = peak_gib()
    start = time.perf_counter()
    for first in range(0, N, B):
        labels = rng.random(B) < 0.5
        masks = np.zeros((B, S, S), dtype=bool)
        for _ in range(2):  # up to two discs per anomalous image
            cy, cx, r = (rng.integers(0, S, B)[:, None, None] for _ in range(3))
            masks |= ((yy - cy) ** 2 + (xx - cx) ** 2 < (r % 60) ** 2) & labels[:, None, None]
        q = rng.integers(0, LEVELS * 3 // 4, (B, S, S)) + masks * (LEVELS // 4)  # < LEVELS
        if sys.argv[1] == "continuous":  # jitter within the level: order between levels kept
            maps = ((q + 0.999 * rng.random(q.shape)) / LEVELS).astype(np.float32)
        else:
            maps = (q / LEVELS).astype(np.float32)  # exact in float32: same order and ties as q
        accumulator.add(maps.max(axis=(1, 2)), labels.astype(int), maps, masks)
        h0 += np.bincount(q[~masks], minlength=LEVELS)
        h1 += np.bincount(q[masks], minlength=LEVELS)
        for b in range(B):  # independent AUPRO weights: 1 / region size per pixel
            regions, n = ndimage.label(masks[b], structure=np.ones((3, 3)))
            sizes = np.bincount(regions.ravel())
            inside = regions > 0
            weight += np.bincount(q[b][inside], 1.0 / sizes[regions[inside]], minlength=LEVELS)
            n_regions += n
    added = time.perf_counter()
    metrics = accumulator.compute()
    done = time.perf_counter()

    # independent: per-level counts, thresholds from the top level down
    n0, n1 = h0.sum(), h1.sum()
    tp, fp = np.cumsum(h1[::-1]), np.cumsum(h0[::-1])  # counts at or above each level
    below0 = n0 - fp  # normal pixels strictly below each level
    auroc = np.sum(h1[::-1] * (below0 + 0.5 * h0[::-1])) / (n0 * n1)
    used = h1[::-1] > 0
    ap = np.sum(h1[::-1][used] / n1 * tp[used] / (tp[used] + fp[used]))
    x = np.concatenate([[0.0], fp / n0, [1.0]])
    y = np.concatenate([[0.0], np.cumsum(weight[::-1]) / n_regions, [1.0]])
    i = np.searchsorted(x, 0.3, side="right")  # first point beyond the limit
    y_at = y[i - 1] + (y[i] - y[i - 1]) * (0.3 - x[i - 1]) / (x[i] - x[i - 1])
    area = np.sum(0.5 * (y[1:i] + y[: i - 1]) * np.diff(x[:i]))
    area += 0.5 * (y[i - 1] + y_at) * (0.3 - x[i - 1])
    print(json.dumps({
        "metrics": metrics.to_dict(),
        "expected": {"pixel_auroc": auroc, "pixel_ap": ap, "pixel_aupro": area / 0.3},
        "rss_start_gib": rss_start,
        "rss_peak_gib": peak_gib(),
        "ru_maxrss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "add_s": added - start,
        "compute_s": done - added,
    }))
    """
)


@pytest.mark.parametrize(("scores", "tolerance"), [("quantised", 1e-9), ("continuous", 1e-4)])
def test_115m_pixels_within_4_gib_and_exact(scores, tolerance):
    command = [sys.executable, "-c", SCRIPT, scores]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    print(json.dumps({k: v for k, v in report.items() if k != "metrics"}, indent=1))
    metrics = report["metrics"]
    assert metrics["n_pixels"] == 2000 * 240 * 240
    assert report["rss_peak_gib"] < 4.0 and report["ru_maxrss_gib"] < 4.0
    assert report["compute_s"] < 60
    for name, expected in report["expected"].items():
        assert abs(metrics[name] - expected) < tolerance, (name, metrics[name], expected)
