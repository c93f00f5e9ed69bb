"""Few-shot memory bank: normal support tokens per level and branch, searched exactly (METHOD §6).

A query patch's score is 1 − its highest cosine similarity to the bank of the same level and
branch. The search runs as tiled matrix products on the query's device, so memory stays
bounded by one tile of similarities at a time. Rows remember which support image (or view) they
came from so that a support image can be scored leave-one-out (METHOD §7).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .products import linear, routed
from .runtime import compute_dtype

BRANCHES = ("seg", "det")
CPU_TILE = 2048  # query rows and bank rows per similarity tile on a CPU


def bank_dtype(precision: str, device: torch.device, compute: torch.dtype | None) -> torch.dtype:
    """The bank's storage type. "auto": bf16 on a GPU whose model computes in bf16 (half the memory,
    bf16 products returned in fp32), else fp32; on a CPU bf16 rows are widened to fp32 for their
    products (similarity_tile), so there a bf16 bank only saves memory and "auto" keeps fp32."""
    if precision == "bf16" or (precision == "auto" and device.type != "cpu" and compute == torch.bfloat16):
        return torch.bfloat16
    return torch.float32


@dataclass
class MemoryBank:
    """tokens[branch][level]: (M, D) L2-normalised rows; groups[branch][level]: (M,) owner ids."""

    tokens: dict[str, list[torch.Tensor]]
    groups: dict[str, list[torch.Tensor]]

    @classmethod
    def allocate(
        cls, branches: tuple[str, ...], levels: int, view_groups: torch.Tensor, tokens_per_view: int, dim: int
    ) -> MemoryBank:
        """An unfilled bank for len(view_groups) support views; fill it view by view with `write`.

        view_groups (V,) names the owner of each view; every token of a view inherits it.
        """
        rows = view_groups.repeat_interleave(tokens_per_view)  # (V·(1+N),)
        tokens = {
            b: [rows.new_empty((rows.numel(), dim), dtype=torch.float32) for _ in range(levels)] for b in branches
        }
        return cls(tokens, {b: [rows] * levels for b in branches})

    def write(self, branch: str, level: int, first_view: int, features: torch.Tensor) -> None:
        """Put the L2-normalised tokens of views first_view.. (features (b, 1+N, D)) into the bank."""
        start = first_view * features.shape[1]
        rows = F.normalize(features.float(), dim=-1).flatten(0, 1)  # (b·(1+N), D)
        self.tokens[branch][level][start : start + rows.shape[0]] = rows

    @classmethod
    def from_features(cls, features: dict[str, list[torch.Tensor]], view_groups: torch.Tensor) -> MemoryBank:
        """Bank from per-level features (V, 1+N, D) of V support views (patches and CLS)."""
        levels = next(iter(features.values()))
        bank = cls.allocate(tuple(features), len(levels), view_groups, levels[0].shape[1], levels[0].shape[2])
        for branch, per_level in features.items():
            for level, f in enumerate(per_level):
                bank.write(branch, level, 0, f)
        return bank

    @property
    def branches(self) -> tuple[str, ...]:
        return tuple(self.tokens)

    def __len__(self) -> int:
        """Rows of the largest level bank."""
        return max(int(t.shape[0]) for ts in self.tokens.values() for t in ts)

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> MemoryBank:
        """The bank on `device`; tokens in `dtype` (bf16 halves memory; on a GPU it speeds the products)."""
        tokens = {b: [t.to(device, dtype or t.dtype) for t in ts] for b, ts in self.tokens.items()}
        return MemoryBank(tokens, {b: [g.to(device) for g in gs] for b, gs in self.groups.items()})

    def placed(self, device: torch.device, precision: str, compute: str = "auto") -> MemoryBank:
        """The bank where it is searched, in the configured precision (BankConfig.precision) for a
        model that computes at `compute` (RunConfig.precision)."""
        return self.to(device, bank_dtype(precision, device, compute_dtype(device, compute)))

    def distances(
        self,
        query: torch.Tensor,
        branch: str,
        level: int,
        *,
        exclude: torch.Tensor | None = None,
        block_size: int = 8192,
        query_block: int | None = None,
    ) -> torch.Tensor:
        """1 − max cosine similarity of each query patch: query (B, N, D) → (B, N).

        exclude (B,): a group id per query whose rows are left out (leave-one-out scoring), as
        −inf similarities over the rectangles where a query's rows meet its group's runs of bank rows.
        Tiles of query_block query rows × block_size bank rows fill one reused buffer (on a CPU
        in fp32, oneDNN's product fills a tile's own memory: products.py). On a CPU both are at
        most CPU_TILE (query_block None: CPU_TILE): the whole batch against 8192 bank rows is
        hundreds of MB for a small model, fresh memory at every block, searched at a third of
        the speed. On a GPU query_block None takes all query rows at once. No tiling changes a
        result: each similarity is one product's output, and the max is exact. A bf16 bank's
        similarities are fp32 (similarity_tile): not rounded to bf16's 2⁻⁸ steps, which would
        leave a few dozen distinct patch scores and many ties.
        """
        bank, groups = self.tokens[branch][level], self.groups[branch][level]  # (M, D), (M,)
        b, n, _ = query.shape
        on_cpu = bank.device.type == "cpu"
        q = F.normalize(query.float(), dim=-1).to(bank.dtype).flatten(0, 1)  # (B·N, D), in the bank's precision
        if on_cpu:
            q = q.float()  # CPU products of bf16 rows run in fp32 (similarity_tile): widened once here
        excluded = None if exclude is None else excluded_rows(groups, exclude, n)
        rows = query_block or (CPU_TILE if on_cpu else q.shape[0])
        cols = min(block_size, CPU_TILE) if on_cpu else block_size
        rows, cols = min(rows, q.shape[0]), min(cols, bank.shape[0])
        buffer = q.new_empty(rows * cols, dtype=torch.float32)  # the similarities of one tile
        best = torch.full((q.shape[0],), -torch.inf, dtype=torch.float32, device=q.device)  # (B·N,)
        for r in range(0, q.shape[0], rows):
            q_tile, best_tile = q[r : r + rows], best[r : r + rows]
            for c in range(0, bank.shape[0], cols):
                block = bank[c : c + cols]  # (m, D)
                sims = similarity_tile(q_tile, block, buffer[: len(q_tile) * len(block)].view(len(q_tile), len(block)))
                if excluded is not None:
                    excluded.leave_out(sims, r, c)
                torch.maximum(best_tile, sims.amax(dim=-1), out=best_tile)
        return 1.0 - best.view(b, n)

    def state(self) -> dict:
        return {"tokens": self.tokens, "groups": self.groups}

    @classmethod
    def from_state(cls, state: dict) -> MemoryBank:
        return cls({b: list(ts) for b, ts in state["tokens"].items()}, {b: list(g) for b, g in state["groups"].items()})

    def coreset(self, fraction: float, seed: int = 0) -> MemoryBank:
        """An approximate bank: per branch and level, the greedy k-center coreset of `fraction` of
        the rows (PatchCore's subsampling), chosen in a random 128-d projection for speed."""
        if fraction >= 1.0:
            return self
        tokens: dict[str, list[torch.Tensor]] = {}
        groups: dict[str, list[torch.Tensor]] = {}
        for branch, levels in self.tokens.items():
            tokens[branch], groups[branch] = [], []
            for level, rows in enumerate(levels):
                # in bank order: each support image's rows stay together (leave-one-out's runs)
                keep = greedy_coreset(rows, max(1, round(fraction * rows.shape[0])), seed).sort().values
                tokens[branch].append(rows[keep])
                groups[branch].append(self.groups[branch][level][keep])
        return MemoryBank(tokens, groups)


def similarity_tile(query: torch.Tensor, block: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """query (R, D) · block (m, D)ᵀ → (R, m) fp32, in `out` or, on a CPU through oneDNN, in fresh
    memory (twice mm's speed there, products.py). Rows in bf16: on a GPU bf16 products summed and
    returned in fp32 (mm's out_dtype); a CPU's mm can only return bf16, so there the rows are
    widened to fp32 first: exact products of the bf16-stored rows, at fp32 speed."""
    if block.dtype == torch.float32 or block.device.type == "cpu":
        block = block.float()
        if routed(query, block):
            return linear(query, block)
        return torch.mm(query, block.T, out=out)
    return torch.mm(query, block.T, out_dtype=torch.float32, out=out)


@dataclass(frozen=True)
class ExcludedRows:
    """Where leave-one-out removes similarities from the (B·N, M) similarity matrix: query sample
    i's N rows × each run [m0, m1) of consecutive bank rows owned by its group. Banks keep each
    support image's rows together, so a sample has one run or a few; filling those rectangles
    costs a sliver of comparing the owners of every (query row, bank row) pair."""

    tokens: int  # N: query rows per sample
    runs: list[list[tuple[int, int]]]  # per query sample, its group's runs of bank rows

    def leave_out(self, sims: torch.Tensor, row: int, col: int) -> None:
        """Set to −inf the excluded similarities of the tile sims (query rows row.., bank rows col..)."""
        rows, cols = sims.shape
        for i in range(row // self.tokens, -(-(row + rows) // self.tokens)):  # the samples this tile meets
            top, bottom = max(i * self.tokens, row) - row, min((i + 1) * self.tokens, row + rows) - row
            for m0, m1 in self.runs[i]:
                left, right = max(m0, col) - col, min(m1, col + cols) - col
                if left < right:
                    sims[top:bottom, left:right] = -torch.inf


def excluded_rows(groups: torch.Tensor, exclude: torch.Tensor, tokens: int) -> ExcludedRows:
    """Leave-one-out for queries of `tokens` rows per sample: groups (M,) the bank rows' owners,
    exclude (B,) each query sample's own group."""
    owners = groups.cpu()
    starts = torch.cat([torch.zeros(1, dtype=torch.long), torch.nonzero(owners[1:] != owners[:-1]).flatten() + 1])
    ends = torch.cat([starts[1:], torch.tensor([owners.numel()])])
    runs: dict[int, list[tuple[int, int]]] = {}
    for start, end, group in zip(starts.tolist(), ends.tolist(), owners[starts].tolist(), strict=True):
        runs.setdefault(group, []).append((start, end))
    return ExcludedRows(tokens, [runs.get(group, []) for group in exclude.tolist()])


def greedy_coreset(rows: torch.Tensor, count: int, seed: int = 0, dim: int = 128) -> torch.Tensor:
    """Indices of `count` rows chosen greedily, each the farthest from those already chosen."""
    generator = torch.Generator().manual_seed(seed)
    projection = torch.randn(rows.shape[1], dim, generator=generator).to(rows) / dim**0.5
    points = rows @ projection if rows.shape[1] > dim else rows  # (M, d)
    first = int(torch.randint(rows.shape[0], (1,), generator=generator))
    chosen = [first]
    nearest = (points - points[first]).square().sum(dim=1)  # squared distance to the chosen set
    nearest[first] = -1.0  # chosen rows stay below any distance: a duplicate of one is picked as itself
    for _ in range(count - 1):
        index = int(torch.argmax(nearest))
        chosen.append(index)
        nearest = torch.minimum(nearest, (points - points[index]).square().sum(dim=1))
        nearest[index] = -1.0
    return torch.tensor(chosen, device=rows.device)
