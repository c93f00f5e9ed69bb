"""Where the time of a test batch goes: cumulative phases timed in one process, and a kernel table.

Each line adds one stage to the one before, on the same batch, model and bank as bench.py's test
phase, so the differences between lines are the stages' costs:

    floor          bare OpenCLIP encode_image (torch's kernels)
    tower          the same tower block by block on ClipMPCAD's kernels (not cumulative)
    features       backbone from the first level on, with the adapters and re-injection
    forward        + text logits and the memory-bank search (ModelOutput)
    score          + maps, fusion and image scores (Detector.score)
    host           + the results copied to the host (evaluation.score_batches)
    test           + metrics in the background thread (bench.py's test measure)
    metrics alone  the accumulator's work for one batch on the host, nothing else

With --profile B, torch.profiler's table of one `test` pass (sorted by device time on a GPU) and the
fraction of the pass's wall time that the device was busy. Never collected as a test.

    python benchmarks/test_phases.py --model ViT-L-14-336 --image-size 240 --test-batch 64 128 256 --profile 128
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from bench import add_model_arguments, floor_seconds, sync, test_inputs, test_pass, test_setup, timed


def phases(args, model, detector, batch: int) -> dict:
    from clipmpcad.evaluation import score_batches
    from clipmpcad.metrics import MetricsAccumulator
    from clipmpcad.runtime import autocast

    device = torch.device(args.device)
    images, labels, gt = test_inputs(args.image_size, batch, device)
    n = args.batches

    def repeat(fn):
        def run():
            for _ in range(n):
                fn()

        return run

    @torch.no_grad()
    def features():
        with autocast(device, args.precision):
            model.features(images, last_branches=("seg",))

    @torch.no_grad()
    def forward():
        with autocast(device, args.precision):
            model(images, branches=("seg",))

    def host():
        from clipmpcad.data.dataset import Batch

        batch = Batch(images, torch.zeros(1), torch.from_numpy(labels), torch.arange(len(labels)))
        for _ in score_batches(detector, [batch] * n, with_maps=True):
            pass

    scores = detector.score(images)
    maps, image_scores = scores.anomaly_map.float().cpu().numpy(), scores.image_score.float().cpu().numpy()
    timings = {
        "floor": floor_seconds(model, batch, device, args.repeats, args.precision),
        "tower": floor_seconds(model, batch, device, args.repeats, args.precision, kernels="clipmpcad"),
    }
    for name, fn in (
        ("features", repeat(features)),
        ("forward", repeat(forward)),
        ("score", repeat(lambda: detector.score(images))),
        ("host", host),
        ("test", lambda: test_pass(detector, images, labels, gt, n)),
    ):
        timings[name] = timed(fn, device, args.repeats) / n
    timings["metrics alone"] = timed(
        lambda: MetricsAccumulator(pixel_metrics=True).add(image_scores, labels, maps, gt), device, args.repeats
    )
    if args.profile == batch:
        profile(args, device, lambda: test_pass(detector, images, labels, gt, n))
    return timings


def profile(args, device: torch.device, fn) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn()
    sync(device)
    with torch_profile(activities=activities) as prof:
        start = time.perf_counter()
        fn()
        sync(device)
        wall = time.perf_counter() - start
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=args.rows, max_name_column_width=60))
    if device.type == "cuda":
        busy = sum(e.self_device_time_total for e in prof.key_averages()) / 1e6
        print(f"device busy {busy:.3f} s of {wall:.3f} s wall ({100 * busy / wall:.0f} %) over {args.batches} batches")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--test-batch", type=int, nargs="+", default=[8], help="one or more batch sizes")
    parser.add_argument("--batches", type=int, default=4, help="batches per timed pass")
    parser.add_argument("--profile", type=int, metavar="BATCH", help="profile the test pass at this batch size")
    parser.add_argument("--rows", type=int, default=30, help="rows of the profiler table")
    parser.add_argument("--json", help="write the timings here too")
    args = parser.parse_args()
    sizes = args.test_batch
    args.test_batch = max(sizes)  # the batch of the bank and calibration passes
    model, detector = test_setup(args)
    results = {}
    for b in sizes:
        timings = results[b] = phases(args, model, detector, b)
        print(f"# {args.model} at {args.image_size} px, batch {b}, k = {args.k}, {args.device}", flush=True)
        print("| stage (cumulative) | ms per batch | images/s | × floor time | × tower time |\n|---|---|---|---|---|")
        for name, seconds in timings.items():
            print(
                f"| {name} | {1000 * seconds:.1f} | {b / seconds:.1f} | {seconds / timings['floor']:.2f} | "
                f"{seconds / timings['tower']:.2f} |"
            )
        print(flush=True)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"args": {**vars(args), "test_batch": sizes}, "seconds_per_batch": results}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
