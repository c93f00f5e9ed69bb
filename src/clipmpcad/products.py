"""Matrix products of fp32 tensors on a CPU through oneDNN, with their gradients.

PyTorch multiplies fp32 matrices on x86 CPUs with MKL, which does not pick its AVX-512 kernels on
AMD processors: on this project's AVX-512 EPYC that is about 200 GFLOP/s against oneDNN's 430, for
the same fp32 arithmetic (results equal up to fp32 rounding). oneDNN ships inside PyTorch
(torch.backends.mkldnn), so the frozen tower's products, the adapters' and the memory bank's
search go through it wherever a product is large enough to gain, on x86-64 CPUs with AVX-512;
everything else (GPUs, autocast, bf16 weights, tiny products, other CPUs, builds without oneDNN)
keeps torch's own kernels.

CLIPMPCAD_CPU_PRODUCTS=torch in the environment turns the route off.

Shapes: x (..., K) · weight (N, K)ᵀ + bias (N,) → (..., N), as F.linear.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

MIN_PRODUCT = 2**21  # multiply-adds below which a call's fixed cost outweighs oneDNN's faster kernel


def _onednn_linear():
    """oneDNN's dense linear (the op PyTorch's own compiler uses on CPUs), or None: without it, on
    CPUs other than x86-64 with AVX-512 (the only kind measured; elsewhere torch's own choice of
    BLAS stands, such as Accelerate on Apple silicon), or when the environment says so."""
    if (
        os.environ.get("CLIPMPCAD_CPU_PRODUCTS", "onednn") == "torch"
        or not torch.backends.mkldnn.is_available()
        or platform.machine().lower() not in ("x86_64", "amd64")
        or not torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    ):
        return None
    try:
        op = torch.ops.mkldnn._linear_pointwise
        probe = op(torch.ones(1, 2), torch.ones(3, 2), None, "none", [], "")  # a private op: check its signature
    except (AttributeError, RuntimeError, TypeError):
        return None
    return op if torch.equal(probe, torch.full((1, 3), 2.0)) else None


@dataclass
class Route:
    """oneDNN's linear while the route is open; None: every product on torch's own kernels."""

    op: Callable | None


ROUTE = Route(_onednn_linear())


@contextlib.contextmanager
def torch_kernels() -> Iterator[None]:
    """Every product in torch's own kernels within the block (benchmarks and tests compare the two)."""
    saved, ROUTE.op = ROUTE.op, None
    try:
        yield
    finally:
        ROUTE.op = saved


def routed(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """The product x · weightᵀ goes through oneDNN: fp32 CPU tensors, no autocast, large enough."""
    return (
        ROUTE.op is not None
        and torch.backends.mkldnn.enabled
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and x.numel() * weight.shape[0] >= MIN_PRODUCT
    )


def _dense(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a (..., K) · b (N, K)ᵀ (+ bias) by oneDNN; b may be a transposed view."""
    return ROUTE.op(a, b, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """y = x·Wᵀ + b with every gradient a oneDNN product too: dx = dy·W, dW = dyᵀ·x, db = Σ dy.
    The input is kept for the backward only when the weight needs a gradient (never for the
    frozen tower)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x if weight.requires_grad else None, weight)
        ctx.has_bias = bias is not None
        return _dense(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        dx = _dense(grad, weight.t()) if ctx.needs_input_grad[0] else None
        dw = db = None
        if ctx.needs_input_grad[1] or (ctx.has_bias and ctx.needs_input_grad[2]):  # never for the frozen tower
            flat = grad.reshape(-1, grad.shape[-1])  # (M, N)
            dw = _dense(flat.t(), x.reshape(-1, x.shape[-1]).t()) if ctx.needs_input_grad[1] else None
            db = flat.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, through oneDNN where `routed` says so (the same result up to fp32 rounding)."""
    if not routed(x, weight):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        return _OneDNNLinear.apply(x, weight, bias)
    return _dense(x, weight, bias)


class Linear(nn.Linear):
    """nn.Linear whose product goes through `linear` (same parameters, same state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def route_linears(module: nn.Module) -> nn.Module:
    """Make every plain nn.Linear inside `module` a `Linear`, in place: the frozen tower's own
    layers (OpenCLIP's MLPs, timm's attention and MLP) then take the same route. Parameters,
    names and state dict are untouched."""
    for layer in module.modules():
        if type(layer) is nn.Linear:
            layer.__class__ = Linear
    return module
