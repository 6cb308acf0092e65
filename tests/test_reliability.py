"""Reliability suite: bad input everywhere, numerical faults, fuzzing, memory, half precision.

1. ``BAD_INPUT``: a table of bad calls into the public API. Each must raise the listed
   exception type with a message naming the argument, before any work (a counting
   ``score_fn`` is called zero times).
2. Numerical faults during a run: NaN/Inf from the score, a raising score, a score that
   turns malformed mid-run, adaptive solvers' step limits. Each stops with a specific
   exception and nothing hangs (every test here runs under a wall-clock alarm).
3. hypothesis fuzzing of ``sample``/``solve`` over every registered non-corrector solver,
   four SDEs, shapes of any rank, float32/float64 and step counts.
4. Memory does not grow with the number of steps; no autograd graph is kept.
5. float16/bfloat16 states are refused with a clear error (decision: a step's update of
   relative size ~1/steps is rounded away in an 8- or 11-bit mantissa; keep the state in
   float32 and cast inside ``score_fn``).
"""

from __future__ import annotations

import gc
import math
import signal
import tracemalloc
import weakref

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sdekit
from sdekit import grids, metrics, score, solvers
from sdekit.integrate import NonFiniteError, SamplingError
from sdekit.process import ScoreError
from sdekit.testing import GaussianMixture

VP = sdekit.VPSDE()
SOLVER_INFO = [i for i in solvers.available() if i.kind != "corrector"]
SOLVERS = [i.name for i in SOLVER_INFO]
FIXED = [i.name for i in SOLVER_INFO if not i.adaptive]
ADAPTIVE = [i.name for i in SOLVER_INFO if i.adaptive]
SDES = {"vp": lambda: sdekit.VPSDE(), "subvp": lambda: sdekit.SubVPSDE(), "ve": lambda: sdekit.VESDE(),
        "cosine": lambda: sdekit.CosineSDE()}


@pytest.fixture(autouse=True)
def deadline():
    """Fail instead of hanging: every test in this file must finish within 60 s of wall-clock time."""
    def _timeout(signum, frame):
        raise TimeoutError("test exceeded 60 s: something hangs")

    old = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def normal_score(sde):
    """Exact score of N(0, I) data under ``sde``: ``-x / (alpha^2 + sigma^2)``, any shape."""
    def score_fn(x, t):
        a, s = sde.alpha(t), sde.sigma(t)
        v = (a * a + s * s).to(x.dtype)
        return -x / v.view(-1, *([1] * (x.ndim - 1)))
    return score_fn


class Counting:
    """A score function that counts its calls."""

    def __init__(self, fn=None):
        self.fn, self.calls = fn or normal_score(VP), 0

    def __call__(self, x, t):
        self.calls += 1
        return self.fn(x, t)


# -- 1. bad input -------------------------------------------------------------------------

def S(**kw):
    """sdekit.sample with a small valid call, overridden by ``kw`` (``sf`` is the score function)."""
    base = dict(solver="ode_euler", shape=(2, 3), steps=2)
    base.update(kw)
    sf, sde, solver = base.pop("sf"), base.pop("sde", VP), base.pop("solver")
    return sdekit.sample(sf, sde, solver, **base)


def SOLVE(**kw):
    base = dict(solver="ode_euler", shape=(2, 3), steps=2)
    base.update(kw)
    sf, sde, solver = base.pop("sf"), base.pop("sde", VP), base.pop("solver")
    return sdekit.solve(sf, sde, solver, **base)


x23 = torch.randn(2, 3)
nan23 = torch.full((2, 3), float("nan"))
gmm = GaussianMixture.random(dim=2)
ident = lambda x, t: x  # noqa: E731  (a model for the score adapters)

