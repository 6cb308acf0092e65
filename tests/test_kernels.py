"""Fused kernels: Triton (under TRITON_INTERPRET=1 on CPU) against the torch reference and float64 truth.

Tolerances, relative to the magnitude of the summed terms (``|a x| + sum |b_i v_i|``):
float64 1e-12, float32 2e-6, float16 1.5e-3 (about 1.5 half-ulp), bfloat16 1.2e-2.
The Triton kernels compute in float32 (float64 for float64) and round once; the
reference is evaluated in float64 from the same (rounded) inputs.
"""

from __future__ import annotations

import importlib
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton (conftest.py sets it first)

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import sdekit  # noqa: E402
from sdekit import kernels as K  # noqa: E402
from sdekit.kernels import reference as R  # noqa: E402
from sdekit.kernels.philox import PhiloxNoise  # noqa: E402
from sdekit.solvers.langevin import Langevin  # noqa: E402
from sdekit.testing import GaussianMixture  # noqa: E402

try:
    from sdekit.kernels import triton_kernels as TK
    _SKIP = None if TK.INTERPRETED else "triton was imported before TRITON_INTERPRET=1 could be set"
except Exception as exc:  # triton missing or broken
    TK = None
    _SKIP = f"triton not importable ({type(exc).__name__}: {exc}); pip install sdekit[triton]"

needs_triton = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
TOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 1.5e-3, torch.bfloat16: 1.2e-2}
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def _restore_backend():
    yield
    K.set_backend("auto")


@st.composite
def case(draw, max_terms: int = 9):
    """Random shape (odd sizes, 1..3 trailing dims), dtype, layout and coefficients."""
    batch = draw(st.integers(1, 5))
    dims = tuple(draw(st.lists(st.integers(1, 9), min_size=0, max_size=3)))
    shape = (batch,) + dims
    dtype = draw(st.sampled_from(DTYPES))
    noncontig = draw(st.booleans()) and len(dims) >= 1
    seed = draw(st.integers(0, 2 ** 31 - 1))
    nterms = draw(st.integers(0, max_terms))
    kinds = draw(st.lists(st.sampled_from(["float", "vec", "scalar_tensor"]), min_size=nterms + 1,
                          max_size=nterms + 1))
    return shape, dtype, noncontig, seed, kinds


def make(shape, dtype, noncontig, g):
    if noncontig:  # a transposed view of a tensor with the last two axes (or batch and last) swapped
        full = shape[:-1] + (shape[-1] + 2,)
        t = torch.randn(full, generator=g, dtype=torch.float64).to(dtype)
        return t[..., 1:-1]
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def coef(kind, batch, g):
    if kind == "float":
        return float(torch.randn((), generator=g, dtype=torch.float64))
    if kind == "vec":
        return torch.randn(batch, generator=g, dtype=torch.float64).to(torch.float32)
    return torch.randn((), generator=g, dtype=torch.float64)


def as64(c):
    return c.double() if isinstance(c, torch.Tensor) else c


def bcast64(c, x):
    return sdekit._utils.bcast(as64(c), x)


def magnitude(x, a, terms):
    m = (bcast64(a, x) * x.double()).abs()
    for b, v in terms:
        m = m + (bcast64(b, v) * v.double()).abs()
    return m


# ----------------------------------------------------------------------------- lincomb

@needs_triton
@FAST
@given(case(), st.sampled_from(["none", "alias_x", "fresh", "noncontig"]))
def test_lincomb_matches_float64(c, out_kind):
    shape, dtype, noncontig, seed, kinds = c
    g = torch.Generator().manual_seed(seed)
    x = make(shape, dtype, noncontig, g)
    a = coef(kinds[0], shape[0], g)
    terms = [(coef(k, shape[0], g), make(shape, dtype, noncontig, g)) for k in kinds[1:]]
    truth = R.lincomb(x.double(), as64(a), [(as64(b), v.double()) for b, v in terms])
    mag = magnitude(x, a, terms)
    x_orig = x.clone()
    if out_kind == "alias_x":
        out = x
    elif out_kind == "fresh":
        out = torch.empty_like(x)
    elif out_kind == "noncontig":
        out = make(shape, dtype, True, g) if len(shape) > 1 else torch.empty_like(x)
    else:
        out = None
    got = TK.lincomb(x, a, terms, out=out)
    if out is not None:
        assert got is out
    assert got.dtype == dtype and got.shape == shape
    err = (got.double() - truth).abs()
    assert bool((err <= TOL[dtype] * mag + 1e-30).all()), f"max err {float(err.max())}, dtype {dtype}"
    if out_kind != "alias_x":
        assert torch.equal(x, x_orig)


