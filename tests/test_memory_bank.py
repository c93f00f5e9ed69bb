"""The blocked bank search against brute force, and leave-one-out exclusion."""

from __future__ import annotations

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


def test_leave_one_out_drops_every_row_of_the_own_group() -> None:
    bank, feats, groups = make_bank()
    exclude = groups  # each view scored without its image's views
    keep = groups.repeat_interleave(5).unsqueeze(0) != exclude.unsqueeze(1)  # (B, M)
    expected = brute_force(feats, feats.flatten(0, 1), keep)
    for query_block in (None, 3, 7):  # query tiles that straddle two samples with different groups
        got = bank.distances(feats, "seg", 0, exclude=exclude, block_size=4, query_block=query_block)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert (got > 1e-3).all(), "no view may find itself"


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


def test_bf16_bank_is_close_to_exact() -> None:
    bank, _, _ = make_bank(views=8, tokens=10, dim=32)
    query = torch.randn(3, 7, 32)
    exact = bank.distances(query, "seg", 0)
    approx = bank.to(torch.device("cpu"), torch.bfloat16).distances(query, "seg", 0)
    assert approx.dtype == torch.float32
    torch.testing.assert_close(approx, exact, rtol=0, atol=2e-2)


def test_auto_bank_precision_follows_the_model_compute_type() -> None:
    from clipmpcad.memory_bank import bank_dtype

    assert bank_dtype("auto", torch.bfloat16) == torch.bfloat16  # a GPU, or --precision bf16
    assert bank_dtype("auto", None) == torch.float32  # fp32 on a CPU
    assert bank_dtype("fp32", torch.bfloat16) == torch.float32
    assert bank_dtype("bf16", None) == torch.bfloat16
    bank, _, _ = make_bank(views=2, tokens=4, dim=8)
    placed = bank.placed(torch.device("cpu"), "auto", "bf16")
    assert placed.tokens["seg"][0].dtype == torch.bfloat16
    assert bank.placed(torch.device("cpu"), "auto").tokens["seg"][0].dtype == torch.float32
