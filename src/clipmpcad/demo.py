"""The demo: a generated benchmark, the full method on the tiny random backbone, a results table.

Everything runs on a laptop CPU in a few minutes and downloads nothing. The backbone is random,
so the table shows that the pipeline works end to end, not how well the method detects anomalies.
"""

from __future__ import annotations

from pathlib import Path

from .atomic import write_text
from .config import DEMO_EPOCHS, SEED_LIMIT, RunConfig
from .data.synthetic import generate_benchmark
from .errors import ConfigError
from .experiment import describe_header, evaluate_run, train_model
from .metrics.summary import RunResult
from .report.tables import benchmark_table
from .runs import check_output_folder

DEMO_BACKBONE = {"model": "clipmpcad-tiny", "weights": "random", "image_size": 96}


def demo_config(dataset: str, root: Path, category: str, epochs: int) -> RunConfig:
    """The full method (MADFF, M-Decoder, base+P-Prompts, clean protocol) at 4 shots on the tiny model."""
    return RunConfig.from_dict(
        {
            "data": {"dataset": dataset, "root": str(root), "category": category, "shot": 4},
            "backbone": DEMO_BACKBONE,
            "train": {"epochs": epochs, "batch_size": 8},
            "device": "cpu",
        }
    )


def run_demo(
    out: Path, *, seed: int = 0, epochs: int | None = None, overwrite: bool = False, progress: bool = True
) -> str:
    """Generate, train and test every generated set; write OUT/demo.md and return the table."""
    demo_config("bmad", out, "check", DEMO_EPOCHS if epochs is None else epochs)  # its checks, before any work
    if not 0 <= seed < SEED_LIMIT:
        raise ConfigError(f"the demo's --seed must be in [0, 2**63), got {seed}")
    check_output_folder(out, overwrite, what="demo")  # --overwrite redoes its data, runs and table
    bench = generate_benchmark(out / "data", seed=seed, overwrite=overwrite)
    results, header = [], ""
    for s in bench.sets:
        cfg = demo_config(s.dataset, s.root, s.category, DEMO_EPOCHS if epochs is None else epochs)
        run_dir = out / "runs" / s.category
        record = evaluate_run(train_model(cfg, run_dir, overwrite=overwrite, progress=progress), progress=progress)
        header = header or describe_header(record)
        results.append(
            RunResult(record["dataset"], record["category"], record["shot"], record["seed"], record, record["domain"])
        )
        if progress:
            print(f"{s.dataset}/{s.category}: report in {run_dir / 'report.html'}", flush=True)
    table = benchmark_table(results, metrics=("image_auroc", "pixel_auroc", "pixel_aupro")).to_markdown()
    text = "ClipMPCAD demo on a generated benchmark\n" + header.split("\n", 1)[1] + "\n" + table
    write_text(out / "demo.md", text)
    return text