@needs_triton
def test_lincomb_per_sample_coefficients_hit_the_right_rows():
    x = torch.zeros(3, 4)
    v = torch.ones(3, 4)
    got = TK.lincomb(x, 1.0, [(torch.tensor([1.0, 2.0, 3.0]), v)])
    assert torch.equal(got, torch.tensor([[1.0], [2.0], [3.0]]).expand(3, 4))


# ----------------------------------------------------------------------------- norms

@needs_triton
@FAST
@given(case(max_terms=0), st.integers(1, 3))
def test_sq_norms_match_float64(c, k):
    shape, dtype, noncontig, seed, _ = c
    g = torch.Generator().manual_seed(seed)
    vs = [make(shape, dtype, noncontig, g) for _ in range(k)]
    got = TK.sq_norms(vs)
    truth = torch.stack([(v.double() ** 2).reshape(shape[0], -1).sum(1) for v in vs])
    assert got.shape == (k, shape[0])
    assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    tol = 1e-12 if dtype == torch.float64 else 2e-6  # inputs are exact in float32; only the sum rounds
    assert torch.allclose(got.double(), truth, rtol=tol, atol=1e-30)
    assert torch.allclose(R.sq_norms(vs).double(), truth, rtol=tol, atol=1e-30)


@needs_triton
@FAST
@given(case(max_terms=0), st.floats(1e-6, 1e-1), st.floats(1e-8, 1e-2))
def test_error_norm_matches_float64(c, rtol, atol):
    shape, dtype, noncontig, seed, _ = c
    g = torch.Generator().manual_seed(seed)
    err, x0, x1 = (make(shape, dtype, noncontig, g) for _ in range(3))
    truth = R.error_norm(err.double(), x0.double(), x1.double(), rtol, atol)
    tol = 1e-12 if dtype == torch.float64 else 5e-6
    assert torch.allclose(TK.error_norm(err, x0, x1, rtol, atol).double(), truth, rtol=tol)
    assert torch.allclose(R.error_norm(err, x0, x1, rtol, atol).double(), truth, rtol=tol)


@needs_triton
@FAST
@given(case(max_terms=5), st.integers(0, 2 ** 31 - 1))
def test_lincomb_error_norm_matches_float64(c, eseed):
    shape, dtype, noncontig, seed, kinds = c
    g = torch.Generator().manual_seed(seed)
    x = make(shape, dtype, noncontig, g)
    a = coef(kinds[0], shape[0], g)
    vs = [make(shape, dtype, noncontig, g) for _ in kinds[1:]] or [make(shape, dtype, noncontig, g)]
    terms = [(coef(k, shape[0], g), v) for k, v in zip(kinds[1:], vs)]
    ge = torch.Generator().manual_seed(eseed)
    # error weights on a subset of the stages plus one stage that the update does not use (as in BOSH3/DOPRI5)
    extra = make(shape, dtype, noncontig, ge)
    err_terms = [(coef("vec" if i % 2 else "float", shape[0], ge), v) for i, v in enumerate(vs[::2])]
    err_terms.append((coef("float", shape[0], ge), extra))
    x1, n = TK.lincomb_error_norm(x, a, terms, err_terms, 1e-3, 1e-4)
    x1_64 = R.lincomb(x.double(), as64(a), [(as64(b), v.double()) for b, v in terms])
    assert bool(((x1.double() - x1_64).abs() <= TOL[dtype] * magnitude(x, a, terms) + 1e-30).all())
    err64 = sum(bcast64(e, w) * w.double() for e, w in err_terms)
    n64 = R.error_norm(err64, x.double(), x1.double(), 1e-3, 1e-4)  # the same rounded candidate in the scale
    bound = R.error_norm(sum((bcast64(e, w) * w.double()).abs() for e, w in err_terms), x.double(), x1.double(),
                         1e-3, 1e-4)
    assert bool(((n.double() - n64).abs() <= (1e-12 if dtype == torch.float64 else 3e-6) * bound).all())
    x1r, nr = R.lincomb_error_norm(x, a, terms, err_terms, 1e-3, 1e-4)
    assert bool(((nr.double() - n64).abs() <= 2 * TOL[dtype] * bound + 1e-12).all())


# ----------------------------------------------------------------------------- Philox

@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
def test_philox_triton_equals_reference(dtype):
    a = TK.philox_normal((3, 5, 7), seed=2 ** 40 + 17, draw=5, sample_offset=11, dtype=dtype)
    b = R.philox_normal((3, 5, 7), seed=2 ** 40 + 17, draw=5, sample_offset=11, dtype=dtype)
    tol = 1e-12 if dtype == torch.float64 else 2e-5  # float32 log/sin/cos implementations may differ by ulps
    assert torch.allclose(a.double(), b.double(), rtol=TOL[dtype] * 4, atol=tol)


