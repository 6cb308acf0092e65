"""LMS, the DPM-Solver++ ``solver_type`` variants, diffusers' lower-order-final rule, EDM churn and
from_diffusers' scheduler options (issue 13): orders on exact Gaussian PF-ODE flows, the rules on
known answers, refusals before any work."""

from __future__ import annotations

import math

import pytest
import torch

import sdekit
from sdekit.solvers import resolve
from sdekit.solvers._exponential import order_cap
from sdekit.testing import GaussianMixture

from ._orders import slope

SDES = {"vp": sdekit.VPSDE(), "ve": sdekit.VESDE(), "edm": sdekit.EDMSDE(0.002, 80.0)}


def _gaussian(dim: int = 4) -> GaussianMixture:
    g = torch.Generator().manual_seed(0)
    return GaussianMixture(torch.ones(1), torch.randn(1, dim, generator=g, dtype=torch.float64),
                           0.2 + torch.rand(1, dim, generator=g, dtype=torch.float64))


def _errors(sde_name, solver, steps, eps, **options):
    sde, mix = SDES[sde_name], _gaussian()
    eps = max(eps, sde.eps)
    x_T = sde.prior_sample((32, 4), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = mix.pf_ode_flow(x_T, sde.T, eps, sde)
    return [float((sdekit.sample(mix.score_fn(sde), sde, solver, x_T=x_T, steps=n, eps=eps, denoise=False,
                                 **options) - exact).norm() / exact.norm()) for n in steps]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_lms_order(order):
    """LMS of order p has global error O(h^p) on the exact single-Gaussian PF-ODE flow under EDM on
    Karras grids (64/128/256 steps; measured slopes 1.00, 1.97, 2.94, 3.89)."""
    steps = [64, 128, 256]
    errs = _errors("edm", "lms", steps, 0.5, order=order, schedule="karras")
    assert abs(slope(steps, errs) - order) < 0.3, errs
    assert resolve("lms", order=order).order == order


def test_lms_warm_up_limits_the_order_where_the_flow_curves_at_T():
    """The lower-order warm-up (k-diffusion's and diffusers') leaves a first-step error O(h^2): on VP in
    its own time, where the flow curves at T, order 4 measures ~2. Documented in the solver."""
    steps = [32, 64, 128]
    errs = _errors("vp", "lms", steps, 0.4, order=4, schedule="uniform")
    assert abs(slope(steps, errs) - 2) < 0.3, errs


@pytest.mark.parametrize("solver", ["dpmpp_2m", "dpmpp_3m"])
def test_midpoint_order(solver):
    """solver_type='midpoint' keeps the method's order (2 for 2M; 3M's order-3 steps do not use it)."""
    steps = [32, 64, 128]
    errs = _errors("vp", solver, steps, 0.4, solver_type="midpoint")
    order = resolve(solver).order
    assert abs(slope(steps, errs) - order) < 0.3, errs


def test_midpoint_differs_from_heun_only_in_the_second_order_term():
    sde, mix = SDES["vp"], _gaussian()
    x_T = sde.prior_sample((8, 4), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    kw = dict(x_T=x_T, steps=10)
    heun = sdekit.sample(mix.score_fn(sde), sde, "dpmpp_2m", **kw)
    mid = sdekit.sample(mix.score_fn(sde), sde, "dpmpp_2m", solver_type="midpoint", **kw)
    ddim = sdekit.sample(mix.score_fn(sde), sde, "ddim", **kw)
    assert not torch.allclose(heun, mid)
    # both are second-order corrections of the same first-order step: closer to each other than to DDIM
    assert (heun - mid).norm() < (heun - ddim).norm()


def test_solver_type_is_checked():
    with pytest.raises(ValueError, match="solver_type"):
        resolve("dpmpp_2m", solver_type="bh2")
    with pytest.raises(ValueError, match="order"):
        resolve("lms", order=0)
    assert resolve("dpmpp_2m_sde", solver_type="midpoint").options()["solver_type"] == "midpoint"


def test_lower_order_final_rules():
    """count_denoise=True is diffusers' rule: with N < 15 timesteps, step N-1 (sdekit's denoising step) is first
    order and step N-2 (sdekit's last solver step) second order (the grid has N points). The default is
    sdekit's rule: the last solver step itself is first order."""
    grid = torch.linspace(1.0, 0.1, 10)
    caps = [order_cap({"grid": grid, "i": i}, True, count_denoise=True) for i in range(9)]
    assert caps[-1] == 2 and caps[-2] == 3 and min(caps) == 2
    assert order_cap({"grid": torch.linspace(1.0, 0.1, 15), "i": 13}, True, count_denoise=True) > 3
    # so lower_order_final changes nothing for a second-order multistep method
    sde, mix = SDES["ve"], _gaussian()
    x_T = sde.prior_sample((8, 4), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    on, off = (sdekit.sample(mix.score_fn(sde), sde, "dpmpp_2m", x_T=x_T, steps=8, lower_order_final=f,
                             count_denoise=True) for f in (True, False))
    assert torch.equal(on, off)
    # sdekit's own rule (the default, count_denoise=False): the last solver step into eps is first order
    cap = order_cap({"grid": torch.linspace(1.0, 0.1, 9), "i": 7}, True)
    assert cap == 1
    default = sdekit.sample(mix.score_fn(sde), sde, "dpmpp_2m", x_T=x_T, steps=8)
    first_order_last = sdekit.sample(mix.score_fn(sde), sde, "dpmpp_2m", x_T=x_T, steps=8, lower_order_final=False)
    assert not torch.equal(default, first_order_last)


def test_edm_churn_normalised_by_the_number_of_grid_points():
    """gamma = min(s_churn / N, sqrt 2 - 1) with N = len(k-diffusion's sigmas) - 1 = sdekit's grid points: the
    kick of the first step has std sigma_0 sqrt((1+gamma)^2 - 1)."""
    sde = SDES["edm"]
    x_T = torch.zeros(4096, 1, dtype=torch.float64)
    grid = torch.tensor([10.0, 5.0, 1.0, 0.5], dtype=torch.float64)
    calls = []

    def score_fn(x, t):
        calls.append((x.clone(), t.clone()))
        return -x / (1.0 + t[:, None] ** 2)

    sdekit.solve(score_fn, sde, "edm_heun", schedule=grid, x_T=x_T, s_churn=1.0, denoise=False,
                 generator=torch.Generator().manual_seed(0))
    x_hat, t_hat = calls[0]
    gamma = 1.0 / grid.numel()
    assert torch.allclose(t_hat, torch.full_like(t_hat, 10.0 * (1 + gamma)))
    assert abs(float(x_hat.std()) / (10.0 * math.sqrt((1 + gamma) ** 2 - 1)) - 1) < 0.05


def test_grid_within_float32_ulps_of_T_is_accepted_and_clamped():
    sde = sdekit.VPSDE()
    g = sdekit.grids.get_grid(torch.tensor([sde.T * (1 + 2e-7), 0.5, 0.1]), sde, 4)
    assert float(g[0]) == sde.T
    with pytest.raises(ValueError, match="at or below sde.T"):
        sdekit.grids.get_grid(torch.tensor([sde.T * (1 + 1e-5), 0.5, 0.1], dtype=torch.float64), sde, 4)


def test_dpm_solver_third_order_form_is_second_order():
    """The peers' third-order multistep step (third_order="dpm-solver": half the exact weight on D2) measures
    order ~2 on the exact Gaussian PF-ODE (VP, eps=0.4: slopes 3.03 exact, 2.09 dpm-solver; VE 3.18, 2.37)."""
    steps = [32, 64, 128]
    assert abs(slope(steps, _errors("vp", "dpmpp_3m", steps, 0.4, third_order="dpm-solver")) - 2) < 0.3
    assert abs(slope(steps, _errors("vp", "dpmpp_3m", steps, 0.4)) - 3) < 0.3
    with pytest.raises(ValueError, match="third_order"):
        resolve("dpmpp_3m_sde", third_order="taylor")


# --------------------------------------------------------------------------- DPM-2, ancestral 2S (issue 13)


@pytest.mark.parametrize("sde_name", ["vp", "edm"])
def test_dpm_2_order(sde_name):
    """DPM-2 (midpoint in sigma/alpha, stage at the geometric mean) is second order on the exact Gaussian
    PF-ODE flow (32/64/128 steps; measured slopes 2.00 on VP, 2.02 on EDM Karras grids)."""
    steps = [32, 64, 128]
    errs = _errors(sde_name, "dpm_2", steps, 0.4, schedule="karras" if sde_name == "edm" else "uniform")
    assert abs(slope(steps, errs) - 2) < 0.3, errs
    assert resolve("dpm_2").order == 2 and resolve("dpm_2_ancestral").weak_order == 1


def test_dpmpp_2s_ancestral_at_eta_0_is_second_order():
    """The deterministic member of the ancestral 2S (the midpoint DPM-Solver++(2S)): slope 1.99 on VP."""
    steps = [32, 64, 128]
    errs = _errors("vp", "dpmpp_2s_ancestral", steps, 0.4, eta=0.0)
    assert abs(slope(steps, errs) - 2) < 0.3, errs
    assert not resolve("dpmpp_2s_ancestral", eta=0.0).stochastic


@pytest.mark.parametrize("solver", ["dpm_2_ancestral", "dpmpp_2s_ancestral"])
def test_ancestral_two_stage_samplers_hit_the_gaussian_target(solver):
    """eta=1 re-injects the DDPM posterior's noise: on a single Gaussian the samples' per-dimension
    variance matches the data's (4000 samples, 40 VP steps; measured ratios 0.94-1.09; with the
    re-injected noise scaled by 0.7 they drop to ~0.5)."""
    sde, mix = SDES["vp"], _gaussian()
    x = sdekit.sample(mix.score_fn(sde), sde, solver, shape=(4000, 4), steps=40, dtype=torch.float64,
                      generator=torch.Generator().manual_seed(2), denoise=True)
    var = mix.stds[0] ** 2
    assert torch.allclose(x.var(0), var, rtol=0.12), (x.var(0), var)
    assert torch.allclose(x.mean(0), mix.means[0], atol=0.05)


@pytest.mark.parametrize("solver", ["dpm_2", "dpm_2_ancestral", "dpmpp_2s_ancestral"])
def test_eta_outside_0_1_is_refused(solver):
    with pytest.raises(ValueError, match="eta"):
        resolve(solver, eta=1.5)
    with pytest.raises(TypeError, match="eta"):
        resolve(solver, eta="1")


# --------------------------------------------------------------------------- DEIS (issue 13)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_deis_order(order):
    """DEIS of order p (exponential Adams–Bashforth on eps in log-rho) has global error O(h^p) on the
    exact Gaussian PF-ODE flow of VP (32/64/128 log-SNR steps; measured 1.00, 1.92, 2.89)."""
    steps = [32, 64, 128]
    errs = _errors("vp", "deis", steps, 0.4, order=order)
    assert abs(slope(steps, errs) - order) < 0.3, errs
    assert resolve("deis", order=order).order == order


def _assert_order_1_is_ddim(solver: str, steps: int) -> None:
    """``solver`` with ``order=1`` is DDIM (the first-order exponential integrator), to round-off (VP, logsnr grid)."""
    sde, mix = SDES["vp"], _gaussian()
    x_T = sde.prior_sample((8, 4), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = sdekit.sample(mix.score_fn(sde), sde, solver, x_T=x_T, steps=steps, order=1, schedule="logsnr")
    b = sdekit.sample(mix.score_fn(sde), sde, "ddim", x_T=x_T, steps=steps, schedule="logsnr")
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


def test_deis_first_order_is_ddim():
    """order=1 is DDIM (the first-order exponential integrator), to round-off."""
    _assert_order_1_is_ddim("deis", 12)


def test_deis_options_are_checked():
    with pytest.raises(ValueError, match="order"):
        resolve("deis", order=4)
    with pytest.raises(TypeError, match="lower_order_final"):
        resolve("deis", lower_order_final=1)


# --------------------------------------------------------------------------- singlestep DPM-Solver++ (issue 13)


@pytest.mark.parametrize("solver_type", ["heun", "midpoint"])
def test_dpmpp_singlestep_order(solver_type):
    """Pairs of grid intervals, the stage at the next grid point: second order on the exact Gaussian PF-ODE
    flow of VP (32/64/128 steps; measured 2.04 heun, 1.99 midpoint)."""
    steps = [32, 64, 128]
    errs = _errors("vp", "dpmpp_singlestep", steps, 0.4, solver_type=solver_type)
    assert abs(slope(steps, errs) - 2) < 0.3, errs


@pytest.mark.parametrize("solver_type", ["heun", "midpoint"])
def test_dpmpp_singlestep_third_order(solver_type):
    """Groups of three intervals: third order on VP log-SNR grids (48/96/192 steps, whole groups; measured
    3.12 heun, the exact quadratic; 3.01 midpoint, DPM-Solver-3's last stage with its stages at r = 1/3, 2/3)."""
    steps = [48, 96, 192]
    errs = _errors("vp", "dpmpp_singlestep", steps, 0.4, solver_type=solver_type, order=3)
    assert abs(slope(steps, errs) - 3) < 0.3, errs


def test_dpmpp_singlestep_order_1_is_ddim_and_options_are_checked():
    _assert_order_1_is_ddim("dpmpp_singlestep", 9)
    with pytest.raises(ValueError, match="order"):
        resolve("dpmpp_singlestep", order=4)
    with pytest.raises(ValueError, match="solver_type"):
        resolve("dpmpp_singlestep", solver_type="bh2")


# --------------------------------------------------------------------------- PNDM (issue 13)


def test_pndm_order_and_nfe():
    """PRK warm-up + PLMS measures second order on the exact Gaussian PF-ODE flow of VP (uniform grids,
    32/64/128 steps: slope 1.95; 2.10 under EDM on Karras grids), with 4 NFE on each of the 3 warm-up steps."""
    steps = [32, 64, 128]
    errs = _errors("vp", "pndm", steps, 0.4)
    assert abs(slope(steps, errs) - 2) < 0.3, errs
    sde, mix = SDES["vp"], _gaussian()
    sol = sdekit.solve(mix.score_fn(sde), sde, "pndm", shape=(2, 4), steps=10, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(0), denoise=False)
    assert sol.nfe == resolve("pndm").nfe_for(10) == 10 + 9
