"""Adapters that act on a level's tokens: MADFF and MVFA's linear baseline (METHOD §3).

MADFF (Multi-Attention Driven Feature Fusion) gates the patch tokens by channel attention
(CBAM's channel branch), local spatial attention on the 2-D token grid (CBAM's spatial branch)
and frequency attention (channel statistics of the grid's 2-D FFT), then fuses them into the
joint-space features `med` and the residual update `y`. Every statistic is per sample.

Shapes: x (B, 1+N, C) with the CLS token first and N = h·w; med (B, 1+N, D); y (B, 1+N, C).
"""

from __future__ import annotations

import functools
import math

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
        # log(1 + |X|) is log1p|X| up to fp32 rounding (|X| ≥ 0, so nothing cancels), and torch's
        # CPU log1p is a scalar loop about ten times slower than its vectorised log.
        compressed = torch.log(1 + half_spectrum_magnitude(t, grid))
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


def half_spectrum_magnitude(t: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """|rfft2| of the token grid in fp32: t (B, N, C) as (B, C, h, w) → (B, C, h, w//2+1).

    On a CPU the 2-D DFT of these small grids (17 × 17 for ViT-L at 240 px) as two real matrix
    products (dft_magnitude) is about 3 × faster than torch's FFT there, forward and backward
    alike; elsewhere the FFT (fft_magnitude)."""
    return (dft_magnitude if t.device.type == "cpu" else fft_magnitude)(t, grid)


def fft_magnitude(t: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    b, _, c = t.shape
    x = t.transpose(1, 2).reshape(b, c, *grid).float()  # (B, C, h, w); the FFT needs fp32
    return torch.fft.rfft2(x, dim=(-2, -1)).abs()


def dft_magnitude(t: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """half_spectrum_magnitude on a CPU tensor (the matrices live on the CPU)."""
    b, _, c = t.shape
    h, w = grid
    along_w, along_h = dft_matrices(h, w)
    with torch.autocast("cpu", enabled=False):  # fp32 products whatever the compute precision
        rows = torch.matmul(along_w, t.float().reshape(b * h, w, c))  # (B·h, 2K, C): Re, Im
        spectrum = torch.matmul(along_h, rows.view(b, 2 * h, -1)).view(b, h, 2, -1, c)
    re, im = spectrum[:, :, 0], spectrum[:, :, 1]
    # |Re + i·Im|, with power below 1e-30 (|X| < 1e-15) held there: the gradient at 0 is then 0,
    # as abs's is (hypot's would be 0/0), and the values are those of |X| to fp32 after log(1 + ·)
    return torch.addcmul(re * re, im, im).clamp_min(1e-30).sqrt().permute(0, 3, 1, 2)  # (B, C, h, K)


@functools.lru_cache(maxsize=8)
def dft_matrices(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The real matrices of rfft2 on an h × w grid, fp32 (computed in float64):
    along_w (2K, w) with K = w//2+1: rows Re then Im of Σ_n x[n]·e^(−2πi·kn/w);
    along_h (2h, 2h): the complex DFT over h acting on (Re, Im) pairs, rows and columns (m, Re/Im)."""
    n, k, m = torch.arange(w, dtype=torch.float64), torch.arange(w // 2 + 1, dtype=torch.float64), torch.arange(h)
    angle_w = 2 * math.pi * torch.outer(k, n) / w  # (K, w)
    along_w = torch.cat([torch.cos(angle_w), -torch.sin(angle_w)])
    angle_h = 2 * math.pi * torch.outer(m, m).double() / h  # (h, h), symmetric
    cos, sin = torch.cos(angle_h), torch.sin(angle_h)
    along_h = torch.zeros(h, 2, h, 2, dtype=torch.float64)  # (Re + i·Im)·(cos − i·sin), summed over m
    along_h[:, 0, :, 0], along_h[:, 0, :, 1] = cos, sin
    along_h[:, 1, :, 0], along_h[:, 1, :, 1] = -sin, cos
    return along_w.float(), along_h.view(2 * h, 2 * h).float()


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
