"""The public API: sample/solve contract, NFE budgets, bad input, reproducibility, adapters, oracles, metrics."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sdekit
from sdekit.metrics import frechet_distance, frechet_to_moments, sliced_wasserstein
from sdekit.score import from_denoiser, from_eps, from_v, from_x0
from sdekit.testing import GaussianMixture

SDE = sdekit.VPSDE()
MIX = GaussianMixture.random(3, 3, generator=torch.Generator().manual_seed(0))
SCORE = MIX.score_fn(SDE)
CORE_SOLVERS = ["euler_maruyama", "reverse_diffusion", "ancestral", "pc", "ode_euler", "ode_heun", "ode_rk4"]


def counting(fn):
    def wrapped(x, t):
        wrapped.calls += 1
        return fn(x, t)

    wrapped.calls = 0
    return wrapped


# ---------------------------------------------------------------- bad input, raised before any work
BAD = [
    ("unknown solver", dict(solver="heunn"), ValueError, r"unknown solver 'heunn'; valid solvers: .*ode_heun"),
    ("steps < 1", dict(steps=0), ValueError, "steps must be >= 1"),
    ("steps not int", dict(steps=2.5), TypeError, "steps must be an int"),
    ("eps >= T", dict(eps=1.5), ValueError, "eps must be < sde.T"),
    ("eps <= 0", dict(eps=-0.1), ValueError, "eps must be > 0"),
    ("nfe and steps", dict(steps=3, nfe=10), ValueError, "steps= or nfe="),
    ("nfe too small", dict(solver="ode_rk4", steps=None, nfe=4), ValueError, "nfe=4 is too small"),
    ("no shape", dict(shape=None), ValueError, "shape="),
    ("bad shape", dict(shape=(0, 3)), ValueError, "shape must be"),
    ("shape vs x_T", dict(shape=(4, 3), x_T=torch.zeros(5, 3)), ValueError, "does not match x_T.shape"),
    ("dtype vs x_T", dict(shape=None, x_T=torch.zeros(5, 3), dtype=torch.float64), ValueError, "dtype="),
    ("device vs x_T", dict(shape=None, x_T=torch.zeros(5, 3), device="meta"), ValueError, "device="),
    ("x_T not finite", dict(shape=None, x_T=torch.full((2, 3), float("nan"))), ValueError, "x_T contains NaN"),
    ("x_T int", dict(shape=None, x_T=torch.zeros(2, 3, dtype=torch.long)), TypeError, "x_T must have a floating"),
    ("int dtype", dict(dtype=torch.int32), TypeError, "dtype must be a floating"),
    ("generator type", dict(generator=0), TypeError, "generator must be a torch.Generator"),
    ("unknown schedule", dict(schedule="cosine"), ValueError, "unknown schedule 'cosine'; valid schedules"),
    ("increasing grid", dict(schedule=torch.tensor([0.1, 0.5, 1.0])), ValueError, "strictly decreasing"),
    ("bad option", dict(solver="euler_maruyama", snr=0.1), TypeError, "unexpected option.*'snr'.*valid options: lam"),
    ("bad corrector", dict(solver="pc", corrector="mcmc"), ValueError, "unknown corrector 'mcmc'"),
    ("bad snr", dict(solver="pc", snr=-1.0), ValueError, "snr must be > 0"),
    ("bad lam", dict(solver="euler_maruyama", lam=2.0), ValueError, "lam must be"),
    ("denoise type", dict(denoise="yes"), TypeError, "denoise must be a bool"),
    ("callback type", dict(callback=3), TypeError, "callback must be callable"),
    ("sde type", dict(sde="vp"), TypeError, "sde must be an sdekit.SDE"),
]


@pytest.mark.parametrize("case, kwargs, exc, msg", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_clear_error_before_any_work(case, kwargs, exc, msg):
    score = counting(SCORE)
    args = dict(sde=SDE, solver="euler_maruyama", shape=(4, 3), steps=3)
    args.update(kwargs)
    sde, solver = args.pop("sde"), args.pop("solver")
    with pytest.raises(exc, match=msg):
        sdekit.sample(score, sde, solver, **args)
    assert score.calls == 0


def test_score_with_wrong_shape_is_named():
    with pytest.raises(sdekit.ScoreError, match=r"score_fn returned shape \(4,\), expected the shape of x \(4, 3\)"):
        sdekit.sample(lambda x, t: x.sum(1), SDE, "ode_euler", shape=(4, 3), steps=2)
    with pytest.raises(sdekit.ScoreError, match="dtype"):
        sdekit.sample(lambda x, t: x.double(), SDE, "ode_euler", shape=(4, 3), steps=2)
    with pytest.raises(sdekit.ScoreError, match="must return a tensor"):
        sdekit.sample(lambda x, t: 1.0, SDE, "ode_euler", shape=(4, 3), steps=2)


def test_nan_from_score_names_step_and_time():
    def score(x, t):
        s = SCORE(x, t)
        return s * float("nan") if float(t[0]) < 0.5 else s

    with pytest.raises(sdekit.NonFiniteError, match=r"after step 7 at t=0\.3007") as info:
        sdekit.sample(score, SDE, "euler_maruyama", shape=(4, 3), steps=10, eps=0.001)
    assert info.value.step == 7 and abs(info.value.t - 0.3007) < 1e-3  # the score at t0=0.4006 is NaN
    assert info.value.x_last.shape == (4, 3) and bool(torch.isfinite(info.value.x_last).all())


# ---------------------------------------------------------------- NFE accounting
@pytest.mark.parametrize("solver", CORE_SOLVERS)
@pytest.mark.parametrize("budget", [7, 20, 101])
def test_nfe_budget_is_respected_and_counted_honestly(solver, budget):
    score = counting(SCORE)
    sol = sdekit.solve(score, SDE, solver, shape=(8, 3), nfe=budget, generator=torch.Generator().manual_seed(0))
    assert sol.nfe == score.calls <= budget
    s = sdekit.solvers.resolve(solver)
    assert sol.nfe == s.nfe_for(sol.steps) + 1  # + the denoising step
    assert s.nfe_for(sol.steps + 1) + 1 > budget  # the largest number of steps that fits


def test_pc_nfe_counts_corrector_steps():
    sol = sdekit.solve(SCORE, SDE, "pc", shape=(8, 3), steps=5, corrector_steps=3, denoise=False)
    assert sol.nfe == 5 * 4


# ---------------------------------------------------------------- shapes, dtypes, devices, seeds
@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), dtype=st.sampled_from([torch.float32, torch.float64]),
       solver=st.sampled_from(CORE_SOLVERS), seed=st.integers(0, 2 ** 31 - 1),
       sde=st.sampled_from([sdekit.VPSDE(), sdekit.VESDE(), sdekit.SubVPSDE(), sdekit.CosineSDE()]))
def test_output_follows_input_and_seed_reproduces(shape, dtype, solver, seed, sde):
    def score(x, t):  # a standard-normal-data score, valid for any shape
        a, s = sde.alpha(t), sde.sigma(t)
        return -x / (a * a + s * s).view(-1, *([1] * (x.ndim - 1)))

    kw = dict(shape=tuple(shape), steps=3, dtype=dtype)
    x1 = sdekit.sample(score, sde, solver, generator=torch.Generator().manual_seed(seed), **kw)
    x2 = sdekit.sample(score, sde, solver, generator=torch.Generator().manual_seed(seed), **kw)
    assert x1.shape == tuple(shape) and x1.dtype == dtype and x1.device.type == "cpu"
    assert torch.equal(x1, x2)
    x_T = sde.prior_sample(tuple(shape), generator=torch.Generator().manual_seed(seed), dtype=dtype)
    x_T_copy = x_T.clone()
    x3 = sdekit.sample(score, sde, solver, x_T=x_T, steps=3, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(x_T, x_T_copy), "x_T must not be modified"
    assert x3.dtype == dtype and x3.shape == x_T.shape


def test_different_seeds_differ_for_stochastic_solvers():
    a = sdekit.sample(SCORE, SDE, "euler_maruyama", shape=(4, 3), steps=5, generator=torch.Generator().manual_seed(1))
    b = sdekit.sample(SCORE, SDE, "euler_maruyama", shape=(4, 3), steps=5, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(a, b)


def test_callback_save_at_and_progress(capsys):
    seen = []
    sol = sdekit.solve(SCORE, SDE, "ode_heun", shape=(4, 3), steps=4, save_at="grid", progress=True,
                       callback=lambda info: seen.append((info.step, info.t, info.x)), denoise=False)
    assert [s for s, _, _ in seen] == [1, 2, 3, 4]
    assert sol.xs.shape == (5, 4, 3) and torch.equal(sol.xs[-1], sol.x)
    assert torch.allclose(sol.ts, sdekit.grids.uniform(SDE, 4))
    assert torch.equal(seen[-1][2], sol.x) and not torch.equal(seen[0][2], seen[-1][2])  # copies, not aliases
    sol2 = sdekit.solve(SCORE, SDE, "ode_euler", shape=(4, 3), steps=10, save_at=[1.0, 0.5])
    assert sol2.xs.shape == (2, 4, 3) and abs(float(sol2.ts[1]) - 0.5) < 0.06


def test_solver_argument_takes_name_class_or_instance():
    cls = sdekit.solvers.base._REGISTRY["ode_heun"]
    kw = dict(shape=(4, 3), steps=3, generator=torch.Generator().manual_seed(0))
    a = sdekit.sample(SCORE, SDE, "ode_heun", **kw)
    kw["generator"] = torch.Generator().manual_seed(0)
    b = sdekit.sample(SCORE, SDE, cls, **kw)
    kw["generator"] = torch.Generator().manual_seed(0)
    c = sdekit.sample(SCORE, SDE, cls(), **kw)
    assert torch.equal(a, b) and torch.equal(a, c)
    info = {i.name: i for i in sdekit.solvers.available()}
    assert info["ode_rk4"].order == 4 and info["ode_rk4"].nfe_per_step == 4 and not info["ode_rk4"].stochastic
    assert info["langevin"].kind == "corrector"


# ---------------------------------------------------------------- grids
@pytest.mark.parametrize("name", ["uniform", "quadratic", "logsnr", "karras"])
@pytest.mark.parametrize("sde", [sdekit.VPSDE(), sdekit.VESDE(), sdekit.CosineSDE()], ids=["vp", "ve", "cos"])
def test_grids_are_decreasing_from_T_to_eps(name, sde):
    g = sdekit.grids.get_grid(name, sde, 17)
    assert g.shape == (18,) and float(g[0]) == sde.T and float(g[-1]) == sde.eps
    assert bool((torch.diff(g) < 0).all())
    if name == "logsnr":
        lam = sde.log_snr(g)
        torch.testing.assert_close(torch.diff(lam), torch.full((17,), float(lam[1] - lam[0]), dtype=torch.float64))


# ---------------------------------------------------------------- oracle and adapters
@pytest.mark.parametrize("sde", [sdekit.VPSDE(), sdekit.VESDE(), sdekit.SubVPSDE(), sdekit.CosineSDE()])
def test_oracle_score_is_autograd_of_log_density(sde):
    mix = GaussianMixture.random(4, 3, generator=torch.Generator().manual_seed(2))
    x = torch.randn(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2
    t = torch.linspace(0.01, 0.9, 16, dtype=torch.float64)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mix.log_prob(xg, t, sde).sum(), xg)
    torch.testing.assert_close(mix.score(x, t, sde), grad)


def _brute_force_score(mix, x, t, sde):
    """grad log p_t written out per sample and per component (the definition, no shortcuts)."""
    out = torch.zeros_like(x)
    for i in range(x.shape[0]):
        a, s = float(sde.alpha(t[i:i + 1])), float(sde.sigma(t[i:i + 1]))
        var = a * a * mix.stds ** 2 + s * s                              # (K, d)
        r = x[i] - a * mix.means
        logn = torch.log(mix.weights) - 0.5 * (r * r / var + torch.log(2 * torch.pi * var)).sum(1)
        out[i] = -(torch.softmax(logn, 0)[:, None] * r / var).sum(0)
    return out


@pytest.mark.parametrize("shared", [True, False], ids=["shared-t", "per-sample-t"])
@pytest.mark.parametrize("sde", [sdekit.VPSDE(), sdekit.VESDE()], ids=["vp", "ve"])
def test_oracle_score_both_paths_match_the_definition(sde, shared):
    """Both paths (per-component rows, matrix products for one shared time) agree with the formula."""
    mix = GaussianMixture.random(7, 5, generator=torch.Generator().manual_seed(8))
    x = torch.randn(24, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(9)) * 2.5
    for t0 in (sde.eps, 0.03, 0.4, sde.T):
        t = torch.full((24,), t0, dtype=torch.float64) if shared else torch.linspace(t0, 1.0, 24, dtype=torch.float64)
        ref = _brute_force_score(mix, x, t, sde)
        for mm in (False, True):
            torch.testing.assert_close(mix.score(x, t, sde, matmul=mm), ref, rtol=1e-9,
                                       atol=1e-9 * float(ref.abs().max()))
            lp = torch.stack([mix.log_prob(x[i:i + 1], t[i:i + 1], sde)[0] for i in range(24)])
            torch.testing.assert_close(mix.log_prob(x, t, sde, matmul=mm), lp, rtol=1e-10, atol=1e-10)
        # the default path is batch-invariant bit for bit
        assert torch.equal(mix.score(x, t, sde)[5:], mix.score(x[5:], t[5:], sde))


def test_oracle_log_prob_and_moments_are_exact():
    mix = GaussianMixture.random(2, 3, generator=torch.Generator().manual_seed(4))
    x = mix.sample(200000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(x.mean(0), mix.mean(), atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), mix.cov(), atol=0.03, rtol=0)
    # log_prob integrates to one on a grid
    g = torch.linspace(-6, 6, 401, dtype=torch.float64)
    pts = torch.cartesian_prod(g, g)
    total = mix.log_prob(pts).exp().sum() * (g[1] - g[0]) ** 2
    assert abs(float(total) - 1) < 1e-3


@pytest.mark.parametrize("sde", [sdekit.VPSDE(), sdekit.VESDE(), sdekit.CosineSDE()], ids=["vp", "ve", "cos"])
def test_adapters_reproduce_the_exact_score(sde):
    mix = MIX
    x = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.linspace(0.05, 0.95, 8, dtype=torch.float64)
    s = mix.score(x, t, sde)
    a, sg = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    eps = -sg * s
    x0 = (x + sg * sg * s) / a
    v = a * eps - sg * x0
    labels = {"continuous": t, "discrete": t * 999, "sigma": sg[:, 0] / a[:, 0]}
    for time, lab in labels.items():
        def check(model_out, adapter, time=time, lab=lab, **kw):
            def model(xx, label):
                torch.testing.assert_close(label, lab)
                return model_out
            torch.testing.assert_close(adapter(model, sde, time=time, **kw)(x, t), s)
        check(eps, from_eps)
        check(x0, from_x0)
        check(v, from_v)
    den = from_denoiser(lambda xs, sig: x0 if torch.allclose(xs, x / a) else None, sde)
    torch.testing.assert_close(den(x, t), s)
    with pytest.raises(ValueError, match="time must be"):
        from_eps(lambda x, t: x, sde, time="days")


# ---------------------------------------------------------------- metrics
@pytest.mark.parametrize("n", [5, 30, 31, 80])
def test_frechet_fewer_samples_than_dims_matches_the_square_root_formula(n):
    """The n x n Gram path (n <= d) equals the d x d formula with scipy's matrix square root."""
    from scipy.linalg import sqrtm

    d = 30
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    mean, cov = torch.randn(d, generator=g, dtype=torch.float64), a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)
    m1, c1 = x.mean(0), torch.cov(x.T)
    s2 = sqrtm(cov.numpy()).real
    cross = np.trace(sqrtm(s2 @ c1.numpy() @ s2).real)
    ref = float(((m1 - mean) ** 2).sum() + torch.trace(c1) + torch.trace(cov)) - 2 * cross
    assert abs(frechet_to_moments(x, mean, cov) - ref) < 1e-8 * max(1.0, abs(ref))


def test_frechet_distance_closed_form_and_sampling_behaviour():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, 3, generator=g, dtype=torch.float64)
    mean = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    cov = torch.diag(torch.tensor([4.0, 1.0, 1.0], dtype=torch.float64))
    # FD(N(0,I), N(m, diag(4,1,1))) = |m|^2 + (1 + 4 - 2*2) = 2
    assert abs(frechet_to_moments(x, mean, cov) - 2.0) < 0.05
    assert frechet_to_moments(x, torch.zeros(3), torch.eye(3)) < 0.01
    y = torch.randn(20000, 3, generator=g, dtype=torch.float64) * 2
    assert abs(frechet_distance(x, y) - 3 * (1 + 4 - 4)) < 0.1
    sw1 = sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(1))
    sw2 = sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(1))
    assert sw1 == sw2 and abs(sw1 - math.sqrt(1.0)) < 0.05  # each 1-D projection: W2(N(0,1), N(0,4)) = 1
    with pytest.raises(ValueError, match="same number"):
        sliced_wasserstein(x, y[:10])
