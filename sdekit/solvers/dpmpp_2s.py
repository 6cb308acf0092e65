"""DPM-Solver++(2S): second-order single-step exponential integrator of the PF-ODE
(Lu et al. 2022, "DPM-Solver++", Alg. 1).

Per step ``s -> t`` (``h = lambda_t - lambda_s``): a DDIM stage to ``lambda_s + r h``,
a second data prediction there, then the integral of ``D`` taken exactly over the line
through the two predictions (:mod:`sdekit.solvers._exponential`; the paper approximates
that integral, which is also second order). Order: 2. NFE per step: 2.
"""

from __future__ import annotations

import torch

from .._utils import check_real
from ..kernels import lincomb
from ._exponential import coef_times, data_prediction, log_snr, phi, weights
from .base import Solver, buffer, register, spare


@register
class DPMPP2S(Solver):
    """DPM-Solver++(2S): single-step data-prediction exponential integrator, PF-ODE (order 2, 2 NFE/step)."""

    name = "dpmpp_2s"
    kind = "ode"
    order = weak_order = 2.0
    stochastic = False
    lam = 0.0
    nfe_per_step = 2
    needs_sde = True
    default_schedule = "karras"  # chosen on the tuning split: benchmarks/tune_defaults.py (issue 12)
    default_steps = 10
    needs_finite_log_snr = True  # the stage sits at lambda_0 + r h: undefined from pure noise

    def __init__(self, *, r: float = 0.5) -> None:
        self.r = check_real("r", r)
        if not 0.0 < self.r <= 1.0:
            raise ValueError(f"r (the stage position in log-SNR, as a fraction of the step) must be in (0, 1], got {r}")

    def step(self, process, t0, t1, x, state, noise):
        sde = process.sde
        c0, c1 = coef_times(t0, t1)
        l0, l1 = log_snr(sde, c0), log_snr(sde, c1)
        h = l1 - l0
        cm = sde.t_from_log_snr(l0 + self.r * h)
        tm = cm.to(t0.dtype).expand_as(t0)
        s0 = sde.sigma(c0.to(torch.float64))
        am, sm = sde.alpha(cm), sde.sigma(cm)
        a1, s1 = sde.alpha(c1.to(torch.float64)), sde.sigma(c1.to(torch.float64))
        d0 = data_prediction(process, x, t0, c0, buffer(state, "d0", x))
        (p0,) = phi(self.r * h, 1)
        xm = lincomb(x, (sm / s0).to(x.dtype), [((am * p0).to(x.dtype), d0)], out=buffer(state, "xm", x))
        dm = data_prediction(process, xm, tm, cm, buffer(state, "dm", x))
        w = weights([torch.zeros_like(h), torch.full_like(h, self.r)], phi(h, 2))
        out = lincomb(x, (s1 / s0).to(x.dtype), [((a1 * w[0]).to(x.dtype), d0), ((a1 * w[1]).to(x.dtype), dm)],
                      out=spare(state, x))
        return out, state, None
