"""Flow matching: FlowSDE, from_flow, from_diffusers(FlowMatchEuler / flow-mode DPM-Solver), endpoints, likelihood."""

from __future__ import annotations

import pytest
import torch

import sdekit
from sdekit.sde import SDE
from sdekit.testing import GaussianMixture

diffusers = pytest.importorskip("diffusers")


def exact_velocity(mix: GaussianMixture, sde: SDE):
    """The mixture's exact flow velocity ``u = (x - E[x_0 | x_t]) / sigma``, with ``E[x_0 | x_t]`` from
    the component posteriors (finite at ``alpha = 0``, where the score path would give 0/0)."""
    def model(x, t):
        xf = x.reshape(x.shape[0], -1).double()
        tt = t.double().expand(x.shape[0])
        a, s = sde.alpha(tt)[:, None], sde.sigma(tt)[:, None]
        r = mix.posterior(x.double(), tt, sde)
        mu, sd = mix.means.reshape(mix.means.shape[0], -1), mix.stds.reshape(mix.stds.shape[0], -1)
        d = torch.zeros_like(xf)
        for k in range(mu.shape[0]):
            v = sd[k] ** 2
            d += r[:, k:k + 1] * (mu[k] + a * v / (a * a * v + s * s) * (xf - a * mu[k]))
        return ((xf - d) / s).reshape(x.shape).to(x.dtype)
    return model


