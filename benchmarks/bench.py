"""Speed and memory of ClipMPCAD against its floor, the bare frozen backbone (issue: "Fast where it counts").

Measures, in one process tree on one device, same model, input size and batch:
  - bare OpenCLIP encode_image throughput (the floor), and ClipMPCAD test throughput with k = 4 and
    k = 16 banks (model, bank search, fusion, metrics; images already in memory, as for the floor);
  - training time per support view per epoch at batch 1 and batch 8, against the bare backbone's
    forward time per image at the same batch;
  - peak memory: RSS of each phase's own process, and GPU memory on GPU.
Prints a table of ratios measured in this one run, and writes JSON with --json. Random weights:
speed does not depend on them. Never collected as a test.

    python benchmarks/bench.py --model ViT-B-16 --image-size 224
    python benchmarks/bench.py --model ViT-L-14-336 --image-size 240 --device cuda --test-batch 64
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from clipmpcad.config import BANK_PRECISIONS, PRECISIONS
from clipmpcad.runtime import precision_name


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Seconds of the fastest of `repeats` calls after one warm-up call (the least disturbed one)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def floor_seconds(
    model, batch: int, device: torch.device, repeats: int, precision: str = "auto", kernels: str = "torch"
) -> float:
    """The bare image tower on one batch at `precision`, in this same process.

    kernels "torch": OpenCLIP's encode_image as it comes, on torch's own kernels (the issue's
    floor). Under CPU autocast OpenCLIP's fused attention path runs about 20× slower than plain
    products, so there it is the same tower run block by block as Backbone.blocks runs it
    (embedding, all blocks, ln_post and proj of the CLS token: encode_image's arithmetic, at its
    faster speed). kernels "clipmpcad": that block-by-block tower on ClipMPCAD's own kernels (on a
    CPU in fp32 its products go through oneDNN, products.py): the floor of the same arithmetic.
    """
    from clipmpcad.products import torch_kernels
    from clipmpcad.runtime import autocast

    backbone = model.backbone
    images = torch.rand(batch, 3, backbone.info.image_size, backbone.info.image_size, device=device)
    depth = len(backbone.visual.transformer.resblocks)

    def tower():
        backbone.project(backbone.blocks(backbone.embed(images), 0, depth)[:, :1])

    def forward():
        with torch.no_grad(), autocast(device, precision):
            if kernels == "clipmpcad":
                tower()
                return
            with torch_kernels():
                tower() if torch.is_autocast_enabled("cpu") else backbone.visual(images)

    return timed(forward, device, repeats)


def both_floors(model, batch: int, device: torch.device, args, key: str) -> dict:
    """Seconds per image of the bare tower on torch's kernels (floor_…) and on ClipMPCAD's (tower_…)."""
    return {
        f"{name}_s_per_image_{key}": floor_seconds(model, batch, device, args.repeats, args.precision, kernels) / batch
        for name, kernels in (("floor", "torch"), ("tower", "clipmpcad"))
    }


def build(args):
    from clipmpcad.backbone import load_backbone
    from clipmpcad.config import AdapterConfig, BackboneConfig, DecoderConfig
    from clipmpcad.model import ClipMPCAD
    from clipmpcad.runtime import configure_cpu

    configure_cpu()
    torch.manual_seed(0)
    backbone = load_backbone(
        BackboneConfig(model=args.model, weights="random", image_size=args.image_size), with_text=False
    )
    prototypes = torch.nn.functional.normalize(torch.randn(backbone.info.embed_dim, 2), dim=0)
    model = ClipMPCAD(backbone, prototypes, AdapterConfig(kind=args.adapter), DecoderConfig())
    backbone.store_products(torch.device(args.device), args.precision)
    return model.to(torch.device(args.device))


def phase_floor(args) -> dict:
    """Bare OpenCLIP image tower alone: its seconds per image and its own peak memory."""
    device = torch.device(args.device)
    model = build(args)
    results = {}
    for b in sorted({args.test_batch, 1, 8}):
        results.update(both_floors(model, b, device, args, f"b{b}"))
    return results


def test_setup(args):
    """A model and a detector with a k-shot bank and its reference calibration."""
    from clipmpcad.detector import Detector, build_bank, calibrate_on_reference
    from clipmpcad.training import SupportSet

    device = torch.device(args.device)
    model = build(args)
    s, k = args.image_size, args.k
    normals = SupportSet.of_images(torch.rand(k, 3, s, s), torch.zeros(k, 1, s, s), torch.zeros(k, dtype=torch.long))
    model.bank = build_bank(model, normals, ("seg",), device, args.test_batch, args.precision)
    model.bank = model.bank.placed(device, args.bank_precision, args.precision)
    detector = Detector(model, None, has_masks=True, image_size=s, device=device, precision=args.precision)
    detector.calibration = calibrate_on_reference(
        detector, normals, batch=args.test_batch, image_fpr=0.05, pixel_fpr=0.01
    )
    return model, detector


def test_inputs(size: int, batch: int, device: torch.device):
    """One test batch on the device, half of it anomalous: (images, labels, ground truth)."""
    images = torch.rand(batch, 3, size, size, device=device)
    labels = (torch.arange(batch) % 2).numpy()
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    lesion = ((yy - size / 3) ** 2 + (xx - size / 2) ** 2 < (size / 8) ** 2).numpy()  # one defect region
    gt = lesion[None] & (labels[:, None, None] == 1)  # anomalous images carry it, normal ones none
    return images, labels, gt


def test_pass(detector, images, labels, gt, batches: int) -> None:
    """`batches` test batches as evaluation.evaluate runs them: the next batch queued on the
    device before the last one's results come back, metrics in a background thread."""
    from clipmpcad.data.dataset import Batch
    from clipmpcad.evaluation import BackgroundAdder, score_batches
    from clipmpcad.metrics import MetricsAccumulator
    from clipmpcad.runtime import metric_threads

    adder = BackgroundAdder(MetricsAccumulator(pixel_metrics=True), metric_threads(detector.device))
    batch = Batch(images, torch.from_numpy(gt[:, None]).float(), torch.from_numpy(labels), torch.arange(len(labels)))
    for _, host in score_batches(detector, [batch] * batches, with_maps=True):
        adder.add(host.image_scores, labels, host.maps, gt)
    adder.finish()