def test_philox_is_keyed_by_sample_and_draw_not_batch():
    big = R.philox_normal((10, 33), seed=3, draw=2)
    assert torch.equal(R.philox_normal((4, 33), seed=3, draw=2), big[:4])
    assert torch.equal(R.philox_normal((6, 33), seed=3, draw=2, sample_offset=4), big[4:])
    assert not torch.equal(R.philox_normal((10, 33), seed=3, draw=3), big)
    assert not torch.equal(R.philox_normal((10, 33), seed=4, draw=2), big)


def test_philox_statistics():
    z = R.philox_normal((400, 250), seed=123, draw=0).double().reshape(-1)  # 1e5 normals
    n = z.numel()
    assert abs(float(z.mean())) < 4 / n ** 0.5
    assert abs(float(z.var()) - 1) < 4 * (2 / n) ** 0.5
    assert abs(float((z ** 4).mean()) - 3) < 4 * (96 / n) ** 0.5  # Var(z^4)=96
    pairs = z.reshape(-1, 2)  # the cos/sin partners of one Box-Muller pair are uncorrelated
    assert abs(float((pairs[:, 0] * pairs[:, 1]).mean())) < 4 / (n / 2) ** 0.5
    w = R.philox_normal((400, 250), seed=123, draw=1).double().reshape(-1)
    assert abs(float((z * w).mean())) < 4 / n ** 0.5


def test_philox_noise_sampling_is_batch_invariant():
    sde = sdekit.VPSDE()
    mix = GaussianMixture.random(dim=3, generator=torch.Generator().manual_seed(0))
    x = sde.prior_sample((8, 3), generator=torch.Generator().manual_seed(1))
    kw = dict(steps=15, backend="torch", corrector=Langevin(per_sample=True))
    full = sdekit.solve(mix.score_fn(sde), sde, "pc", x_T=x, noise=PhiloxNoise(5), **kw).x
    head = sdekit.solve(mix.score_fn(sde), sde, "pc", x_T=x[:3], noise=PhiloxNoise(5), **kw).x
    tail = sdekit.solve(mix.score_fn(sde), sde, "pc", x_T=x[3:], noise=PhiloxNoise(5, sample_offset=3), **kw).x
    assert torch.equal(full[:3], head) and torch.equal(full[3:], tail)
    other = sdekit.solve(mix.score_fn(sde), sde, "pc", x_T=x, noise=PhiloxNoise(6), **kw).x
    assert not torch.allclose(other, full)


def test_philox_noise_rejects_bad_seed():
    with pytest.raises(TypeError, match="seed"):
        PhiloxNoise(1.5)
    with pytest.raises(ValueError, match="seed"):
        PhiloxNoise(-1)


# ----------------------------------------------------------------------------- dispatch

