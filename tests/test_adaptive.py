"""Adaptive solvers: embedded pairs, the PI-controlled driver loop, torchdiffeq, and the adaptive SDE solver."""

from __future__ import annotations

import math

import pytest
import torch

import sdekit
from sdekit.integrate import MaxStepsError, SamplingError, StepSizeUnderflowError, integrate
from sdekit.metrics import frechet_to_moments
from sdekit.noise import BrownianNoise, BrownianPath, GaussianNoise
from sdekit.process import DriftDiffusion, ReverseProcess
from sdekit.solvers.runge_kutta import BOSH3, DOPRI5, ExplicitRK
from sdekit.testing import GaussianMixture, convergence_slope

F64 = torch.float64


def _fit_slope(hs, errs):
    """Least-squares slope of log(err) against log(h)."""
    return convergence_slope([1.0 / h for h in hs], errs)


@pytest.fixture(scope="module")
def gauss():
    """A single Gaussian (exact PF-ODE flow) under the VP SDE, float64 x_T."""
    sde = sdekit.VPSDE()
    mix = GaussianMixture.random(dim=6, components=1, generator=torch.Generator().manual_seed(2))
    x_T = sde.prior_sample((64, 6), generator=torch.Generator().manual_seed(3), dtype=F64)
    return sde, mix, x_T, mix.pf_ode_flow(x_T, sde.T, sde.eps, sde)


@pytest.mark.parametrize("tab", [BOSH3, DOPRI5], ids=lambda t: t.name)
def test_embedded_tableau_consistency(tab):
    assert math.isclose(sum(tab.b), 1.0, abs_tol=1e-14)
    assert math.isclose(sum(tab.b_err), 1.0, abs_tol=1e-14)
    for row, c in zip(tab.A, tab.c):
        assert math.isclose(sum(row), c, abs_tol=1e-14)
    assert tab.fsal and tab.c[-1] == 1.0 and all(math.isclose(a, b) for a, b in zip(tab.A[-1], tab.b))
    # order conditions up to order 3 for both weight vectors
    for w, p in [(tab.b, tab.order), (tab.b_err, tab.err_order)]:
        assert math.isclose(sum(wi * ci for wi, ci in zip(w, tab.c)), 1 / 2, abs_tol=1e-14)
        if p >= 3:
            assert math.isclose(sum(wi * ci ** 2 for wi, ci in zip(w, tab.c)), 1 / 3, abs_tol=1e-14)


@pytest.mark.parametrize("tab,steps", [(BOSH3, [32, 64, 128, 256]), (DOPRI5, [16, 32, 64, 128])],
                         ids=["bosh3", "dopri5"])
def test_pairs_global_order_at_fixed_steps(gauss, tab, steps):
    sde, mix, x_T, exact = gauss

    class Fixed(ExplicitRK):
        tableau = tab

    errs = []
    for n in steps:
        p = ReverseProcess(sde, mix.score_fn(sde), lam=0.0)
        x = integrate(p, Fixed(), sdekit.grids.quadratic(sde, n), x_T, GaussianNoise()).x
        errs.append(float((x - exact).abs().max()))
    slope = -_fit_slope(steps, errs)
    assert abs(slope - tab.order) <= 0.3, (tab.name, slope, errs)


@pytest.mark.parametrize("method,hs", [("bosh3", [0.2, 0.1, 0.05, 0.025]), ("dopri5", [0.04, 0.02, 0.01, 0.005])])
def test_embedded_error_estimate_order(gauss, method, hs):
    """One step from t=0.5: the estimate is O(h^(q+1)) (q = embedded order) and tracks the true local error."""
    sde, mix, x_T, _ = gauss
    solver = sdekit.solvers.resolve("ode_adaptive", method=method)
    x0 = mix.pf_ode_flow(x_T, sde.T, 0.5, sde)
    ests = []
    for h in hs:
        p = ReverseProcess(sde, mix.score_fn(sde), lam=0.0)
        t0, t1 = torch.full((64,), 0.5, dtype=F64), torch.full((64,), 0.5 - h, dtype=F64)
        state = solver.init(p, x0, t0)
        x1, state, err = solver.step(p, t0, t1, x0, state, None)
        ests.append(float(err.abs().max()))
        # err = x_high - x_low estimates exact - x_low, the local error of the embedded method
        true_low = mix.pf_ode_flow(x0, 0.5, 0.5 - h, sde) - (x1 - err)
        assert float((true_low - err).abs().max()) < 0.5 * float(err.abs().max()) + 1e-13
    slope = _fit_slope(hs, ests)
    q = solver.err_order
    assert abs(slope - (q + 1)) <= 0.3, (method, slope, ests)


