"""UniPC: unified predictor–corrector for the PF-ODE (Zhao et al. 2023, "UniPC: A Unified
Predictor-Corrector Framework for Fast Sampling of Diffusion Models"), data prediction.

Each step ``s -> t`` evaluates ``D`` once at ``(x_s, s)``. That value first *corrects* the
previous step (UniC: the exponential Adams–Moulton step through the previous points and
the new one, ``r = 1``), then *predicts* ``x_t`` from the corrected ``x_s`` (UniP: the
exponential Adams–Bashforth step through ``predictor_order`` points); the corrector costs
no extra NFE. Weights come from :mod:`sdekit.solvers._exponential`; with two points
(UniP-2, UniC-1) UniPC replaces the exact ``phi_1(h)`` by ``B(h)/2`` with
``B(h) = h`` (``variant="bh1"``) or ``B(h) = 1 - e^{-h}`` (``"bh2"``), as in the paper.
Warm-up with lower orders; on grids of fewer than 15 steps the last steps drop order
(``lower_order_final``). The last step is not corrected (that would cost an NFE).

Order: ``predictor_order + 1`` with the corrector, ``predictor_order`` without.
NFE per step: 1.
"""

from __future__ import annotations

import torch

from .._utils import check_int
from ..kernels import lincomb
from ._exponential import (
    HistoryMultistep,
    check_bool,
    coef_times,
    data_prediction,
    from_pure_noise,
    log_snr,
    phi,
    push_history,
    take_buffer,
    weights,
)
from .base import buffer, register, spare
from .runge_kutta import carry, state_update


@register
class UniPC(HistoryMultistep):
    """UniPC predictor–corrector (bh1/bh2), data prediction in log-SNR time (order p+1, 1 NFE/step)."""

    name = "unipc"
    default_stop = 0.3  # tuning split: benchmarks/default_stop.py (results/default_stop-taper.md)
    kind = "ode"
    order = weak_order = 4.0  # (the default predictor_order=3 with the corrector; set per instance)
    stochastic = False
    lam = 0.0
    nfe_per_step = 1
    needs_sde = True
    default_steps = 20
    default_schedule = "logsnr"  # tuning split: benchmarks/tune_defaults.py (karras scores better but
    # is pre-asymptotic at 32-128 steps on the cosine SDE: tests/test_exponential.py order test)

    # predictor_order=3 (UniPC's choice for unconditional sampling; not numerically diffusers' solver_order=3,
    # 2% apart at 10 steps, whose default is 2: tests/test_parity_diffusers.py pins 2) since the fifth round.
    # With the stop-short default grid, on the tuning split its ODE-map error is 0.64-0.92x order 2's at 6-20
    # NFE and 0.14-0.60x at 30-50, FD within 1.05x (benchmarks/results/default_stop-unipc-order.md).
    # DPM-Solver++ advises order 2 under strong guidance: pass predictor_order=2 there.
    def __init__(self, *, predictor_order: int = 3, variant: str = "bh2", corrector: bool = True,
                 lower_order_final: bool = True) -> None:
        self.predictor_order = check_int("predictor_order", predictor_order, minimum=1)
        if self.predictor_order > 3:
            raise ValueError(f"predictor_order must be 1, 2 or 3, got {predictor_order}")
        if variant not in ("bh1", "bh2"):
            raise ValueError(f"variant must be 'bh1' or 'bh2', got {variant!r}")
        self.variant = variant
        self.corrector = check_bool("corrector", corrector)
        self.lower_order_final = check_bool("lower_order_final", lower_order_final)
        self.order = self.weak_order = float(self.predictor_order + (1 if self.corrector else 0))

    def _weights(self, r: list[torch.Tensor], h: torch.Tensor) -> list[torch.Tensor]:
        phis = phi(h, len(r))
        if len(r) == 2:
            phis[1] = 0.5 * (h if self.variant == "bh1" else phis[0])
        return weights(r, phis)

    def _terms(self, sde, x, cs, ct, ls, lt, points):
        """Increment terms of the exponential Adams step from ``(x, s)`` to ``t`` through the ``(lambda, D)``
        ``points``; the decay's change ``sigma_t/sigma_s - 1`` (float64) is the term in ``x`` itself."""
        h = lt - ls
        w = self._weights([(lj - ls) / h for lj, _ in points], h)
        ct64 = ct.to(torch.float64)
        a1, s1, s0 = sde.alpha(ct64), sde.sigma(ct64), sde.sigma(cs.to(torch.float64))
        return [((s1 / s0 - 1.0).to(x.dtype), x)] + [((a1 * wj).to(x.dtype), dj) for wj, (_, dj) in zip(w, points)]

    def step(self, process, t0, t1, x, state, noise):
        sde = process.sde
        c0, c1 = coef_times(t0, t1)
        l0, l1 = log_snr(sde, c0), log_snr(sde, c1)
        d0 = data_prediction(process, x, t0, c0, take_buffer(state, x))
        start = state.get("start")
        if start is None:
            start = state["start"] = x.clone()
        elif self.corrector:  # UniC: redo the previous step with the new point at r = 1 (ping-pong buffers)
            prev = state["hist"][:state["n_prev"]]
            # the corrected states are the solution's chain: compensated updates (runge_kutta.state_update)
            corrected = state_update(state, start, self._terms(sde, start, state["c_prev"], c0, prev[0][0], l0,
                                                               prev + [(l0, d0)]),
                                     out=buffer(state, "start_free", start))  # ping-pong: out may not alias x
            state["start"], state["start_free"], start = corrected, start, corrected
        else:
            start.copy_(x)
        hist, n = self.new_point(state, (l0, d0), self.predictor_order)
        terms = self._terms(sde, start, c0, c1, l0, l1, hist[:n])
        comp = carry(state, start)
        out = lincomb(start, 1.0, terms + ([] if comp is None else [(1.0, comp)]), out=spare(state, x))
        state["c_prev"], state["n_prev"] = c0, n
        if from_pure_noise(process, t0, state):  # nothing to correct with a point at lambda = -inf
            hist = hist[1:]
            del state["start"]
        push_history(state, hist, self.predictor_order)
        state["i"] += 1
        return out, state, None
