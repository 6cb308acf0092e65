"""Singlestep DPM-Solver++(2S) whose stage is the next grid point (Lu et al. 2022, "DPM-Solver++",
Alg. 1; the stepping of diffusers' ``DPMSolverSinglestepScheduler``, ``algorithm_type="dpmsolver++"``).

The grid intervals are taken in pairs ``s -> m -> t``: the first interval is a DDIM step (the
stage, whose value is also the state at ``m``), the second is the second-order step from ``x_s``
itself with the data predictions ``D_s`` and ``D_m``. With ``h = lambda_t - lambda_s`` and
``r = (lambda_m - lambda_s)/h``::

    x_t = (sigma_t/sigma_s) x_s + alpha_t (phi_0(h) D_s + c (D_m - D_s)/r),

``c = phi_1(h)`` for ``solver_type="heun"`` (the line through ``D_s, D_m`` integrated exactly, as in
:mod:`sdekit.solvers._exponential`) and ``c = phi_0(h)/2`` for ``"midpoint"`` (diffusers' default).
A lone last interval is a DDIM step, so a grid of ``N`` points runs diffusers' order list
``1, 2, 1, 2, ...`` with its final first-order step to ``sigma = 0`` being sdekit's denoising step.
Unlike ``dpmpp_2s`` the stage costs no extra NFE, but each pair spans two grid intervals.
Order: 2 (``order=1``: DDIM). NFE per step: 1.
"""

from __future__ import annotations

import torch

from .._utils import check_int
from ..kernels import lincomb
from ._exponential import check_solver_type, coef_times, data_prediction, log_snr, phi, weights
from .base import Solver, buffer, register, spare


@register
class DPMPPSinglestep(Solver):
    """Singlestep DPM-Solver++(2S), stage at the next grid point (order 2, 1 NFE/step)."""

    name = "dpmpp_singlestep"
    kind = "ode"
    order = weak_order = 2.0
    stochastic = False
    lam = 0.0
    nfe_per_step = 1
    needs_sde = True
    default_schedule = "logsnr"
    default_steps = 20
    needs_finite_log_snr = True  # the second-order step divides by r = (lambda_m - lambda_s)/h

    def __init__(self, *, order: int = 2, solver_type: str = "heun") -> None:
        order = check_int("order", order, minimum=1)
        if order > 2:
            raise ValueError(f"order must be 1 or 2, got {order}")
        self.order = self.weak_order = float(order)
        self.steps_order = order
        self.solver_type = check_solver_type(solver_type)

    def options(self):
        return {"order": self.steps_order, "solver_type": self.solver_type}

    def init(self, process, x, t0):
        return {"i": 0}

    def step(self, process, t0, t1, x, state, noise):
        sde = process.sde
        c0, c1 = coef_times(t0, t1)
        l0, l1 = log_snr(sde, c0), log_snr(sde, c1)
        c164 = c1.to(torch.float64)
        a1, s1 = sde.alpha(c164), sde.sigma(c164)
        if self.steps_order == 1 or state["i"] % 2 == 0:  # DDIM; the start of a pair
            d0 = data_prediction(process, x, t0, c0, buffer(state, "d0", x))
            s0 = sde.sigma(c0.to(torch.float64))
            state["start"] = (l0, s0, buffer(state, "x0", x).copy_(x))
            (p0,) = phi(l1 - l0, 1)
            out = lincomb(x, (s1 / s0).to(x.dtype), [((a1 * p0).to(x.dtype), d0)], out=spare(state, x))
        else:  # the second-order step of the pair, from its start
            ls, ss, xs = state["start"]
            dm = data_prediction(process, x, t0, c0, buffer(state, "dm", x))
            h = l1 - ls
            phis = phi(h, 2)
            if self.solver_type == "midpoint":
                phis[1] = 0.5 * phis[0]
            w = weights([torch.zeros_like(h), (l0 - ls) / h], phis)
            out = lincomb(xs, (s1 / ss).to(x.dtype), [((a1 * w[0]).to(x.dtype), state["d0"]),
                                                     ((a1 * w[1]).to(x.dtype), dm)], out=spare(state, x))
        state["i"] += 1
        return out, state, None