def test_ode_adaptive_matches_torchdiffeq_and_nfe_falls_with_tolerance(gauss):
    sde, mix, x_T, exact = gauss
    score = mix.score_fn(sde)
    nfes, errs = [], []
    for tol in [1e-7, 1e-5, 1e-3]:
        sol = sdekit.solve(score, sde, "ode_adaptive", x_T=x_T, rtol=tol, atol=tol, denoise=False)
        nfes.append(sol.nfe)
        errs.append(float((sol.x - exact).abs().max()))
        # FSAL: 6 NFE per attempt, plus the first derivative and the trial point of the initial step size
        assert sol.nfe == 2 + 6 * sol.stats["attempts"]
        assert sol.stats["accepted"] + sol.stats["rejected"] == sol.stats["attempts"]
        ref = sdekit.solve(score, sde, "torchdiffeq", method="dopri5", x_T=x_T, rtol=tol, atol=tol, denoise=False)
        scale = float(exact.abs().max())
        assert float((sol.x - ref.x).abs().max()) < 50 * tol * (1 + scale), (tol, sol.nfe, ref.nfe)
        assert 0.5 * ref.nfe <= sol.nfe <= 1.5 * ref.nfe, (tol, sol.nfe, ref.nfe)
    assert nfes[0] > nfes[1] > nfes[2], nfes
    assert errs[0] < errs[1] < errs[2], errs
    assert errs[0] < 1e-5


@pytest.mark.parametrize("method", ["bosh3", "dopri5"])
def test_per_sample_and_shared_steps_agree(gauss, method):
    sde, mix, x_T, exact = gauss
    tol = 1e-6
    kw = dict(x_T=x_T, rtol=tol, atol=tol, denoise=False, method=method)
    shared = sdekit.solve(mix.score_fn(sde), sde, "ode_adaptive", **kw)
    seen_t = []

    def score(x, t):
        seen_t.append(t.clone())
        return mix.score(x, t, sde)

    per = sdekit.solve(score, sde, "ode_adaptive", per_sample=True, **kw)
    assert any(float(t.max() - t.min()) > 0 for t in seen_t), "per-sample steps never diverged"
    assert float((per.x - shared.x).abs().max()) < 100 * tol, float((per.x - shared.x).abs().max())
    assert float((per.x - exact).abs().max()) < 100 * tol
    assert per.stats["accepted_per_sample"].shape == (64,)


def test_adaptive_checkpoints_and_save_at(gauss):
    sde, mix, x_T, _ = gauss
    grid = torch.tensor([sde.T, 0.5, 0.1, sde.eps], dtype=F64)
    for per_sample in (False, True):
        sol = sdekit.solve(mix.score_fn(sde), sde, "ode_adaptive", x_T=x_T, schedule=grid, steps=3, rtol=1e-7,
                           atol=1e-7, per_sample=per_sample, denoise=False, save_at="grid")
        assert sol.xs.shape == (4, *x_T.shape) and torch.equal(sol.ts, grid)
        for i in range(4):
            want = mix.pf_ode_flow(x_T, sde.T, float(grid[i]), sde)
            assert float((sol.xs[i] - want).abs().max()) < 1e-5


