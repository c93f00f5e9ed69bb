"""Adapters that act on a level's tokens: MADFF and MVFA's linear baseline (METHOD §3).

MADFF (Multi-Attention Driven Feature Fusion) gates the patch tokens by channel attention
(CBAM's channel branch), local spatial attention on the 2-D token grid (CBAM's spatial branch)
and frequency attention (channel statistics of the grid's 2-D FFT), then fuses them into the
joint-space features `med` and the residual update `y`. Every statistic is per sample.

Shapes: x (B, 1+N, C) with the CLS token first and N = h·w; med (B, 1+N, D); y (B, 1+N, C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import AdapterConfig
from .errors import ConfigError
from .products import Linear

MED_WEIGHTS = (0.4, 0.2, 0.2, 0.2)  # med = Σ w·φ1(·) over (x, ca, sa, fa), as published
Y_WEIGHTS = (0.3, 0.2, 0.2, 0.3)  # y = Σ w·(·) over (φ2(med), ca, sa, fa), as published


class LinearAdapter(nn.Module):
    """MVFA's adapter: med = φ1(x), y = φ2(med), both bias-free Linear + LeakyReLU."""

    def __init__(self, width: int, embed_dim: int, cfg: AdapterConfig) -> None:
        super().__init__()
        self.phi1 = Linear(width, embed_dim, bias=False)  # C → D
        self.phi2 = Linear(embed_dim, width, bias=False)  # D → C

    def forward(
        self, x: torch.Tensor, grid: tuple[int, int], need_y: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        med = F.leaky_relu(self.phi1(x))  # (B, 1+N, D)
        return med, F.leaky_relu(self.phi2(med)) if need_y else None


class ChannelMLP(nn.Module):
    """CBAM's shared bias-free MLP C → C/r → C, applied to a mean and a max descriptor."""

    def __init__(self, width: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, width // reduction)  # runs saved with reduction > width had one hidden unit
        self.net = nn.Sequential(nn.Linear(width, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, width, bias=False))

    def forward(self, mean: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(mean) + self.net(peak))


class MADFF(nn.Module):
    """Channel, local spatial and frequency gates on the token grid, fused into (med, y)."""

    def __init__(self, width: int, embed_dim: int, cfg: AdapterConfig) -> None:
        super().__init__()
        self.channel = ChannelMLP(width, cfg.reduction)  # SCA
        self.frequency = ChannelMLP(width, cfg.reduction)  # FAB's MLP_f
        k = cfg.spatial_kernel
        self.spatial = nn.Conv2d(2, 1, k, padding=k // 2, bias=False)  # LLSPM
        self.phi1 = Linear(width, embed_dim, bias=False)  # shared by all four inputs
        self.phi2 = Linear(embed_dim, width, bias=False)
        med_w, y_w = torch.tensor(MED_WEIGHTS), torch.tensor(Y_WEIGHTS)
        if cfg.learn_fusion:
            self.med_weights, self.y_weights = nn.Parameter(med_w), nn.Parameter(y_w)
        else:
            self.register_buffer("med_weights", med_w)
            self.register_buffer("y_weights", y_w)

    def channel_gate(self, t: torch.Tensor) -> torch.Tensor:
        """SCA: g_c (B, 1, C) from the mean and max of the patch tokens t (B, N, C)."""
        return self.channel(t.mean(dim=1, keepdim=True), t.amax(dim=1, keepdim=True))  # per sample

    def spatial_gate(self, ca: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """LLSPM: g_s (B, N, 1) from channel mean and max of ca (B, N, C) on the h×w grid."""
        b, n, _ = ca.shape
        s = torch.stack([ca.mean(dim=2), ca.amax(dim=2)], dim=1).view(b, 2, *grid)  # (B, 2, h, w)
        return torch.sigmoid(self.spatial(s)).view(b, n, 1)

    def frequency_gate(self, t: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """FAB: g_f (B, 1, C) from the mean and max of log1p|FFT2| of the token grid."""
        b, _, c = t.shape
        x = t.transpose(1, 2).reshape(b, c, *grid).float()  # (B, C, h, w); the FFT needs fp32
        # log(1 + |X|) is log1p|X| up to fp32 rounding (|X| ≥ 0, so nothing cancels), and torch's
        # CPU log1p is a scalar loop about ten times slower than its vectorised log.
        compressed = torch.log(1 + torch.fft.rfft2(x, dim=(-2, -1)).abs())
        mean, peak = spectrum_statistics(compressed, grid[1])
        return self.frequency(mean, peak).unsqueeze(1).to(t.dtype)  # (B, 1, C)

    def gates(self, x: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three gates: g_c (B,1,C), g_s (B,1+N,1) with the CLS gate 1, g_f (B,1,C)."""
        t = x[:, 1:]  # (B, N, C) patch tokens
        g_c = self.channel_gate(t)
        g_s = self.spatial_gate(g_c * t, grid)
        g_s = torch.cat([g_s.new_ones(g_s.shape[0], 1, 1), g_s], dim=1)  # CLS spatial gate = 1
        return g_c, g_s, self.frequency_gate(t, grid)

    def forward(
        self, x: torch.Tensor, grid: tuple[int, int], need_y: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        g_c, g_s, g_f = self.gates(x, grid)
        ca, fa = g_c * x, g_f * x  # (B, 1+N, C); the CLS token gets the channel gates too
        wm, wy = self.med_weights, self.y_weights
        # φ1 of x, ca and fa as one product over the three inputs stacked along the tokens: the
        # same arithmetic, fewer and larger matrix products (faster, in training above all).
        phi_x, phi_ca, phi_fa = F.leaky_relu(self.phi1(torch.cat([x, ca, fa], dim=1))).chunk(3, dim=1)
        # sa = g_s·ca with g_s > 0 a per-token scalar, and LeakyReLU∘Linear is positively
        # homogeneous, so φ1(sa) = g_s·φ1(ca): one C×D product saved, identical result.
        med = wm[0] * phi_x + (wm[1] + wm[2] * g_s) * phi_ca + wm[3] * phi_fa  # (B, 1+N, D)
        if not need_y:
            return med, None
        y = wy[0] * F.leaky_relu(self.phi2(med)) + (wy[1] + wy[2] * g_s) * ca + wy[3] * fa  # (B, 1+N, C)
        return med, y


def spectrum_statistics(half: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and max over the full h×w spectrum of a real grid, from its half spectrum
    (B, C, h, w//2+1) as rfft2 returns it: |X[k]| = |X[−k]|, so every column but the first (and
    the middle one of an even width) stands for itself and its mirror. Half the FFT work, the
    same statistics."""
    mirrored = (width - 1) // 2  # columns 1..mirrored each appear twice in the full spectrum
    weights = half.new_ones(half.shape[-1])
    weights[1 : 1 + mirrored] = 2.0
    mean = (half.sum(dim=-2) * weights).sum(dim=-1) / (half.shape[-2] * width)  # (B, C)
    return mean, half.amax(dim=(-2, -1))


ADAPTERS: dict[str, type[nn.Module]] = {"madff": MADFF, "linear": LinearAdapter}


def check_adapter_fits(cfg: AdapterConfig, width: int) -> None:
    """Refuse, before training, a channel-MLP reduction that leaves no hidden unit at this width."""
    if cfg.kind == "madff" and cfg.reduction > width:
        raise ConfigError(
            f"adapter.reduction {cfg.reduction} is larger than the backbone's width {width}: the channel "
            f"MLP (C → C/r) would have no hidden unit; use a reduction of at most {width}"
        )


def build_adapter(cfg: AdapterConfig, width: int, embed_dim: int) -> nn.Module:
    """An adapter by name (the config has already checked the name against ADAPTERS)."""
    return ADAPTERS[cfg.kind](width, embed_dim, cfg)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
