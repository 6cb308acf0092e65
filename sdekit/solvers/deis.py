"""DEIS: the exponential Adams–Bashforth method on the noise prediction (Zhang & Chen 2023,
"Fast Sampling of Diffusion Models with Exponential Integrator", the ``tAB`` / ``rhoAB`` family;
diffusers' ``DEISMultistepScheduler``, ``algorithm_type="deis"``, ``solver_type="logrho"``).

In ``x~ = x/alpha`` and ``rho = sigma/alpha = e^{-lambda}`` the PF-ODE is ``dx~/drho = eps(x, rho)``
(``eps = -sigma s``). A step ``s -> t`` (``h = lambda_t - lambda_s``) replaces ``eps`` by the
polynomial in ``log rho = -lambda`` through the last ``p`` predictions ``(lambda_j, eps_j)`` and
integrates it exactly::

    x_t = (alpha_t/alpha_s) x_s - alpha_t rho_s int_0^h e^{-u} P(lambda_s + u) du
        = (alpha_t/alpha_s) x_s - alpha_t rho_s sum_j w_j eps_j,

where, with ``r_j = (lambda_j - lambda_s)/h``, the weights solve ``sum_j (1 - r_j)^k w_j = phi_k(h)``
(the same ``phi_k`` as the data-prediction integrators of :mod:`sdekit.solvers._exponential`, read
from the step's end). This is diffusers' "logrho" interpolation integrated in ``rho``. The first
``p - 1`` steps warm up with the orders the history allows; with ``lower_order_final`` grids of fewer
than 15 steps end with orders 2 and 1, as diffusers does (its last step is to the first training
time, which is sdekit's grid end ``eps``: run it with ``denoise=False`` on that grid to match).
Order: ``order`` (default 3). NFE per step: 1. History lives in the solver state.
"""

from __future__ import annotations

import torch

from .._utils import check_bool, check_int
from ..kernels import lincomb
from ._exponential import HistoryMultistep, coef_times, log_snr, phi, push_history, take_buffer, weights
from .base import register, spare

MAX_ORDER = 3


def noise_prediction(process, x: torch.Tensor, t: torch.Tensor, tc: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``eps = -sigma s`` at ``t`` (one NFE) into ``out``; from ``D`` as ``(x - alpha D)/sigma`` for a
    score function that predicts data (``process.predicts_data``)."""
    tc64 = tc.to(torch.float64)
    a, sg = process.sde.alpha(tc64), process.sde.sigma(tc64)
    if getattr(process, "predicts_data", False):
        return lincomb(x, (1.0 / sg).to(x.dtype), [((-a / sg).to(x.dtype), process.predict_data(x, t))], out=out)
    return lincomb(x, 0.0, [((-sg).to(x.dtype), process.score(x, t))], out=out)


@register
class DEIS(HistoryMultistep):
    """DEIS: exponential Adams–Bashforth on the noise prediction in log-rho (order ``order``, 1 NFE/step)."""

    name = "deis"
    default_stop = 0.3  # tuning split: benchmarks/default_stop.py (results/default_stop-taper.md)
    kind = "ode"
    order = weak_order = 3.0
    stochastic = False
    lam = 0.0
    nfe_per_step = 1
    needs_sde = True
    default_schedule = "logsnr"
    default_steps = 20
    needs_finite_log_snr = True  # rho = sigma/alpha is infinite at alpha = 0

    def __init__(self, *, order: int = 3, lower_order_final: bool = True) -> None:
        order = check_int("order", order, minimum=1)
        if order > MAX_ORDER:
            raise ValueError(f"order must be between 1 and {MAX_ORDER}, got {order}")
        self.order = self.weak_order = float(order)
        self.steps_order = order
        self.lower_order_final = check_bool("lower_order_final", lower_order_final)

    def options(self):
        return {"order": self.steps_order, "lower_order_final": self.lower_order_final}

    def step(self, process, t0, t1, x, state, noise):
        sde = process.sde
        c0, c1 = coef_times(t0, t1)
        l0, l1 = log_snr(sde, c0), log_snr(sde, c1)
        h = l1 - l0
        e0 = noise_prediction(process, x, t0, c0, take_buffer(state, x))
        hist, n = self.new_point(state, (l0, e0), self.steps_order)
        w = weights([1.0 - (lj - l0) / h for lj, _ in hist[:n]], phi(h, n))
        a0, a1 = sde.alpha(c0.to(torch.float64)), sde.alpha(c1.to(torch.float64))
        k = -a1 * sde.sigma(c0.to(torch.float64)) / a0  # -alpha_t rho_s
        out = lincomb(x, (a1 / a0).to(x.dtype), [((k * wj).to(x.dtype), ej) for wj, (_, ej) in zip(w, hist)],
                      out=spare(state, x))
        push_history(state, hist, self.steps_order - 1)
        state["i"] += 1
        return out, state, None