def test_max_steps_and_underflow_raise_with_last_state(gauss):
    sde, mix, x_T, _ = gauss
    with pytest.raises(MaxStepsError) as ei:
        sdekit.solve(mix.score_fn(sde), sde, "ode_adaptive", x_T=x_T, rtol=1e-8, atol=1e-8, max_steps=3,
                     denoise=False)
    e = ei.value
    assert isinstance(e, SamplingError) and e.step == 3 and sde.eps < e.t < sde.T
    assert "max_steps=3" in str(e) and torch.isfinite(e.x_last).all() and e.x_last.shape == x_T.shape

    def broken(x, t):  # NaN below t = 0.6: every step there is rejected until the step size underflows
        s = mix.score(x, t, sde)
        return torch.where((t < 0.6).view(-1, 1), torch.full_like(s, float("nan")), s)

    for per_sample in (False, True):
        with pytest.raises(StepSizeUnderflowError, match="non-finite") as ei:
            sdekit.solve(broken, sde, "ode_adaptive", x_T=x_T, per_sample=per_sample, denoise=False)
        assert ei.value.t >= 0.6 - 1e-6 and torch.isfinite(ei.value.x_last).all()


def test_bad_options_and_nfe_budget_rejected(gauss):
    sde, mix, x_T, _ = gauss
    for name in ("ode_adaptive", "sde_adaptive", "torchdiffeq"):
        assert name in [s.name for s in sdekit.solvers.available()]
        with pytest.raises(ValueError, match="rtol"):
            sdekit.sample(mix.score_fn(sde), sde, name, x_T=x_T, nfe=50)
    with pytest.raises(ValueError, match="method"):
        sdekit.solvers.resolve("ode_adaptive", method="rk4")
    with pytest.raises(ValueError, match="rtol and atol"):
        sdekit.solvers.resolve("ode_adaptive", rtol=0.0, atol=0.0)
    with pytest.raises(TypeError, match="per_sample"):
        sdekit.solvers.resolve("sde_adaptive", per_sample=1)
    with pytest.raises(ValueError, match="method"):
        sdekit.solvers.resolve("torchdiffeq", method="nope")


# -- the adaptive SDE solver -----------------------------------------------------------------

def _drift(x, t):
    return torch.sin(x) - 0.5 * x


def _diffusion(t):
    return 1.0 + t


def test_brownian_path_is_one_brownian_motion():
    """Queries in any order (including retried, shorter steps) are consistent and have the right law."""
    n = 20000
    like = torch.zeros(n, 1, dtype=F64)
    path = BrownianPath(generator=torch.Generator().manual_seed(0))
    one = torch.ones(n, dtype=F64)
    w_long = path.increment(one, 0.5 * one, like)  # a step that will be "rejected"
    w_a = path.increment(one, 0.8 * one, like)  # the retry, on the same path
    w_b = path.increment(0.8 * one, 0.5 * one, like)
    assert torch.allclose(w_a + w_b, w_long, atol=1e-12)
    assert abs(float(w_a.var()) - 0.2) < 0.02 and abs(float(w_b.var()) - 0.3) < 0.02
    assert abs(float((w_a * w_b).mean())) < 0.01  # independent increments
    path.forget(0.8 * one, -1.0)
    assert torch.allclose(path.increment(0.8 * one, 0.5 * one, like), w_b, atol=1e-12)
    # per-sample times
    t1 = torch.linspace(0.9, 0.1, n, dtype=F64)
    w = path.increment(0.5 * one, t1, like)
    assert torch.isfinite(w).all()


def _heun_reference(path, x0, n):
    """Fixed-step stochastic Heun on ``path`` (strong order 1 here)."""
    x = x0.clone()
    grid = torch.linspace(1.0, 0.0, n + 1, dtype=F64)
    b = x0.shape[0]
    for i in range(n):
        t0, t1 = grid[i].expand(b), grid[i + 1].expand(b)
        h = float(grid[i + 1] - grid[i])
        dw = path.increment(t0, t1, x)
        xl = x + h * _drift(x, t0) + _diffusion(t0).view(-1, 1) * dw
        x = x + 0.5 * h * (_drift(x, t0) + _drift(xl, t1)) + 0.5 * (_diffusion(t0) + _diffusion(t1)).view(-1, 1) * dw
    return x


