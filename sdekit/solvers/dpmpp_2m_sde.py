"""DPM-Solver++(2M) SDE: second-order multistep exponential integrator of the reverse SDE
(Lu et al. 2022, "DPM-Solver++", App. B, SDE-DPM-Solver++; the multistep form as in k-diffusion).

Over ``h = lambda_t - lambda_s`` with noise rate ``eta`` (``eta = lam^2``; 1 = reverse SDE)::

    x_t = (sigma_t/sigma_s) e^{-eta h} x_s + alpha_t sum_j w_j D_j + sigma_t sqrt(1 - e^{-2 eta h}) z

with ``w_j`` the exact integral of ``(1+eta) e^{-(1+eta)(h-u)}`` against the line through the
last two data predictions (:mod:`sdekit.solvers._exponential`; ``solver_type="heun"``), or against
its value at the middle of the step (``solver_type="midpoint"``: k-diffusion's default
``sample_dpmpp_2m_sde`` and diffusers' ``sde-dpmsolver++``). The Gaussian ``z`` comes
from the step's :class:`~sdekit.noise.StepNoise`. Strong order 1, weak order 2 in the
drift terms (the noise enters exactly). NFE per step: 1.
"""

from __future__ import annotations

from ._exponential import ExponentialMultistep, check_bool, check_solver_type
from .base import register


@register
class DPMPP2MSDE(ExponentialMultistep):
    """DPM-Solver++(2M) SDE: multistep exponential integrator of the reverse SDE (1 NFE/step)."""

    name = "dpmpp_2m_sde"
    kind = "sde"
    order = 1.0
    weak_order = 2.0
    max_order = 2
    default_schedule = "karras"  # chosen on the tuning split: benchmarks/tune_defaults.py (issue 12)

    def __init__(self, eta: float = 1.0, *, lower_order_final: bool = True, count_denoise: bool = False,
                 solver_type: str = "heun") -> None:
        self._set_eta(eta)
        self.lower_order_final = check_bool("lower_order_final", lower_order_final)
        self.count_denoise = check_bool("count_denoise", count_denoise)
        self.solver_type = check_solver_type(solver_type)
