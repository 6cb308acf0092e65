"""LMS: the variable-step linear multistep (Adams–Bashforth) method on the probability-flow ODE
(Adams 1883; the ``sample_lms`` of k-diffusion and diffusers' ``LMSDiscreteScheduler``).

A step ``s_0 -> s_1`` integrates the polynomial through the last ``p`` drifts ``F_j`` (at
``s_0, s_{-1}, ...``) exactly::

    x_1 = x_0 + sum_j c_j F_j,   c_j = int_{s_0}^{s_1} prod_{k != j} (tau - s_k)/(s_j - s_k) dtau,

with ``c_j`` from a Gauss–Legendre rule that is exact for these polynomials (float64).

The time variable ``s``: on a variance-exploding diffusion process (an :class:`~sdekit.sde.SDE` with
``alpha = 1``: :class:`~sdekit.sde.VESDE`, :class:`~sdekit.sde.EDMSDE`) it is the noise level
``sigma``, whose PF-ODE is Karras et al.'s ``dx/d sigma = (x - D)/sigma`` -- what k-diffusion's
``sample_lms`` and diffusers' ``LMSDiscreteScheduler`` integrate, so there sdekit's ``lms`` is their
method step for step. In the VE SDE's own time the flow is stiff (its drift is ``ln(sigma_max/sigma_min)
(x - D)``): before this rule ``lms`` on VE at 5-10 NFE returned ODE-map errors of 870-10,000 data stds
(tuning split, ``mixture_family('tuning', 1|3|5)``), against 0.22-0.51 in the noise level. On other processes (VP,
sub-VP, cosine, flow SDEs, a :class:`~sdekit.process.DriftDiffusion`) it is the process's own time and
drift: on the VP problems of the tuning split the scaled form ``(x/alpha, sigma/alpha)`` had 1.5-1.9x
the ODE-map error of the own-time form at 10-50 NFE, so sdekit's ``lms`` on VP is not k-diffusion's
(use :func:`~sdekit.score.from_kdiffusion` for that).

The first ``p - 1`` steps warm up with the orders 1, 2, ... the history allows, as k-diffusion and
diffusers do. Order: ``order`` (default 4; measured 3.89 on the exact Gaussian PF-ODE under EDM on
Karras grids). NFE per step: 1. History lives in the solver state.
"""

from __future__ import annotations

import numpy as np
import torch

from .._utils import check_int
from ..kernels import lincomb
from ..sde import SDE
from ._exponential import coef_times, data_prediction, push_history, scaled_levels, take_buffer
from .base import Solver, drift_terms, register, spare

MAX_ORDER = 6
# Gauss-Legendre nodes and weights on [-1, 1] as Python floats (no numpy call inside a compiled step);
# n points integrate polynomials of degree <= 2n - 1 exactly, and the basis polynomials have degree n - 1
_GAUSS = {n: tuple(a.tolist() for a in np.polynomial.legendre.leggauss(n)) for n in range(1, MAX_ORDER + 1)}


def lms_coefficients(ts: list[torch.Tensor], t1: torch.Tensor) -> list[torch.Tensor]:
    """``c_j = int_{ts[0]}^{t1} l_j(tau) dtau`` for the Lagrange basis ``l_j`` on the nodes ``ts`` (float64)."""
    ts = [t.to(torch.float64) for t in ts]
    t0, t1 = ts[0], t1.to(torch.float64)
    nodes, wq = _GAUSS[len(ts)]
    half = 0.5 * (t1 - t0)
    out = []
    for j, tj in enumerate(ts):
        acc = torch.zeros_like(t0)
        for u, w in zip(nodes, wq):
            tau = t0 + half * (u + 1.0)
            basis = torch.ones_like(t0)
            for k, tk in enumerate(ts):
                if k != j:
                    basis = basis * (tau - tk) / (tj - tk)
            acc = acc + w * basis
        out.append(acc * half)
    return out


@register
class LMS(Solver):
    """Linear multistep (variable-step Adams–Bashforth) on the PF-ODE (order ``order``, 1 NFE/step)."""

    name = "lms"
    default_stop = 0.4  # tuning split: benchmarks/default_stop.py (results/default_stop-taper.md)
    kind = "ode"
    order = weak_order = 4.0
    stochastic = False
    lam = 0.0
    nfe_per_step = 1
    default_schedule = "karras"
    default_steps = 50

    def __init__(self, *, order: int = 4) -> None:
        order = check_int("order", order, minimum=1)
        if order > MAX_ORDER:
            raise ValueError(f"order must be between 1 and {MAX_ORDER}, got {order}")
        self.order = self.weak_order = float(order)
        self.steps_order = order

    def options(self):
        return {"order": self.steps_order}

    def init(self, process, x, t0):
        return {"hist": [], "scaled": _scaled(process)}

    def step(self, process, t0, t1, x, state, noise):
        if state.get("scaled", False):  # in the noise level sigma (alpha = 1): the drift (x - D)/sigma
            c0, _, s0, s1, _, _ = scaled_levels(process.sde, t0, t1)
            d0 = data_prediction(process, x, t0, c0, take_buffer(state, x))
            f0 = lincomb(d0, (-1.0 / s0).to(x.dtype), [((1.0 / s0).to(x.dtype), x)], out=d0)
        else:
            s0, s1 = coef_times(t0, t1)
            f0 = lincomb(x, 0.0, drift_terms(process, x, t0), out=take_buffer(state, x))  # owned copy of F(x, t0)
        hist = [(s0, f0)] + state["hist"]
        n = min(self.steps_order, len(hist))
        coefs = lms_coefficients([sj for sj, _ in hist[:n]], s1)
        out = lincomb(x, 1.0, [(c.to(x.dtype), fj) for c, (_, fj) in zip(coefs, hist)], out=spare(state, x))
        push_history(state, hist, self.steps_order - 1)
        return out, state, None


def _scaled(process) -> bool:
    """Whether ``lms`` runs in the noise level ``sigma``: a variance-exploding diffusion process (its SDE has
    ``alpha = 1`` at ``T`` and at ``eps``, where ``x~ = x`` and ``sigma~ = sigma``)."""
    sde = getattr(process, "sde", None)
    if not (isinstance(sde, SDE) and callable(getattr(process, "score", None))):
        return False
    try:
        a = sde.alpha(torch.tensor([float(sde.T), float(sde.eps)], dtype=torch.float64))
    except NotImplementedError:
        return False
    return bool((a == 1.0).all())
