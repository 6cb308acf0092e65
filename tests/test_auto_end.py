"""grids.tune(free_end=True): the tuned grid may stop short of eps, where its denoising step then evaluates
the model (issue 12, item 4)."""

import pytest
import torch

import sdekit
from sdekit.grids import STOP_FRACTIONS, TunedGrid, tune
from sdekit.metrics import ode_map_error
from sdekit.testing import mixture_family

# held out: no default and no tuning setting was chosen on this split (2-D, 30 components)
MIX = mixture_family("heldout", 0)
FAST = {"pilot_batch": 64, "passes": 1, "refine_nfe": 1500}  # a small tuner: these tests check the mechanics


@pytest.mark.parametrize("sde", [sdekit.VESDE(), sdekit.VPSDE()], ids=["ve", "vp"])
def test_a_free_end_lowers_the_pilot_error_and_the_error_outside_the_pilot(sde):
    """Measured (unipc, 5 NFE, this small tuner; 256 samples outside the pilot):
    VE: pilot error 0.160 ending at eps, 0.063 ending at t=0.35; ODE-map error 0.408 vs 0.265.
    VP: pilot error 0.098 vs 0.064 (ending at t=0.055); ODE-map error 0.340 vs 0.281."""
    score = MIX.score_fn(sde, matmul=True)
    fixed, free = {}, {}
    g0 = tune(score, sde, "unipc", 5, shape=(1, MIX.dim), seed=1, cache=False, free_end=False, info=fixed, **FAST)
    g1 = tune(score, sde, "unipc", 5, shape=(1, MIX.dim), seed=1, cache=False, free_end=True, info=free, **FAST)
    assert float(g0[-1]) == sde.eps
    assert g1.numel() == 5 and g1.dtype == torch.float64 and float(g1[0]) == sde.T
    assert bool((torch.diff(g1) < 0).all()) and sde.eps < float(g1[-1]) < float(g1[-2])
    assert free["pilot_error"] < 0.8 * fixed["pilot_error"], (fixed, free)
    x_T = sde.prior_sample((256, MIX.dim), generator=torch.Generator().manual_seed(99), dtype=torch.float64)
    ref = MIX.ode_reference(sde, x_T)
    errs = [ode_map_error(sdekit.sample(score, sde, "unipc", x_T=x_T, schedule=g), ref, MIX.data_std())
            for g in (g0, g1)]
    assert errs[1] < 0.9 * errs[0], errs


def test_the_run_denoises_at_the_grid_end_and_keeps_the_nfe():
    sde = sdekit.VESDE()
    score = MIX.score_fn(sde, matmul=True)
    g = tune(score, sde, "unipc", 5, shape=(1, MIX.dim), seed=1, cache=False, free_end=True, **FAST)
    calls = []

    def counting(x, t):
        calls.append(float(t[0]))
        return score(x, t)

    sol = sdekit.solve(counting, sde, "unipc", x_T=torch.randn(8, MIX.dim, dtype=torch.float64), schedule=g)
    assert sol.nfe == 5 == len(calls)
    assert calls[-1] == float(g[-1]) > sde.eps  # the denoising step, at the grid's end
    # an eps= that disagrees with where the grid ends is refused, not silently overridden
    with pytest.raises(ValueError, match="ends at"):
        sdekit.sample(score, sde, "unipc", x_T=torch.randn(8, MIX.dim, dtype=torch.float64), schedule=g,
                      eps=sde.eps)


