"""Conditions as a solver wrapper (issue 15): inpainting with adaptive solvers, shape checks before any work."""

from __future__ import annotations

import pytest
import torch

import sdekit
from sdekit.guidance import Inpainting, colorization
from sdekit.integrate import integrate
from sdekit.noise import GaussianNoise
from sdekit.process import DriftDiffusion
from sdekit.solvers.conditioned import Conditioned
from sdekit.testing import GaussianMixture

from ._helpers import Counting

F64 = torch.float64
SDE = sdekit.VPSDE()


def _diagonal_gaussian() -> GaussianMixture:
    return GaussianMixture(torch.ones(1), torch.tensor([[0.7, -1.2, 0.4]], dtype=F64),
                           torch.tensor([[0.3, 0.9, 0.5]], dtype=F64))


@pytest.mark.parametrize("per_sample", [False, True])
def test_inpainting_with_ode_adaptive_gives_the_exact_conditional_flow(per_sample):
    """A Gaussian with independent coordinates: the free coordinates' PF-ODE does not see the measured
    one, so the inpainted free part must be the exact flow map of x_T (and the measured part exactly y)."""
    g = _diagonal_gaussian()
    x_T = SDE.prior_sample((32, 3), generator=torch.Generator().manual_seed(0), dtype=F64)
    exact = g.pf_ode_flow(x_T, SDE.T, SDE.eps, SDE)
    y, mask = torch.tensor([0.0, 5.0, 0.0], dtype=F64), torch.tensor([False, True, False])
    sol = sdekit.solve(g.score_fn(SDE), SDE, "ode_adaptive", x_T=x_T, rtol=1e-8, atol=1e-8, per_sample=per_sample,
                       denoise=False, condition=Inpainting(y, mask), generator=torch.Generator().manual_seed(1))
    assert not torch.equal(sol.x[:, 1], torch.full((32,), 5.0, dtype=F64))  # no finalize without denoise
    err = float((sol.x[:, ~mask] - exact[:, ~mask]).abs().max())
    assert err < 1e-5, err
    assert sol.stats["accepted"] > 5
    den = sdekit.solve(g.score_fn(SDE), SDE, "ode_adaptive", x_T=x_T, rtol=1e-8, atol=1e-8, per_sample=per_sample,
                       condition=Inpainting(y, mask), generator=torch.Generator().manual_seed(1))
    assert torch.equal(den.x[:, 1], torch.full((32,), 5.0, dtype=F64))  # finalize: the clean measurement


class _Pin:
    """A deterministic condition: coordinate 1 pinned to ``c`` after every step (no noise, so runs compare
    sample by sample). The free coordinate then follows an ODE coupled to the pinned value."""

    def __init__(self, c: float) -> None:
        self.c = c

    def apply(self, process, x, t0, t1, noise):
        out = x.clone()
        out[:, 1] = self.c
        return out


def test_conditioned_adaptive_converges_to_the_constrained_flow_on_a_coupled_mixture():
    """Mixture components couple the coordinates. With coordinate 1 pinned after every step, the conditioned
    run must converge to the constrained flow (coordinate 1 held at c inside the drift, solved as a plain ODE)
    as the tolerance tightens (slowly: step-then-project is first order, see sdekit.solvers.conditioned)."""
    mix = GaussianMixture(torch.tensor([1.0, 1.0]), torch.tensor([[-1.0, -1.0], [1.0, 1.0]], dtype=F64),
                          torch.tensor([[0.5, 0.6], [0.6, 0.5]], dtype=F64))
    x_T = SDE.prior_sample((16, 2), generator=torch.Generator().manual_seed(3), dtype=F64)
    x_T[:, 1] = 0.3
    proc = sdekit.ReverseProcess(SDE, mix.score_fn(SDE), lam=0.0)

    def constrained(x, t):
        xc = x.clone()
        xc[:, 1] = 0.3
        v = proc.drift(xc, t)
        v[:, 1] = 0.0
        return v

    grid = torch.tensor([SDE.T, SDE.eps], dtype=F64)
    ref = integrate(DriftDiffusion(constrained), sdekit.solvers.resolve("ode_adaptive", rtol=1e-11, atol=1e-11),
                    grid, x_T, GaussianNoise()).x
    gaps = []
    for tol in (1e-6, 1e-10):
        sol = sdekit.solve(mix.score_fn(SDE), SDE, "ode_adaptive", x_T=x_T, rtol=tol, atol=tol, denoise=False,
                           condition=_Pin(0.3))
        gaps.append(float((sol.x - ref).abs().max()))
    assert gaps[1] < 1e-2 and gaps[1] < gaps[0] / 4, gaps