# (id, call(sf), exception type, regex the message must match: the argument's name)
BAD_INPUT = [
    # sample / solve: the callables and the solver
    ("score_fn-not-callable", lambda sf: S(sf=3), TypeError, "score_fn"),
    ("sde-wrong-type", lambda sf: S(sf=sf, sde="vp"), TypeError, "sde"),
    ("solver-unknown", lambda sf: S(sf=sf, solver="nope"), ValueError, "solver"),
    ("solver-wrong-type", lambda sf: S(sf=sf, solver=3), TypeError, "solver"),
    ("solver-is-a-corrector", lambda sf: S(sf=sf, solver="langevin"), ValueError, "solver"),
    ("solver-option-unknown", lambda sf: S(sf=sf, foo=1), TypeError, "foo"),
    ("solver-option-on-instance", lambda sf: S(sf=sf, solver=solvers.resolve("pc"), snr=0.1), TypeError, "options"),
    ("pc-snr-negative", lambda sf: S(sf=sf, solver="pc", snr=-1.0), ValueError, "snr"),
    ("pc-corrector_steps-negative", lambda sf: S(sf=sf, solver="pc", corrector_steps=-1), ValueError,
     "corrector_steps"),
    ("pc-predictor-unknown", lambda sf: S(sf=sf, solver="pc", predictor="nope"), ValueError, "predictor"),
    ("pc-predictor-is-pc", lambda sf: S(sf=sf, solver="pc", predictor="pc"), ValueError, "predictor"),
    ("pc-corrector-unknown", lambda sf: S(sf=sf, solver="pc", corrector="nope"), ValueError, "corrector"),
    ("em-lam-out-of-range", lambda sf: S(sf=sf, solver="euler_maruyama", lam=2.0), ValueError, "lam"),
    # shape / x_T
    ("shape-zero", lambda sf: S(sf=sf, shape=(0, 3)), ValueError, "shape"),
    ("shape-float", lambda sf: S(sf=sf, shape=(2, 3.0)), ValueError, "shape"),
    ("shape-str", lambda sf: S(sf=sf, shape="ab"), ValueError, "shape"),
    ("shape-empty", lambda sf: S(sf=sf, shape=()), ValueError, "shape"),
    ("shape-and-x_T-missing", lambda sf: S(sf=sf, shape=None), ValueError, "shape"),
    ("shape-mismatch-x_T", lambda sf: S(sf=sf, shape=(2, 4), x_T=x23), ValueError, "shape"),
    ("x_T-not-tensor", lambda sf: S(sf=sf, shape=None, x_T=[[1.0]]), TypeError, "x_T"),
    ("x_T-int", lambda sf: S(sf=sf, shape=None, x_T=torch.ones(2, 3, dtype=torch.long)), TypeError, "x_T"),
    ("x_T-complex", lambda sf: S(sf=sf, shape=None, x_T=torch.ones(2, 3, dtype=torch.complex64)), TypeError, "x_T"),
    ("x_T-0d", lambda sf: S(sf=sf, shape=None, x_T=torch.tensor(1.0)), ValueError, "x_T"),
    ("x_T-nan", lambda sf: S(sf=sf, shape=None, x_T=nan23), ValueError, "x_T"),
    ("x_T-inf", lambda sf: S(sf=sf, shape=None, x_T=torch.full((2, 3), float("inf"))), ValueError, "x_T"),
    ("x_T-requires-grad", lambda sf: S(sf=sf, shape=None, x_T=x23.clone().requires_grad_()), ValueError, "x_T"),
    ("x_T-float16", lambda sf: S(sf=sf, shape=None, x_T=x23.half()), TypeError, "x_T"),
    ("x_T-bfloat16", lambda sf: S(sf=sf, shape=None, x_T=x23.bfloat16()), TypeError, "x_T"),
    # dtype / device / generator
    ("dtype-float16", lambda sf: S(sf=sf, dtype=torch.float16), TypeError, "dtype"),
    ("dtype-bfloat16", lambda sf: S(sf=sf, dtype=torch.bfloat16), TypeError, "dtype"),
    ("dtype-str", lambda sf: S(sf=sf, dtype="float32"), TypeError, "dtype"),
    ("dtype-int", lambda sf: S(sf=sf, dtype=torch.int64), TypeError, "dtype"),
    ("dtype-mismatch-x_T", lambda sf: S(sf=sf, shape=None, x_T=x23, dtype=torch.float64), ValueError, "dtype"),
    ("device-invalid", lambda sf: S(sf=sf, device="nope"), ValueError, "device"),
    ("device-wrong-type", lambda sf: S(sf=sf, device=3.5), TypeError, "device"),
    ("device-mismatch-x_T", lambda sf: S(sf=sf, shape=None, x_T=x23, device="meta"), ValueError, "device"),
    ("generator-wrong-type", lambda sf: S(sf=sf, generator=3), TypeError, "generator"),
    ("generator-device-mismatch", lambda sf: S(sf=sf, generator=torch.Generator(), device="meta"), ValueError,
     "generator"),
    # steps / nfe / schedule / eps
    ("steps-zero", lambda sf: S(sf=sf, steps=0), ValueError, "steps"),
    ("steps-float", lambda sf: S(sf=sf, steps=2.0), TypeError, "steps"),
    ("steps-bool", lambda sf: S(sf=sf, steps=True), TypeError, "steps"),
    ("steps-and-nfe", lambda sf: S(sf=sf, steps=2, nfe=4), ValueError, "nfe"),
    ("nfe-zero", lambda sf: S(sf=sf, steps=None, nfe=0), ValueError, "nfe"),
    ("nfe-too-small", lambda sf: S(sf=sf, solver="ode_heun", steps=None, nfe=2), ValueError, "nfe"),
    ("schedule-unknown", lambda sf: S(sf=sf, schedule="nope"), ValueError, "schedule"),
    ("schedule-wrong-type", lambda sf: S(sf=sf, schedule=3), TypeError, "schedule"),
    ("schedule-increasing", lambda sf: S(sf=sf, schedule=torch.tensor([0.1, 0.5, 1.0])), ValueError, "schedule"),
    ("schedule-2d", lambda sf: S(sf=sf, schedule=torch.ones(2, 2)), ValueError, "schedule"),
    ("schedule-nan", lambda sf: S(sf=sf, schedule=torch.tensor([1.0, float("nan"), 0.1])), ValueError, "schedule"),
    ("schedule-ends-at-zero", lambda sf: S(sf=sf, schedule=torch.tensor([1.0, 0.5, 0.0])), ValueError, "schedule"),
    ("schedule-starts-above-T", lambda sf: S(sf=sf, sde=sdekit.CosineSDE(), schedule=torch.tensor([1.5, 0.5, 0.1])),
     ValueError, "schedule"),
    ("schedule-callable-returns-list", lambda sf: S(sf=sf, schedule=lambda sde, n, eps, T: [1.0, 0.1]), ValueError,
     "schedule"),
    ("eps-zero", lambda sf: S(sf=sf, eps=0.0), ValueError, "eps"),
    ("eps-above-T", lambda sf: S(sf=sf, eps=1.5), ValueError, "eps"),
    ("eps-str", lambda sf: S(sf=sf, eps="a"), TypeError, "eps"),
    ("eps-nan", lambda sf: S(sf=sf, eps=float("nan")), ValueError, "eps"),
    # flags, callback, noise, save_at
    ("denoise-not-bool", lambda sf: S(sf=sf, denoise="yes"), TypeError, "denoise"),
    ("progress-not-bool", lambda sf: S(sf=sf, progress=1), TypeError, "progress"),
    ("callback-not-callable", lambda sf: S(sf=sf, callback=3), TypeError, "callback"),
    ("noise-wrong-type", lambda sf: SOLVE(sf=sf, noise="x"), TypeError, "noise"),
    ("save_at-unknown-str", lambda sf: SOLVE(sf=sf, save_at="bogus"), ValueError, "save_at"),
    ("save_at-scalar", lambda sf: SOLVE(sf=sf, save_at=3), TypeError, "save_at"),
    ("save_at-str-entries", lambda sf: SOLVE(sf=sf, save_at=["a"]), TypeError, "save_at"),
    ("save_at-nan", lambda sf: SOLVE(sf=sf, save_at=[float("nan")]), ValueError, "save_at"),
    ("check_finite-not-bool", lambda sf: SOLVE(sf=sf, check_finite="no"), TypeError, "check_finite"),
    # per-sample seeding
    ("seed-with-generator", lambda sf: S(sf=sf, seed=1, generator=torch.Generator()), ValueError, "seed"),
    ("seed-with-noise", lambda sf: SOLVE(sf=sf, seed=1, noise=sdekit.noise.GaussianNoise()), ValueError, "noise"),
    ("seed-negative", lambda sf: S(sf=sf, seed=-1), ValueError, "seed"),
    ("seed-float", lambda sf: S(sf=sf, seed=1.5), TypeError, "seed"),
    ("indices-without-seed", lambda sf: S(sf=sf, indices=[0, 1]), ValueError, "indices"),
    ("indices-wrong-length", lambda sf: S(sf=sf, seed=1, indices=[0, 1, 2]), ValueError, "indices"),
    ("indices-negative", lambda sf: S(sf=sf, seed=1, indices=[0, -1]), ValueError, "indices"),
    ("indices-float-tensor", lambda sf: S(sf=sf, seed=1, indices=torch.tensor([0.0, 1.0])), TypeError, "indices"),
    # steps_for_nfe
    ("steps_for_nfe-solver-name", lambda sf: sdekit.steps_for_nfe("ode_euler", 10, denoise=True), TypeError,
     "solver"),
    ("steps_for_nfe-nfe-zero", lambda sf: sdekit.steps_for_nfe(solvers.resolve("ode_euler"), 0, denoise=True),
     ValueError, "nfe"),
    # SDE constructors
    ("VPSDE-beta_min-negative", lambda sf: sdekit.VPSDE(beta_min=-1.0), ValueError, "beta_min"),
    ("VPSDE-beta_max-below-min", lambda sf: sdekit.VPSDE(beta_min=2.0, beta_max=1.0), ValueError, "beta_max"),
    ("VPSDE-beta_max-str", lambda sf: sdekit.VPSDE(beta_max="a"), TypeError, "beta_max"),
    ("VPSDE-beta_min-nan", lambda sf: sdekit.VPSDE(beta_min=float("nan")), ValueError, "beta_min"),
    ("VPSDE-T-zero", lambda sf: sdekit.VPSDE(T=0.0), ValueError, "T"),
    ("VPSDE-T-bool", lambda sf: sdekit.VPSDE(T=True), TypeError, "T"),
    ("VPSDE-eps-zero", lambda sf: sdekit.VPSDE(eps=0.0), ValueError, "eps"),
    ("VPSDE-eps-above-T", lambda sf: sdekit.VPSDE(eps=2.0), ValueError, "eps"),
    ("SubVPSDE-beta_min-zero", lambda sf: sdekit.SubVPSDE(beta_min=0.0), ValueError, "beta_min"),
    ("VESDE-sigma_min-zero", lambda sf: sdekit.VESDE(sigma_min=0.0), ValueError, "sigma_min"),
    ("VESDE-sigma_max-equal", lambda sf: sdekit.VESDE(1.0, 1.0), ValueError, "sigma_max"),
    ("VESDE-sigma_max-inf", lambda sf: sdekit.VESDE(sigma_max=float("inf")), ValueError, "sigma_max"),
    ("CosineSDE-s-negative", lambda sf: sdekit.CosineSDE(s=-1.0), ValueError, "s"),
    ("CosineSDE-T-one", lambda sf: sdekit.CosineSDE(T=1.0), ValueError, "T"),
    ("CosineSDE-T-str", lambda sf: sdekit.CosineSDE(T="a"), TypeError, "T"),
    ("AlphaSigmaSDE-alpha-not-callable", lambda sf: sdekit.AlphaSigmaSDE(3, lambda t: t), TypeError, "alpha"),
    ("AlphaSigmaSDE-dalpha-not-callable", lambda sf: sdekit.AlphaSigmaSDE(lambda t: 1 - t, lambda t: t, T=0.9,
                                                                          dalpha=3), TypeError, "dalpha"),
    ("AlphaSigmaSDE-alpha-negative", lambda sf: sdekit.AlphaSigmaSDE(lambda t: -t, lambda t: t), ValueError, "alpha"),
    ("AlphaSigmaSDE-snr-increasing", lambda sf: sdekit.AlphaSigmaSDE(lambda t: t, lambda t: 1 + 0 * t), ValueError,
     "alpha"),
    ("AlphaSigmaSDE-sigma-returns-float", lambda sf: sdekit.AlphaSigmaSDE(lambda t: 1 - t, lambda t: 0.5, T=0.9),
     ValueError, "sigma"),
    ("prior_sample-shape-zero", lambda sf: VP.prior_sample((0, 2)), ValueError, "shape"),
    ("ReverseProcess-lam", lambda sf: sdekit.ReverseProcess(VP, sf, lam=2.0), ValueError, "lam"),
    ("ReverseProcess-lam-str", lambda sf: sdekit.ReverseProcess(VP, sf, lam="a"), ValueError, "lam"),
    ("ReverseProcess-sde", lambda sf: sdekit.ReverseProcess("vp", sf), TypeError, "sde"),
    ("ReverseProcess-score_fn", lambda sf: sdekit.ReverseProcess(VP, 3), TypeError, "score_fn"),
    # grids
    ("uniform-steps-zero", lambda sf: grids.uniform(VP, 0), ValueError, "steps"),
    ("uniform-steps-float", lambda sf: grids.uniform(VP, 2.5), TypeError, "steps"),
    ("uniform-sde-str", lambda sf: grids.uniform("vp", 3), TypeError, "sde"),
    ("uniform-eps-above-T", lambda sf: grids.uniform(VP, 3, eps=2.0), ValueError, "eps"),
    ("uniform-T-negative", lambda sf: grids.uniform(VP, 3, T=-1.0), ValueError, "T"),
    ("quadratic-steps-zero", lambda sf: grids.quadratic(VP, 0), ValueError, "steps"),
    ("logsnr-steps-negative", lambda sf: grids.logsnr(VP, -1), ValueError, "steps"),
    ("karras-rho-zero", lambda sf: grids.karras(VP, 3, rho=0.0), ValueError, "rho"),
    ("get_grid-unknown", lambda sf: grids.get_grid("nope", VP, 3), ValueError, "schedule"),
    ("get_grid-wrong-type", lambda sf: grids.get_grid(3, VP, 3), TypeError, "schedule"),
    ("get_grid-sde-str", lambda sf: grids.get_grid("uniform", "vp", 3), TypeError, "sde"),
    ("get_grid-T-above-sde-T", lambda sf: grids.get_grid("uniform", VP, 3, T=2.0), ValueError, "sde.T"),
    # score adapters
    ("from_eps-model", lambda sf: score.from_eps(3, VP), TypeError, "model"),
    ("from_x0-sde", lambda sf: score.from_x0(ident, "vp"), TypeError, "sde"),
    ("from_v-time", lambda sf: score.from_v(ident, VP, time="weird"), ValueError, "time"),
    ("from_denoiser-num_steps", lambda sf: score.from_denoiser(ident, VP, time="discrete", num_steps=1), ValueError,
     "num_steps"),
    ("time_label-sde", lambda sf: score.time_label("vp", "sigma"), TypeError, "sde"),
    # metrics
    ("frechet-x-list", lambda sf: metrics.frechet_distance([[1.0]], x23), TypeError, "x"),
    ("frechet-y-nan", lambda sf: metrics.frechet_distance(x23, nan23), ValueError, "y"),
    ("frechet-x-0d", lambda sf: metrics.frechet_distance(torch.tensor(1.0), x23), ValueError, "x"),
    ("moments-one-sample", lambda sf: metrics.moments(torch.ones(1, 3)), ValueError, "x"),
    ("frechet_to_moments-mean-list", lambda sf: metrics.frechet_to_moments(x23, [0.0] * 3, torch.eye(3)), TypeError,
     "mean"),
    ("frechet_to_moments-mean-dim", lambda sf: metrics.frechet_to_moments(x23, torch.zeros(2), torch.eye(2)),
     ValueError, "mean"),
    ("frechet_to_moments-cov-nan", lambda sf: metrics.frechet_to_moments(x23, torch.zeros(3), torch.eye(3) * math.nan),
     ValueError, "cov"),
    ("sliced-shape-mismatch", lambda sf: metrics.sliced_wasserstein(x23, torch.randn(3, 3)), ValueError, "y"),
    ("sliced-projections-zero", lambda sf: metrics.sliced_wasserstein(x23, x23, projections=0), ValueError,
     "projections"),
    ("sliced-projections-float", lambda sf: metrics.sliced_wasserstein(x23, x23, projections=2.5), TypeError,
     "projections"),
    ("sliced-generator", lambda sf: metrics.sliced_wasserstein(x23, x23, generator=3), TypeError, "generator"),
    ("sliced-x-bool", lambda sf: metrics.sliced_wasserstein(x23 > 0, x23), TypeError, "x"),
    ("sliced-x-inf", lambda sf: metrics.sliced_wasserstein(x23 / 0, x23), ValueError, "x"),
    # GaussianMixture
    ("GMM-means-1d", lambda sf: GaussianMixture([1.0], torch.zeros(2), 1.0), ValueError, "means"),
    ("GMM-means-nan", lambda sf: GaussianMixture([1.0], torch.full((1, 2), math.nan), 1.0), ValueError, "means"),
    ("GMM-weights-shape", lambda sf: GaussianMixture([1.0, 1.0], torch.zeros(1, 2), 1.0), ValueError, "weights"),
    ("GMM-weights-negative", lambda sf: GaussianMixture([-1.0], torch.zeros(1, 2), 1.0), ValueError, "weights"),
    ("GMM-weights-inf", lambda sf: GaussianMixture([math.inf], torch.zeros(1, 2), 1.0), ValueError, "weights"),
    ("GMM-stds-zero", lambda sf: GaussianMixture([1.0], torch.zeros(1, 2), 0.0), ValueError, "stds"),
    ("GMM-stds-shape", lambda sf: GaussianMixture([1.0], torch.zeros(1, 2), torch.ones(3)), ValueError, "stds"),
    ("GMM-random-dim", lambda sf: GaussianMixture.random(dim=0), ValueError, "dim"),
    ("GMM-random-components", lambda sf: GaussianMixture.random(dim=2, components=0), ValueError, "components"),
    ("GMM-random-std-order", lambda sf: GaussianMixture.random(dim=2, std=(0.5, 0.1)), ValueError, "std"),
    ("GMM-random-event_shape", lambda sf: GaussianMixture.random(dim=4, event_shape=(3,)), ValueError, "event_shape"),
    ("GMM-sample-n-zero", lambda sf: gmm.sample(0), ValueError, "n"),
    ("GMM-sample-n-float", lambda sf: gmm.sample(2.5), TypeError, "n"),
    ("GMM-score-x-shape", lambda sf: gmm.score(x23, torch.ones(2), VP), ValueError, "x"),
    ("GMM-score-sde", lambda sf: gmm.score(torch.randn(2, 2), torch.ones(2), "vp"), TypeError, "sde"),
    ("GMM-score_fn-sde", lambda sf: gmm.score_fn("vp"), TypeError, "sde"),
    ("GMM-log_prob-x-list", lambda sf: gmm.log_prob([[0.0, 0.0]]), TypeError, "x"),
    ("GMM-marginal_moments-t", lambda sf: gmm.marginal_moments("a", VP), TypeError, "t"),
    # the registry
    ("resolve-unknown", lambda sf: solvers.resolve("nope"), ValueError, "solver"),
    ("resolve-wrong-type", lambda sf: solvers.resolve(3.0), TypeError, "solver"),
    ("resolve-unknown-option", lambda sf: solvers.resolve("ode_euler", foo=1), TypeError, "foo"),
    ("resolve_corrector-unknown", lambda sf: solvers.resolve_corrector("ode_euler"), ValueError, "corrector"),
    ("resolve_corrector-wrong-type", lambda sf: solvers.resolve_corrector(3), TypeError, "corrector"),
    ("register-no-name", lambda sf: solvers.register(type("Nameless", (solvers.Solver,), {})), ValueError, "name"),
    ("register-duplicate", lambda sf: solvers.register(type("Dup", (solvers.Solver,), {"name": "pc"})), ValueError,
     "'pc'"),
]


