"""Ancestral DPM-Solver++(2S) (Lu et al. 2022, "DPM-Solver++", Alg. 1 with ``r = 1/2``, its
midpoint form; k-diffusion's ``sample_dpmpp_2s_ancestral``).

With ``sigma~ = sigma/alpha = e^{-lambda}``, a step ``sigma~_0 -> sigma~_1`` splits the target noise
level into ``sigma~_d`` and ``sigma~_u`` as the ancestral step does
(:func:`~sdekit.solvers.dpm_2.ancestral_split`, ``eta`` as in ``ddim``), then takes the midpoint
DPM-Solver++(2S) step to ``sigma~_d`` (``h = ln(sigma~_0/sigma~_d)``): a DDIM stage to
``lambda_0 + h/2`` and ``x~_d = (sigma~_d/sigma~_0) x~_0 + (1 - e^{-h}) D_m`` with the stage's data
prediction ``D_m`` alone; finally ``x_1 = alpha_1 (x~_d + sigma~_u z)``. This midpoint form is not
sdekit's ``dpmpp_2s`` (which integrates the line through ``D_0`` and ``D_m`` exactly): ``eta = 0``
gives the deterministic midpoint form. Order: 2 (``eta = 0``); weak order 1. NFE per step: 2.
"""

from __future__ import annotations

import torch

from ..kernels import lincomb
from ._exponential import coef_times, data_prediction, log_snr
from .base import Solver, buffer, register, spare
from .dpm_2 import ancestral_split, check_eta


@register
class DPMPP2SAncestral(Solver):
    """Ancestral DPM-Solver++(2S), midpoint form (k-diffusion's ``sample_dpmpp_2s_ancestral``; 2 NFE/step)."""

    name = "dpmpp_2s_ancestral"
    kind = "sde"
    order = weak_order = 1.0
    stochastic = True
    lam = 1.0
    nfe_per_step = 2
    needs_sde = True
    default_schedule = "karras"
    default_steps = 15
    needs_finite_log_snr = True  # the stage sits at lambda_0 + h/2: undefined from pure noise

    def __init__(self, *, eta: float = 1.0) -> None:
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
        sigm = torch.sqrt(sig0 * down)  # lambda_0 + h/2
        cm = sde.t_from_log_snr(-torch.log(sigm))
        am = sde.alpha(cm)
        d0 = data_prediction(process, x, t0, c0, buffer(state, "d0", x))
        q = sigm / sig0
        xm = lincomb(x, (am / a0 * q).to(x.dtype), [((am * (1 - q)).to(x.dtype), d0)], out=buffer(state, "xm", x))
        dm = data_prediction(process, xm, cm.to(t0.dtype).expand_as(t0), cm, buffer(state, "dm", x))
        q1 = down / sig0
        terms = [((a1 * (1 - q1)).to(x.dtype), dm)]
        if self.stochastic:
            terms.append(((a1 * up).to(x.dtype), noise.z))
        return lincomb(x, (a1 / a0 * q1).to(x.dtype), terms, out=spare(state, x)), state, None
