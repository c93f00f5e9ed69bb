"""CPU matrix products through oneDNN: the same results and gradients as torch's, taken only where they pay."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clipmpcad import products
from clipmpcad.products import Linear, linear, route_linears, routed, torch_kernels

needs_onednn = pytest.mark.skipif(products.ROUTE.op is None, reason="this torch build has no oneDNN")


@pytest.fixture
def onednn_calls(monkeypatch) -> list[tuple]:
    """Records the shapes of every product that went through oneDNN."""
    calls: list[tuple] = []
    real = products.ROUTE.op
    monkeypatch.setattr(products.ROUTE, "op", lambda a, b, *rest: calls.append((a.shape, b.shape)) or real(a, b, *rest))
    return calls


def float64_reference(x, w, b, grad):
    """Output and gradients of x·wᵀ + b computed in float64 by autograd, as an independent check."""
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    y = F.linear(x64, w64, b64)
    y.backward(grad.double())
    return y, x64.grad, w64.grad, b64.grad


@needs_onednn
def test_outputs_and_all_gradients_match_a_float64_computation(onednn_calls) -> None:
    x = torch.randn(3, 50, 96, requires_grad=True)
    w = (torch.randn(160, 96) / 10).requires_grad_()
    b = torch.randn(160, requires_grad=True)
    y = linear(x, w, b)
    grad = torch.randn_like(y)
    y.backward(grad)
    ref, dx, dw, db = float64_reference(x, w, b, grad)
    assert len(onednn_calls) == 3  # forward, input gradient, weight gradient
    for ours, theirs in ((y, ref), (x.grad, dx), (w.grad, dw), (b.grad, db)):
        assert ours.dtype == torch.float32 and ours.shape == theirs.shape
        torch.testing.assert_close(ours.double(), theirs, rtol=1e-5, atol=1e-4)


@needs_onednn
def test_a_frozen_weight_keeps_no_input_for_the_backward_and_gets_no_gradient(onednn_calls) -> None:
    x = torch.randn(4, 40, 128, requires_grad=True)
    w = torch.randn(256, 128)  # frozen, as the tower's
    y = linear(x, w)
    assert y.grad_fn.saved_tensors[0] is None  # the input is not held for a weight gradient
    y.sum().backward()
    assert w.grad is None
    torch.testing.assert_close(x.grad, torch.ones(4, 40, 256) @ w, rtol=1e-5, atol=1e-4)
    assert len(onednn_calls) == 2  # forward and input gradient only


@needs_onednn
def test_only_large_fp32_cpu_products_outside_autocast_take_the_route(onednn_calls) -> None:
    big, w = torch.randn(64, 128), torch.randn(256, 128)
    assert routed(big, w)
    assert not routed(torch.randn(2, 128), w)  # too small to gain
    assert not routed(big.bfloat16(), w.bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not routed(big, w)
        assert linear(big, w).dtype == torch.bfloat16  # autocast's own product, as F.linear
    with torch_kernels():
        assert not routed(big, w)
        torch.testing.assert_close(linear(big, w), F.linear(big, w))
    assert products.ROUTE.op is not None  # restored after the block
    assert onednn_calls == []
    torch.testing.assert_close(linear(big, w), F.linear(big, w), rtol=1e-5, atol=1e-4)
    assert len(onednn_calls) == 1


def test_route_linears_keeps_parameters_and_results() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 64), nn.LayerNorm(64))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(8, 30, 128)
    expected = net(x)
    route_linears(net)
    assert [type(m) for m in net] == [Linear, nn.GELU, Linear, nn.LayerNorm]
    assert net.state_dict().keys() == state.keys()
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key])
    torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_the_tower_gives_the_same_tokens_and_gradients_on_either_route(tiny_backbone, onednn_calls) -> None:
    x = torch.randn(8, 65, 64)  # large enough for the tiny tower's products to take the route
    with torch.no_grad():
        ours = tiny_backbone.project(tiny_backbone.blocks(x, 0, 4))
        assert onednn_calls, "the tiny tower's products did not go through oneDNN"
        with torch_kernels():
            theirs = tiny_backbone.project(tiny_backbone.blocks(x, 0, 4))  # OpenCLIP's own blocks, MKL
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    grads = []
    for route in (torch_kernels, contextlib.nullcontext):
        inp = x.clone().requires_grad_()
        with route():
            tiny_backbone.blocks(inp, 0, 4).square().sum().backward()
        grads.append(inp.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-4)


def test_the_environment_can_close_the_route() -> None:
    import os
    import subprocess
    import sys

    code = "from clipmpcad import products; print(products.ROUTE.op is None)"
    env = {**os.environ, "CLIPMPCAD_CPU_PRODUCTS": "torch"}
    closed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert closed.stdout.strip() == "True"
