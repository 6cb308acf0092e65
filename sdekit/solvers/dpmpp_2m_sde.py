"""DPM-Solver++(2M) SDE: second-order multistep exponential integrator of the reverse SDE
(Lu et al. 2022, "DPM-Solver++", App. B, SDE-DPM-Solver++; the multistep form as in k-diffusion).

Over ``h = lambda_t - lambda_s`` with noise rate ``eta`` (``eta = lam^2``; 1 = reverse SDE)::

    x_t = (sigma_t/sigma_s) e^{-eta h} x_s + alpha_t sum_j w_j D_j + sigma_t sqrt(1 - e^{-2 eta h}) z

with ``w_j`` the exact integral of ``(1+eta) e^{-(1+eta)(h-u)}`` against the line through the
last two data predictions (:mod:`sdekit.solvers._exponential`; ``solver_type="heun"``), or against
its value at the middle of the step (``solver_type="midpoint"``, the default: k-diffusion's default
``sample_dpmpp_2m_sde`` and diffusers' ``sde-dpmsolver++``). The Gaussian ``z`` comes
from the step's :class:`~sdekit.noise.StepNoise`. Strong order 1, weak order 2 in the
drift terms (the noise enters exactly). NFE per step: 1.

Defaults (issue 12, chosen on the tuning split of :func:`sdekit.testing.mixture_family` with
``benchmarks/stoch_defaults.py``, checked on the held-out split: ``benchmarks/results/stoch-*.md``):
the ``logsnr`` grid (k-diffusion's "exponential" sigmas), ``solver_type="midpoint"`` and
``count_denoise=True`` (the final denoising step is the last step, so the step into ``eps`` stays
second order) -- k-diffusion's ``sample_dpmpp_2m_sde`` on ``get_sigmas_exponential``, the same
numbers from the same noise. Before: ``karras``, ``"heun"``, ``count_denoise=False``. On 9 tuning
problems (2-256-D, 5 seeds x 500 samples) the two tie at 5-10 NFE in geometric mean, but the old
form's worst problem was 22x the best configuration's FD (2-D: 0.51 vs 0.023 at 5 NFE) against 6x,
and the new one is better at 20-50 NFE. At <= 5 NFE on large models the old form is still better
(FD score 1.69 vs 2.90 at 5 NFE): pass ``schedule="karras", solver_type="heun", count_denoise=False``.
"""

from __future__ import annotations

from ._exponential import ExponentialMultistep, check_bool, check_solver_type
from .base import register


@register
class DPMPP2MSDE(ExponentialMultistep):
    """DPM-Solver++(2M) SDE: multistep exponential integrator of the reverse SDE (1 NFE/step)."""

    name = "dpmpp_2m_sde"
    default_stop = 0.4  # tuning split: benchmarks/default_stop.py (results/default_stop-taper-sde*.md)
    kind = "sde"
    order = 1.0
    weak_order = 2.0
    max_order = 2
    default_schedule = "logsnr"  # chosen on the tuning split: benchmarks/stoch_defaults.py (issue 12 item 5)

    def __init__(self, eta: float = 1.0, *, lower_order_final: bool = True, count_denoise: bool = True,
                 solver_type: str = "midpoint") -> None:
        self._set_eta(eta)
        self.lower_order_final = check_bool("lower_order_final", lower_order_final)
        self.count_denoise = check_bool("count_denoise", count_denoise)
        self.solver_type = check_solver_type(solver_type)
