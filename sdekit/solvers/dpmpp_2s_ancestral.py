"""Ancestral DPM-Solver++(2S) (Lu et al. 2022, "DPM-Solver++", Alg. 1 with ``r = 1/2``, its
midpoint form; k-diffusion's ``sample_dpmpp_2s_ancestral``).

With ``sigma~ = sigma/alpha = e^{-lambda}``, a step ``sigma~_0 -> sigma~_1`` splits the target noise
level into ``sigma~_d`` and ``sigma~_u`` as the ancestral step does
(:func:`~sdekit.solvers._ancestral.ancestral_split`, ``eta`` as in ``ddim``), then takes the midpoint
DPM-Solver++(2S) step to ``sigma~_d`` (``h = ln(sigma~_0/sigma~_d)``): a DDIM stage to
``lambda_0 + h/2`` and ``x~_d = (sigma~_d/sigma~_0) x~_0 + (1 - e^{-h}) D_m`` with the stage's data
prediction ``D_m`` alone; finally ``x_1 = alpha_1 (x~_d + sigma~_u z)``. This midpoint form is not
sdekit's ``dpmpp_2s`` (which integrates the line through ``D_0`` and ``D_m`` exactly): ``eta = 0``
gives the deterministic midpoint form. Order: 2 (``eta = 0``); weak order 1. NFE per step: 2.
"""

from __future__ import annotations

from ._ancestral import AncestralMidpoint
from .base import register


@register
class DPMPP2SAncestral(AncestralMidpoint):
    """Ancestral DPM-Solver++(2S), midpoint form (k-diffusion's ``sample_dpmpp_2s_ancestral``; 2 NFE/step)."""

    name = "dpmpp_2s_ancestral"
    default_stop = 0.4  # tuning split: benchmarks/default_stop.py (results/default_stop-taper-sde*.md)
    kind = "sde"
    order = weak_order = 1.0
    stochastic = True
    lam = 1.0

    def __init__(self, *, eta: float = 1.0) -> None:
        super().__init__(eta=eta)

    def step(self, process, t0, t1, x, state, noise):
        a0, a1, sig0, down, up, _, _, _, dm = self.stage(process, t0, t1, x, state)
        q1 = down / sig0  # x~_d = q1 x~_0 + (1 - q1) D_m
        return self.finish(x, state, noise, a1 / a0 * q1, [((a1 * (1 - q1)).to(x.dtype), dm)], a1, up)
