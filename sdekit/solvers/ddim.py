"""DDIM (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models") with ``eta``.

From ``x_s`` and Tweedie's ``D = (x_s + sigma_s^2 s)/alpha_s`` with ``eps = (x_s - alpha_s D)/sigma_s``::

    x_t = alpha_t D + sqrt(sigma_t^2 - c^2) eps + c z,   c = eta sigma_t sqrt(1 - e^{-2h}),

``h = lambda_t - lambda_s``. ``eta = 0`` is deterministic DDIM, the first-order exponential
integrator of the probability-flow ODE in log-SNR time (= DPM-Solver++(1), Lu et al. 2022);
``eta = 1`` is the ancestral (DDPM posterior) step. The same formula holds for VP, VE and
sub-VP. It is the ``eta' = -ln(1 - eta^2 (1 - e^{-2h}))/(2h)`` member of the family in
:mod:`sdekit.solvers._exponential` (``eta' -> eta^2`` as ``h -> 0``, so ``lam = eta``).
Order: 1 (ODE, eta = 0); weak order 1 (eta > 0). NFE per step: 1.
"""

from __future__ import annotations

import torch

from ._exponential import ExponentialMultistep
from .base import register


@register
class DDIM(ExponentialMultistep):
    """DDIM with eta (eta=0: first-order exponential integrator of the PF-ODE; 1 NFE/step)."""

    name = "ddim"
    default_stop = 0.4  # tuning split: benchmarks/default_stop.py (results/default_stop-taper.md)
    kind = "ode"
    order = 1.0
    weak_order = 1.0
    stochastic = False
    lam = 0.0
    max_order = 1
    lower_order_final = False
    default_schedule = "karras"  # chosen on the tuning split: benchmarks/tune_defaults.py (issue 12)

    def __init__(self, eta: float = 0.0) -> None:
        self._set_eta(eta)
        self.lam = self.eta  # the rate tends to eta^2 = lam^2 (see the module docstring)
        self.ddim_eta = self.eta
        self.kind = "sde" if self.stochastic else "ode"

    def noise_rate(self, h):
        if not self.stochastic:
            return 0.0
        return -torch.log1p(-(self.ddim_eta ** 2) * -torch.expm1(-2.0 * h)) / (2.0 * h)

    def options(self):
        return {"eta": self.ddim_eta}