class TinyVelocity(torch.nn.Module):
    """A random-weights velocity model ``u(x, timestep)`` (timestep in diffusers' 0..1000 units)."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = torch.nn.Parameter(torch.randn(dim + 1, 32, generator=g) / 3)
        self.w2 = torch.nn.Parameter(torch.randn(32, dim, generator=g) / 6)

    def forward(self, x, timestep):
        tt = (timestep.reshape(-1).to(x.dtype).expand(x.shape[0]) / 1000.0)[:, None]
        return torch.tanh(torch.cat([x, tt], 1) @ self.w1) @ self.w2


def _native(net, scheduler, x, steps):
    scheduler.set_timesteps(steps)
    x = x.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(net(x, t.expand(x.shape[0])), t, x).prev_sample
    return x


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


X_T = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))


# ----------------------------------------------------------------------------- the SDE


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flowsde_closed_forms_match_the_generic_definitions(shift):
    sde = sdekit.FlowSDE(shift=shift)
    t = torch.linspace(0.01, 0.99, 25, dtype=torch.float64)
    assert torch.allclose(sde.alpha(t) + sde.sigma(t), torch.ones_like(t))
    assert torch.allclose(sde.sigma(t), shift * t / (1 + (shift - 1) * t))
    assert torch.allclose(sde.f(t), SDE.f(sde, t), rtol=1e-9)          # autograd d ln alpha / dt
    assert torch.allclose(sde.g2(t), SDE.g2(sde, t), rtol=1e-9)
    assert torch.allclose(sde.log_snr(t), torch.log(sde.alpha(t) / sde.sigma(t)), rtol=1e-12)
    assert torch.allclose(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=1e-12)
    assert torch.allclose(sde.times(sde.sigma(t)), t, rtol=1e-12)
    for lam in (0.0, 1.0):
        cx, cd = sde.reverse_drift_coefficients(t, lam)
        gx, gd = SDE.reverse_drift_coefficients(sde, t, lam)
        assert torch.allclose(cx, gx, rtol=1e-9) and torch.allclose(cd, gd, rtol=1e-9)
    one = torch.ones(1, dtype=torch.float64)   # pure noise: alpha = 0, lambda = -inf, PF-ODE drift finite
    assert float(sde.alpha(one)) == 0.0 and float(sde.log_snr(one)) == float("-inf") and sde.prior_std == 1.0
    assert all(bool(torch.isfinite(c).all()) for c in sde.reverse_drift_coefficients(one, 0.0))


def test_flow_refusals():
    with pytest.raises(ValueError, match="T must be <= 1"):
        sdekit.FlowSDE(T=1.5)
    with pytest.raises(ValueError, match="alpha\\(t\\) \\+ sigma\\(t\\) = 1"):
        sdekit.score.from_flow(lambda x, t: x, sdekit.VPSDE())
    sde = sdekit.FlowSDE()
    score = sdekit.score.from_flow(lambda x, t: torch.zeros_like(x), sde)
    with pytest.raises(ValueError, match="reverse SDE .* diverges at t=1"):
        sdekit.sample(score, sde, "euler_maruyama", x_T=X_T, steps=4)
    with pytest.raises(ValueError, match="needs a finite log-SNR"):
        sdekit.sample(score, sde, "dpmpp_2s", x_T=X_T, steps=4)
    net = TinyVelocity()
    with pytest.raises(ValueError, match="stochastic_sampling"):
        sdekit.score.from_diffusers(net, diffusers.FlowMatchEulerDiscreteScheduler(stochastic_sampling=True))
    with pytest.raises(ValueError, match="parametrization"):
        sdekit.score.from_diffusers(net, diffusers.FlowMatchEulerDiscreteScheduler(), parametrization="sigma")


# ----------------------------------------------------------------------------- parity with diffusers


@pytest.mark.parametrize("config", [{}, {"shift": 3.0}])
@pytest.mark.parametrize("steps", [10, 25])
def test_ode_euler_is_flow_match_euler(config, steps):
    net = TinyVelocity()
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(**config)
    ref = _native(net, scheduler, X_T, steps)          # starts at sigma = 1 exactly, ends at 0
    score, sde = sdekit.score.from_diffusers(net, scheduler)
    grid = sde.times(scheduler.sigmas)
    assert float(grid[0]) == 1.0
    out = sdekit.sample(score, sde, "ode_euler", schedule=grid, x_T=X_T)
    assert _rel(out, ref) <= 1e-5


def _dpm_flow(solver_type: str):
    return diffusers.DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction",
                                                 flow_shift=3.0, solver_type=solver_type, lower_order_final=False)


@pytest.mark.parametrize("steps", [10, 25])
def test_dpmpp_2m_is_dpm_solver_flow_mode(steps):
    net = TinyVelocity()
    scheduler = _dpm_flow("heun")
    ref = _native(net, scheduler, X_T, steps)
    score, sde = sdekit.score.from_diffusers(net, scheduler)
    out = sdekit.sample(score, sde, "dpmpp_2m", schedule=sde.times(scheduler.sigmas), x_T=X_T,
                        lower_order_final=False)
    assert _rel(out, ref) <= 1e-5


def test_dpmpp_2m_midpoint_is_dpm_solver_flow_mode_default():
    try:
        sdekit.solvers.resolve("dpmpp_2m", solver_type="midpoint")
    except TypeError:
        pytest.skip("dpmpp_2m has no solver_type='midpoint' on this branch (issue 13 item 1)")
    net = TinyVelocity()
    scheduler = _dpm_flow("midpoint")
    ref = _native(net, scheduler, X_T, 10)
    score, sde = sdekit.score.from_diffusers(net, scheduler)
    out = sdekit.sample(score, sde, "dpmpp_2m", schedule=sde.times(scheduler.sigmas), x_T=X_T,
                        lower_order_final=False, solver_type="midpoint")
    assert _rel(out, ref) <= 1e-5


# ----------------------------------------------------------------------------- exact answers


@pytest.fixture(scope="module")
def mixture_problem():
    mix = GaussianMixture.random(dim=2, components=3, generator=torch.Generator().manual_seed(3), std=(0.3, 0.5))
    sde = sdekit.FlowSDE()
    score = sdekit.score.from_flow(exact_velocity(mix, sde), sde, time="continuous")
    x_T = torch.randn(128, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = sdekit.sample(score, sde, "ode_rk4", x_T=x_T, steps=200, schedule="uniform")  # float64 reference
    return mix, sde, score, x_T, ref


@pytest.mark.parametrize("solver,ratio", [("ode_euler", 3.0), ("dpmpp_2m", 8.0), ("unipc", 8.0)])
def test_flow_solvers_converge_from_pure_noise(mixture_problem, solver, ratio):
    """From t = 1 exactly (alpha = 0): the error to the float64 PF-ODE solution falls with the order."""
    _, sde, score, x_T, ref = mixture_problem
    errs = [_rel(sdekit.sample(score, sde, solver, x_T=x_T.float(), steps=n), ref) for n in (8, 32)]
    assert errs[1] < 0.02
    assert errs[0] / errs[1] > ratio, errs


ODE_SOLVERS = [i.name for i in sdekit.solvers.available() if i.kind == "ode"]


@pytest.mark.parametrize("solver", ODE_SOLVERS)
def test_every_ode_solver_starts_at_pure_noise(mixture_problem, solver):
    """Every ODE solver starts at t = 1 exactly, or refuses clearly (those whose stages need a finite lambda)."""
    _, sde, score, x_T, ref = mixture_problem
    if getattr(sdekit.solvers.resolve(solver), "needs_finite_log_snr", False):
        with pytest.raises(ValueError, match="finite log-SNR"):
            sdekit.sample(score, sde, solver, x_T=x_T.float(), steps=20)
        return
    out = sdekit.sample(score, sde, solver, x_T=x_T.float(), steps=20)
    assert _rel(out, ref) < 0.1  # measured 1e-5 (torchdiffeq, rk4) .. 0.075 (ddim) at 20 steps


def test_reverse_sde_on_flow_below_one(mixture_problem):
    """The SDE family where it is defined (T < 1): exact mixture moments from the SDE samplers."""
    mix, _, _, _, _ = mixture_problem
    sde = sdekit.FlowSDE(T=0.999)
    score = sdekit.score.from_flow(exact_velocity(mix, sde), sde, time="continuous")
    x = sdekit.sample(score, sde, "dpmpp_2m_sde", shape=(4000, 2), steps=40,
                      generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(x.mean(0), mix.mean(), atol=0.06)  # measured 0.013
    assert torch.allclose(torch.cov(x.T), mix.cov(), atol=0.15)  # measured 0.033


def test_likelihood_on_flowsde(mixture_problem):
    mix, sde, score, _, _ = mixture_problem
    x = mix.sample(16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    res = sdekit.likelihood(score, sde, x, trace="exact", steps=50)
    exact = mix.log_prob(x, torch.full((16,), sde.eps, dtype=torch.float64), sde)
    assert torch.allclose(res.logp, exact, atol=1e-4)  # measured 8e-6