@pytest.mark.parametrize("call, exc, name", [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_bad_input(call, exc, name):
    sf = Counting()
    with pytest.raises(exc, match=name) as info:
        call(sf)
    assert type(info.value) is exc or issubclass(type(info.value), exc)
    assert sf.calls == 0, "the error must come before any score evaluation"


def test_bad_input_table_is_large_and_unique():
    ids = [c[0] for c in BAD_INPUT]
    assert len(ids) == len(set(ids)) and len(ids) >= 150


# score functions that misbehave from their first call: ScoreError names score_fn, raised at the
# first evaluation, before the solver has changed anything
@pytest.mark.parametrize("bad, what", [
    (lambda x, t: x[:, :1], "shape"),
    (lambda x, t: [1.0], "tensor"),
    (lambda x, t: x.double(), "dtype"),
    (lambda x, t: torch.zeros(x.shape[0]), "shape"),
])
@pytest.mark.parametrize("solver", FIXED)
def test_malformed_score_is_caught_at_first_call(solver, bad, what):
    sf = Counting(bad)
    with pytest.raises(ScoreError, match=f"score_fn.*{what}|{what}.*score_fn|score_fn") as info:
        S(sf=sf, solver=solver, steps=3)
    assert what in str(info.value)
    assert sf.calls == 1


# -- 2. numerical faults ------------------------------------------------------------------

def nan_below(t_star, value=math.nan, *, inner=None):
    inner = inner or normal_score(VP)

    def score_fn(x, t):
        s = inner(x, t)
        if bool((t < t_star).any()):
            s = torch.full_like(s, value)
        return s
    return score_fn


@pytest.mark.parametrize("solver", FIXED)
def test_nan_from_score_mid_run(solver):
    steps = 10
    grid = grids.default_grid(solvers.resolve(solver), VP, steps)  # the run's grid (it may stop short of eps)
    x_T = torch.randn(4, 3)
    states = []
    with pytest.raises(NonFiniteError) as info:
        sdekit.sample(nan_below(0.5), VP, solver, x_T=x_T, steps=steps,
                      callback=lambda s: states.append((s.step, s.x)))
    e = info.value
    assert isinstance(e, SamplingError)
    assert 1 <= e.step <= steps and e.t == pytest.approx(float(grid[e.step]))
    assert float(grid[e.step]) < 0.5 + 0.2  # it stopped where the score went bad, not later
    assert [s for s, _ in states] == list(range(1, e.step))  # no step after the fault was reported
    prev = x_T if e.step == 1 else states[-1][1]
    assert torch.isfinite(e.x_last).all() and torch.equal(e.x_last, prev)
    assert str(e.step) in str(e) and "x_last" in str(e)


@pytest.mark.parametrize("solver", FIXED)
def test_inf_at_first_step_keeps_x_T(solver):
    x_T = torch.randn(3, 2)
    with pytest.raises(NonFiniteError) as info:
        sdekit.sample(nan_below(2.0, math.inf), VP, solver, x_T=x_T, steps=4)
    assert info.value.step == 1 and torch.equal(info.value.x_last, x_T)


def test_nan_only_at_final_denoise():
    eps = VP.eps
    sf = nan_below(eps * 1.0001)
    with pytest.raises(NonFiniteError) as info:
        sdekit.sample(sf, VP, "ode_euler", shape=(3, 2), steps=5)
    e = info.value
    assert e.step == 6 and e.t == pytest.approx(eps) and torch.isfinite(e.x_last).all()
    # opting out of the guard returns the non-finite result instead
    x = sdekit.sample(sf, VP, "ode_euler", shape=(3, 2), steps=5, check_finite=False)
    assert not torch.isfinite(x).all()


def test_check_finite_false_runs_to_the_end():
    sf = Counting(nan_below(0.5))
    sol = sdekit.solve(sf, VP, "ode_euler", shape=(2, 2), steps=10, check_finite=False)
    assert sol.steps == 10 and sf.calls == 11 and torch.isnan(sol.x).all()


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("solver", FIXED)
def test_raising_score_propagates_with_context(solver):
    def score_fn(x, t):
        if bool((t < 0.5).any()):
            raise Boom("model exploded")
        return normal_score(VP)(x, t)

    with pytest.raises(Boom, match="model exploded") as info:
        S(sf=score_fn, solver=solver, steps=10)
    notes = " ".join(getattr(info.value, "__notes__", []))
    if hasattr(info.value, "add_note"):  # Python >= 3.11
        assert "score_fn" in notes and "t=" in notes and "score evaluation" in notes


def test_score_turning_malformed_mid_run():
    def score_fn(x, t):
        return x[:1] if bool((t < 0.5).any()) else -x

    with pytest.raises(ScoreError, match="score_fn"):
        S(sf=score_fn, solver="euler_maruyama", steps=10)


def test_keyboard_interrupt_is_not_swallowed():
    def score_fn(x, t):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        S(sf=score_fn, solver="ode_euler")


@pytest.mark.skipif(not ADAPTIVE, reason="no adaptive solver is registered in this tree")
@pytest.mark.parametrize("solver", ADAPTIVE or ["-"])
def test_adaptive_max_steps_is_a_sampling_error(solver):
    sf = Counting()
    with pytest.raises(SamplingError) as info:  # tight tolerances: two steps cannot reach eps
        sdekit.solve(sf, VP, solver, shape=(4, 3), max_steps=2, rtol=1e-9, atol=1e-9)
    assert not isinstance(info.value, NonFiniteError)
    assert sf.calls < 1000  # it stopped, it did not hang


@pytest.mark.skipif(not ADAPTIVE, reason="no adaptive solver is registered in this tree")
@pytest.mark.parametrize("solver", ADAPTIVE or ["-"])
def test_adaptive_on_a_discontinuous_score_stops(solver):
    """A score that jumps at t=0.5 defeats any error control; the run ends (succeeds or raises a SamplingError)."""
    def score_fn(x, t):
        return torch.where((t < 0.5).view(-1, 1), 1e6 * torch.ones_like(x), -x)

    try:
        x = sdekit.sample(score_fn, VP, solver, shape=(4, 3), max_steps=200)
    except SamplingError:
        return
    assert x.shape == (4, 3)


# -- 3. fuzzing ---------------------------------------------------------------------------

@st.composite
def problems(draw):
    solver = draw(st.sampled_from(SOLVERS))
    sde_name = draw(st.sampled_from(sorted(SDES)))
    event = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=3)))
    batch = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    steps = draw(st.integers(1, 6))
    seeding = draw(st.sampled_from(["generator", "seed", "x_T"]))
    seed = draw(st.integers(0, 2 ** 31))
    schedule = draw(st.sampled_from([None, *sorted(grids.SCHEDULES)]))
    return solver, sde_name, (batch, *event), dtype, steps, seeding, seed, schedule