@pytest.mark.parametrize("per_sample", [False, True])
def test_sde_adaptive_retries_on_the_same_brownian_path(per_sample):
    b = 32
    x0 = torch.full((b, 2), 0.5, dtype=F64)
    grid = torch.tensor([1.0, 0.0], dtype=F64)

    def solve(noise, tol):
        return integrate(DriftDiffusion(_drift, _diffusion),
                         sdekit.solvers.resolve("sde_adaptive", rtol=tol, atol=tol, per_sample=per_sample),
                         grid, x0, noise)

    if per_sample:
        noise = BrownianPath(generator=torch.Generator().manual_seed(3), keep_history=True)
        sol = solve(noise, 1e-4)
        ref = _heun_reference(noise, x0, 2000)  # the same path, queried again between its points
    else:
        noise = BrownianNoise(0.0, 1.0, (b, 2), seed=3, dtype=F64)
        sol = solve(noise, 1e-4)
        ref = integrate(DriftDiffusion(_drift, _diffusion), sdekit.solvers.resolve("srk"),
                        torch.linspace(1.0, 0.0, 401, dtype=F64), x0, noise).x
    assert sol.stats["rejected"] > 0  # retries happened
    gap = float((sol.x - ref).abs().mean())
    other = solve(BrownianPath(generator=torch.Generator().manual_seed(4)), 1e-4)
    control = float((other.x - ref).abs().mean())
    assert gap < 0.01 and control > 0.3, (gap, control)


def test_sde_adaptive_reaches_the_finite_sample_floor():
    sde = sdekit.VPSDE()
    mix = GaussianMixture.random(dim=8, components=4, generator=torch.Generator().manual_seed(5))
    n = 2000
    mean, cov = mix.mean(), mix.cov()
    floor = sum(frechet_to_moments(mix.sample(n, generator=torch.Generator().manual_seed(s)), mean, cov)
                for s in range(4)) / 4
    for per_sample in (False, True):
        sol = sdekit.solve(mix.score_fn(sde), sde, "sde_adaptive", shape=(n, 8), per_sample=per_sample,
                           generator=torch.Generator().manual_seed(6))
        fd = frechet_to_moments(sol.x, mean, cov)
        assert fd < 2.0 * floor, (per_sample, fd, floor, sol.nfe)
        assert sol.nfe < 400
    em = sdekit.solve(mix.score_fn(sde), sde, "euler_maruyama", shape=(n, 8), steps=20,
                      generator=torch.Generator().manual_seed(6))
    assert frechet_to_moments(em.x, mean, cov) > 2.0 * floor  # the test can tell a poor sampler apart


@pytest.mark.parametrize("per_sample", [False, True])
def test_initial_step_from_a_second_evaluation_saves_steps_under_ve(per_sample):
    """Hairer's initial step (one extra, counted evaluation) beats starting at 1% of the span: the VE
    flow is slow at t = T, and the PI controller grows a small first step only gradually."""
    sde = sdekit.VESDE()
    mix = GaussianMixture.random(dim=6, components=1, generator=torch.Generator().manual_seed(5))
    x_T = sde.prior_sample((64, 6), generator=torch.Generator().manual_seed(6), dtype=F64)
    exact = mix.pf_ode_flow(x_T, sde.T, sde.eps, sde)
    kw = dict(x_T=x_T, rtol=1e-3, atol=1e-3, denoise=False, per_sample=per_sample)
    auto = sdekit.solve(mix.score_fn(sde), sde, "ode_adaptive", **kw)
    small = sdekit.solve(mix.score_fn(sde), sde, "ode_adaptive", h0=0.01 * (sde.T - sde.eps), **kw)
    assert auto.nfe < 0.9 * small.nfe, (auto.nfe, small.nfe)  # measured 68 vs 79 (shared step)
    # and the answer still meets the tolerance (measured 2.8e-4 with |x| ~ 2.6)
    err = float((auto.x - exact).abs().max())
    assert err < 1e-3 * (1 + float(exact.abs().max())), err
