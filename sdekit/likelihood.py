"""Exact likelihoods through the probability-flow ODE, and encoding/decoding with it.

The PF-ODE ``dx/dt = v(x, t) = f(t) x - 1/2 g(t)^2 s(x, t)`` is a continuous normalising
flow between ``p_eps`` and ``p_T`` (Song et al. 2021, Sec. 4.3; Chen et al. 2018), so the
instantaneous change of variables gives::

    log p_eps(x) = log p_T(x_T) + int_eps^T div v(x_t, t) dt,   x_t the PF-ODE path from x

:func:`likelihood` integrates the augmented state ``[x_t, int div v]`` forward from ``eps``
to ``T`` with any ODE solver through the one driver loop :func:`sdekit.integrate.integrate`.
The divergence is exact (every column of the Jacobian at once, by batched VJPs) or the
Hutchinson–Skilling estimate ``E[e^T (dv/dx) e]`` with ``probes`` fixed probe vectors per
sample, whose spread gives a standard error. Each drift evaluation builds its own small
graph and frees it: nothing is kept across steps.

Bits per dimension: ``bpd = -log p / (D ln 2)``. For 8-bit data (``dequantize="uniform"``)
the input ``x`` holds the levels ``k = 0..255`` mapped to ``data_range = (lo, hi)`` as
``lo + (hi - lo) k / 255``; it is dequantised to ``y = lo + (hi - lo) (k + u) / 256`` with
``u ~ U[0, 1)^D``, and::

    bpd = -log p(y) / (D ln 2) + 8 - log2(hi - lo)

which is ``-log2`` of the model's probability mass of the 8-bit cell, per dimension, up to
the Jensen gap. Because that mass is at most 1, the expected bits/dim is >= 0 for every
model: it cannot be negative by construction (only Monte-Carlo noise in ``u`` and in the
Hutchinson probes scatters single estimates). Forgetting the offset, or evaluating the
density at the undequantised levels, are the classic ways to get negative bits/dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from ._utils import check_int, check_not_meta, check_real
from .grids import Schedule, default_grid, get_grid
from .integrate import integrate
from .noise import GaussianNoise
from .process import ReverseProcess, ScoreFn
from .sde import SDE
from .solvers.base import Solver, resolve

__all__ = ["likelihood", "LikelihoodResult", "encode", "decode", "bits_per_dim", "dequantize_uniform",
           "AugmentedFlow"]

#: columns of the identity handled per batched VJP when the trace is exact (bounds memory).
EXACT_CHUNK = 256


@dataclass
class LikelihoodResult:
    """Result of :func:`likelihood` (per-sample tensors of shape ``(batch,)``, float64).

    Attributes:
        logp: ``prior_logp + delta_logp``, the log-density (nats) of the model at ``x`` (at the
            dequantised ``x`` when ``dequantize="uniform"``), in the model's coordinates.
        bpd: bits per dimension (with the dequantisation offset when ``dequantize="uniform"``).
        nfe: score evaluations (each also costs the VJPs of the divergence).
        prior_logp: ``log p_T(x_T)`` of the latent.
        delta_logp: ``int_eps^T div v dt`` (the mean over probes for Hutchinson).
        logp_stderr: standard error of ``logp`` from the spread over probes (zeros for the exact
            trace; NaN for Hutchinson with ``probes=1``, where no spread can be measured).
        bpd_stderr: the same in bits per dimension.
        z: the latent ``x_T`` reached by the PF-ODE.
        steps: solver steps taken.
    """

    logp: Tensor
    bpd: Tensor
    nfe: int
    prior_logp: Tensor
    delta_logp: Tensor
    logp_stderr: Tensor
    bpd_stderr: Tensor
    z: Tensor
    steps: int


_NO_GRAPH = ("likelihood needs a score_fn that is differentiable in x: its output has no autograd graph back to x "
             "(computed under torch.no_grad(), detached, or from x.detach()), so the divergence of the "
             "probability-flow drift would miss the score's part and the log-likelihood would be wrong. Build the "
             "score from differentiable torch operations of x (if it truly does not depend on x, add 0 * x)")



class _Checked:
    """The score function the likelihood's process evaluates: the user's, with the graph check on
    every output; a score function that predicts ``D`` itself (``data_prediction``, e.g.
    :func:`sdekit.score.from_flow`, finite where ``alpha = 0``) keeps that route, checked alike."""

    def __init__(self, flow: Any) -> None:
        self.flow = flow
        fn = getattr(flow.score_fn, "data_prediction", None)
        if callable(fn):
            self.data_prediction = lambda x, t: flow._checked(fn(x, t), x)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self.flow._checked_score(x, t)


class AugmentedFlow:
    """The PF-ODE drift with its divergence as extra columns, packed in one ``(B, D + P)`` tensor.

    Columns ``[:D]`` hold ``x`` (flattened) and the last ``P`` columns accumulate
    ``int e_p^T (dv/dx) e_p dt`` for each probe ``e_p`` (``P = 1`` for the exact trace, whose
    column accumulates ``int div v dt``). Solvers see an ordinary process: ``drift(y, t)``,
    ``diffusion(t) = 0``, ``nfe``.

    Args:
        sde: the forward SDE.
        score_fn: the score ``s(x, t)``.
        shape: shape of one batch of ``x`` (batch first).
        probes: ``None`` for the exact trace, else a ``(P, B, *shape[1:])`` tensor of probe vectors.
    """

    def __init__(self, sde: SDE, score_fn: ScoreFn, shape: Sequence[int], probes: Tensor | None) -> None:
        self.score_fn = score_fn
        self._connected = False
        self.process = ReverseProcess(sde, _Checked(self), lam=0.0, grad=True)
        self.sde = sde
        self.shape = tuple(shape)
        self.dim = math.prod(self.shape[1:])
        self.probes = probes
        self.n_acc = 1 if probes is None else probes.shape[0]

    @property
    def nfe(self) -> int:
        return self.process.nfe

    def _checked_score(self, x: Tensor, t: Tensor) -> Tensor:
        """The score, refused unless its output carries an autograd graph back to ``x``.

        The drift ``f(t) x - 1/2 g^2 s`` keeps a graph through ``f(t) x`` even when ``s`` has none (a
        score computed under ``no_grad`` or detached), and the divergence would then silently miss
        the score's part (about 10 nats in 2-D on VP). Checked on every call (``requires_grad``) and,
        on the first, with one VJP that the graph actually reaches ``x`` (not only model parameters).
        """
        return self._checked(self.score_fn(x, t), x)

    def _checked(self, s: Any, x: Tensor) -> Any:
        """``s`` (a score, or a data prediction ``D``) after the graph check of :meth:`_checked_score`."""
        if not isinstance(s, Tensor) or not x.requires_grad:
            return s  # the shape/type checks are ReverseProcess.score's
        if not s.requires_grad:
            raise ValueError(_NO_GRAPH)
        if not self._connected:
            (g,) = torch.autograd.grad(s.sum(), x, retain_graph=True, allow_unused=True)
            if g is None:
                raise ValueError(_NO_GRAPH)
            self._connected = True
        return s

    def pack(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        return torch.cat([x.reshape(b, -1), x.new_zeros(b, self.n_acc)], 1)

    def unpack(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return y[:, :self.dim].reshape(self.shape), y[:, self.dim:]

    def _vectors(self, x: Tensor):
        if self.probes is not None:
            yield self.probes
            return
        b = x.shape[0]
        eye = torch.eye(self.dim, device=x.device, dtype=x.dtype)
        for i in range(0, self.dim, EXACT_CHUNK):
            cols = eye[i:i + EXACT_CHUNK]  # (c, D)
            yield cols[:, None, :].expand(cols.shape[0], b, self.dim).reshape(cols.shape[0], *self.shape)

    def drift_and_divergence(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """PF-ODE drift ``v(x, t)`` (detached) and ``(B, P)`` quadratic forms ``e^T (dv/dx) e``."""
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            v = self.process.drift(xr, t)
            if not v.requires_grad:
                raise RuntimeError("the score is not differentiable in x (its output has no autograd graph); "
                                   "likelihood needs a score_fn built from differentiable torch operations")
            if self.probes is not None:
                (jv,) = torch.autograd.grad(v, xr, self.probes, is_grads_batched=True)
                q = (jv * self.probes).reshape(self.n_acc, x.shape[0], -1).sum(2).T
            else:
                parts, start = [], 0
                vecs = list(self._vectors(x))
                for k, e in enumerate(vecs):
                    c = e.shape[0]
                    (jv,) = torch.autograd.grad(v, xr, e, is_grads_batched=True, retain_graph=k + 1 < len(vecs))
                    jv = jv.reshape(c, x.shape[0], self.dim)
                    idx = torch.arange(start, start + c, device=x.device)
                    parts.append(jv[torch.arange(c, device=x.device), :, idx].sum(0))
                    start += c
                q = torch.stack(parts).sum(0)[:, None]
        return v.detach(), q.detach()

    def drift(self, y: Tensor, t: Tensor) -> Tensor:
        x, _ = self.unpack(y)
        v, q = self.drift_and_divergence(x, t)
        return torch.cat([v.reshape(y.shape[0], -1), q], 1)

    def diffusion(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)


# ----------------------------------------------------------------------------- validation


def _ode_solver(solver: str | type | Solver, options: dict[str, Any]) -> Solver:
    s = resolve(solver, **options)
    if s.stochastic or s.lam != 0.0:
        raise ValueError(f"solver must be a deterministic ODE solver of the probability-flow ODE (lam=0), "
                         f"got {s.name!r} (stochastic={s.stochastic}, lam={s.lam}); use e.g. 'ode_rk4'")
    return s


def _check_common(score_fn: Any, sde: Any, x: Any, name: str) -> None:
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sdekit.SDE (VPSDE, VESDE, ...), got {type(sde).__name__}")
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable (x, t) -> tensor, got {type(score_fn).__name__}")
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    check_not_meta(name, x.device)
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (batch, ...) with at least one data dimension, "
                         f"got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf")


def _grid(sde: SDE, solver: Solver, steps: int | None, schedule: Schedule | None, eps: float | None) -> Tensor:
    if eps is not None:
        eps = check_real("eps", eps, positive=True)
        if eps >= sde.T:
            raise ValueError(f"eps must be < sde.T={sde.T}, got eps={eps}")
    steps = check_int("steps", solver.default_steps if steps is None else steps, minimum=1)
    # (the default grid ends at eps: the likelihood integrates the whole ODE, with no denoising step)
    return default_grid(solver, sde, steps, eps=eps, stop_short=False) if schedule is None \
        else get_grid(schedule, sde, steps, eps=eps)


def _integrate_ode(process: Any, solver: Solver, grid: Tensor, x: Tensor, progress: bool):
    # one place where the ODE is run, so that an adaptive solver only needs handling here
    return integrate(process, solver, grid, x, GaussianNoise(None), progress=progress)


# ----------------------------------------------------------------------------- bits/dim


def bits_per_dim(logp: Tensor, dim: int, *, dequantize: str | None = None,
                 data_range: tuple[float, float] | None = None) -> Tensor:
    """Convert log-densities (nats) of ``dim``-dimensional points to bits per dimension.

    With ``dequantize="uniform"`` the offset ``8 - log2(hi - lo)`` of 8-bit data mapped to
    ``data_range = (lo, hi)`` is added (see the module docstring), so that the result is
    ``-log2`` of the probability of the 8-bit cell per dimension (a bound, >= 0 in expectation).
    """
    dim = check_int("dim", dim, minimum=1)
    lo, hi = _check_dequant(dequantize, data_range)
    bpd = -logp.to(torch.float64) / (dim * math.log(2.0))
    if dequantize == "uniform":
        bpd = bpd + 8.0 - math.log2(hi - lo)
    return bpd


def _check_dequant(dequantize: str | None, data_range: Any) -> tuple[float, float]:
    if dequantize not in (None, "uniform"):
        raise ValueError(f"dequantize must be None or 'uniform', got {dequantize!r}")
    if dequantize is None:
        if data_range is not None:
            raise ValueError("data_range only applies with dequantize='uniform' (8-bit data); drop it for "
                             "continuous data")
        return 0.0, 1.0
    if data_range is None:
        raise ValueError("dequantize='uniform' needs data_range=(lo, hi): the values the 8-bit levels 0 and 255 "
                         "are mapped to (e.g. (-1.0, 1.0) or (0.0, 1.0))")
    if not isinstance(data_range, (tuple, list)) or len(data_range) != 2:
        raise ValueError(f"data_range must be a pair (lo, hi), got {data_range!r}")
    lo, hi = check_real("data_range[0]", data_range[0]), check_real("data_range[1]", data_range[1])
    if not hi > lo:
        raise ValueError(f"data_range must have hi > lo, got {data_range!r}")
    return lo, hi


def dequantize_uniform(x: Tensor, data_range: tuple[float, float], *,
                       generator: torch.Generator | None = None, atol: float = 1e-3) -> Tensor:
    """Uniformly dequantise 8-bit data ``x = lo + (hi - lo) k / 255`` to ``lo + (hi - lo) (k + u) / 256``.

    Raises:
        ValueError: if ``x`` is not on the 8-bit grid of ``data_range`` (within ``atol`` levels).
    """
    lo, hi = _check_dequant("uniform", data_range)
    k = (x.to(torch.float64) - lo) / (hi - lo) * 255.0
    kr = torch.round(k)
    if bool((torch.abs(k - kr) > atol).any()) or bool((kr < 0).any()) or bool((kr > 255).any()):
        raise ValueError(f"dequantize='uniform' expects 8-bit data: x = lo + (hi - lo) * k / 255 with integer "
                         f"k in [0, 255] and data_range=({lo}, {hi}); x is not on that grid")
    u = torch.rand(x.shape, generator=generator, dtype=torch.float64, device=x.device)
    return (lo + (hi - lo) * (kr + u) / 256.0).to(x.dtype)


# ----------------------------------------------------------------------------- public API


def likelihood(score_fn: ScoreFn, sde: SDE, x: Tensor, *, solver: str | type | Solver = "ode_rk4",
               steps: int | None = 100, schedule: Schedule | None = None, eps: float | None = None,
               trace: str = "hutchinson", probes: int = 1, noise: str = "rademacher",
               dequantize: str | None = None, data_range: tuple[float, float] | None = None,
               generator: torch.Generator | None = None, progress: bool = False,
               **solver_options: Any) -> LikelihoodResult:
    """Log-likelihood and bits/dim of ``x`` under the probability-flow ODE of ``score_fn``.

    Args:
        score_fn: ``score_fn(x, t) -> tensor like x``, differentiable in ``x``.
        sde: the forward SDE.
        x: data, shape ``(batch, ...)``; treated as a point at time ``eps``.
        solver: a deterministic ODE solver (name, class or instance), e.g. ``"ode_rk4"``.
        steps: solver steps from ``eps`` to ``T`` (the default schedule of the solver, reversed).
        schedule: time grid as in :func:`sdekit.sample` (it is run from ``eps`` up to ``T``).
        eps: the starting time (default ``sde.eps``).
        trace: ``"exact"`` (all ``D`` Jacobian columns per evaluation, batched; for small ``D``)
            or ``"hutchinson"`` (``probes`` random probes; unbiased, with a standard error).
        probes: number of Hutchinson probes per sample (fixed along the path).
        noise: probe distribution, ``"rademacher"`` (lower variance) or ``"gaussian"``.
        dequantize: ``None`` for continuous data, ``"uniform"`` for 8-bit data (see the module doc).
        data_range: ``(lo, hi)`` the 8-bit levels 0 and 255 map to; required with ``dequantize``.
        generator: ``torch.Generator`` for the probes and the dequantisation noise.
        progress: show a progress bar.
        **solver_options: passed to the solver's constructor (e.g. ``rtol``/``atol`` of an adaptive one).

    Returns:
        A :class:`LikelihoodResult`.
    """
    _check_common(score_fn, sde, x, "x")
    if trace not in ("exact", "hutchinson"):
        raise ValueError(f"trace must be 'exact' or 'hutchinson', got {trace!r}")
    probes = check_int("probes", probes, minimum=1)
    if trace == "exact" and probes != 1:
        raise ValueError("probes only applies to trace='hutchinson'")
    if noise not in ("rademacher", "gaussian"):
        raise ValueError(f"noise must be 'rademacher' or 'gaussian', got {noise!r}")
    _check_dequant(dequantize, data_range)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
    ode = _ode_solver(solver, solver_options)
    grid = _grid(sde, ode, steps, schedule, eps).flip(0)

    if dequantize == "uniform":
        x = dequantize_uniform(x, data_range, generator=generator)
    e = None
    if trace == "hutchinson":
        shape = (probes, *x.shape)
        if noise == "gaussian":
            e = torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device)
        else:
            e = torch.randint(0, 2, shape, generator=generator, device=x.device).to(x.dtype).mul_(2).sub_(1)
    flow = AugmentedFlow(sde, score_fn, x.shape, e)
    sol = _integrate_ode(flow, ode, grid, flow.pack(x), progress)
    z, acc = flow.unpack(sol.x)
    acc = acc.to(torch.float64)
    delta = acc.mean(1)
    prior = sde.prior_logp(z.to(torch.float64))
    logp = prior + delta
    b, d = x.shape[0], flow.dim
    if trace == "exact":
        se = torch.zeros(b, dtype=torch.float64, device=x.device)
    elif probes == 1:
        se = torch.full((b,), float("nan"), dtype=torch.float64, device=x.device)
    else:
        se = acc.std(1) / math.sqrt(probes)
    return LikelihoodResult(logp=logp, bpd=bits_per_dim(logp, d, dequantize=dequantize, data_range=data_range),
                            nfe=sol.nfe, prior_logp=prior, delta_logp=delta, logp_stderr=se,
                            bpd_stderr=se / (d * math.log(2.0)), z=z, steps=sol.steps)


def encode(score_fn: ScoreFn, sde: SDE, x: Tensor, *, solver: str | type | Solver = "ode_rk4",
           steps: int | None = 100, schedule: Schedule | None = None, eps: float | None = None,
           progress: bool = False, **solver_options: Any) -> Tensor:
    """Map data ``x`` (at time ``eps``) to its latent ``z`` at ``T`` along the probability-flow ODE.

    The map is deterministic and invertible up to the solver's error; :func:`decode` with the
    same arguments inverts it. Arguments as in :func:`likelihood`.
    """
    _check_common(score_fn, sde, x, "x")
    ode = _ode_solver(solver, solver_options)
    grid = _grid(sde, ode, steps, schedule, eps).flip(0)
    return _integrate_ode(ReverseProcess(sde, score_fn, lam=0.0), ode, grid, x, progress).x


def decode(score_fn: ScoreFn, sde: SDE, z: Tensor, *, solver: str | type | Solver = "ode_rk4",
           steps: int | None = 100, schedule: Schedule | None = None, eps: float | None = None,
           progress: bool = False, **solver_options: Any) -> Tensor:
    """Map a latent ``z`` at ``T`` back to data at ``eps`` along the probability-flow ODE (no denoising step).

    The inverse of :func:`encode` (same arguments give the same grid, run backwards).
    """
    _check_common(score_fn, sde, z, "z")
    ode = _ode_solver(solver, solver_options)
    grid = _grid(sde, ode, steps, schedule, eps)
    return _integrate_ode(ReverseProcess(sde, score_fn, lam=0.0), ode, grid, z, progress).x

