"""Exponential integrators (DDIM, DPM-Solver++, UniPC) and EDM: measured orders, weak error, NFE, robustness."""

from __future__ import annotations

import pytest
import torch

import sdekit
from sdekit.integrate import integrate
from sdekit.metrics import frechet_to_moments
from sdekit.noise import GaussianNoise
from sdekit.process import ReverseProcess
from sdekit.solvers import resolve
from sdekit.testing import GaussianMixture, convergence_slope

SDES = {"vp": sdekit.VPSDE(), "ve": sdekit.VESDE(), "subvp": sdekit.SubVPSDE(), "cosine": sdekit.CosineSDE()}


def _gaussian(dim: int = 4) -> GaussianMixture:
    g = torch.Generator().manual_seed(0)
    return GaussianMixture(torch.ones(1), torch.randn(1, dim, generator=g, dtype=torch.float64),
                           0.2 + torch.rand(1, dim, generator=g, dtype=torch.float64))


def _slope(steps: list[int], errs: list[float]) -> float:
    """Least-squares slope of -log(err) against log(steps)."""
    return convergence_slope(steps, errs)


# (solver, options, claimed order); the run stops at eps=0.4, where the data prediction still
# varies (down to eps ~ 0 the leading error term of the 3rd-order methods integrates to ~0 on a
# single Gaussian and the measured slope is ~4).
ORDER_CASES = [
    ("ddim", {}, 1), ("dpmpp_2m", {}, 2), ("dpmpp_3m", {}, 3), ("dpmpp_2s", {}, 2),
    ("unipc", {"variant": "bh1", "predictor_order": 2}, 3), ("unipc", {"variant": "bh2", "predictor_order": 2}, 3),
    ("unipc", {"variant": "bh2", "corrector": False, "predictor_order": 2}, 2), ("edm_heun", {}, 2),
    # the default predictor_order=3 with its corrector: order 4, reached from ~128 steps (on VP the local slope is
    # 3.30, 3.69, 3.86, 3.93 from 32 to 512 steps), so measured on 128-512 steps
    ("unipc", {}, 4), ("unipc", {"variant": "bh1"}, 4),
]


def _order_steps(order: int) -> list[int]:
    return [128, 256, 512] if order >= 4 else [32, 64, 128]


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize("solver,options,order", ORDER_CASES,
                         ids=[f"{s}-{'-'.join(map(str, o.values())) or 'default'}" for s, o, _ in ORDER_CASES])