def test_stopping_short_is_the_start_grid_compressed_and_kept_only_when_it_lowers_the_pilot_error():
    """With no search after the start (passes=0, refine_nfe=0) the free-end grid is the best start grid
    compressed in log-SNR by one of STOP_FRACTIONS (measured: pilot error 0.310 ending at eps, 0.110
    stopping short), or the start grid itself where stopping short cannot help: data N(0, I) under the
    VP SDE, whose probability-flow ODE is dx/dt = 0, so the denoiser at t, alpha(t) x_T, only moves
    away from the reference alpha(eps) x_T as t grows."""
    sde = sdekit.VPSDE()
    score = MIX.score_fn(sde, matmul=True)
    opts = {"pilot_batch": 64, "passes": 0, "refine_nfe": 0, "seed": 1, "shape": (1, MIX.dim), "cache": False}
    start, free = {}, {}
    g0 = tune(score, sde, "unipc", 5, free_end=False, info=start, **opts)
    g1 = tune(score, sde, "unipc", 5, free_end=True, info=free, **opts)
    lam0, lam1 = sde.log_snr(g0), sde.log_snr(g1)
    frac = 1.0 - float(lam1[-1] - lam1[0]) / float(lam0[-1] - lam0[0])
    assert float(g1[-1]) > sde.eps and min(abs(frac - f) for f in STOP_FRACTIONS) < 1e-9, frac
    torch.testing.assert_close((lam1 - lam1[0]) / (lam1[-1] - lam1[0]), (lam0 - lam0[0]) / (lam0[-1] - lam0[0]))
    assert free["pilot_error"] < 0.5 * start["pilot_error"], (start, free)

    def gaussian(x, t):
        return -x  # data N(0, I): the VP marginals are N(0, I) at every t

    fixed, kept = {}, {}
    h0 = tune(gaussian, sde, "unipc", 5, free_end=False, info=fixed, **opts)
    h1 = tune(gaussian, sde, "unipc", 5, free_end=True, info=kept, **opts)
    assert torch.equal(h0, h1) and float(h1[-1]) == sde.eps and kept["pilot_error"] == fixed["pilot_error"]


def test_free_end_with_shift_and_the_cache_key():
    sde = sdekit.VESDE()
    score = MIX.score_fn(sde, matmul=True)
    info = {}
    g = tune(score, sde, "dpmpp_2m", 5, shape=(1, MIX.dim), seed=1, shift=True, free_end=True, info=info, **FAST)
    assert isinstance(g, TunedGrid) and float(g.times[-1]) > sde.eps
    assert bool((g.eval_times >= sde.eps).all()) and bool((g.eval_times <= sde.T).all())
    again = {}
    tune(score, sde, "dpmpp_2m", 5, shape=(1, MIX.dim), seed=1, shift=True, free_end=True, info=again, **FAST)
    assert again["cached"] and again["pilot_nfe"] == 0
    other = {}
    g2 = tune(score, sde, "dpmpp_2m", 5, shape=(1, MIX.dim), seed=1, shift=True, free_end=False, info=other, **FAST)
    assert not other["cached"] and float(g2.times[-1]) == sde.eps


def test_free_end_must_be_a_bool_and_is_checked_before_any_score_call():
    calls = []

    def score(x, t):
        calls.append(t)
        return -x

    with pytest.raises(TypeError, match="free_end must be a bool"):
        tune(score, sdekit.VPSDE(), "unipc", 5, shape=(1, 2), free_end="yes")
    assert calls == []


def test_schedule_auto_stops_short_only_with_the_denoising_step_and_no_eps():
    """schedule="auto" tunes a free end by default; an explicit eps= (where the run must end), denoise=False
    (the run returns the state at the grid's last time) or save_at= (its times may name eps) tune a grid that
    ends at eps."""
    sde = sdekit.VPSDE()
    score = MIX.score_fn(sde, matmul=True)
    x_T = sde.prior_sample((16, MIX.dim), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ends = {}
    for label, kw in (("default", {}), ("eps", {"eps": 2e-3}), ("raw", {"denoise": False}),
                      ("saved", {"save_at": [sde.T, sde.eps]})):
        grids = []

        def capture(s, grids=grids):
            grids.append(s.t)

        sdekit.solve(score, sde, "unipc", x_T=x_T, nfe=5, schedule="auto", callback=capture, **kw)
        ends[label] = grids[-1]
    assert ends["default"] > sde.eps  # measured: the tuned grid stops at t=0.03 on this mixture
    assert ends["eps"] == pytest.approx(2e-3, rel=1e-12) and ends["raw"] == pytest.approx(sde.eps, rel=1e-12)
    assert ends["saved"] == pytest.approx(sde.eps, rel=1e-12)  # (before: refused after the pilot, eps off the grid)


def test_the_default_free_end_is_for_ode_solvers_only():
    """free_end=None: True for ODE solvers (measured on the tuning split), False for stochastic ones (not measured)."""
    from sdekit.grids import default_free_end
    from sdekit.solvers import resolve

    assert default_free_end(resolve("unipc")) and default_free_end(resolve("dpmpp_3m"))
    assert not default_free_end(resolve("dpmpp_2m_sde")) and not default_free_end(resolve("euler_maruyama"))
