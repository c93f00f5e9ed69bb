"""The CUDA-only code paths, on a real GPU: skipped where torch sees none (CI, laptops).

Run on a GPU machine with `pytest tests/test_cuda.py` (benchmarks/gpu_check.sh does). Each test
compares the GPU with an independent CPU computation: the bank search (bf16 rows, fp32 output,
tiles, leave-one-out rectangles) against a float64 brute force, and whole runs trained, tested,
predicted and trained zero-shot on cuda:0 against the same runs' CPU results.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch

from clipmpcad import experiment
from clipmpcad.cli import main
from clipmpcad.memory_bank import MemoryBank
from tinyrun import tiny_run_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

GPU = ["--model", "clipmpcad-tiny", "--weights", "random", "--image-size", "64", "--device", "cuda:0"]


def brute_force(rows: torch.Tensor, owners: torch.Tensor, query: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    """1 − max similarity of the (normalised) query rows in float64, each query sample's own owner's
    rows left out: (B, N)."""
    sims = query.double() @ rows.double().T  # (B, N, M)
    sims[owners[None, None, :].expand_as(sims) == exclude[:, None, None]] = -torch.inf
    return 1.0 - sims.amax(dim=-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bank_search_on_the_gpu_matches_a_float64_brute_force(dtype) -> None:
    g = torch.Generator().manual_seed(0)
    owners = torch.arange(7).repeat_interleave(torch.tensor([300, 411, 289, 500, 77, 623, 300]))  # runs per owner
    rows = torch.nn.functional.normalize(torch.randn(owners.numel(), 96, generator=g), dim=-1)
    placed = MemoryBank({"seg": [rows]}, {"seg": [owners]}).to(torch.device("cuda:0"), dtype)
    query = torch.randn(3, 517, 96, generator=g)
    exclude = torch.tensor([1, 5, 9])  # 9 owns no rows: nothing left out
    got = placed.distances(query.cuda(), "seg", 0, exclude=exclude.cuda(), block_size=1000, query_block=700)
    assert got.dtype == torch.float32 and got.shape == (3, 517) and got.device.type == "cuda"
    stored = placed.tokens["seg"][0].float().cpu()  # the rows as stored (bf16-rounded for a bf16 bank)
    q = torch.nn.functional.normalize(query.float(), dim=-1).to(dtype).float()  # the query in the bank's precision
    want = brute_force(stored, owners, q, exclude)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-4  # bf16 inputs, fp32 sums: only the sums' order differs
    assert (got.cpu().double() - want).abs().max() < tolerance
    whole = placed.distances(query.cuda(), "seg", 0, exclude=exclude.cuda())  # one tile: the same numbers
    assert torch.equal(whole.cpu(), got.cpu()) or (whole - got).abs().max() < tolerance
    assert got.unique().numel() > 0.9 * got.numel()  # fp32 outputs, not bf16's few hundred steps


def train_argv(bench, run, *extra: str) -> list[str]:
    tile = next(s for s in bench.sets if s.dataset == "mvtec")
    where = ["--dataset", "mvtec", "--root", str(tile.root), "--category", tile.category]
    return ["train", *where, "--out", str(run), "--quiet", *GPU, *extra]


def test_a_run_trained_on_the_gpu_tests_and_predicts_alike_on_gpu_and_cpu(synthetic_benchmark, tmp_path) -> None:
    run = tmp_path / "run"
    assert main(train_argv(synthetic_benchmark, run, "--shot", "2", "--epochs", "3")) == 0
    train = json.loads((run / "train.json").read_text())
    assert train["steps"] > 0 and all(torch.isfinite(torch.tensor(train["losses"])))
    assert main(["test", str(run), "--quiet", "--no-report"]) == 0  # the run's device: cuda:0, bf16
    gpu = json.loads((run / "metrics.json").read_text())
    assert (gpu["device"], gpu["precision"]) == ("cuda:0", "bf16")
    assert main(["test", str(run), "--quiet", "--no-report", "--device", "cpu"]) == 0
    cpu = json.loads((run / "metrics.json").read_text())
    assert (cpu["device"], cpu["precision"]) == ("cpu", "fp32")
    for key in ("image_auroc", "pixel_auroc", "pixel_aupro"):
        assert abs(gpu[key] - cpu[key]) < 0.03, (key, gpu[key], cpu[key])
    tile = next(s for s in synthetic_benchmark.sets if s.dataset == "mvtec")
    images = sorted((tile.root / tile.category / "test").rglob("*.png"))[:6]
    scores = {}
    for device in ("cuda:0", "cpu"):
        out = tmp_path / f"preds-{device.replace(':', '')}"
        assert main(["predict", str(run), *map(str, images), "--out", str(out), "--quiet", "--device", device]) == 0
        scores[device] = [float(r["score"]) for r in csv.DictReader((out / "predictions.csv").open())]
    assert len(scores["cpu"]) == len(images)
    spread = max(scores["cpu"]) - min(scores["cpu"])
    assert max(abs(a - b) for a, b in zip(scores["cuda:0"], scores["cpu"], strict=True)) < 0.05 * spread + 1e-3


def test_zero_shot_trained_on_another_category_on_the_gpu(synthetic_benchmark, tmp_path) -> None:
    s = next(s for s in synthetic_benchmark.sets if s.category == "SynthBrain")
    cfg = tiny_run_config(s.dataset, s.root, s.category, protocol="zero-shot", train={"epochs": 2}, device="cuda:0")
    run = experiment.train_run(cfg, tmp_path / "zs", progress=False, train_on=["SynthChest"])
    train = json.loads((run / "train.json").read_text())
    assert train["train_on"] == ["SynthChest"] and train["steps"] > 0
    record = experiment.test_run(run, progress=False, report=False)
    assert record["device"] == "cuda:0" and record["adapter"] == "madff"
    assert 0.0 <= record["image_auroc"] <= 1.0 and 0.0 <= record["pixel_auroc"] <= 1.0
