"""DPM-Solver++(3M): third-order multistep exponential integrator of the PF-ODE (Lu et al. 2022,
"DPM-Solver++", the multistep form of its third-order solver).

Data prediction in ``lambda = ln(alpha/sigma)`` time; the integral of ``D`` is taken exactly
over the quadratic through the last three ``D`` (exponential Adams–Bashforth 3, see
:mod:`sdekit.solvers._exponential`). Warm-up with orders 1 and 2. ``lower_order_final=True``
drops the last two steps of grids shorter than 15 steps to orders 1 and 2, as DPM-Solver++
does for guided sampling; it is off by default because on the exact Gaussian-mixture problems
it made 10-NFE sampling worse (mean FD over 3 seeds, 64-D VP: 0.071 with it, 0.054 without on
the default grid, 0.456 vs 0.148 on ``logsnr``), unlike the second-order methods, which it helps.
Order: 3. NFE per step: 1. History lives in the solver state.
"""

from __future__ import annotations

from ._exponential import ExponentialMultistep, check_bool
from .base import register


@register
class DPMPP3M(ExponentialMultistep):
    """DPM-Solver++(3M): multistep data-prediction exponential integrator, PF-ODE (order 3, 1 NFE/step)."""

    name = "dpmpp_3m"
    kind = "ode"
    order = weak_order = 3.0
    stochastic = False
    lam = 0.0
    max_order = 3
    default_schedule = "logsnr"  # chosen on the tuning split: benchmarks/tune_defaults.py (issue 12)

    def __init__(self, *, lower_order_final: bool = False) -> None:
        self.lower_order_final = check_bool("lower_order_final", lower_order_final)
