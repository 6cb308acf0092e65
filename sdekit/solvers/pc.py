"""Predictor–corrector sampling (Song et al. 2021, Algorithm 1): a composition, not a loop.

Each step runs ``corrector_steps`` corrector moves at ``t0`` and then one predictor step
``t0 -> t1`` (the paper's order). Any registered predictor works with any corrector.
NFE per step: predictor's + ``corrector_steps``. Order: the predictor's.

The predictor must be a fixed-step solver: an adaptive one (``ode_adaptive``, ``sde_adaptive``,
``torchdiffeq``) is refused, since its error control cannot see the corrector's moves. The
predictor's state receives the driver's grid (``state["grid"]``), so predictors that plan ahead
(``edm_heun`` with churn, lower-order final steps of the multistep methods) work inside ``pc``.
"""

from __future__ import annotations

from typing import Any

from .._utils import check_int
from .base import Corrector, Solver, register, resolve, resolve_corrector, share_grid


@register
class PredictorCorrector(Solver):
    """Predictor–corrector: corrector moves at t0, then a predictor step (Song et al. 2021)."""

    name = "pc"
    needs_sde = True  # with the default corrector (langevin); set per instance

    def __init__(self, predictor: str | type | Solver = "reverse_diffusion",
                 corrector: str | type | Corrector | None = "langevin", *, snr: float | None = None,
                 corrector_steps: int = 1, predictor_options: dict[str, Any] | None = None) -> None:
        try:
            self.predictor = resolve(predictor, **(predictor_options or {}))
        except (TypeError, ValueError) as e:
            if type(e) not in (TypeError, ValueError):
                raise
            raise type(e)(f"predictor: {e}") from None
        if isinstance(self.predictor, PredictorCorrector):
            raise ValueError("predictor must not itself be a predictor-corrector solver")
        if self.predictor.adaptive:
            raise ValueError(f"predictor {self.predictor.name!r} is adaptive: pc takes corrector moves between fixed "
                             "steps, which its error control cannot see; use a fixed-step predictor (e.g. "
                             f"'reverse_diffusion', 'ode_rk4') or solver={self.predictor.name!r} without pc")
        self.corrector = resolve_corrector(corrector, **({} if snr is None else {"snr": snr}))
        self.corrector_steps = check_int("corrector_steps", corrector_steps, minimum=0)
        self.snr = getattr(self.corrector, "snr", None)
        self.lam = self.predictor.lam
        self.order = self.predictor.order
        self.weak_order = self.predictor.weak_order
        n_corr = self.corrector_steps if self.corrector is not None else 0
        self.stochastic = self.predictor.stochastic or n_corr > 0
        self.kind = "sde" if self.stochastic else "ode"
        self.needs_sde = self.predictor.needs_sde or (n_corr > 0 and self.corrector.needs_sde)
        self.needs_levy_area = self.predictor.needs_levy_area
        self.nfe_per_step = self.predictor.nfe_per_step + n_corr

    def init(self, process, x, t0):
        # one state per corrector move, so ping-pong buffers never overwrite this step's input
        return {"predictor": self.predictor.init(process, x, t0),
                "corrector": [{} for _ in range(self.corrector_steps)]}

    def nfe_for(self, steps: int) -> int:
        n_corr = self.corrector_steps if self.corrector is not None else 0
        return self.predictor.nfe_for(steps) + steps * n_corr

    def step(self, process, t0, t1, x, state, noise):
        share_grid(state, state["predictor"])
        if self.corrector is not None:
            for cstate in state["corrector"]:
                x = self.corrector.correct(process, t0, t1, x, cstate, noise)
        x, state["predictor"], err = self.predictor.step(process, t0, t1, x, state["predictor"], noise)
        return x, state, err

    def __repr__(self) -> str:
        return (f"PredictorCorrector(predictor={self.predictor!r}, corrector={self.corrector!r}, "
                f"corrector_steps={self.corrector_steps})")
