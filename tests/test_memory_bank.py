"""The blocked bank search against brute force, and leave-one-out exclusion."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from clipmpcad.detector import loo_groups
from clipmpcad.memory_bank import MemoryBank


def brute_force(query: torch.Tensor, bank: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """1 − max cosine, one query patch and one bank row at a time."""
    out = torch.empty(query.shape[:2])
    for b in range(query.shape[0]):
        for n in range(query.shape[1]):
            best = -2.0
            for m in range(bank.shape[0]):
                if keep is not None and not keep[b, m]:
                    continue
                cos = float(F.cosine_similarity(query[b, n], bank[m], dim=0))
                best = max(best, cos)
            out[b, n] = 1.0 - best
    return out


def make_bank(views: int = 6, tokens: int = 5, dim: int = 8) -> tuple[MemoryBank, torch.Tensor, torch.Tensor]:
    feats = torch.randn(views, tokens, dim)
    groups = torch.arange(views) // 2  # three images of two views each
    return MemoryBank.from_features({"seg": [feats, 2 * feats]}, groups), feats, groups


def test_blocked_search_equals_brute_force() -> None:
    bank, feats, _ = make_bank()
    query = torch.randn(3, 4, 8)
    expected = brute_force(query, feats.flatten(0, 1))
    for block in (1, 7, 30, 10_000):
        for query_block in (None, 1, 5, 12):  # tiles that split a sample's patches, and whole ones
            got = bank.distances(query, "seg", 0, block_size=block, query_block=query_block)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bank.distances(query, "seg", 1), expected, rtol=1e-5, atol=1e-5)  # scale-free


def test_bank_rows_are_unit_norm_and_grouped() -> None:
    bank, _, groups = make_bank()
    rows = bank.tokens["seg"][0]
    assert rows.shape == (6 * 5, 8)
    torch.testing.assert_close(rows.norm(dim=1), torch.ones(30))
    assert bank.groups["seg"][0].tolist() == groups.repeat_interleave(5).tolist()


def test_support_token_scores_zero_against_its_own_bank() -> None:
    bank, feats, _ = make_bank()
    torch.testing.assert_close(bank.distances(feats, "seg", 0), torch.zeros(6, 5), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "groups",
    [
        torch.arange(6) // 2,  # three images of two views each, their rows together
        torch.tensor([0, 1, 0, 2, 1, 2]),  # each image's rows in two runs
        torch.tensor([5, 5, 5, 5, 5, 5]),  # one image: a query from another owns nothing here
    ],
)
def test_leave_one_out_drops_every_row_of_the_own_group(groups: torch.Tensor) -> None:
    feats = torch.randn(6, 5, 8)
    bank = MemoryBank.from_features({"seg": [feats]}, groups)
    exclude = torch.tensor([0, 1, 2, 0, 1, 2])  # each query's group, against the rows' owners
    keep = groups.repeat_interleave(5).unsqueeze(0) != exclude.unsqueeze(1)  # (B, M)
    expected = brute_force(feats, feats.flatten(0, 1), keep)
    for block, query_block in itertools.product((1, 4, 7, 100), (None, 3, 7)):  # tiles that cut samples and runs
        got = bank.distances(feats, "seg", 0, exclude=exclude, block_size=block, query_block=query_block)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    own = (groups == exclude).tolist()  # views whose own group holds them: they may not find themselves
    assert (got[torch.tensor(own)] > 1e-3).all()


def test_loo_groups_with_one_support_image_leaves_out_only_the_view() -> None:
    assert loo_groups(torch.tensor([0, 0, 1, 1])).tolist() == [0, 0, 1, 1]
    assert loo_groups(torch.zeros(11, dtype=torch.long)).tolist() == list(range(11))


def test_state_round_trip() -> None:
    bank, _, _ = make_bank()
    again = MemoryBank.from_state(bank.state())
    query = torch.randn(2, 3, 8)
    torch.testing.assert_close(again.distances(query, "seg", 1), bank.distances(query, "seg", 1))


def test_coreset_keeps_a_fraction_and_covers_the_rows() -> None:
    bank, _, _ = make_bank(views=20, tokens=10, dim=16)
    small = bank.coreset(0.25, seed=1)
    assert small.tokens["seg"][0].shape == (50, 16) and small.groups["seg"][0].shape == (50,)
    query = torch.randn(4, 6, 16)
    exact, approx = bank.distances(query, "seg", 0), small.distances(query, "seg", 0)
    assert torch.all(approx >= exact - 1e-6), "a subset can only be farther"
    # rows of the coreset score zero; greedy coverage beats a random subset of the same size
    rows = bank.tokens["seg"][0]
    random_keep = torch.randperm(200, generator=torch.Generator().manual_seed(0))[:50]
    random_bank = MemoryBank({"seg": [rows[random_keep]]}, {"seg": [bank.groups["seg"][0][random_keep]]})
    worst = lambda b: float(b.distances(rows[None], "seg", 0).max())  # noqa: E731
    assert worst(small) < worst(random_bank)
    assert bank.coreset(1.0) is bank
    kept = small.groups["seg"][0]
    assert torch.equal(kept, kept.sort().values), "the coreset keeps bank order, each owner's rows together"


def test_a_coreset_of_duplicated_rows_keeps_distinct_rows() -> None:
    from clipmpcad.memory_bank import greedy_coreset

    rows = torch.randn(5, 16).repeat(2, 1)  # 10 rows, 5 distinct
    picked = greedy_coreset(rows, 9, seed=0)
    assert picked.unique().numel() == 9  # every index once, duplicates of chosen rows last
    assert {tuple(r) for r in rows[picked[:5]].tolist()} == {tuple(r) for r in rows[:5].tolist()}


def test_calibration_refuses_a_bank_that_keeps_one_support_image(synthetic_benchmark, tmp_path) -> None:
    from clipmpcad import experiment
    from clipmpcad.errors import ConfigError
    from tinyrun import tiny_run_config

    s = next(s for s in synthetic_benchmark.sets if s.dataset == "mvtec")
    cfg = tiny_run_config("mvtec", s.root, s.category, bank={"coreset": 0.0001}, train={"epochs": 0})
    with pytest.raises(ConfigError, match="keeps rows of a single support image"):
        experiment.train_model(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_bf16_bank_is_close_to_exact() -> None:
    bank, _, _ = make_bank(views=8, tokens=10, dim=32)
    query = torch.randn(3, 7, 32)
    exact = bank.distances(query, "seg", 0)
    approx = bank.to(torch.device("cpu"), torch.bfloat16).distances(query, "seg", 0)
    assert approx.dtype == torch.float32
    torch.testing.assert_close(approx, exact, rtol=0, atol=2e-2)
    # the similarities are fp32 products of the bf16-rounded rows, not rounded to bf16 themselves
    widen = lambda t: F.normalize(t.float(), dim=-1).bfloat16().float()  # noqa: E731
    rows = widen(bank.tokens["seg"][0])
    expected = 1.0 - (widen(query) @ rows.T).amax(dim=-1)
    torch.testing.assert_close(approx, expected, rtol=0, atol=1e-6)
    assert approx.unique().numel() == approx.numel(), "no ties from rounding the scores"


def test_bf16_similarities_on_an_accelerator_come_back_in_fp32() -> None:
    from clipmpcad.memory_bank import similarity_tile

    query, block = (torch.empty(5, 8, dtype=torch.bfloat16, device="meta") for _ in range(2))
    out = torch.empty(5, 5, device="meta")
    similarity_tile(query, block, out)  # the GPU path (mm's out_dtype), checked for its types
    assert out.dtype == torch.float32 and out.shape == (5, 5)


def test_auto_bank_precision_is_bf16_only_on_a_gpu_computing_in_bf16() -> None:
    from clipmpcad.memory_bank import bank_dtype

    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    assert bank_dtype("auto", gpu, torch.bfloat16) == torch.bfloat16
    assert bank_dtype("auto", gpu, None) == torch.float32
    assert bank_dtype("auto", cpu, torch.bfloat16) == torch.float32  # --precision bf16 on a CPU: no faster there
    assert bank_dtype("fp32", gpu, torch.bfloat16) == torch.float32
    assert bank_dtype("bf16", cpu, None) == torch.bfloat16
    bank, _, _ = make_bank(views=2, tokens=4, dim=8)
    assert bank.placed(cpu, "auto", "bf16").tokens["seg"][0].dtype == torch.float32
    assert bank.placed(cpu, "bf16").tokens["seg"][0].dtype == torch.bfloat16
