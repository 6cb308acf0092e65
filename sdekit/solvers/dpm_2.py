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

from ._ancestral import AncestralMidpoint, ancestral_split, check_eta
from .base import register

__all__ = ["DPM2", "DPM2Ancestral", "ancestral_split", "check_eta"]  # the helpers live in ._ancestral


@register
class DPM2(AncestralMidpoint):
    """DPM-2: midpoint in sigma/alpha, stage at the geometric mean (order 2, 2 NFE/step; ancestral if eta > 0)."""

    name = "dpm_2"
    default_stop = 0.4  # tuning split: benchmarks/default_stop.py (results/default_stop-taper.md)
    kind = "ode"
    order = weak_order = 2.0
    stochastic = False
    lam = 0.0

    def __init__(self, *, eta: float = 0.0) -> None:
        super().__init__(eta=eta)

    def step(self, process, t0, t1, x, state, noise):
        a0, a1, sig0, down, up, sigm, am, xm, dm = self.stage(process, t0, t1, x, state)
        k = (down - sig0) / sigm  # x~_1 = x~_0 + k (x~_m - D_m) + sigma~_u z
        return self.finish(x, state, noise, a1 / a0, [((a1 / am * k).to(x.dtype), xm), ((-a1 * k).to(x.dtype), dm)],
                           a1, up)


@register
class DPM2Ancestral(DPM2):
    """Ancestral DPM-2 (``dpm_2`` with ``eta=1`` by default; weak order 1, 2 NFE/step)."""

    name = "dpm_2_ancestral"
    default_stop = 0.4  # tuning split: benchmarks/default_stop.py (results/default_stop-taper-sde*.md)
    kind = "sde"
    order = weak_order = 1.0
    stochastic = True
    lam = 1.0

    def __init__(self, *, eta: float = 1.0) -> None:
        super().__init__(eta=eta)
