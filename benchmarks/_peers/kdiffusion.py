"""k-diffusion's samplers driven by the exact Karras denoiser ``D(x_tilde, sigma_tilde)``.

``pip install k-diffusion --no-deps``. Importing the ``k_diffusion`` package pulls in
torchvision (which does not import beside a CPU-only torch), so ``k_diffusion/sampling.py``
is loaded on its own: a tiny synthetic parent package provides the one helper it takes from
``k_diffusion.utils`` (``append_dims``, written here from its documented behaviour).

k-diffusion works in ``x_tilde = x / alpha``, ``sigma_tilde = sigma / alpha`` (= ``exp(-lambda)``);
the start is ``x_T / alpha(T)`` and the samplers end at ``sigma = 0`` (the data).
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import types

import torch

from .common import Oracle, Problem, RunSpec, steps_for

LIBRARY = "k-diffusion"
_PKG = "_sdekit_bench_kdiffusion"


def _append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
    """Append trailing singleton dimensions to ``x`` until it has ``target_dims`` dimensions."""
    missing = target_dims - x.ndim
    if missing < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
    return x.reshape(tuple(x.shape) + (1,) * missing)


def load_sampling() -> types.ModuleType | None:
    """Import ``k_diffusion/sampling.py`` without its package ``__init__``; ``None`` if not installed."""
    name = f"{_PKG}.sampling"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "sampling.py")
    if not os.path.exists(path):
        return None
    pkg = types.ModuleType(_PKG)
    pkg.__path__ = []  # a namespace-like package: its only submodules are registered below
    utils = types.ModuleType(f"{_PKG}.utils")
    utils.append_dims = _append_dims
    pkg.utils = utils
    sys.modules[_PKG], sys.modules[f"{_PKG}.utils"] = pkg, utils
    mspec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(mspec)
    sys.modules[name] = mod
    try:
        mspec.loader.exec_module(mod)
    except Exception:
        del sys.modules[name]
        raise
    return mod


def available() -> bool:
    try:
        return load_sampling() is not None
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False


# (sampler function name, NFE per step, stochastic, uses a noise sampler we can seed directly)
_FIXED = [
    ("sample_euler", 1, False),
    ("sample_heun", 2, False),
    ("sample_dpm_2", 2, False),
    ("sample_lms", 1, False),
    ("sample_dpmpp_2m", 1, False),
    ("sample_euler_ancestral", 1, True),
    ("sample_dpmpp_2s_ancestral", 2, True),
    ("sample_dpmpp_sde", 2, True),
    ("sample_dpmpp_2m_sde", 1, True),
    ("sample_dpmpp_3m_sde", 1, True),
]
_SECOND_ORDER_LAST_EULER = {"sample_heun", "sample_dpm_2", "sample_dpmpp_2s_ancestral", "sample_dpmpp_sde"}


def _sigma_range(p: Problem) -> tuple[float, float]:
    lam_T, lam_eps = p.log_snr_range()
    return math.exp(-lam_eps), math.exp(-lam_T)


def _alpha_T(p: Problem) -> float:
    return float(p.sde.alpha(torch.tensor([p.sde.T], dtype=torch.float64)))


def _sigmas(K, schedule: str, n: int, smin: float, smax: float) -> torch.Tensor:
    if schedule == "karras":
        return K.get_sigmas_karras(n, smin, smax, rho=7.0)
    if schedule == "exponential":
        return K.get_sigmas_exponential(n, smin, smax)
    raise ValueError(schedule)


def specs(p: Problem, budgets: list[int], *, tolerances: list[float]) -> list[RunSpec]:
    K = load_sampling()
    smin, smax = _sigma_range(p)
    aT = _alpha_T(p)
    out: list[RunSpec] = []
    for fname, per_step, stochastic in _FIXED:
        for sched in ("karras", "exponential"):
            for budget in budgets:
                # n sigmas > 0 then 0: n steps; 2nd-order samplers take an Euler step to 0 (1 NFE)
                n = steps_for(budget + (1 if fname in _SECOND_ORDER_LAST_EULER else 0), per_step)
                if n < 2 and per_step == 2:
                    continue

                def run(oracle: Oracle, x_T: torch.Tensor, seed: int, fname=fname, sched=sched, n=n,
                        stochastic=stochastic) -> torch.Tensor:
                    sig = _sigmas(K, sched, n, smin, smax)
                    kw = {"disable": True}
                    if stochastic and fname != "sample_dpmpp_sde":
                        g = torch.Generator().manual_seed(seed + 1)
                        kw["noise_sampler"] = lambda s, sn: torch.randn(x_T.shape, generator=g, dtype=x_T.dtype)
                    elif fname == "sample_dpmpp_sde":  # needs consistent sub-step noise: its own Brownian tree
                        kw["noise_sampler"] = K.BrownianTreeNoiseSampler(x_T, float(sig[sig > 0].min()),
                                                                         float(sig.max()), seed=seed + 1)
                    return getattr(K, fname)(oracle.denoiser, x_T / aT, sig, **kw)

                out.append(RunSpec(LIBRARY, fname.removeprefix("sample_"), f"{sched} n={n}", budget, run,
                                   deterministic=not stochastic))
    for tol in tolerances:
        for order in (2, 3):
            def run_a(oracle: Oracle, x_T: torch.Tensor, seed: int, tol=tol, order=order) -> torch.Tensor:
                x = K.sample_dpm_adaptive(oracle.denoiser, x_T / aT, smin, smax, order=order, rtol=tol, atol=tol,
                                          disable=True)
                return oracle.denoiser(x, torch.full((x.shape[0],), smin))  # finish at sigma=0 like the others

            out.append(RunSpec(LIBRARY, f"dpm_adaptive{order}", f"rtol=atol={tol:g} +denoise", None, run_a,
                               deterministic=True))
    return out


def overhead_specs(p: Problem, nfe: int) -> list[RunSpec]:
    K = load_sampling()
    smin, smax = _sigma_range(p)
    aT = _alpha_T(p)
    out = []
    for fname in ("sample_euler", "sample_dpmpp_2m", "sample_dpmpp_3m_sde"):
        def run(oracle, x_T, seed, fname=fname):
            kw = {"disable": True}
            if fname == "sample_dpmpp_3m_sde":
                g = torch.Generator().manual_seed(seed + 1)
                kw["noise_sampler"] = lambda s, sn: torch.randn(x_T.shape, generator=g, dtype=x_T.dtype)
            return getattr(K, fname)(oracle.denoiser, x_T / aT, K.get_sigmas_karras(nfe, smin, smax), **kw)

        out.append(RunSpec(LIBRARY, fname.removeprefix("sample_"), f"karras n={nfe}", nfe, run))
    return out