def _run(solver, sde, shape, dtype, steps, seeding, seed, schedule):
    kw = dict(steps=steps, denoise=True, schedule=schedule)
    if seeding == "generator":
        kw.update(shape=shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    elif seeding == "seed":
        kw.update(shape=shape, dtype=dtype, seed=seed)
    else:
        x_T = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * sde.prior_std
        kw.update(x_T=x_T, seed=seed)
    return sdekit.solve(Counting(normal_score(sde)), sde, solver, **kw)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_fuzz_solve(problem):
    solver, sde_name, shape, dtype, steps, seeding, seed, schedule = problem
    sde = SDES[sde_name]()
    try:
        sol = _run(solver, sde, shape, dtype, steps, seeding, seed, schedule)
    except SamplingError:
        return  # a documented numerical fault (e.g. an adaptive solver's step limit)
    assert sol.x.shape == shape and sol.x.dtype == dtype and sol.x.device.type == "cpu"
    assert torch.isfinite(sol.x).all()
    assert sol.x.grad_fn is None and not sol.x.requires_grad
    resolved = solvers.resolve(solver)
    if not resolved.adaptive:
        assert sol.steps == steps and sol.nfe == resolved.nfe_for(steps) + 1  # +1: the denoising step
    again = _run(solver, sde, shape, dtype, steps, seeding, seed, schedule)
    assert torch.equal(sol.x, again.x), "same seed, different samples"


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(FIXED), st.sampled_from(sorted(SDES)), st.integers(1, 5), st.integers(1, 4))
def test_fuzz_sample_batch_split(solver, sde_name, batch, steps):
    """With seed=, splitting the batch never changes a sample (solvers with per-sample arithmetic)."""
    sde = SDES[sde_name]()
    opts = {"corrector": solvers.resolve_corrector("langevin", per_sample=True)} if solver == "pc" else {}
    sf = normal_score(sde)
    full = sdekit.sample(sf, sde, solver, shape=(batch + 1, 2), steps=steps, seed=3, **opts)
    tail = sdekit.sample(sf, sde, solver, shape=(1, 2), steps=steps, seed=3, indices=[batch], **opts)
    assert torch.equal(full[batch:], tail)


