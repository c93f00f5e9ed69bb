"""ClipMPCAD as one nn.Module: backbone levels, seg/det adapters with re-injection, M-Decoder
logits and the memory-bank search (METHOD §1). Tensors in, tensors out; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .backbone import Backbone
from .config import AdapterConfig, DecoderConfig
from .decoder import MDecoder, patch_logits
from .madff import build_adapter
from .memory_bank import BRANCHES, MemoryBank


@dataclass
class LevelFeatures:
    """Joint-space features `med` per level: seg[l] and det[l] are (B, 1+N, D)."""

    seg: list[torch.Tensor]
    det: list[torch.Tensor]

    def branch(self, name: str) -> list[torch.Tensor]:
        return self.seg if name == "seg" else self.det


@dataclass
class ModelOutput:
    """Raw per-level grids, before fusion and calibration (scoring.py turns them into maps).

    zero_logits[branch]: (B, L, h, w) Δ logits of the text branch (METHOD §5).
    few_distances[branch]: (B, L, h, w) 1 − max cosine to the bank, for the bank's branches (§6).
    """

    zero_logits: dict[str, torch.Tensor]
    few_distances: dict[str, torch.Tensor]


class ClipMPCAD(nn.Module):
    """Frozen backbone + trainable adapters and level weights + frozen text prototypes + bank."""

    def __init__(
        self,
        backbone: Backbone,
        prototypes: torch.Tensor,
        adapter: AdapterConfig | None,
        decoder: DecoderConfig,
    ) -> None:
        super().__init__()
        info = backbone.info
        self.backbone = backbone
        self.levels = info.levels
        self.grid = info.grid
        self.register_buffer("prototypes", prototypes.float())  # T: (D, 2)
        self.adapted = adapter is not None  # False: training-free zero-shot (METHOD §9)
        if adapter is not None:
            make = lambda: build_adapter(adapter, info.width, info.embed_dim)  # noqa: E731
            self.seg_adapters = nn.ModuleList(make() for _ in self.levels)
            self.det_adapters = nn.ModuleList(make() for _ in self.levels)
            self.residual = adapter.residual
        self.decoder = MDecoder(len(self.levels), learned=decoder.level_weights == "learned")
        self.bank: MemoryBank | None = None
        self.bank_block_size = 8192

    def trained_state(self) -> dict[str, torch.Tensor]:
        """Everything but the frozen backbone: adapters, level weights, prototypes (what a run saves)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    def branch_parameters(self, branch: str) -> list[nn.Parameter]:
        """Trainable parameters of one branch: its adapters and level weights (two optimisers, §8)."""
        logits = self.decoder.seg_logits if branch == "seg" else self.decoder.det_logits
        params = []
        if self.adapted:
            params = list((self.seg_adapters if branch == "seg" else self.det_adapters).parameters())
        return params + ([logits] if isinstance(logits, nn.Parameter) else [])

    def prefix(self, images: torch.Tensor) -> torch.Tensor:
        """Tokens after the first level's block, (B,3,S,S) → (B,1+N,C): no adapter acts before, so
        training can compute them once per support view."""
        return self.backbone.blocks(self.backbone.embed(images), 0, self.levels[0])

    def features(
        self,
        images: torch.Tensor | None = None,
        *,
        prefix: torch.Tensor | None = None,
        last_branches: tuple[str, ...] = BRANCHES,
    ) -> LevelFeatures:
        """Run the backbone from the first level on, adapting and re-injecting at every level.

        last_branches: the branches whose features are needed at the last level; the other
        branch's last adapter only feeds a residual update that no block reads, so it is skipped
        (its list then holds one feature fewer).
        """
        x = self.prefix(images) if prefix is None else prefix
        seg, det = [], []
        for i, level in enumerate(self.levels):
            if i > 0:
                x = self.backbone.blocks(x, self.levels[i - 1], level)
            if not self.adapted:
                med = self.backbone.project(x)  # ln_post + proj (METHOD §9)
                seg.append(med)
                det.append(med)
                continue
            last = i == len(self.levels) - 1  # nothing reads x after the last level
            if last:
                if "seg" in last_branches:
                    seg.append(self.seg_adapters[i](x, self.grid, need_y=False)[0])
                if "det" in last_branches:
                    det.append(self.det_adapters[i](x, self.grid, need_y=False)[0])
                break
            med_seg, y_seg = self.seg_adapters[i](x, self.grid)
            med_det, y_det = self.det_adapters[i](x, self.grid)
            seg.append(med_seg)
            det.append(med_det)
            a, b, c = self.residual
            x = a * x + b * y_seg + c * y_det  # adapted tokens flow on to later blocks
        return LevelFeatures(seg, det)

    def forward(
        self,
        images: torch.Tensor | None = None,
        *,
        prefix: torch.Tensor | None = None,
        exclude: torch.Tensor | None = None,
        branches: tuple[str, ...] = BRANCHES,
    ) -> ModelOutput:
        """Raw per-level grids of `branches` for a batch; exclude (B,) leaves each query's own bank
        rows out. Scores are computed in fp32 even under autocast (METHOD §5–§6)."""
        feats = self.features(images, prefix=prefix, last_branches=branches)
        h, w = self.grid
        zero, few = {}, {}
        with torch.autocast(device_type=self.prototypes.device.type, enabled=False):
            for b in branches:
                levels = feats.branch(b)
                zero[b] = torch.stack([patch_logits(f, self.prototypes, self.grid) for f in levels], dim=1)
                if self.bank is not None and b in self.bank.branches:
                    dists = [
                        self.bank.distances(f[:, 1:], b, level, exclude=exclude, block_size=self.bank_block_size)
                        for level, f in enumerate(levels)
                    ]
                    few[b] = torch.stack(dists, dim=1).view(-1, len(dists), h, w)  # (B, L, h, w)
        return ModelOutput(zero, few)
