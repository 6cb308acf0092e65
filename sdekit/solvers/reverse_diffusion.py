"""Reverse-diffusion predictor (Song et al. 2021, Eq. 46), for any linear forward SDE.

The forward SDE discretised on the grid is the chain ``x_{t0} = a x_{t1} + s z`` with the
exact transition ``a = alpha(t0)/alpha(t1)``, ``s^2 = sigma(t0)^2 - a^2 sigma(t1)^2``
(``f = (a-1) x``, ``G = s``). Its reverse step is::

    x_{t1} = x_{t0} - (a - 1) x_{t0} + s^2 score(x_{t0}, t0) + s z

For VE this is exactly the paper's SMLD form; for VP it is the DDPM chain with
``beta_i = 1 - a^2``. Order: weak 1, strong 1 (additive noise). NFE per step: 1.
"""

from __future__ import annotations

from ..kernels import lincomb
from .base import Solver, register, spare


@register
class ReverseDiffusion(Solver):
    """Reverse diffusion predictor of Song et al. (2021) on the exact forward transition."""

    name = "reverse_diffusion"
    order = 1.0
    weak_order = 1.0
    needs_sde = True

    def step(self, process, t0, t1, x, state, noise):
        a, s = process.sde.transition(t1, t0)
        score = process.score(x, t0)
        out = lincomb(x, 2.0 - a, [(s * s, score), (s, noise.z)], out=spare(state, x))
        return out, state, None
