"""Shared math of the exponential integrators in log-SNR time (DDIM, DPM-Solver++, UniPC, EDM).

With ``lambda = ln(alpha/sigma)``, the data prediction ``D = (x + sigma^2 s)/alpha`` and the
reverse family at noise level ``ell`` (``eta = ell^2``; 0 is the PF-ODE, 1 the reverse SDE),
the exact solution over one step ``s -> t`` (``h = lambda_t - lambda_s > 0``) is::

    x_t = (sigma_t/sigma_s) e^{-eta h} x_s
          + alpha_t (1+eta) int_0^h e^{-(1+eta)(h-u)} D(lambda_s + u) du
          + sigma_t sqrt(1 - e^{-2 eta h}) z

(Lu et al. 2022, "DPM-Solver++", eq. (9) for eta=0 and the SDE-DPM-Solver++ of its App. B
for eta=1). Replacing ``D`` by the polynomial through the points ``(lambda_j, D_j)`` and
integrating it exactly gives weights ``w_j`` with ``alpha_t sum_j w_j D_j`` for the integral
term. With ``r_j = (lambda_j - lambda_s)/h`` and ``c = 1 + eta`` they solve::

    sum_j r_j^k w_j = phi_k(c h),   k = 0 .. n-1,
    phi_k(z) = (k!/z^k) int_0^z e^{-(z-v)} v^k/k! dv,  phi_0 = 1 - e^{-z},  phi_k = 1 - k phi_{k-1}/z.

Multistep methods take the points from the history (exponential Adams–Bashforth), UniPC's
corrector adds the new point ``r = 1`` (Adams–Moulton), single-step methods use
intermediate stages. Coefficients are computed in float64 on a ``(1,)`` slice when every
sample shares its time (the usual fixed grid), per sample otherwise.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from .._utils import check_bool, check_buffer, check_real, compiling
from ..kernels import lincomb
from .base import Solver
from .runge_kutta import state_update

__all__ = ["check_bool", "check_solver_type", "check_third_order", "log_snr", "coef_times", "phi", "weights",
           "data_prediction", "scaled_levels", "take_buffer", "push_history", "from_pure_noise", "order_cap",
           "HistoryMultistep", "ExponentialMultistep"]

_SERIES_BELOW = 0.2  # below it phi_k comes from its Taylor series (the recursion loses digits)
_SERIES_TERMS = 12   # 0.2^13 / 13! < 1e-19


def log_snr(sde: Any, t: Tensor) -> Tensor:
    """``lambda(t) = ln(alpha/sigma)`` in float64."""
    return sde.log_snr(t.to(torch.float64))


def _host_reads_free(t: Tensor) -> bool:
    """Whether reading ``t`` on the host costs nothing: a CPU tensor outside ``torch.compile`` (which a
    host read would split into two graphs)."""
    return t.device.type == "cpu" and not compiling()


def _shared(t: Tensor) -> bool:
    """Whether every sample of ``t`` has the same time, decided without reading a device tensor on the host.

    The fixed-step driver hands solvers ``grid[i].expand(batch)`` (stride 0). Other tensors are
    compared elementwise only on the CPU, where that costs no device synchronisation; elsewhere
    they are treated as per-sample (same result, a little more work on ``(batch,)`` vectors).
    """
    if t.numel() == 1 or t.stride(-1) == 0:
        return True
    return _host_reads_free(t) and bool((t == t[0]).all())


def coef_times(*ts: Tensor) -> tuple[Tensor, ...]:
    """The times to compute coefficients at: ``(1,)`` slices when every sample shares its time."""
    if all(_shared(t) for t in ts):
        return tuple(t[:1] for t in ts)
    return ts


def phi(z: Tensor, n: int) -> list[Tensor]:
    """``[phi_0(z), ..., phi_{n-1}(z)]`` (see the module docstring), float64, stable for small ``z``."""
    z = z.to(torch.float64)
    small = z.abs() < _SERIES_BELOW
    if _host_reads_free(z):  # decide on the host: free here, a synchronisation on an accelerator
        any_small, all_small = bool(small.any()), bool(small.all())
    else:  # branch-free: both forms, selected elementwise
        any_small, all_small = True, False
    zs = torch.where(small, torch.ones_like(z), z) if any_small else z
    out, prev = [], None if all_small else -torch.expm1(-zs)
    for k in range(n):
        if not all_small and k > 0:
            prev = 1.0 - k * prev / zs
        if not any_small:
            out.append(prev)
            continue
        # Taylor series phi_k(z) = k! sum_m (-1)^m z^{m+1} / (k+1+m)!, by Horner
        coef = [(-1) ** m * math.factorial(k) / math.factorial(k + 1 + m) for m in range(_SERIES_TERMS)]
        ser = torch.full_like(z, coef[-1])
        for c in reversed(coef[:-1]):
            ser = ser.mul_(z).add_(c)
        ser = ser.mul_(z)
        out.append(ser if all_small else torch.where(small, ser, prev))
    return out


def weights(r: list[Tensor], phis: list[Tensor]) -> list[Tensor]:
    """Solve ``sum_j r_j^k w_j = phis[k]`` (``k < n = len(r)``) for the weights ``w_j``."""
    n = len(r)
    if n == 1:
        return [phis[0]]
    rr = torch.broadcast_tensors(*[ri.to(torch.float64) for ri in r], *phis)
    rr, ph = rr[:n], rr[n:]
    if n == 2:  # closed form, the common case
        w1 = (ph[1] - rr[0] * ph[0]) / (rr[1] - rr[0])
        return [ph[0] - w1, w1]
    mat = torch.stack([torch.stack([rj ** k for rj in rr], -1) for k in range(n)], -2)
    # solve_ex: no host-side singularity check (the nodes r_j are distinct by construction)
    w = torch.linalg.solve_ex(mat, torch.stack(ph, -1).unsqueeze(-1))[0].squeeze(-1)
    return list(w.unbind(-1))


def data_prediction(process: Any, x: Tensor, t: Tensor, tc: Tensor, out: Tensor) -> Tensor:
    """Tweedie's ``D = (x + sigma^2 s)/alpha`` at ``t`` (one NFE), written into ``out``; ``tc`` = coef time.
    A score function that predicts ``D`` itself (``process.predicts_data``) is asked for it directly."""
    if getattr(process, "predicts_data", False):
        return out.copy_(process.predict_data(x, t))
    s = process.score(x, t)
    tc64 = tc.to(torch.float64)
    a, sg = process.sde.alpha(tc64), process.sde.sigma(tc64)
    return lincomb(x, (1.0 / a).to(x.dtype), [((sg * sg / a).to(x.dtype), s)], out=out)


def scaled_levels(sde: Any, t0: Tensor, t1: Tensor) -> tuple[Tensor, ...]:
    """``(c0, c1, sig0, sig1, a0, a1)`` of a step ``t0 -> t1`` in scaled noise levels: the coefficient
    times (:func:`coef_times`), ``sigma~ = sigma/alpha = e^{-lambda}`` and ``alpha`` at both ends (float64)."""
    c0, c1 = coef_times(t0, t1)
    c0d, c1d = c0.to(torch.float64), c1.to(torch.float64)
    sig0, sig1 = torch.exp(-log_snr(sde, c0)), torch.exp(-log_snr(sde, c1))
    return c0, c1, sig0, sig1, sde.alpha(c0d), sde.alpha(c1d)


def from_pure_noise(process: Any, t0: Tensor, state: dict) -> bool:
    """Whether this is the first step and it starts where ``alpha = 0`` (``lambda = -inf``, e.g. a
    :class:`~sdekit.sde.FlowSDE` at ``t = 1``). That point's ``D`` carries no local information (its
    ``lambda`` is infinitely far): it is used for this step (the exact limit ``x_1 = sigma_1 x + alpha_1 D``)
    and kept out of the history. One host read of ``t0``, only for SDEs with ``alpha(T) = 0``."""
    if state.get("i", 0) != 0:
        return False
    sde = process.sde
    if float(sde.alpha(torch.tensor([sde.T], dtype=torch.float64))) != 0.0:
        return False
    return bool((sde.alpha(t0[:1].to(torch.float64)) == 0).all())


def take_buffer(state: dict, x: Tensor) -> Tensor:
    """A free history buffer like ``x`` (recycled from the value that last left the history)."""
    buf = state.pop("free", None)
    if not check_buffer(buf, x):
        buf = torch.empty_like(x)  # keeps x's memory format
    return buf


def push_history(state: dict, hist: list[tuple[Tensor, Tensor]], keep: int) -> None:
    """Store the newest ``keep`` ``(lambda, D)`` pairs; the buffer that drops out is recycled."""
    if len(hist) > keep:
        state["free"] = hist[keep][1]
    state["hist"] = hist[:keep]


def order_cap(state: dict, enabled: bool, below: int = 15, *, count_denoise: bool = False) -> int:
    """Lower-order final steps: on grids of fewer than ``below`` steps, the order is capped at
    the number of steps left (1 on the last step, 2 on the one before), as in DPM-Solver++.

    With ``count_denoise=True`` the final denoising step after the grid counts as the last step,
    as in diffusers' ``DPMSolverMultistepScheduler`` (whose last step, to ``sigma = 0``, is that
    step): an ``N``-point grid is then ``N`` steps, and its last solver step is capped at order 2.
    Needs the grid the driver stores in ``state["grid"]``; without it there is no cap.
    """
    grid = state.get("grid")
    steps = grid.numel() - (0 if count_denoise else 1) if grid is not None else 0
    if not enabled or grid is None or steps >= below:
        return 1 << 30
    return max(1, steps - state.get("i", 0))


SOLVER_TYPES = ("heun", "midpoint")
THIRD_ORDER_FORMS = ("exact", "dpm-solver")


def check_solver_type(value: Any) -> str:
    """Return ``value`` after checking it is ``"heun"`` or ``"midpoint"``."""
    if value not in SOLVER_TYPES:
        raise ValueError(f"solver_type must be 'heun' or 'midpoint', got {value!r}")
    return value


def check_third_order(value: Any) -> str:
    """Return ``value`` after checking it is ``"exact"`` or ``"dpm-solver"``."""
    if value not in THIRD_ORDER_FORMS:
        raise ValueError(f"third_order must be 'exact' or 'dpm-solver', got {value!r}")
    return value


class HistoryMultistep(Solver):
    """Base class of the multistep solvers whose state is a history of ``(lambda, value)`` points
    (newest first, at most the order's worth kept by :func:`push_history`) and a step counter ``i``."""

    lower_order_final: bool = True

    def init(self, process, x, t0):
        return {"hist": [], "i": 0}

    def new_point(self, state: dict, point: tuple[Tensor, Tensor], order: int, *,
                  count_denoise: bool = False) -> tuple[list[tuple[Tensor, Tensor]], int]:
        """The history with ``point`` in front, and the order this step can use: at most ``order``, the
        points there are, and the lower-order-final cap (:func:`order_cap`)."""
        hist = [point] + state["hist"]
        return hist, min(order, len(hist), order_cap(state, self.lower_order_final, count_denoise=count_denoise))


class ExponentialMultistep(HistoryMultistep):
    """Base class: exponential Adams–Bashforth step in log-SNR time with data prediction.

    Subclasses set ``max_order`` and a constructor that sets ``eta`` (the noise rate,
    0 for the ODE), ``lower_order_final`` and ``solver_type``. One NFE per step; history in ``state``.

    ``solver_type`` shapes the second-order steps (Lu et al. 2022, DPM-Solver++ Alg. 2 and its
    App. B): ``"heun"`` integrates the line through the last two data predictions exactly
    (weight ``phi_1``); ``"midpoint"`` evaluates that line at the middle of the step and integrates
    the constant (``phi_1 -> phi_0 / 2``), the form of diffusers' and k-diffusion's DPM-Solver++(2M).
    Both are second order; third-order steps are the same for both.

    ``third_order`` shapes the third-order steps: ``"exact"`` integrates the quadratic through the last
    three data predictions exactly (weight ``phi_2`` on its second divided difference ``D2``);
    ``"dpm-solver"`` uses half that weight, the form of DPM-Solver++'s third-order multistep code as
    diffusers' ``DPMSolverMultistepScheduler(solver_order=3)`` and k-diffusion's ``sample_dpmpp_3m_sde``
    run it (it treats ``D2`` as ``h^2 D''`` where the divided difference is ``h^2 D''/2``).
    """

    needs_sde = True
    default_schedule = "logsnr"
    default_steps = 20
    nfe_per_step = 1
    max_order: ClassVar[int] = 1
    eta: float = 0.0
    #: with ``lower_order_final``: ``False`` (sdekit's rule) drops the order of the last solver steps
    #: before the denoising step; ``True`` counts the denoising step as the last step (diffusers' and
    #: k-diffusion's rule, for parity): a second-order method then never drops order. sdekit's rule is
    #: the default of the ODE solvers (tuned with it; with the Heun form a first-order last step into eps
    #: is much better at <= 10 NFE on karras grids: held-out 2-D, 8 NFE, dpmpp_2m_sde FD 0.020 vs 0.575);
    #: dpmpp_2m_sde defaults to True with the midpoint form on logsnr (benchmarks/stoch_defaults.py)
    count_denoise: bool = False
    solver_type: str = "heun"
    third_order: str = "exact"

    @staticmethod
    def _check_eta(eta: Any) -> float:
        eta = check_real("eta", eta, nonneg=True)
        if eta > 1.0:
            raise ValueError(f"eta must be in [0, 1] (eta = 0: probability-flow ODE, 1: reverse SDE), got {eta}")
        return eta

    def _set_eta(self, eta: Any) -> None:
        self.eta = self._check_eta(eta)
        self.lam = math.sqrt(self.eta)
        self.stochastic = self.eta > 0

    def noise_rate(self, h: Tensor) -> Tensor | float:
        """The rate ``eta`` of the step (DDIM's ``eta`` maps to a step-dependent rate)."""
        return self.eta

    def step(self, process, t0, t1, x, state, noise):
        sde = process.sde
        c0, c1 = coef_times(t0, t1)
        l0, l1 = log_snr(sde, c0), log_snr(sde, c1)
        h = l1 - l0
        d0 = data_prediction(process, x, t0, c0, take_buffer(state, x))
        hist, n = self.new_point(state, (l0, d0), self.max_order, count_denoise=self.count_denoise)
        eta = self.noise_rate(h)
        phis = phi((1.0 + eta) * h, n)
        if n == 2 and self.solver_type == "midpoint":
            phis[1] = 0.5 * phis[0]
        elif n == 3 and self.third_order == "dpm-solver":
            phis[2] = 0.5 * phis[2]
        w = weights([(lj - l0) / h for lj, _ in hist[:n]], phis)
        c164 = c1.to(torch.float64)
        a1, s1, s0 = sde.alpha(c164), sde.sigma(c164), sde.sigma(c0.to(torch.float64))
        terms = [((a1 * wj).to(x.dtype), dj) for wj, (_, dj) in zip(w, hist)]
        decay = s1 / s0
        if self.stochastic:
            decay = decay * torch.exp(-eta * h)
            terms.append(((s1 * torch.sqrt(-torch.expm1(-2.0 * eta * h))).to(x.dtype), noise.z))
        out = state_update(state, x, [((decay - 1.0).to(x.dtype), x)] + terms)  # x + increment, compensated
        push_history(state, hist[1:] if from_pure_noise(process, t0, state) else hist, self.max_order - 1)
        state["i"] += 1
        return out, state, None