def test_backend_setting_and_validation():
    x = torch.randn(2, 3)
    assert K.get_backend() == "auto" and K.backend_for(x) == "torch"  # CPU tensors: torch under auto
    with pytest.raises(ValueError, match="backend must be one of"):
        K.set_backend("cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        sdekit.sample(lambda x, t: -x, sdekit.VESDE(), "euler_maruyama", shape=(2, 2), steps=2, backend="fast")
    with K.use_backend("torch"):
        assert K.get_backend() == "torch"
    assert K.get_backend() == "auto"


def test_missing_triton_breaks_nothing(monkeypatch):
    monkeypatch.setattr(K, "_triton_mod", None)
    monkeypatch.setattr(K, "_triton_error", "ModuleNotFoundError: No module named 'triton'")
    assert not K.triton_available()
    with pytest.raises(RuntimeError, match="needs the triton package"):
        K.set_backend("triton")
    x = sdekit.sample(lambda x, t: -x, sdekit.VESDE(), "euler_maruyama", shape=(4, 2), steps=3,
                      generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 2) and bool(torch.isfinite(x).all())


@needs_triton
def test_dispatch_falls_back_where_kernels_cannot_serve():
    K.set_backend("triton")
    x = torch.randn(3, 4)
    assert K.backend_for(x) == "triton"  # CPU under the interpreter
    assert K._impl([x, torch.randn(3, 4, dtype=torch.float64)]) is R  # mixed dtypes
    assert K._impl([x, torch.randn(3, 4).requires_grad_()]) is R  # autograd
    assert K._impl([x], [torch.randn(5)]) is R  # coefficient of the wrong length
    assert K._impl([torch.randint(0, 3, (3, 4))]) is R  # integers
    with torch.no_grad():
        assert K._impl([x, torch.randn(3, 4).requires_grad_()]) is TK
    K.set_backend("torch")
    assert K.backend_for(x) == "torch"


# ----------------------------------------------------------------------------- solvers through either backend

SOLVERS = [("euler_maruyama", {}), ("reverse_diffusion", {}), ("ancestral", {}), ("pc", {}),
           ("pc", {"corrector": "annealed_langevin"}), ("ode_heun", {}), ("ode_rk4", {})]


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,opts", SOLVERS)
def test_solvers_give_the_same_samples_through_either_backend(name, opts, dtype):
    sde = sdekit.VPSDE()
    mix = GaussianMixture.random(dim=2, generator=torch.Generator().manual_seed(0))
    out = {}
    for backend in ("torch", "triton"):
        out[backend] = sdekit.sample(mix.score_fn(sde), sde, name, shape=(6, 2), steps=8, dtype=dtype,
                                     generator=torch.Generator().manual_seed(3), backend=backend, **opts)
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    assert torch.allclose(out["torch"], out["triton"], rtol=tol, atol=tol), \
        float((out["torch"] - out["triton"]).abs().max())


@needs_triton
def test_philox_noise_same_through_either_backend():
    sde = sdekit.VESDE()
    mix = GaussianMixture.random(dim=2, generator=torch.Generator().manual_seed(0))
    x = sde.prior_sample((5, 2), generator=torch.Generator().manual_seed(2))
    res = [sdekit.solve(mix.score_fn(sde), sde, "euler_maruyama", x_T=x, steps=6, noise=PhiloxNoise(9),
                        backend=b).x for b in ("torch", "triton")]
    assert torch.allclose(res[0], res[1], rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- deferred NaN check

def _nan_late(x, t):
    return torch.where(t.view(-1, 1) < 0.45, torch.full_like(x, float("nan")), -x)


@pytest.mark.parametrize("every", [1, 4, 7, 100])
def test_deferred_finite_check_names_the_same_step(monkeypatch, every):
    integ = importlib.import_module("sdekit.integrate")  # the attribute sdekit.integrate is the function

    sde = sdekit.VESDE()
    kw = dict(shape=(3, 2), steps=20, generator=torch.Generator().manual_seed(0), denoise=False)
    with pytest.raises(sdekit.NonFiniteError) as immediate:
        sdekit.sample(_nan_late, sde, "euler_maruyama", **kw)
    assert immediate.value.x_last is not None
    monkeypatch.setattr(integ, "_defer_on", lambda device: True)  # behave as on CUDA
    monkeypatch.setattr(integ, "FINITE_CHECK_EVERY", every)
    with pytest.raises(sdekit.NonFiniteError) as deferred:
        sdekit.sample(_nan_late, sde, "euler_maruyama", **{**kw, "generator": torch.Generator().manual_seed(0)})
    assert (deferred.value.step, deferred.value.t) == (immediate.value.step, immediate.value.t)
    assert (deferred.value.x_last is None) == (every > 1)


def test_deferred_check_passes_finite_runs(monkeypatch):
    integ = importlib.import_module("sdekit.integrate")  # the attribute sdekit.integrate is the function

    monkeypatch.setattr(integ, "_defer_on", lambda device: True)
    monkeypatch.setattr(integ, "FINITE_CHECK_EVERY", 4)
    sol = sdekit.solve(lambda x, t: -x, sdekit.VESDE(), "euler_maruyama", shape=(3, 2), steps=10,
                       generator=torch.Generator().manual_seed(0))
    assert sol.steps == 10 and bool(torch.isfinite(sol.x).all())


# ----------------------------------------------------------------------------- benchmarks/kernels.py

@needs_triton
def test_every_benchmarked_update_agrees_with_the_reference():
    """The GPU benchmark's cases (and its error check), run here on CPU tensors in the interpreter."""
    from benchmarks import kernels as bench

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 301, generator=g)
    vs = [torch.randn(4, 301, generator=g) for _ in range(6)]
    errs = bench.check_cases(bench._cases(x, torch.empty_like(x), vs, 4))
    assert len(errs) == 8
    assert all(e <= 1e-5 for e in errs.values()), errs


def test_the_benchmark_sync_check_drives_every_fixed_step_solver():
    from benchmarks import kernels as bench
    from tests.test_sync_free import FIXED

    out = bench.sync_check(torch.device("cpu"), steps=4)
    assert list(out)[:len(FIXED)] == FIXED and len(out) == len(FIXED) + 1
