"""Few-shot memory bank: normal support tokens per level and branch, searched exactly (METHOD §6).

A query patch's score is 1 − its highest cosine similarity to the bank of the same level and
branch. The search runs as blocked matrix products on the query's device, so memory stays
bounded by `block_size` rows at a time. Rows remember which support image (or view) they came
from so that a support image can be scored leave-one-out (METHOD §7).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

BRANCHES = ("seg", "det")


@dataclass
class MemoryBank:
    """tokens[branch][level]: (M, D) L2-normalised rows; groups: (M,) owner id of each row."""

    tokens: dict[str, list[torch.Tensor]]
    groups: torch.Tensor

    @classmethod
    def from_features(cls, features: dict[str, list[torch.Tensor]], view_groups: torch.Tensor) -> MemoryBank:
        """Bank from per-level features (V, 1+N, D) of V support views (patches and CLS).

        view_groups (V,) names the owner of each view; every token of a view inherits it.
        """
        tokens = {
            branch: [F.normalize(f.float(), dim=-1).flatten(0, 1) for f in levels]  # (V·(1+N), D)
            for branch, levels in features.items()
        }
        per_view = next(iter(features.values()))[0].shape[1]
        return cls(tokens, view_groups.repeat_interleave(per_view))

    @property
    def branches(self) -> tuple[str, ...]:
        return tuple(self.tokens)

    def __len__(self) -> int:
        return int(self.groups.numel())

    def to(self, device: torch.device) -> MemoryBank:
        return MemoryBank({b: [t.to(device) for t in ts] for b, ts in self.tokens.items()}, self.groups.to(device))

    def distances(
        self,
        query: torch.Tensor,
        branch: str,
        level: int,
        *,
        exclude: torch.Tensor | None = None,
        block_size: int = 8192,
    ) -> torch.Tensor:
        """1 − max cosine similarity of each query patch: query (B, N, D) → (B, N).

        exclude (B,): a group id per query whose rows are left out (leave-one-out scoring).
        """
        bank = self.tokens[branch][level]  # (M, D)
        q = F.normalize(query.float(), dim=-1)  # (B, N, D)
        best = q.new_full(q.shape[:2], -torch.inf)  # (B, N)
        for start in range(0, bank.shape[0], block_size):
            block = bank[start : start + block_size]  # (m, D)
            sims = q @ block.T  # (B, N, m)
            if exclude is not None:
                own = self.groups[start : start + block_size].unsqueeze(0) == exclude.unsqueeze(1)  # (B, m)
                sims = sims.masked_fill(own.unsqueeze(1), -torch.inf)
            best = torch.maximum(best, sims.amax(dim=-1))
        return 1.0 - best

    def state(self) -> dict:
        return {"tokens": self.tokens, "groups": self.groups}

    @classmethod
    def from_state(cls, state: dict) -> MemoryBank:
        return cls({b: list(ts) for b, ts in state["tokens"].items()}, state["groups"])
