"""Stochastic Runge–Kutta for additive noise: Rößler's SRA methods, strong order 1.5.

For ``dx = a(x, t) dt + b(t) dW`` (state-independent noise, as every reverse-time
diffusion SDE has) Rößler (2010), "Runge–Kutta methods for the strong approximation of
solutions of stochastic differential equations", SIAM J. Numer. Anal. 48(3), Sec. 6, gives
explicit schemes of strong order 1.5 that need, per step, the Brownian increment ``dW`` and
the iterated integral ``I10 = int (W_s - W_t0) ds = h (dW/2 + H)``, with ``H`` the
space-time Lévy area (:attr:`sdekit.noise.StepNoise.H`)::

    X_i = x + h sum_j A0_ij a(X_j, t + c0_j h) + (I10/h) sum_j B0_ij b(t + c1_j h)
    x1  = x + h sum_i alpha_i a(X_i, t + c0_i h) + sum_i (beta1_i dW + beta2_i I10/h) b(t + c1_i h)

Tableaux are data (:data:`SRA_TABLEAUX`): ``sra1`` (2 stages, 2 NFE per step) and ``sra3``
(3 stages, 3 NFE per step; also weak order 3). Itô = Stratonovich (additive noise). The
noise source must provide ``H``: :class:`~sdekit.noise.GaussianNoise` draws it exactly,
:class:`~sdekit.noise.BrownianNoise` reads it from torchsde's Brownian interval (nested-grid
convergence tests). With ``lam = 0`` the scheme reduces to the drift part (an ODE RK method
of order 2 for ``sra1`` and 3 for ``sra3``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .._utils import check_lam
from ..kernels import lincomb
from .base import Solver, buffer, register, spare


@dataclass(frozen=True)
class SRATableau:
    """Coefficients of an SRA scheme (Rößler 2010, notation of the module docstring)."""

    name: str
    A0: tuple[tuple[float, ...], ...]
    B0: tuple[tuple[float, ...], ...]
    c0: tuple[float, ...]
    c1: tuple[float, ...]
    alpha: tuple[float, ...]
    beta1: tuple[float, ...]
    beta2: tuple[float, ...]

    @property
    def stages(self) -> int:
        return len(self.alpha)


SRA1 = SRATableau("sra1", A0=((0.0, 0.0), (0.75, 0.0)), B0=((0.0, 0.0), (1.5, 0.0)), c0=(0.0, 0.75), c1=(1.0, 0.0),
                  alpha=(1 / 3, 2 / 3), beta1=(1.0, 0.0), beta2=(-1.0, 1.0))
SRA3 = SRATableau("sra3", A0=((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.25, 0.25, 0.0)),
                  B0=((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (1.0, 0.5, 0.0)), c0=(0.0, 1.0, 0.5), c1=(1.0, 0.0, 0.0),
                  alpha=(1 / 6, 1 / 6, 2 / 3), beta1=(1.0, 0.0, 0.0), beta2=(-1.0, 1.0, 0.0))
SRA_TABLEAUX = {t.name: t for t in (SRA1, SRA3)}


@register
class SRK(Solver):
    """Rößler's SRA stochastic Runge–Kutta (sra1 / sra3): strong order 1.5 for additive noise."""

    name = "srk"
    default_stop = 0.4  # tuning split: benchmarks/default_stop.py (results/default_stop-taper-sde*.md)
    order = 1.5
    weak_order = 2.0
    nfe_per_step = 2
    needs_levy_area = True
    default_steps = 100

    def __init__(self, method: str = "sra1", lam: float = 1.0) -> None:
        if method not in SRA_TABLEAUX:
            raise ValueError(f"method must be one of {sorted(SRA_TABLEAUX)}, got {method!r}")
        lam = check_lam(lam)
        self.method = method
        self.tableau = SRA_TABLEAUX[method]
        self.nfe_per_step = self.tableau.stages
        self.weak_order = 3.0 if method == "sra3" else 2.0
        self.lam = lam
        self.stochastic = self.lam > 0

    def step(self, process, t0, t1, x, state, noise):
        tab = self.tableau
        h = t1 - t0
        if self.stochastic:
            dw = noise.dW
            i10 = lincomb(noise.H, 1.0, [(0.5, dw)], out=state.get("i10"))  # I10 / h = dW/2 + H
            state["i10"] = i10
            g = {c: process.diffusion(t0 + c * h) for c in set(tab.c1)}
        ks = []
        for i in range(tab.stages):
            terms = [(h * a, k) for a, k in zip(tab.A0[i], ks) if a != 0.0]
            if self.stochastic:
                gb = sum(bij * g[c] for bij, c in zip(tab.B0[i], tab.c1) if bij != 0.0)
                if not isinstance(gb, int):
                    terms.append((gb, i10))
            if terms:
                xi = lincomb(x, 1.0, terms, out=buffer(state, f"stage{i}", x))
            else:
                xi = x
            ks.append(process.drift(xi, t0 + tab.c0[i] * h))
        terms = [(h * a, k) for a, k in zip(tab.alpha, ks) if a != 0.0]
        if self.stochastic:
            gw = sum(b1 * g[c] for b1, c in zip(tab.beta1, tab.c1) if b1 != 0.0)
            gi = sum(b2 * g[c] for b2, c in zip(tab.beta2, tab.c1) if b2 != 0.0)
            terms += [(gw, dw), (gi, i10)]
        return lincomb(x, 1.0, terms, out=spare(state, x)), state, None