def phase_test(args) -> dict:
    """ClipMPCAD test pass with a k-shot bank: detector, host copies and the metric accumulator."""
    device = torch.device(args.device)
    model, detector = test_setup(args)
    images, labels, gt = test_inputs(args.image_size, args.test_batch, device)
    seconds = timed(lambda: test_pass(detector, images, labels, gt, 4), device, args.repeats) / 4
    bank_bytes = sum(t.numel() * t.element_size() for ts in model.bank.tokens.values() for t in ts)
    tag = f"k{args.k}{precision_tag(args.bank_precision)}"
    return {
        f"test_s_per_image_{tag}": seconds / args.test_batch,
        f"bank_gib_{tag}": bank_bytes / 2**30,
        f"bank_rows_{tag}": len(model.bank),
        **both_floors(model, args.test_batch, device, args, tag),
    }


def phase_train(args) -> dict:
    """Seconds per support view per epoch (the second epoch; prefixes cached once per run)."""
    from clipmpcad.config import TrainConfig
    from clipmpcad.training import SupportSet, fit

    device = torch.device(args.device)
    model = build(args)
    s = args.image_size
    images = torch.rand(2, 3, s, s)
    masks = torch.zeros(2, 1, s, s)
    masks[1, :, s // 4 : s // 2, s // 4 : s // 2] = 1
    support = SupportSet.of_images(images, masks, torch.tensor([0, 1]))
    epoch_times = []

    def mark(epoch):
        sync(device)
        epoch_times.append(time.perf_counter())

    sync(device)
    start = time.perf_counter()
    fit(
        model,
        support,
        TrainConfig(epochs=args.epochs, batch_size=args.train_batch, lr=1e-3),
        device=device,
        generator=torch.Generator().manual_seed(0),
        precision=args.precision,
        on_epoch=mark,
        progress=False,
    )
    per_epoch = min(b - a for a, b in itertools.pairwise(epoch_times))
    first = epoch_times[0] - start
    return {
        f"train_s_per_view_epoch_b{args.train_batch}": per_epoch / len(support),
        f"train_first_epoch_s_b{args.train_batch}": first,
        **both_floors(model, args.train_batch, device, args, f"train_b{args.train_batch}"),
    }


PHASES = {"floor": phase_floor, "test": phase_test, "train": phase_train}


def run_phase(args, phase: str, **extra) -> dict:
    """One phase in a fresh interpreter, so that its peak RSS is its own."""
    cmd = [
        sys.executable,
        __file__,
        "--phase",
        phase,
        "--model",
        args.model,
        "--image-size",
        str(args.image_size),
        "--device",
        args.device,
        "--test-batch",
        str(args.test_batch),
        "--repeats",
        str(args.repeats),
        "--adapter",
        args.adapter,
        "--precision",
        args.precision,
        "--epochs",
        str(args.epochs),
    ]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"phase {phase} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def precision_tag(precision: str) -> str:
    """The suffix of a bank precision in result keys: none for "auto"."""
    return "" if precision == "auto" else f"_{precision}"


def bank_precisions(device: str, precision: str) -> tuple[str, str]:
    """The bank precision "auto" picks for a model computing at `precision` on `device`
    (memory_bank.bank_dtype's rule), and the other one."""
    from clipmpcad.memory_bank import bank_dtype
    from clipmpcad.runtime import compute_dtype

    place = torch.device(device)
    auto = "bf16" if bank_dtype("auto", place, compute_dtype(place, precision)) == torch.bfloat16 else "fp32"
    return auto, "fp32" if auto == "bf16" else "bf16"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model, bank and timing options that bench.py and test_phases.py share."""
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--adapter", default="madff")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--bank-precision", choices=BANK_PRECISIONS, default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help="backbone and adapters")
    parser.add_argument("--repeats", type=int, default=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--test-batch", type=int, default=8)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3, help="training epochs timed (the fastest after the first)")
    parser.add_argument("--phase", choices=sorted(PHASES))
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    if args.phase:  # child process: one measurement, one JSON line
        if torch.device(args.device).type == "cuda":
            torch.cuda.reset_peak_memory_stats(torch.device(args.device))
        result = PHASES[args.phase](args)
        tag = {"test": f"_k{args.k}{precision_tag(args.bank_precision)}", "train": f"_b{args.train_batch}"}.get(
            args.phase, ""
        )
        result[f"peak_rss_gib_{args.phase}{tag}"] = peak_rss_gib()
        if torch.device(args.device).type == "cuda":
            result[f"peak_gpu_gib_{args.phase}{tag}"] = (
                torch.cuda.max_memory_allocated(torch.device(args.device)) / 2**30
            )
        print(json.dumps(result))
        return
    report(args, collect(args))


def collect(args) -> dict:
    results = {
        "model": args.model,
        "image_size": args.image_size,
        "device": args.device,
        "precision": precision_name(torch.device(args.device), args.precision),
        "test_batch": args.test_batch,
        "adapter": args.adapter,
        "torch": torch.__version__,
    }
    if torch.device(args.device).type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    results.update(run_phase(args, "floor"))
    for k in (4, 16):
        results.update(run_phase(args, "test", k=k))
    _, other = bank_precisions(args.device, args.precision)
    results.update(run_phase(args, "test", k=4, bank_precision=other))
    for batch in (1, 8):
        results.update(run_phase(args, "train", train_batch=batch))
    return results


def report(args, r: dict) -> None:
    """The table; every ratio divides two times taken in the same process, one after the other."""
    floor, tower = r[f"floor_s_per_image_b{args.test_batch}"], r[f"tower_s_per_image_b{args.test_batch}"]
    lines = [
        f"# {r['model']} at {r['image_size']} px on {r.get('gpu', r['device'])} ({r['precision']}), "
        f"test batch {r['test_batch']}, adapter {r['adapter']}, torch {r['torch']}",
        "",
        "Ratios divide two times taken in the same process. Bare: OpenCLIP's encode_image on torch's",
        "kernels (the floor); tower: the same tower block by block on ClipMPCAD's kernels.",
        "",
        "| measure | value | ratio to the bare backbone | ratio to the tower |",
        "|---|---|---|---|",
        f"| bare image tower (own process) | {1 / floor:.2f} img/s | 1.00 | {floor / tower:.2f} × throughput "
        f"({1 / tower:.2f} img/s tower) |",
    ]
    auto, other = bank_precisions(args.device, args.precision)
    for tag, what in (
        ("k4", f"k = 4 bank ({auto})"),
        ("k16", f"k = 16 bank ({auto})"),
        (f"k4_{other}", f"k = 4 bank ({other})"),
    ):
        t, f, w = r[f"test_s_per_image_{tag}"], r[f"floor_s_per_image_{tag}"], r[f"tower_s_per_image_{tag}"]
        r[f"test_throughput_ratio_{tag}"], r[f"test_throughput_ratio_to_tower_{tag}"] = f / t, w / t
        lines.append(
            f"| ClipMPCAD test, {what} ({r[f'bank_rows_{tag}']} rows/level) | {1 / t:.2f} img/s | "
            f"{f / t:.2f} × throughput ({1 / f:.2f} img/s bare) | {w / t:.2f} × ({1 / w:.2f} img/s tower) |"
        )
    for batch in (1, 8):
        t = r[f"train_s_per_view_epoch_b{batch}"]
        f, w = r[f"floor_s_per_image_train_b{batch}"], r[f"tower_s_per_image_train_b{batch}"]
        r[f"train_cost_ratio_b{batch}"], r[f"train_cost_ratio_to_tower_b{batch}"] = t / f, t / w
        lines.append(
            f"| training, batch {batch}: per support view per epoch | {1000 * t:.1f} ms | "
            f"{t / f:.2f} × bare forward ({1000 * f:.1f} ms) | {t / w:.2f} × tower forward ({1000 * w:.1f} ms) |"
        )
    for key in sorted(k for k in r if k.startswith(("peak_rss", "peak_gpu", "bank_gib"))):
        lines.append(f"| {key} | {r[key]:.2f} GiB | |")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