def test_order_on_exact_gaussian_pf_ode(sde_name, solver, options, order):
    sde, mix, eps = SDES[sde_name], _gaussian(), 0.4
    x_T = sde.prior_sample((32, 4), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = mix.pf_ode_flow(x_T, sde.T, eps, sde)
    steps = _order_steps(order)
    errs = []
    for n in steps:
        x = sdekit.sample(mix.score_fn(sde), sde, solver, x_T=x_T, steps=n, eps=eps, denoise=False, **options)
        errs.append(float((x - exact).norm() / exact.norm()))
    assert abs(_slope(steps, errs) - order) < 0.3, (errs, _slope(steps, errs))
    assert resolve(solver, **options).order == order


@pytest.mark.parametrize("sde_name", ["subvp", "cosine"])
@pytest.mark.parametrize("solver,options,order", [("ddim", {}, 1), ("dpmpp_2m", {}, 2), ("dpmpp_3m", {}, 3),
                                                  ("unipc", {"predictor_order": 2}, 3), ("unipc", {}, 4)])
def test_order_on_subvp_and_cosine(sde_name, solver, options, order):
    sde, mix, eps = SDES[sde_name], _gaussian(), 0.4
    x_T = sde.prior_sample((32, 4), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    exact = mix.pf_ode_flow(x_T, sde.T, eps, sde)
    steps = _order_steps(order)
    errs = [float((sdekit.sample(mix.score_fn(sde), sde, solver, x_T=x_T, steps=n, eps=eps, denoise=False,
                                 **options) - exact).norm() / exact.norm()) for n in steps]
    assert abs(_slope(steps, errs) - order) < 0.3, errs
    assert resolve(solver, **options).order == order


@pytest.mark.parametrize("solver", ["ddim", "dpmpp_2s", "dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "dpmpp_3m_sde",
                                    "unipc", "edm_heun"])
@pytest.mark.parametrize("steps", [1, 2, 7, 12])
def test_nfe_is_exact(solver, steps):
    sde, mix = SDES["vp"], _gaussian()
    s = resolve(solver)
    for denoise in (True, False):
        sol = sdekit.solve(mix.score_fn(sde), sde, solver, shape=(8, 4), steps=steps, denoise=denoise,
                           generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        assert sol.nfe == s.nfe_for(steps) + (1 if denoise else 0)
    budget = s.nfe_for(steps) + 1
    assert sdekit.solve(mix.score_fn(sde), sde, solver, shape=(8, 4), nfe=budget, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(0)).nfe == budget


@pytest.mark.parametrize("solver,options", [("ddim", {}), ("ddim", {"eta": 0.5}), ("dpmpp_2s", {}),
                                            ("dpmpp_3m", {}), ("dpmpp_3m_sde", {}), ("unipc", {}),
                                            ("edm_heun", {}), ("edm_heun", {"s_churn": 5.0})])
def test_per_sample_times(solver, options):
    """A batch whose halves follow different grids equals the two halves run on their own grids."""
    sde, mix = SDES["vp"], _gaussian()
    grids = [sdekit.grids.logsnr(sde, 6), sdekit.grids.uniform(sde, 6)]
    x_T = sde.prior_sample((8, 4), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    z = torch.randn(6, 8, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    class Fixed(GaussianNoise):  # the same normals for every sample, whatever the batch split
        def __init__(self, rows):
            super().__init__()
            self.rows, self.i = rows, 0

        def increment(self, t0, t1, like):
            out = z[self.i, self.rows] * torch.sqrt((t0 - t1).abs())[:, None]
            self.i += 1
            return out

    def run(t_rows, rows):
        s = resolve(solver, **options)
        proc = ReverseProcess(sde, mix.score_fn(sde), lam=s.lam)
        x, state, noise = x_T[rows].clone(), None, Fixed(rows)
        state = s.init(proc, x, t_rows[:, 0])
        state["grid"] = grids[0]  # the step count (churn, lower-order final) is the same for both
        for i in range(6):
            t0, t1 = t_rows[:, i], t_rows[:, i + 1]
            x, state, _ = s.step(proc, t0, t1, x, state, sdekit.noise.StepNoise(noise, t0, t1, x))
        return x

    half = torch.arange(8) < 4
    t_rows = torch.where(half[:, None], grids[0][None], grids[1][None])
    mixed = run(t_rows, torch.arange(8))
    split = torch.cat([run(t_rows[:4], torch.arange(4)), run(t_rows[4:], torch.arange(4, 8))])
    assert torch.allclose(mixed, split, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(split[:4], run(t_rows[4:], torch.arange(4)), atol=1e-6)


def test_ddim_eta_one_is_the_ancestral_step():
    sde, mix = SDES["vp"], _gaussian()
    kw = dict(shape=(16, 4), steps=10, schedule="logsnr", dtype=torch.float64, denoise=False)
    a = sdekit.sample(mix.score_fn(sde), sde, "ddim", eta=1.0, generator=torch.Generator().manual_seed(5), **kw)
    b = sdekit.sample(mix.score_fn(sde), sde, "ancestral", generator=torch.Generator().manual_seed(5), **kw)
    assert torch.allclose(a, b, rtol=1e-9, atol=1e-9)


def test_lower_order_final_only_on_short_grids():
    sde, mix = SDES["ve"], _gaussian()
    x_T = sde.prior_sample((16, 4), generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    for solver in ("dpmpp_3m", "unipc"):
        on, off = (sdekit.sample(mix.score_fn(sde), sde, solver, x_T=x_T, steps=10, lower_order_final=f)
                   for f in (True, False))
        assert not torch.allclose(on, off)
        on, off = (sdekit.sample(mix.score_fn(sde), sde, solver, x_T=x_T, steps=20, lower_order_final=f)
                   for f in (True, False))
        assert torch.equal(on, off)


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize("solver", ["dpmpp_2m", "dpmpp_3m", "unipc", "dpmpp_3m_sde"])
def test_finite_and_accurate_at_1000_steps_float32(sde_name, solver):
    sde, mix = SDES[sde_name], _gaussian()
    x_T = sde.prior_sample((64, 4), generator=torch.Generator().manual_seed(7))
    x = sdekit.sample(mix.score_fn(sde), sde, solver, x_T=x_T, steps=1000, denoise=False,
                      generator=torch.Generator().manual_seed(8))
    assert torch.isfinite(x).all()
    if solver != "dpmpp_3m_sde":
        exact = mix.pf_ode_flow(x_T.double(), sde.T, sde.eps, sde)
        assert float((x.double() - exact).norm() / exact.norm()) < 1e-4


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize("solver,options,steps", [
    ("dpmpp_2m_sde", {}, (4, 64)), ("dpmpp_3m_sde", {}, (4, 64)), ("dpmpp_2m_sde", {"eta": 0.5}, (4, 64)),
    ("edm_heun", {"s_churn": 10.0}, (4, 64)), ("ddim", {"eta": 1.0}, (16, 1024))])
def test_sde_variants_weak_error_reaches_the_floor(sde_name, solver, options, steps):
    """FD to the exact mixture falls from far above to the finite-sample floor (exact samples' FD)."""
    sde = SDES[sde_name]
    mix = GaussianMixture.random(4, components=3, generator=torch.Generator().manual_seed(9))
    mean, cov, n = mix.mean(), mix.cov(), 20_000
    floor = sum(frechet_to_moments(mix.sample(n, generator=torch.Generator().manual_seed(s)), mean, cov)
                for s in range(4)) / 4
    fds = []
    for k in steps:
        x = sdekit.sample(mix.score_fn(sde), sde, solver, shape=(n, 4), steps=k, denoise=False,
                          schedule="logsnr", generator=torch.Generator().manual_seed(10), **options)
        fds.append(frechet_to_moments(x, mean, cov))
    assert fds[0] > 10 * floor, (fds, floor)
    assert fds[1] < 2.5 * floor, (fds, floor)


def test_solvers_draw_no_randomness_of_their_own():
    sde, mix = SDES["vp"], _gaussian()
    x_T = sde.prior_sample((8, 4), generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    for solver in ("dpmpp_2m_sde", "edm_heun"):
        opts = {"s_churn": 5.0} if solver == "edm_heun" else {}
        a, b = (sdekit.sample(mix.score_fn(sde), sde, solver, x_T=x_T, steps=8, generator=torch.Generator()
                              .manual_seed(12), **opts) for _ in range(2))
        torch.manual_seed(0)
        c = sdekit.sample(mix.score_fn(sde), sde, solver, x_T=x_T, steps=8, generator=torch.Generator()
                          .manual_seed(12), **opts)
        assert torch.equal(a, b) and torch.equal(a, c)


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match="eta"):
        resolve("ddim", eta=1.5)
    with pytest.raises(ValueError, match="eta"):
        resolve("dpmpp_2m_sde", eta=-0.1)
    with pytest.raises(TypeError, match="lower_order_final"):
        resolve("dpmpp_3m", lower_order_final=1)
    with pytest.raises(ValueError, match="variant"):
        resolve("unipc", variant="bh3")
    with pytest.raises(ValueError, match="predictor_order"):
        resolve("unipc", predictor_order=4)
    with pytest.raises(ValueError, match="s_churn"):
        resolve("edm_heun", s_churn=-1.0)
    with pytest.raises(ValueError, match="r "):
        resolve("dpmpp_2s", r=1.5)
    sde, mix = SDES["vp"], _gaussian()
    s = resolve("edm_heun", s_churn=1.0)
    proc = ReverseProcess(sde, mix.score_fn(sde), lam=0.0)
    x, t0, t1 = torch.zeros(2, 4), torch.full((2,), 0.5), torch.full((2,), 0.4)
    with pytest.raises(ValueError, match="grid"):
        s.step(proc, t0, t1, x, s.init(proc, x, t0), sdekit.noise.StepNoise(GaussianNoise(), t0, t1, x))
    _ = integrate  # the driver is what provides the grid


@pytest.mark.parametrize("sde_name", ["vp", "ve", "cosine"])
def test_snr_power_grid_spans_logsnr_and_karras(sde_name):
    sde = SDES[sde_name]
    assert torch.allclose(sdekit.grids.snr_power(sde, 12, p=1e-9), sdekit.grids.logsnr(sde, 12), atol=1e-6)
    assert torch.allclose(sdekit.grids.snr_power(sde, 12, p=-1 / 7), sdekit.grids.karras(sde, 12), atol=1e-9)
    lam = sde.log_snr(sdekit.grids.snr_power(sde, 12, p=0.15))
    assert torch.allclose(torch.diff(torch.exp(0.15 * lam)), torch.diff(torch.exp(0.15 * lam))[:1], rtol=1e-6)
