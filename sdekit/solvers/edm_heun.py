"""EDM sampler: Heun's method on the Karras grid with optional stochastic churn
(Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models", Alg. 2).

In the scaled variables ``x~ = x/alpha`` and ``sigma~ = sigma/alpha = e^{-lambda}`` the PF-ODE of
every linear SDE reads ``dx~/dsigma~ = (x~ - D)/sigma~`` with ``D`` Tweedie's data prediction.
A step ``sigma~_0 -> sigma~_1`` optionally first raises the noise to
``sigma^ = (1 + gamma) sigma~_0`` (``gamma = min(s_churn/N, sqrt 2 - 1)`` when
``s_tmin <= sigma~_0 <= s_tmax``, ``N`` the number of steps counting the final denoising step
as EDM and k-diffusion count their step to ``sigma = 0``: the number of grid points) by adding
``sqrt(sigma^2 - sigma~_0^2) s_noise z`` (``z`` from the step's StepNoise), then takes Heun's
step from ``sigma^`` to ``sigma~_1``. The grid ends at ``eps > 0``, so every step is Heun.
Order: 2 without churn; weak order 1 with churn. NFE per step: 2.
"""

from __future__ import annotations

import math

import torch

from .._utils import check_real
from ..kernels import lincomb
from ._exponential import data_prediction, scaled_levels
from .base import Solver, buffer, register, spare


@register
class EDMHeun(Solver):
    """EDM (Karras et al. 2022): Heun on the Karras grid with optional churn (order 2, 2 NFE/step)."""

    name = "edm_heun"
    default_stop = 0.4  # tuning split: benchmarks/default_stop.py (results/default_stop-taper.md)
    kind = "ode"
    order = weak_order = 2.0
    stochastic = False
    lam = 0.0
    nfe_per_step = 2
    needs_sde = True
    default_schedule = "karras"
    default_steps = 18
    needs_finite_log_snr = True  # works in sigma/alpha, infinite at alpha = 0

    def __init__(self, *, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
                 s_noise: float = 1.0) -> None:
        self.s_churn = check_real("s_churn", s_churn, nonneg=True)
        self.s_tmin = check_real("s_tmin", s_tmin, nonneg=True)
        self.s_tmax = check_real("s_tmax", s_tmax, nonneg=True, finite=False)
        self.s_noise = check_real("s_noise", s_noise, nonneg=True)
        if self.s_tmax < self.s_tmin:
            raise ValueError(f"s_tmax must be >= s_tmin, got s_tmin={s_tmin}, s_tmax={s_tmax}")
        self.stochastic = self.s_churn > 0
        if self.stochastic:
            self.kind, self.order, self.weak_order = "sde", 1.0, 1.0

    def step(self, process, t0, t1, x, state, noise):
        sde = process.sde
        c0, c1, sig0, sig1, a0, a1 = scaled_levels(sde, t0, t1)
        c0d = c0.to(torch.float64)
        xh, th, ch, sigh, ah = x, t0, c0d, sig0, a0
        if self.stochastic:
            grid = state.get("grid")
            if grid is None:
                raise ValueError("edm_heun with s_churn > 0 needs the time grid (run it through sdekit.sample/solve "
                                 "or sdekit.integrate)")
            inside = (sig0 >= self.s_tmin) & (sig0 <= self.s_tmax)
            gamma = torch.where(inside, torch.full_like(sig0, min(self.s_churn / grid.numel(),
                                                                  math.sqrt(2.0) - 1.0)), torch.zeros_like(sig0))
            sigh = sig0 * (1.0 + gamma)
            ch = torch.where(gamma > 0, sde.t_from_log_snr(-torch.log(sigh)), c0d)
            th = ch.to(t0.dtype).expand_as(t0)
            ah = sde.alpha(ch)
            kick = ah * torch.sqrt(sigh * sigh - sig0 * sig0) * self.s_noise
            xh = lincomb(x, (ah / a0).to(x.dtype), [(kick.to(x.dtype), noise.z)], out=buffer(state, "xh", x))
        # Euler predictor in (x~, sigma~), mapped back to x = alpha x~
        q = sig1 / sigh
        d0 = data_prediction(process, xh, th, ch, buffer(state, "d0", x))
        xe = lincomb(xh, (a1 / ah * q).to(x.dtype), [((a1 * (1 - q)).to(x.dtype), d0)],
                     out=buffer(state, "xe", x))
        d1 = data_prediction(process, xe, t1, c1, buffer(state, "d1", x))
        # Heun: x~_1 = x~^ + (sig1 - sigh)/2 [(x~^ - D0)/sigh + (x~_e - D1)/sig1]
        k0, k1 = 0.5 * (sig1 - sigh) / sigh, 0.5 * (sig1 - sigh) / sig1
        out = lincomb(xh, (a1 / ah * (1 + k0)).to(x.dtype),
                      [((-a1 * k0).to(x.dtype), d0), (k1.to(x.dtype), xe), ((-a1 * k1).to(x.dtype), d1)],
                      out=spare(state, x))
        return out, state, None
