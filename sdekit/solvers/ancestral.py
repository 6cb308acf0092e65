"""Ancestral sampling: draw ``x_{t1}`` from the Gaussian posterior ``q(x_{t1} | x_{t0}, x0_hat)``.

With the forward transition ``x_{t0} = a x_{t1} + s z`` (``a = alpha(t0)/alpha(t1)``,
``s^2 = sigma(t0)^2 - a^2 sigma(t1)^2``) and Tweedie's ``x0_hat = (x + sigma(t0)^2 score)/alpha(t0)``,
the posterior mean and std simplify to::

    mean = (x + s^2 score) / a,       std = sigma(t1) s / sigma(t0)

which is DDPM's ancestral step for VP (Ho et al. 2020) and SMLD's ancestral step for VE
(Song et al. 2021, App. F) in one formula. Order: weak 1, strong 1. NFE per step: 1.
"""

from __future__ import annotations

from ..kernels import lincomb
from .base import Solver, register, spare


@register
class Ancestral(Solver):
    """Ancestral sampling from the Gaussian posterior (DDPM for VP, SMLD for VE)."""

    name = "ancestral"
    default_stop = 0.3  # tuning split: benchmarks/default_stop.py (results/default_stop-taper-sde*.md)
    order = 1.0
    weak_order = 1.0
    needs_sde = True

    def step(self, process, t0, t1, x, state, noise):
        sde = process.sde
        a, s = sde.transition(t1, t0)
        score = process.score(x, t0)
        std = sde.sigma(t1) * s / sde.sigma(t0)
        out = lincomb(x, 1.0 / a, [(s * s / a, score), (std, noise.z)], out=spare(state, x))
        return out, state, None
