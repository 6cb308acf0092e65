"""LMS: the variable-step linear multistep (Adams–Bashforth) method on the probability-flow ODE
(Adams 1883; the ``sample_lms`` of k-diffusion and diffusers' ``LMSDiscreteScheduler``).

A step ``t_0 -> t_1`` integrates the polynomial through the last ``p`` drifts
``F_j = F(x_j, t_j)`` (``t_0, t_{-1}, ...``) exactly::

    x_1 = x_0 + sum_j c_j F_j,   c_j = int_{t_0}^{t_1} prod_{k != j} (tau - t_k)/(t_j - t_k) dtau,

with ``c_j`` from a Gauss–Legendre rule that is exact for these polynomials (float64). It works in
the SDE's own time; under :func:`~sdekit.score.from_kdiffusion` (an :class:`~sdekit.sde.EDMSDE`, time =
noise level) it is k-diffusion's ``sample_lms`` step for step. The first ``p - 1`` steps warm up
with the orders 1, 2, ... the history allows, as k-diffusion and diffusers do. Order: ``order``
(default 4; measured 3.89 on the exact Gaussian PF-ODE under EDM on Karras grids), where the flow is
nearly straight at the start; where it curves at ``T`` (VP in its own time) the first Euler step's
``O(h^2)`` error dominates and the measured global order is 2. NFE per step: 1. History lives in the
solver state.
"""

from __future__ import annotations

import numpy as np
import torch

from .._utils import check_int
from ..kernels import lincomb
from ._exponential import coef_times, push_history, take_buffer
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
        return {"hist": []}

    def step(self, process, t0, t1, x, state, noise):
        c0, c1 = coef_times(t0, t1)
        f0 = lincomb(x, 0.0, drift_terms(process, x, t0), out=take_buffer(state, x))  # owned copy of F(x, t0)
        hist = [(c0, f0)] + state["hist"]
        n = min(self.steps_order, len(hist))
        coefs = lms_coefficients([tj for tj, _ in hist[:n]], c1)
        out = lincomb(x, 1.0, [(c.to(x.dtype), fj) for c, (_, fj) in zip(coefs, hist)], out=spare(state, x))
        push_history(state, hist, self.steps_order - 1)
        return out, state, None
