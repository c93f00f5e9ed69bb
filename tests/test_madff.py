"""MADFF semantics: per-sample statistics, 7×7 locality, shift-invariant frequency gate, CLS gate."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from clipmpcad.config import AdapterConfig
from clipmpcad.madff import (
    MADFF,
    LinearAdapter,
    build_adapter,
    count_parameters,
    dft_magnitude,
    fft_magnitude,
    spectrum_statistics,
)

C, D, H, W = 32, 24, 9, 11
GRID = (H, W)


def make(kind: str = "madff", **kw) -> torch.nn.Module:
    return build_adapter(AdapterConfig(kind=kind, reduction=4, **kw), C, D).eval()


def tokens(b: int = 3) -> torch.Tensor:
    return torch.randn(b, 1 + H * W, C)


def test_shapes_and_need_y() -> None:
    adapter = make()
    med, y = adapter(tokens(), GRID)
    assert med.shape == (3, 1 + H * W, D) and y.shape == (3, 1 + H * W, C)
    med2, none = adapter(tokens(), GRID, need_y=False)
    assert none is None and med2.shape == med.shape


def test_sample_does_not_depend_on_its_batch() -> None:
    adapter = make()
    x = tokens(5)
    med, y = adapter(x, GRID)
    for i in range(5):
        med_i, y_i = adapter(x[i : i + 1], GRID)
        torch.testing.assert_close(med_i[0], med[i], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(y_i[0], y[i], rtol=1e-5, atol=1e-6)
    # and changing another sample changes nothing here
    x2 = x.clone()
    x2[1:] = torch.randn_like(x2[1:])
    torch.testing.assert_close(adapter(x2, GRID)[0][0], med[0], rtol=1e-5, atol=1e-6)


def test_spatial_gate_is_local_to_its_window() -> None:
    adapter = make()
    ca = torch.randn(1, H * W, C)
    base = adapter.spatial_gate(ca, GRID).view(H, W)
    r, c = 4, 5
    changed = ca.clone()
    changed[0, r * W + c] += 5.0 * torch.randn(C)
    moved = (adapter.spatial_gate(changed, GRID).view(H, W) - base).abs() > 0
    rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    window = ((rows - r).abs() <= 3) & ((cols - c).abs() <= 3)
    assert moved[window].all(), "every token in the 7×7 window must see the change"
    assert not moved[~window].any(), "no token outside the window may see it"


def test_frequency_gate_ignores_circular_shifts_but_not_permutations() -> None:
    adapter = make()
    t = torch.randn(1, H * W, C)
    gate = adapter.frequency_gate(t, GRID)
    shifted = torch.roll(t.view(1, H, W, C), shifts=(2, 3), dims=(1, 2)).reshape(1, H * W, C)
    torch.testing.assert_close(adapter.frequency_gate(shifted, GRID), gate, rtol=1e-4, atol=1e-5)
    permuted = t[:, torch.randperm(H * W)]
    assert (adapter.frequency_gate(permuted, GRID) - gate).abs().max() > 1e-3


def test_half_spectrum_statistics_equal_the_full_spectrum() -> None:
    """The gate reads rfft2's half spectrum; its mean and max must be those of fft2's whole one."""
    for h, w in ((H, W), (8, 8), (6, 7), (1, 2), (1, 1)):
        x = torch.randn(2, 4, h, w, dtype=torch.float64)
        full = torch.log1p(torch.fft.fft2(x).abs())
        mean, peak = spectrum_statistics(torch.log1p(torch.fft.rfft2(x).abs()), w)
        torch.testing.assert_close(mean, full.mean(dim=(2, 3)), rtol=0, atol=1e-12)
        torch.testing.assert_close(peak, full.amax(dim=(2, 3)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("magnitude", [dft_magnitude, fft_magnitude])
def test_both_spectra_equal_a_float64_fft_on_any_grid(magnitude) -> None:
    """The CPU's DFT as matrix products and the FFT (used elsewhere) give rfft2's |X| (B, C, h, w//2+1)."""
    for h, w in ((17, 17), (8, 8), (6, 7), (1, 2), (1, 1), (3, 16)):
        t = torch.randn(2, h * w, 5) * 3
        expected = torch.fft.rfft2(t.double().transpose(1, 2).reshape(2, 5, h, w)).abs()
        got = magnitude(t, (h, w))
        assert got.dtype == torch.float32 and got.shape == expected.shape
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_the_dft_spectrum_has_finite_gradients_where_it_is_zero() -> None:
    t = torch.zeros(1, 64, 3, requires_grad=True)  # every coefficient 0: |X|'s gradient is 0 there
    dft_magnitude(t, (8, 8)).sum().backward()
    assert torch.equal(t.grad, torch.zeros_like(t))
    t = torch.ones(1, 64, 3, requires_grad=True)  # only the DC term nonzero: its gradient 1 per pixel
    torch.log(1 + dft_magnitude(t, (8, 8))).sum().backward()
    assert torch.isfinite(t.grad).all()


def test_frequency_gate_is_the_mlp_of_log1p_full_spectrum_statistics() -> None:
    """METHOD §3's FAB, computed independently in float64 from fft2's whole spectrum with log1p."""
    adapter = make()
    t = torch.randn(3, H * W, C) * 4
    grid = t.transpose(1, 2).reshape(3, C, H, W).double()
    spectrum = torch.log1p(torch.fft.fft2(grid).abs())
    mlp = copy.deepcopy(adapter.frequency.net).double()
    expected = torch.sigmoid(mlp(spectrum.mean(dim=(2, 3))) + mlp(spectrum.amax(dim=(2, 3))))
    torch.testing.assert_close(adapter.frequency_gate(t, GRID)[:, 0].double(), expected, rtol=1e-5, atol=1e-6)


def test_cls_token_has_spatial_gate_one_and_channel_gates() -> None:
    adapter = make()
    x = tokens(2)
    g_c, g_s, g_f = adapter.gates(x, GRID)
    assert torch.all(g_s[:, 0] == 1.0)
    assert g_s.shape == (2, 1 + H * W, 1) and torch.all((g_s[:, 1:] > 0) & (g_s[:, 1:] < 1))
    assert g_c.shape == g_f.shape == (2, 1, C)


def test_fusion_matches_the_four_branch_formula() -> None:
    """The saved product (φ1(sa) = g_s·φ1(ca)) gives exactly METHOD §3's med and y."""
    adapter = make()
    x = tokens(2)
    g_c, g_s, g_f = adapter.gates(x, GRID)
    ca, fa = g_c * x, g_f * x
    sa = g_s * ca
    phi1 = lambda z: F.leaky_relu(adapter.phi1(z))  # noqa: E731
    med = 0.4 * phi1(x) + 0.2 * phi1(ca) + 0.2 * phi1(sa) + 0.2 * phi1(fa)
    y = 0.3 * F.leaky_relu(adapter.phi2(med)) + 0.2 * ca + 0.2 * sa + 0.3 * fa
    med_got, y_got = adapter(x, GRID)
    torch.testing.assert_close(med_got, med, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y_got, y, rtol=1e-5, atol=1e-6)


def test_linear_adapter_is_mvfa_adapter() -> None:
    adapter = make("linear")
    assert isinstance(adapter, LinearAdapter)
    x = tokens(2)
    med, y = adapter(x, GRID)
    torch.testing.assert_close(med, F.leaky_relu(x @ adapter.phi1.weight.T))
    torch.testing.assert_close(y, F.leaky_relu(med @ adapter.phi2.weight.T))


def test_parameter_counts() -> None:
    """MADFF: φ1 and φ2 (2·C·D), two channel MLPs (2·2·C·C/r), one 7×7 conv 2→1 (98)."""
    madff = MADFF(1024, 768, AdapterConfig())
    assert count_parameters(madff) == 2 * 1024 * 768 + 2 * 2 * 1024 * 64 + 98 == 1_835_106
    assert count_parameters(LinearAdapter(1024, 768, AdapterConfig())) == 2 * 1024 * 768
    learned = MADFF(1024, 768, AdapterConfig(learn_fusion=True))
    assert count_parameters(learned) == 1_835_106 + 8


def test_every_parameter_gets_a_gradient() -> None:
    adapter = make(learn_fusion=True)
    med, y = adapter(tokens(2), GRID)
    (med.square().mean() + y.square().mean()).backward()
    for name, p in adapter.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_the_light_list_of_adapter_names_matches_the_registry() -> None:
    """config.ADAPTER_KINDS lets the CLI and the config check names without importing torch."""
    from clipmpcad.config import ADAPTER_KINDS
    from clipmpcad.madff import ADAPTERS

    assert tuple(ADAPTERS) == ADAPTER_KINDS


def test_a_reduction_above_the_width_is_refused_before_training_and_old_runs_still_build(
    synthetic_benchmark, tmp_path, monkeypatch
) -> None:
    from clipmpcad import experiment
    from clipmpcad.errors import ConfigError
    from tinyrun import tiny_run_config

    assert MADFF(64, 32, AdapterConfig(reduction=64)).channel.net[0].out_features == 1
    assert MADFF(64, 32, AdapterConfig(reduction=65)).channel.net[0].out_features == 1  # as runs saved so were
    s = next(s for s in synthetic_benchmark.sets if s.dataset == "mvtec")
    cfg = tiny_run_config("mvtec", s.root, s.category, adapter={"reduction": 1000})
    monkeypatch.setattr(experiment, "build_prototypes", lambda *a: pytest.fail("refused only after the prompts"))
    with pytest.raises(ConfigError, match=r"adapter.reduction 1000 is larger than the backbone's width 64"):
        experiment.train_model(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
