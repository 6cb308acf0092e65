"""Shared pieces of the two-stage ancestral solvers in scaled noise levels (``dpm_2``,
``dpm_2_ancestral``, ``dpmpp_2s_ancestral``).

With ``sigma~ = sigma/alpha = e^{-lambda}``, a step ``sigma~_0 -> sigma~_1`` splits the target level
into ``sigma~_d`` (where the deterministic step goes) and ``sigma~_u`` (the noise re-injected,
:func:`ancestral_split`), and evaluates a stage at the geometric mean ``sigma~_m = sqrt(sigma~_0
sigma~_d)`` (``lambda_0 + h/2``), reached by a DDIM step from ``x_0``. The solvers differ only in
how they combine the stage's data prediction into the step to ``sigma~_d``.
"""

from __future__ import annotations

from typing import Any

import torch

from .._utils import check_real
from ..kernels import lincomb
from ._exponential import data_prediction, scaled_levels
from .base import Solver, buffer, spare


def ancestral_split(sig0: torch.Tensor, sig1: torch.Tensor, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigma_down, sigma_up)`` of an ancestral step ``sig0 -> sig1`` in scaled noise levels (float64):
    ``sigma_up = eta sig1 sqrt(1 - sig1^2/sig0^2)``, ``sigma_down = sqrt(sig1^2 - sigma_up^2)``."""
    if eta == 0.0:
        return sig1, torch.zeros_like(sig1)
    up = eta * sig1 * torch.sqrt((1.0 - (sig1 / sig0) ** 2).clamp(min=0.0))
    return torch.sqrt(sig1 * sig1 - up * up), up


def check_eta(eta: object) -> float:
    """``eta`` in ``[0, 1]``: the fraction of the DDPM posterior's noise an ancestral step re-injects."""
    eta = check_real("eta", eta, nonneg=True)
    if eta > 1.0:
        raise ValueError(f"eta must be in [0, 1] (0: probability-flow ODE, 1: the ancestral step), got {eta}")
    return eta


class AncestralMidpoint(Solver):
    """Base class: an ``eta``-ancestral two-stage step whose stage sits at the geometric mean of
    ``sigma~_0`` and ``sigma~_d`` (order 2 for ``eta = 0``, weak order 1 otherwise; 2 NFE/step).

    Subclasses define ``__init__(self, *, eta=...)`` (their default) calling this one, and ``step``
    calling :meth:`stage` and handing its combination of the values to :meth:`finish`.
    """

    nfe_per_step = 2
    needs_sde = True
    default_schedule = "karras"
    default_steps = 15
    needs_finite_log_snr = True  # works in sigma/alpha, infinite at alpha = 0

    def __init__(self, *, eta: float) -> None:
        self.eta = check_eta(eta)
        self.lam = self.eta
        self.stochastic = self.eta > 0
        if self.stochastic:
            self.kind, self.order, self.weak_order = "sde", 1.0, 1.0
        else:
            self.kind, self.order, self.weak_order = "ode", 2.0, 2.0

    def stage(self, process: Any, t0: torch.Tensor, t1: torch.Tensor, x: torch.Tensor,
              state: dict) -> tuple[torch.Tensor, ...]:
        """The step's shared part (2 NFE): ``(a0, a1, sig0, down, up, sigm, am, xm, dm)``, the float64
        ``alpha_0, alpha_1, sigma~_0, sigma~_d, sigma~_u, sigma~_m, alpha_m``, the DDIM stage ``x_m`` at
        ``sigma~_m`` and its data prediction ``D_m`` (both in the state's buffers ``"xm"``, ``"dm"``)."""
        sde = process.sde
        c0, c1, sig0, sig1, a0, a1 = scaled_levels(sde, t0, t1)
        down, up = ancestral_split(sig0, sig1, self.eta)
        sigm = torch.sqrt(sig0 * down)  # lambda_0 + h/2
        cm = sde.t_from_log_snr(-torch.log(sigm))
        am = sde.alpha(cm)
        d0 = data_prediction(process, x, t0, c0, buffer(state, "d0", x))
        q = sigm / sig0  # x_m = alpha_m (q x~_0 + (1 - q) D0): the DDIM step to sigma~_m
        xm = lincomb(x, (am / a0 * q).to(x.dtype), [((am * (1 - q)).to(x.dtype), d0)], out=buffer(state, "xm", x))
        dm = data_prediction(process, xm, cm.to(t0.dtype).expand_as(t0), cm, buffer(state, "dm", x))
        return a0, a1, sig0, down, up, sigm, am, xm, dm

    def finish(self, x: torch.Tensor, state: dict, noise: Any, decay: torch.Tensor,
               terms: list[tuple[torch.Tensor, torch.Tensor]], a1: torch.Tensor, up: torch.Tensor):
        """The step's result ``(x_1, state, None)``: ``x_1 = decay x + sum(terms)``, plus the re-injected
        noise ``alpha_1 sigma~_u z`` when ``eta > 0`` (``decay``, ``a1``, ``up`` in float64)."""
        if self.stochastic:
            terms.append(((a1 * up).to(x.dtype), noise.z))
        return lincomb(x, decay.to(x.dtype), terms, out=spare(state, x)), state, None
