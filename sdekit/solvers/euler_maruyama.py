"""Euler–Maruyama for ``dx = drift(x, t) dt + diffusion(t) dW``.

Order: strong 1.0 and weak 1.0 for additive (state-independent) noise, which every
reverse-time diffusion SDE has (strong 0.5 would apply only to multiplicative noise).
NFE per step: 1. Itô = Stratonovich here (additive noise). Reference: Kloeden & Platen
(1992), Sec. 10.2. With ``lam`` < 1 it integrates the reverse family member of that
noise level (``lam = 0``: Euler on the probability-flow ODE).
"""

from __future__ import annotations

from .._utils import check_lam
from ..kernels import lincomb
from .base import Solver, drift_terms, register, spare


@register
class EulerMaruyama(Solver):
    """Euler–Maruyama: x += drift h + lam g dW (strong order 1 for additive noise)."""

    name = "euler_maruyama"
    order = 1.0
    weak_order = 1.0

    def __init__(self, lam: float = 1.0) -> None:
        self.lam = check_lam(lam)
        self.stochastic = self.lam > 0

    def step(self, process, t0, t1, x, state, noise):
        h = t1 - t0
        terms = [(h * c, v) for c, v in drift_terms(process, x, t0)]
        if self.stochastic:
            terms.append((process.diffusion(t0), noise.dW))
        return lincomb(x, 1.0, terms, out=spare(state, x)), state, None