def test_condition_shape_mismatch_is_refused_before_any_score_call():
    for solver in ("ode_euler", "reverse_diffusion", "ode_adaptive", "dpmpp_2m"):
        score = Counting(lambda x, t: -x)
        with pytest.raises(ValueError, match="broadcast"):
            sdekit.sample(score, SDE, solver, shape=(2, 2), steps=2 if solver != "ode_adaptive" else None,
                          condition=Inpainting(torch.zeros(3), torch.tensor([True, False, True])))
        assert score.calls == 0, solver
    score = Counting(lambda x, t: -x)
    with pytest.raises(ValueError, match="dim=1"):  # 4 channels, a 3-channel colorization
        sdekit.sample(score, SDE, "ode_heun", shape=(2, 4, 2, 2), steps=2,
                      condition=colorization(torch.zeros(2, 1, 2, 2)))
    with pytest.raises(ValueError, match="measurement y"):  # y of another spatial size
        sdekit.sample(score, SDE, "ode_heun", shape=(2, 3, 2, 2), steps=2,
                      condition=colorization(torch.zeros(2, 1, 3, 3)))
    assert score.calls == 0


def test_colorization_with_an_adaptive_solver_keeps_the_gray_channel():
    mix = GaussianMixture.random(dim=12, event_shape=(3, 2, 2), generator=torch.Generator().manual_seed(5))
    gray = mix.sample(4, generator=torch.Generator().manual_seed(6), dtype=F64).mean(1, keepdim=True)
    sol = sdekit.solve(mix.score_fn(SDE), SDE, "ode_adaptive", x_T=torch.randn(4, 3, 2, 2, dtype=F64),
                       rtol=1e-4, atol=1e-4, condition=colorization(gray))
    assert torch.allclose(sol.x.mean(1, keepdim=True), gray, atol=1e-10)
    assert sol.stats["accepted"] > 1


class _NaNAfter:
    def __init__(self, step: int) -> None:
        self.step, self.calls = step, 0

    def apply(self, process, x, t0, t1, noise):
        self.calls += 1
        return x * float("nan") if self.calls == self.step else x


def test_a_condition_runs_inside_the_nan_guard():
    with pytest.raises(sdekit.NonFiniteError) as info:
        sdekit.sample(lambda x, t: -x, SDE, "ode_euler", shape=(3, 2), steps=6, condition=_NaNAfter(4))
    assert info.value.step == 4 and info.value.x_last is not None and bool(torch.isfinite(info.value.x_last).all())


def test_conditioned_reports_the_wrapped_solver_and_counts_the_condition_nfe():
    cond = Inpainting(torch.zeros(2), torch.tensor([False, True]), corrector_steps=2)
    c = Conditioned(sdekit.solvers.resolve("ode_heun"), cond)
    assert (c.name, c.order, c.stochastic, c.adaptive, c.nfe_per_step, c.needs_sde) == ("ode_heun", 2.0, False,
                                                                                          False, 4, True)
    assert c.nfe_for(5) == 20
    proc = sdekit.ReverseProcess(SDE, lambda x, t: -x, lam=0.0)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    sol = integrate(proc, c, sdekit.grids.uniform(SDE, 5), x, GaussianNoise(torch.Generator()))
    assert sol.nfe == c.nfe_for(5)
    with pytest.raises(TypeError, match="condition must have an apply"):
        Conditioned(sdekit.solvers.resolve("ode_heun"), object())
