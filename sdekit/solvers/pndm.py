"""PNDM: pseudo numerical methods on the DDIM transfer (Liu et al. 2022, "Pseudo Numerical Methods
for Diffusion Models on Manifolds", PRK warm-up + PLMS; diffusers' ``PNDMScheduler``).

Every update is DDIM's transfer ``x_s -> x_t`` with a combined noise prediction ``e``::

    T(x_s, s -> t, e) = (alpha_t/alpha_s) x_s + (sigma_t - alpha_t sigma_s/alpha_s) e,

the exact step of the PF-ODE for constant ``eps`` (``eps = -sigma s``). The first three steps are
pseudo Runge–Kutta (PRK): ``e_1 = eps(x_s, s)``, ``e_2 = eps(T(x_s, s -> m, e_1), m)``,
``e_3 = eps(T(x_s, s -> m, e_2), m)``, ``e_4 = eps(T(x_s, s -> t, e_3), t)`` with ``m = (s + t)/2``
in the SDE's time, and ``e = (e_1 + 2 e_2 + 2 e_3 + e_4)/6``. Later steps are pseudo linear
multistep (PLMS): ``e = (55 e_0 - 59 e_{-1} + 37 e_{-2} - 9 e_{-3})/24`` from the predictions at the
last four grid points (the constant-step Adams–Bashforth weights, so meant for uniform grids: the
default schedule), with the lower-order Adams–Bashforth weights while fewer are known.
NFE: 4 on each of the first three steps, then 1 per step (``nfe_for``). Order: measured 2 on VP
(the PRK stages sit at midpoints in ``t``, the transfer is exact in ``sigma/alpha``: the combination
is not the classical fourth-order one for the PF-ODE). Under :func:`~sdekit.score.from_diffusers`
on ``sde.times`` of the scheduler's distinct timesteps (with ``set_alpha_to_one=True``) and
``denoise=False`` it is diffusers' ``PNDMScheduler`` (default ``skip_prk_steps=False``).
"""

from __future__ import annotations

import torch

from ..kernels import lincomb
from ._exponential import coef_times, push_history, take_buffer
from .base import Solver, buffer, register, spare
from .deis import noise_prediction

PRK_STEPS = 3
PLMS = ((1.0,), (1.5, -0.5), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))


@register
class PNDM(Solver):
    """PNDM: 3 pseudo Runge–Kutta warm-up steps (4 NFE each), then PLMS on the DDIM transfer (1 NFE/step)."""

    name = "pndm"
    default_stop = 0.4  # tuning split: benchmarks/default_stop.py (results/default_stop-taper.md)
    kind = "ode"
    order = weak_order = 2.0
    stochastic = False
    lam = 0.0
    nfe_per_step = None  # 4 on the PRK warm-up steps, 1 after: see nfe_for
    needs_sde = True
    default_schedule = "uniform"
    default_steps = 50
    needs_finite_log_snr = True  # the transfer divides by alpha_s

    def nfe_for(self, steps: int) -> int:
        return steps + 3 * min(steps, PRK_STEPS)

    def init(self, process, x, t0):
        return {"hist": [], "i": 0}

    def step(self, process, t0, t1, x, state, noise):
        sde = process.sde
        c0, c1 = coef_times(t0, t1)
        c0d, c1d = c0.to(torch.float64), c1.to(torch.float64)
        a0, s0, a1, s1 = sde.alpha(c0d), sde.sigma(c0d), sde.alpha(c1d), sde.sigma(c1d)
        k1 = s1 - a1 * s0 / a0  # the transfer's weight on e, s -> t
        e0 = noise_prediction(process, x, t0, c0, take_buffer(state, x))
        hist = [(None, e0)] + state["hist"]
        if state["i"] < PRK_STEPS:
            cm = 0.5 * (c0d + c1d)
            tm = cm.to(t0.dtype).expand_as(t0)
            am, sm = sde.alpha(cm), sde.sigma(cm)
            qm, km = (am / a0).to(x.dtype), (sm - am * s0 / a0).to(x.dtype)
            xa = lincomb(x, qm, [(km, e0)], out=buffer(state, "xa", x))
            e1 = noise_prediction(process, xa, tm, cm, buffer(state, "e1", x))
            xa = lincomb(x, qm, [(km, e1)], out=buffer(state, "xa", x))
            e2 = noise_prediction(process, xa, tm, cm, buffer(state, "e2", x))
            xa = lincomb(x, (a1 / a0).to(x.dtype), [(k1.to(x.dtype), e2)], out=buffer(state, "xa", x))
            e3 = noise_prediction(process, xa, t1, c1, buffer(state, "e3", x))
            terms = [((k1 * w).to(x.dtype), e) for w, e in ((1 / 6, e0), (1 / 3, e1), (1 / 3, e2), (1 / 6, e3))]
        else:
            ws = PLMS[min(len(hist), len(PLMS)) - 1]
            terms = [((k1 * w).to(x.dtype), e) for w, (_, e) in zip(ws, hist)]
        out = lincomb(x, (a1 / a0).to(x.dtype), terms, out=spare(state, x))
        push_history(state, hist, len(PLMS) - 1)
        state["i"] += 1
        return out, state, None
