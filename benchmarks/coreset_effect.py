"""The approximate bank's effect on metrics: the demo's runs with the exact bank and with coresets.

Every generated set is trained once (the demo's configuration: tiny random backbone, 4 shots);
then its bank is rebuilt at each coreset fraction (bank.coreset, greedy k-center as PatchCore),
calibrated and tested. Only the bank changes between the rows of a set, so the differences are
the coreset's. Prints a Markdown table (and writes JSON with --json).

    python benchmarks/coreset_effect.py --fractions 1.0 0.25 0.1 --json coreset.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from clipmpcad.data.fewshot import read_shots
from clipmpcad.data.synthetic import generate_benchmark
from clipmpcad.demo import demo_config
from clipmpcad.experiment import evaluate_run, finish_model, load_data, load_support, train_model
from clipmpcad.protocols import get_protocol


def measure(out: Path, fractions: list[float], epochs: int, seed: int) -> list[dict]:
    bench = generate_benchmark(out / "data", seed=seed)
    rows = []
    for s in bench.sets:
        cfg = demo_config(s.dataset, s.root, s.category, epochs)
        run = train_model(cfg, out / "runs" / s.category, progress=False)
        data, protocol = load_data(cfg), get_protocol(cfg.protocol)
        normals = _normal_support(run)
        for fraction in fractions:
            approximate = cfg.with_overrides({"bank.coreset": fraction})
            start = time.perf_counter()
            detector, _, _ = finish_model(run.detector.model, normals, data, approximate, protocol, run.detector.device)
            build = time.perf_counter() - start
            record = evaluate_run(
                dataclasses.replace(run, config=approximate, detector=detector), progress=False, report=False
            )
            bank = detector.model.bank
            rows.append(
                {
                    "set": f"{s.dataset}/{s.category}",
                    "coreset": fraction,
                    "bank_rows": sum(int(t.shape[0]) for levels in bank.tokens.values() for t in levels),
                    "image_auroc": record["image_auroc"],
                    "pixel_auroc": record["pixel_auroc"],
                    "pixel_aupro": record["pixel_aupro"],
                    "image_threshold": record["calibration"]["image_threshold"],
                    "bank_and_calibration_seconds": build,
                    "test_images_per_second": record["test_images_per_second"],
                }
            )
    return rows


def _normal_support(run):
    """The normal support views the run's bank was built from (train_model keeps none)."""
    cfg = run.config
    data = load_data(cfg)
    shots = read_shots(run.run_dir / "shots.json", data)
    support = load_support(shots, run.prep, cfg.train.views, cfg.seed, data.has_masks)
    return support.select(0)


def table(rows: list[dict]) -> str:
    def pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.2f}"

    lines = [
        "| set | coreset | bank rows | image AUROC | pixel AUROC | AUPRO | image threshold | test img/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['coreset']:g} | {r['bank_rows']:,} | {pct(r['image_auroc'])} | "
            f"{pct(r['pixel_auroc'])} | {pct(r['pixel_aupro'])} | {r['image_threshold']:.4f} | "
            f"{r['test_images_per_second']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.25, 0.1])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated benchmark")
    parser.add_argument("--json", help="write the rows here too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        rows = measure(Path(scratch), args.fractions, args.epochs, args.seed)
    print("Random tiny backbone (clipmpcad-tiny, 96 px), 4 shots: the direction of the effect, not real figures.")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
