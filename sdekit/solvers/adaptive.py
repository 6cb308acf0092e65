"""Shared base of the adaptive solvers: tolerances, the controller they hand to the driver, and commit.

An adaptive solver's ``step`` returns ``(x1, state, err)`` with ``err`` the raw error estimate
(a tensor like ``x``). The driver scales it with the controller's norm, accepts or rejects the
step (per sample or for the batch), then calls :meth:`AdaptiveSolver.accept` so that the
solver commits the pending parts of its state (an FSAL derivative, say) only where the step
was accepted. ``step`` must therefore leave in ``state`` everything a retry needs.

With ``sdekit.sample``/``solve``, an adaptive solver integrates from ``T`` to ``eps`` in one
segment by default; ``steps=n`` (or an explicit ``schedule``) makes the ``n + 1`` grid times
checkpoints that every sample reaches exactly (for ``save_at``). An ``nfe=`` budget is
rejected with a ``ValueError``: the cost follows from ``rtol``/``atol``; ``max_steps`` bounds it.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from .._utils import check_bool, check_int, check_real
from ..controller import PIController
from .base import Solver


class AdaptiveSolver(Solver):
    """Base class of solvers whose step size is chosen by a :class:`~sdekit.controller.PIController`."""

    adaptive = True
    #: stepped by :class:`sdekit.stepping.Adaptive` under :meth:`controller`.
    stepping = "adaptive"
    #: one segment from T to eps: the controller picks the steps.
    default_steps: ClassVar[int] = 1
    #: how the error scale combines atol and rtol (see :class:`~sdekit.controller.PIController`).
    combine: ClassVar[str] = "sum"

    def _set_tolerances(self, rtol: float, atol: float, per_sample: bool, max_steps: int, h0: float | None,
                        h_min: float, safety: float, alpha: float | None, beta: float | None,
                        factor_min: float, factor_max: float) -> None:
        self.rtol = check_real("rtol", rtol, nonneg=True)
        self.atol = check_real("atol", atol, nonneg=True)
        self.per_sample = check_bool("per_sample", per_sample)
        self.max_steps = check_int("max_steps", max_steps, minimum=1)
        self.h0, self.h_min, self.safety = h0, h_min, safety
        self.alpha, self.beta, self.factor_min, self.factor_max = alpha, beta, factor_min, factor_max
        self.controller()  # validate every option now, before any work

    @property
    def err_order(self) -> int:
        raise NotImplementedError

    def controller(self) -> PIController:
        """A fresh controller configured by this solver's options."""
        return PIController(rtol=self.rtol, atol=self.atol, err_order=self.err_order, per_sample=self.per_sample,
                            combine=self.combine, safety=self.safety, alpha=self.alpha, beta=self.beta,
                            factor_min=self.factor_min, factor_max=self.factor_max, h0=self.h0, h_min=self.h_min,
                            max_steps=self.max_steps)

    def initial_derivative(self, state: dict) -> Tensor | None:
        """The drift at the start of the run if :meth:`init` computed it (for the first step size), else ``None``."""
        return None

    def accept(self, state: dict, accepted: Tensor | None) -> dict:
        """Commit the pending state: ``accepted`` is ``None`` when every sample accepted, else a ``(batch,)`` mask."""
        return state

    def nfe_for(self, steps: int) -> int:
        raise ValueError(f"solver {self.name!r} is adaptive: its NFE follows from rtol/atol, so an nfe= budget has "
                         "no meaning; give rtol=/atol= (and max_steps=) instead, and read Solution.nfe")
