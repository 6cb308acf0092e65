"""Likelihood, bits/dim and encode/decode against the exact Gaussian-mixture oracle."""

from __future__ import annotations

import math

import pytest
import torch

import sdekit
from sdekit.likelihood import AugmentedFlow, bits_per_dim, dequantize_uniform
from sdekit.testing import GaussianMixture

SDE = sdekit.VPSDE()


def _mix(dim: int, seed: int = 1) -> GaussianMixture:
    return GaussianMixture.random(dim=dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dim,steps", [(2, 20), (64, 20)])
def test_exact_trace_matches_true_log_prob(dim, steps):
    mix = _mix(dim)
    x = mix.sample(16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    r = sdekit.likelihood(mix.score_fn(SDE), SDE, x, trace="exact", solver="ode_rk4", steps=steps)
    true_bpd = -mix.log_prob(x) / (dim * math.log(2))
    err = (r.bpd - true_bpd).abs().max().item()
    assert err < 0.01, f"max |bpd error| {err:.4f} >= 0.01 bits/dim"
    assert r.nfe == 4 * steps and r.steps == steps
    assert torch.allclose(r.logp, r.prior_logp + r.delta_logp)
    assert torch.equal(r.logp_stderr, torch.zeros_like(r.logp))


def test_exact_trace_converges_at_rk4_order():
    # error against the exact answer with the exact p_T (so the prior mismatch is not counted):
    # log p_eps(x) = log p_T(z) + delta; RK4's order 4 must show on nested grids
    mix = _mix(2)
    sf = mix.score_fn(SDE)
    x = mix.sample(16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    exact = mix.log_prob(x, torch.full((16,), SDE.eps, dtype=torch.float64), SDE)
    errs = []
    for steps in (16, 32, 64):
        r = sdekit.likelihood(sf, SDE, x, trace="exact", steps=steps)
        pt = mix.log_prob(r.z, torch.full((16,), SDE.T, dtype=torch.float64), SDE)
        errs.append((pt + r.delta_logp - exact).abs().max().item())
    slope = math.log2(errs[0] / errs[2]) / 2
    assert abs(slope - 4.0) < 0.3, (errs, slope)


def test_divergence_is_exact_trace_of_jacobian():
    mix = _mix(5)
    sf = mix.score_fn(SDE)
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.full((3,), 0.3, dtype=torch.float64)
    flow = AugmentedFlow(SDE, sf, x.shape, None)
    _, q = flow.drift_and_divergence(x, t)
    for i in range(3):
        def v(z, i=i):
            return SDE.f(t[:1]) * z - 0.5 * SDE.g2(t[:1]) * sf(z[None], t[:1])[0]
        jac = torch.autograd.functional.jacobian(v, x[i])
        assert abs(float(torch.trace(jac)) - float(q[i, 0])) < 1e-9


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_matches_exact_within_its_standard_error(noise):
    mix = _mix(4)
    sf = mix.score_fn(SDE)
    x = mix.sample(32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ex = sdekit.likelihood(sf, SDE, x, trace="exact", steps=10)
    h = sdekit.likelihood(sf, SDE, x, trace="hutchinson", probes=64, noise=noise, steps=10,
                          generator=torch.Generator().manual_seed(3))
    zs = (h.logp - ex.logp) / h.logp_stderr
    assert bool((h.logp_stderr > 0).all())
    # z-scores of a correct estimate with a correct standard error are ~N(0, 1)
    assert zs.abs().max().item() < 4.0, zs
    assert 0.4 < (zs ** 2).mean().item() < 2.0, (zs ** 2).mean()
    assert torch.allclose(h.bpd_stderr, h.logp_stderr / (4 * math.log(2)))


def test_hutchinson_single_probe_has_no_standard_error():
    mix = _mix(2)
    x = mix.sample(4, dtype=torch.float64)
    r = sdekit.likelihood(mix.score_fn(SDE), SDE, x, steps=2)
    assert bool(torch.isnan(r.logp_stderr).all())
    assert bool(torch.isfinite(r.logp).all())


def test_encode_decode_round_trip_error_falls_with_steps():
    mix = _mix(2)
    sf = mix.score_fn(SDE)
    x = mix.sample(64, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    errs = []
    for steps in (10, 20, 40):
        z = sdekit.encode(sf, SDE, x, steps=steps)
        errs.append((sdekit.decode(sf, SDE, z, steps=steps) - x).abs().max().item())
    slope = math.log2(errs[1] / errs[2])
    assert errs[0] > errs[1] > errs[2] and slope > 3.0, (errs, slope)


def test_encode_converges_to_exact_flow_at_rk4_order():
    g = GaussianMixture([1.0], torch.tensor([[0.5, -1.0, 2.0]]), torch.tensor([[0.3, 0.8, 1.2]]))
    x = g.sample(32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = g.pf_ode_flow(x, SDE.eps, SDE.T, SDE)
    errs = [(sdekit.encode(g.score_fn(SDE), SDE, x, steps=n) - exact).abs().max().item() for n in (20, 40, 80)]
    slope = math.log2(errs[0] / errs[2]) / 2
    assert abs(slope - 4.0) < 0.3, (errs, slope)


def test_bits_per_dim_offset_is_cell_probability():
    # a very peaked model: nearly all mass of the 8-bit cell k=100 (data_range (-1, 1)); the
    # dequantised bits/dim must be >= -log2 P(cell) >= 0 in expectation, and near 0.
    lo, hi = -1.0, 1.0
    width = (hi - lo) / 256
    centre = lo + (hi - lo) * (100 + 0.5) / 256
    std = 0.25 * width
    x8 = torch.full((20000, 1), lo + (hi - lo) * 100 / 255, dtype=torch.float64)
    y = dequantize_uniform(x8, (lo, hi), generator=torch.Generator().manual_seed(0))
    assert bool(((y - lo) / width).floor().eq(100).all())
    logp = -0.5 * ((y - centre) / std) ** 2 - math.log(std * math.sqrt(2 * math.pi))
    bpd = bits_per_dim(logp[:, 0], 1, dequantize="uniform", data_range=(lo, hi))
    mass = math.erf(0.5 * width / std / math.sqrt(2))
    assert bpd.mean().item() >= -math.log2(mass) - 3 * bpd.std().item() / math.sqrt(bpd.numel())
    assert bpd.mean().item() > 0
    # without the offset (the classic mistake) the same model would report negative bits/dim
    assert bits_per_dim(logp[:, 0], 1).mean().item() < 0


def test_dequantised_likelihood_runs_and_is_offset():
    mix = _mix(2)
    g = torch.Generator().manual_seed(0)
    k = torch.randint(0, 256, (8, 2), generator=g).to(torch.float64)
    x8 = -1 + 2 * k / 255
    r = sdekit.likelihood(mix.score_fn(SDE), SDE, x8, trace="exact", steps=4, dequantize="uniform",
                          data_range=(-1.0, 1.0), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(r.bpd, -r.logp / (2 * math.log(2)) + 7.0)


def test_bad_input_raises():
    mix = _mix(2)
    sf, x = mix.score_fn(SDE), mix.sample(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="trace"):
        sdekit.likelihood(sf, SDE, x, trace="bogus")
    with pytest.raises(ValueError, match="probes only"):
        sdekit.likelihood(sf, SDE, x, trace="exact", probes=4)
    with pytest.raises(ValueError, match="noise"):
        sdekit.likelihood(sf, SDE, x, noise="uniform")
    with pytest.raises(ValueError, match="data_range"):
        sdekit.likelihood(sf, SDE, x, dequantize="uniform")
    with pytest.raises(ValueError, match="8-bit"):
        sdekit.likelihood(sf, SDE, x, dequantize="uniform", data_range=(-1.0, 1.0))
    with pytest.raises(ValueError, match="deterministic ODE solver"):
        sdekit.likelihood(sf, SDE, x, solver="euler_maruyama")
    with pytest.raises(ValueError, match="deterministic ODE solver"):
        sdekit.encode(sf, SDE, x, solver="pc")
    with pytest.raises(TypeError, match="x must be a tensor"):
        sdekit.likelihood(sf, SDE, [1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        sdekit.likelihood(sf, SDE, torch.full((2, 2), float("nan")))
