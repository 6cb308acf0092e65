"""Explicit Runge–Kutta methods for the probability-flow ODE, with Butcher tableaux as data.

``dx/dt = drift(x, t)`` of the reverse family at ``lam = 0``. A method is a
:class:`Tableau` (``A``, ``b``, ``c``, order, optional embedded ``b_err``); one class,
:class:`ExplicitRK`, steps any tableau. NFE per step = number of stages.

- ``ode_euler``: forward Euler, order 1, 1 NFE.
- ``ode_heun``: Heun's (explicit trapezoidal) method, order 2, 2 NFE (Süli & Mayers 2003).
- ``ode_rk4``: the classical Runge–Kutta method, order 4, 4 NFE (Kutta 1901).

The embedded pairs used by the adaptive solver live here as data too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels import lincomb
from .base import Solver, buffer, drift_terms, register, spare


@dataclass(frozen=True)
class Tableau:
    """An explicit Butcher tableau; ``b_err`` are the weights of the embedded lower-order method."""

    name: str
    A: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]
    order: int
    b_err: tuple[float, ...] | None = None
    err_order: int | None = None
    fsal: bool = False

    @property
    def stages(self) -> int:
        return len(self.b)


EULER = Tableau("euler", A=((),), b=(1.0,), c=(0.0,), order=1)
HEUN = Tableau("heun", A=((), (1.0,)), b=(0.5, 0.5), c=(0.0, 1.0), order=2)
RK4 = Tableau("rk4", A=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
              c=(0.0, 0.5, 0.5, 1.0), order=4)
# Bogacki & Shampine (1989): 3rd order with an embedded 2nd-order estimate, FSAL.
BOSH3 = Tableau("bosh3", A=((), (0.5,), (0.0, 0.75), (2 / 9, 1 / 3, 4 / 9)), b=(2 / 9, 1 / 3, 4 / 9, 0.0),
                c=(0.0, 0.5, 0.75, 1.0), order=3, b_err=(7 / 24, 1 / 4, 1 / 3, 1 / 8), err_order=2, fsal=True)
# Dormand & Prince (1980): 5th order with an embedded 4th-order estimate, FSAL.
DOPRI5 = Tableau(
    "dopri5",
    A=((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
       (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
       (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
       (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)),
    b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0), order=5,
    b_err=(5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40), err_order=4,
    fsal=True)

TABLEAUX = {t.name: t for t in (EULER, HEUN, RK4, BOSH3, DOPRI5)}
_COMPENSATED = (torch.float32, torch.float16, torch.bfloat16)  # states whose updates carry a Kahan term


def state_update(state: dict, x: torch.Tensor, terms: list, *, out: torch.Tensor | None = None,
                 key: str = "comp") -> torch.Tensor:
    """The step's new state ``x + sum_i b_i v_i`` (``terms``), into ``out`` (default: a ping-pong buffer).

    float32 and half states are updated with compensated (Kahan) summation: the part of each
    increment that adding it to ``x`` rounds away is kept in ``state["comp"]`` and carried into
    the next step, so round-off does not random-walk with the number of steps (two more passes
    over the state, through :func:`sdekit.kernels.lincomb` on either backend). If ``x`` is not the
    state this function returned last (a condition replaced it between steps), the carry restarts.
    ``key`` names the carry (a solver with two chains of states keeps two).
    """
    out = spare(state, x) if out is None else out
    if x.dtype not in _COMPENSATED:
        return lincomb(x, 1.0, terms, out=out)
    comp = carry(state, x, key)
    if comp is None:
        comp = state[key] = torch.zeros_like(x)
    inc = lincomb(comp, 1.0, terms, out=buffer(state, key + "_inc", x))  # dx + the carried low part
    out = lincomb(x, 1.0, [(1.0, inc)], out=out)                          # x + dx, rounded once
    lincomb(inc, 1.0, [(1.0, x), (-1.0, out)], out=comp)                  # inc - (out - x): what was lost
    state[key + "_for"] = out
    return out


def carry(state: dict, x: torch.Tensor, key: str = "comp") -> torch.Tensor | None:
    """The low part :func:`state_update` carries for the state ``x``, or None (none yet, or ``x`` was replaced)."""
    comp = state.get(key)
    if comp is None or state.get(key + "_for") is not x or comp.shape != x.shape or comp.dtype != x.dtype:
        return None
    return comp


def rk_stages(tableau: Tableau, process, t0: torch.Tensor, h: torch.Tensor, x: torch.Tensor, state: dict,
              k0: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Evaluate the stage derivatives ``k_i`` of ``tableau`` for the step ``(t0, x) -> t0 + h``."""
    ks: list[torch.Tensor] = []
    for i, (row, ci) in enumerate(zip(tableau.A, tableau.c)):
        if i == 0:
            ks.append(process.drift(x, t0) if k0 is None else k0)
            continue
        xi = lincomb(x, 1.0, [(h * a, k) for a, k in zip(row, ks) if a != 0.0], out=buffer(state, f"stage{i}", x))
        ks.append(process.drift(xi, t0 + ci * h))
    return ks


class ExplicitRK(Solver):
    """Base class: one explicit Runge–Kutta step of ``tableau`` on the probability-flow ODE."""

    kind = "ode"
    stochastic = False
    lam = 0.0
    default_steps = 100
    tableau: Tableau = EULER

    def step(self, process, t0, t1, x, state, noise):
        # Stage derivatives stay as coefficient/tensor pairs (``process.drift_terms``), so no drift
        # is materialised: each stage state and the update is one fused ``lincomb``.
        h = t1 - t0
        tab = self.tableau
        stages: list[list] = []
        for i, (row, ci) in enumerate(zip(tab.A, tab.c)):
            xi = x
            if i > 0:
                xi = lincomb(x, 1.0, [(h * a * c, v) for a, ts in zip(row, stages) if a != 0.0 for c, v in ts],
                             out=buffer(state, f"stage{i}", x))
            terms = drift_terms(process, xi, t0 + ci * h)
            if i + 1 < tab.stages:
                # a score may return one reused output buffer (static outputs, CUDA-graph replay) that
                # the next stage's call overwrites: keep this stage's score in a solver-owned buffer
                terms = [(c, v if v is xi else buffer(state, f"k{i}_{j}", v).copy_(v))
                         for j, (c, v) in enumerate(terms)]
            stages.append(terms)
        terms = [(h * b * c, v) for b, ts in zip(tab.b, stages) if b != 0.0 for c, v in ts]
        return state_update(state, x, terms), state, None


@register
class ODEEuler(ExplicitRK):
    """Euler's method on the probability-flow ODE (order 1, 1 NFE/step)."""

    name = "ode_euler"
    order = weak_order = 1.0
    nfe_per_step = 1
    tableau = EULER


@register
class ODEHeun(ExplicitRK):
    """Heun's method on the probability-flow ODE (order 2, 2 NFE/step)."""

    name = "ode_heun"
    default_stop = 0.4  # tuning split: benchmarks/default_stop.py (results/default_stop-taper.md)
    order = weak_order = 2.0
    nfe_per_step = 2
    tableau = HEUN


@register
class ODERK4(ExplicitRK):
    """Classical Runge–Kutta on the probability-flow ODE (order 4, 4 NFE/step)."""

    name = "ode_rk4"
    default_stop = 0.4  # tuning split: benchmarks/default_stop.py (results/default_stop-taper.md)
    order = weak_order = 4.0
    nfe_per_step = 4
    tableau = RK4