# -- 4. memory ----------------------------------------------------------------------------

class AliveTracker:
    """A score function that records weak references to every state it sees and how many are alive."""

    def __init__(self, fn):
        self.fn, self.refs, self.max_alive = fn, [], 0

    def __call__(self, x, t):
        self.refs.append(weakref.ref(x))
        alive = {id(o) for o in (r() for r in self.refs) if o is not None}  # distinct objects (buffers are reused)
        self.max_alive = max(self.max_alive, len(alive))
        return self.fn(x, t)


@pytest.mark.parametrize("solver", FIXED)
def test_live_states_do_not_grow_with_steps(solver):
    peaks = {}
    for steps in (4, 40):
        tr = AliveTracker(normal_score(VP))
        sdekit.sample(tr, VP, solver, shape=(8, 4), steps=steps, generator=torch.Generator().manual_seed(0))
        peaks[steps] = tr.max_alive
    assert peaks[40] == peaks[4], f"states kept alive grow with steps: {peaks}"
    assert peaks[4] <= 8


def test_no_graph_is_kept_even_if_score_fn_enables_grad():
    lin = torch.nn.Linear(4, 4)

    def score_fn(x, t):
        with torch.enable_grad():
            return -x + 0.01 * lin(x)

    tr = AliveTracker(score_fn)
    x = sdekit.sample(tr, VP, "ode_heun", shape=(3, 4), steps=20)
    assert x.grad_fn is None and not x.requires_grad
    assert tr.max_alive <= 8


