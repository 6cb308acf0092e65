"""DPM-2: the explicit midpoint method on the PF-ODE in noise-level time, with its stage at the
geometric mean of the noise levels: DPM-Solver-2 (Lu et al. 2022, "DPM-Solver", Alg. 1 with
``r = 1/2``) taken in noise-level time, as k-diffusion's ``sample_dpm_2`` / ``sample_dpm_2_ancestral``
and diffusers' ``KDPM2DiscreteScheduler`` / ``KDPM2AncestralDiscreteScheduler`` run it.

In the scaled variables ``x~ = x/alpha`` and ``sigma~ = sigma/alpha = e^{-lambda}`` the PF-ODE of
every linear SDE reads ``dx~/dsigma~ = d(x~, sigma~) = (x~ - D)/sigma~`` (``D`` Tweedie's data
prediction). A step ``sigma~_0 -> sigma~_1`` is::

    sigma~_m = sqrt(sigma~_0 sigma~_d),   x~_m = x~_0 + (sigma~_m - sigma~_0) d(x~_0, sigma~_0),
    x~_1 = x~_0 + (sigma~_d - sigma~_0) d(x~_m, sigma~_m) + sigma~_u z,

with ``sigma~_d = sigma~_1, sigma~_u = 0`` for the ODE (``eta = 0``) and, for the ancestral form,
``sigma~_u = eta sigma~_1 sqrt(1 - sigma~_1^2/sigma~_0^2)``, ``sigma~_d = sqrt(sigma~_1^2 - sigma~_u^2)``
(the DDPM posterior's noise for ``eta = 1``; the same split as ``ddim``'s ``eta``, so ``lam = eta``).
The first stage is a DDIM step to ``sigma~_m``; the grid ends at ``eps > 0`` and the final step to
``sigma = 0`` (Euler in k-diffusion and diffusers) is sdekit's denoising step.
Order: 2 (ODE); weak order 1 (ancestral). NFE per step: 2.
"""

from __future__ import annotations

import torch

from .._utils import check_real
from ..kernels import lincomb
from ._exponential import coef_times, data_prediction, log_snr
from .base import Solver, buffer, register, spare


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


@register
class DPM2(Solver):
    """DPM-2: midpoint in sigma/alpha, stage at the geometric mean (order 2, 2 NFE/step; ancestral if eta > 0)."""

    name = "dpm_2"
    kind = "ode"
    order = weak_order = 2.0
    stochastic = False
    lam = 0.0
    nfe_per_step = 2
    needs_sde = True
    default_schedule = "karras"
    default_steps = 15
    needs_finite_log_snr = True  # works in sigma/alpha, infinite at alpha = 0

    def __init__(self, *, eta: float = 0.0) -> None:
        self.eta = check_eta(eta)
        self.lam = self.eta
        self.stochastic = self.eta > 0
        if self.stochastic:
            self.kind, self.order, self.weak_order = "sde", 1.0, 1.0
        else:
            self.kind, self.order, self.weak_order = "ode", 2.0, 2.0

    def options(self):
        return {"eta": self.eta}

    def step(self, process, t0, t1, x, state, noise):
        sde = process.sde
        c0, c1 = coef_times(t0, t1)
        c0d, c1d = c0.to(torch.float64), c1.to(torch.float64)
        sig0, sig1 = torch.exp(-log_snr(sde, c0)), torch.exp(-log_snr(sde, c1))
        a0, a1 = sde.alpha(c0d), sde.alpha(c1d)
        down, up = ancestral_split(sig0, sig1, self.eta)
        sigm = torch.sqrt(sig0 * down)
        cm = sde.t_from_log_snr(-torch.log(sigm))
        am = sde.alpha(cm)
        d0 = data_prediction(process, x, t0, c0, buffer(state, "d0", x))
        q = sigm / sig0  # x_m = alpha_m (q x~_0 + (1 - q) D0): the DDIM step to sigma~_m
        xm = lincomb(x, (am / a0 * q).to(x.dtype), [((am * (1 - q)).to(x.dtype), d0)], out=buffer(state, "xm", x))
        dm = data_prediction(process, xm, cm.to(t0.dtype).expand_as(t0), cm, buffer(state, "dm", x))
        k = (down - sig0) / sigm  # x~_1 = x~_0 + k (x~_m - D_m) + sigma~_u z
        terms = [((a1 / am * k).to(x.dtype), xm), ((-a1 * k).to(x.dtype), dm)]
        if self.stochastic:
            terms.append(((a1 * up).to(x.dtype), noise.z))
        return lincomb(x, (a1 / a0).to(x.dtype), terms, out=spare(state, x)), state, None


@register
class DPM2Ancestral(DPM2):
    """Ancestral DPM-2 (``dpm_2`` with ``eta=1`` by default; weak order 1, 2 NFE/step)."""

    name = "dpm_2_ancestral"
    kind = "sde"
    order = weak_order = 1.0
    stochastic = True
    lam = 1.0

    def __init__(self, *, eta: float = 1.0) -> None:
        super().__init__(eta=eta)
