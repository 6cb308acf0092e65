"""DPM-Solver++(2M): second-order multistep exponential integrator of the PF-ODE (Lu et al. 2022,
"DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models", Sec. 4.2).

Data prediction ``D = (x + sigma^2 s)/alpha`` in ``lambda = ln(alpha/sigma)`` time. With
``solver_type="heun"`` (sdekit's default) the integral of ``D`` is taken exactly over the line
through the current and the previous ``D`` (exponential Adams–Bashforth 2, see
:mod:`sdekit.solvers._exponential`); ``solver_type="midpoint"`` is the paper's Alg. 2, which
integrates the line's value at the middle of the step, ``D_0 + (D_0 - D_1) / (2 r)`` (the
default of diffusers' ``DPMSolverMultistepScheduler`` and of k-diffusion's ``sample_dpmpp_2m``).
The first step is DDIM. ``lower_order_final``: on grids of fewer than 15 steps the last solver
step (into ``eps``, before the denoising step) is first order. ``count_denoise=True`` counts the
denoising step as the last step instead (diffusers' ``DPMSolverMultistepScheduler`` and
k-diffusion's ``sample_dpmpp_2m``): that step is first order anyway, so the flag then changes
nothing — the parity recipe. Order: 2. NFE per step: 1. History lives in the solver state.
"""

from __future__ import annotations

from ._exponential import ExponentialMultistep, check_bool, check_solver_type
from .base import register


@register
class DPMPP2M(ExponentialMultistep):
    """DPM-Solver++(2M): multistep data-prediction exponential integrator, PF-ODE (order 2, 1 NFE/step)."""

    name = "dpmpp_2m"
    kind = "ode"
    order = weak_order = 2.0
    stochastic = False
    lam = 0.0
    max_order = 2
    default_schedule = "karras"  # chosen on the tuning split: benchmarks/tune_defaults.py (issue 12)

    def __init__(self, *, lower_order_final: bool = True, count_denoise: bool = False,
                 solver_type: str = "heun") -> None:
        self.lower_order_final = check_bool("lower_order_final", lower_order_final)
        self.count_denoise = check_bool("count_denoise", count_denoise)
        self.solver_type = check_solver_type(solver_type)
