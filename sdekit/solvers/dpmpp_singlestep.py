"""Singlestep DPM-Solver++ whose stages are the next grid points (Lu et al. 2022, "DPM-Solver++",
Alg. 1 and its third-order analogue; the stepping of diffusers' ``DPMSolverSinglestepScheduler``,
``algorithm_type="dpmsolver++"``).

The grid intervals are taken in groups of ``order`` from a start ``s``: the first interval is a
DDIM step (the first stage, whose value is also the state there), the ``k``-th a step of order
``k`` from ``x_s`` itself with the data predictions at ``s`` and the stages so far, integrated
exactly as in :mod:`sdekit.solvers._exponential` (``h = lambda_t - lambda_s``, the stages at
``r_j = (lambda_j - lambda_s)/h``)::

    x_t = (sigma_t/sigma_s) x_s + alpha_t sum_j w_j D_j,   sum_j r_j^k w_j = phi_k(h).

``solver_type="midpoint"`` (diffusers' default) takes, at order 2, the line's integral at the middle
(``phi_1 -> phi_0/2``) and, at order 3, only the line through ``D_s`` and the last stage. A last
incomplete group ends with the orders it reaches, so a grid of ``N`` points runs diffusers' order
list (``1, 2, 1, 2, ...`` / ``1, 2, 3, ...``, lower-order final), its final first-order step to
``sigma = 0`` being sdekit's denoising step. Unlike ``dpmpp_2s`` the stages cost no extra NFE,
but a group spans ``order`` grid intervals.
Order: ``order`` (default 2). At order 3 the ``"heun"`` form integrates the quadratic through the three
predictions exactly (third order on any grid); the ``"midpoint"`` form is DPM-Solver-3's last stage,
third order where the stages sit at ``r = 1/3, 2/3`` (uniform log-SNR grids; measured 3.0 there).
NFE per step: 1.
"""

from __future__ import annotations

import torch

from .._utils import check_int
from ..kernels import lincomb
from ._exponential import check_solver_type, coef_times, data_prediction, log_snr, phi, weights
from .base import Solver, buffer, register, spare


@register
class DPMPPSinglestep(Solver):
    """Singlestep DPM-Solver++, stages at the next grid points (order ``order``, default 2; 1 NFE/step)."""

    name = "dpmpp_singlestep"
    default_stop = 0.4  # tuning split: benchmarks/default_stop.py (results/default_stop-taper.md)
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
        if order > 3:
            raise ValueError(f"order must be 1, 2 or 3, got {order}")
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
        k = state["i"] % self.steps_order  # position in the group: 0 starts it (a DDIM step)
        d = data_prediction(process, x, t0, c0, buffer(state, f"d{k}", x))
        if k == 0:
            state["start"] = (l0, sde.sigma(c0.to(torch.float64)), buffer(state, "x0", x).copy_(x))
            state["stages"] = []
        ls, ss, xs = state["start"]
        stages = state["stages"] = state["stages"] + [(l0, d)]  # (lambda, D) at the start and each stage
        h = l1 - ls
        if k == 2 and self.solver_type == "midpoint":  # diffusers' midpoint order 3: the line through D_s, D_m2
            stages = [stages[0], stages[2]]
        phis = phi(h, len(stages))
        if len(stages) == 2 and self.solver_type == "midpoint" and k == 1:
            phis[1] = 0.5 * phis[0]
        w = weights([(lj - ls) / h for lj, _ in stages], phis)
        out = lincomb(xs, (s1 / ss).to(x.dtype), [((a1 * wj).to(x.dtype), dj) for wj, (_, dj) in zip(w, stages)],
                      out=spare(state, x))
        state["i"] += 1
        return out, state, None