def _python_heap(steps):
    """(retained, peak) Python heap bytes of one ``pc`` run of ``steps`` steps (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    sol = sdekit.solve(normal_score(VP), VP, "pc", shape=(16, 4), steps=steps,
                       generator=torch.Generator().manual_seed(0))
    del sol
    gc.collect()
    after, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return after - before, peak - before


def test_python_heap_and_tensor_count_do_not_grow_with_steps():
    _python_heap(50), _python_heap(400)  # warm-up: first-call caches inside torch and Python
    (_, peak_small), (kept_large, peak_large) = _python_heap(10), _python_heap(400)
    # 40x more steps: neither what stays allocated nor the peak may grow (a list of states would be >> 100 kB)
    assert kept_large < 16_000, f"{kept_large} B of Python memory retained after 400 steps"
    assert peak_large - peak_small < 16_000, f"peak Python memory grows with steps: {peak_small} B vs {peak_large} B"

    def live_tensors():
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o) in (torch.Tensor, torch.nn.Parameter))

    base = live_tensors()
    x = sdekit.sample(normal_score(VP), VP, "euler_maruyama", shape=(16, 4), steps=100)
    assert live_tensors() - base <= 1  # only the result
    del x


def test_saved_trajectory_is_kept_only_when_asked():
    sol = sdekit.solve(normal_score(VP), VP, "ode_euler", shape=(2, 3), steps=7)
    assert sol.xs is None and sol.ts is None
    sol = sdekit.solve(normal_score(VP), VP, "ode_euler", shape=(2, 3), steps=7, save_at="grid")
    assert sol.xs.shape == (8, 2, 3)


# -- 5. half precision --------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_refused_with_a_way_out(dtype):
    sf = Counting()
    for kw in (dict(dtype=dtype), dict(x_T=torch.randn(2, 3).to(dtype))):
        with pytest.raises(TypeError, match="half") as info:
            sdekit.sample(sf, VP, "ode_euler", steps=2, **kw)
        assert "float32" in str(info.value) and "score_fn" in str(info.value)
    assert sf.calls == 0


def test_half_precision_model_inside_float32_state():
    """The documented way out: a half-precision model wrapped in a float32 score_fn."""
    lin = torch.nn.Linear(3, 3).to(torch.bfloat16)

    def score_fn(x, t):
        return (-x.bfloat16() + 0.01 * lin(x.bfloat16())).float()

    x = sdekit.sample(score_fn, VP, "ode_heun", shape=(4, 3), steps=5)
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
