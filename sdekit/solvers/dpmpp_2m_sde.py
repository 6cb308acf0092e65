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
numbers from the same noise. Before: ``karras``, ``"heun"``, ``count_denoise=False``; on the
tuning split (2-D VP, 64-D VE, 256-D VP; 5 seeds x 500 samples) the geometric mean of FD over
the problems fell 1.9x / 1.5x / 1.9x / 1.9x at 5 / 6 / 8 / 10 NFE and 2.0x at 20 NFE
(in 2-D at 5 NFE: 0.51 -> 0.023).
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
    default_schedule = "logsnr"  # chosen on the tuning split: benchmarks/stoch_defaults.py (issue 12 item 5)

    def __init__(self, eta: float = 1.0, *, lower_order_final: bool = True, count_denoise: bool = True,
                 solver_type: str = "midpoint") -> None:
        self._set_eta(eta)
        self.lower_order_final = check_bool("lower_order_final", lower_order_final)
        self.count_denoise = check_bool("count_denoise", count_denoise)
        self.solver_type = check_solver_type(solver_type)
