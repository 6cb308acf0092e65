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

import torch
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


_TOLERANCE_ERROR: type | None = None


def tolerance_error() -> type:
    """``ToleranceError``: a ``ValueError`` (bad input) that is also a
    :class:`~sdekit.integrate.SamplingError` (the run could not have reached the end), raised by
    :func:`check_tolerances` before any work."""
    global _TOLERANCE_ERROR
    if _TOLERANCE_ERROR is None:
        from ..integrate import SamplingError  # here, not at the top: the driver imports the solvers

        _TOLERANCE_ERROR = type("ToleranceError", (SamplingError, ValueError),
                                {"__module__": __name__, "__doc__": tolerance_error.__doc__})
    return _TOLERANCE_ERROR


def check_tolerances(solver: Solver, grid: Tensor, dtype: torch.dtype) -> None:
    """Refuse, before any work, tolerances an adaptive run cannot meet (no-op for other solvers).

    Raises :func:`tolerance_error` (a ``ValueError`` and a ``SamplingError``) when:

    - Both ``rtol`` and ``atol`` below ``8 eps`` of the state's dtype: the error estimate of a
      step cannot fall below rounding, so the run would shrink its steps to underflow (float32
      with ``rtol = atol = 1e-13`` ground for 76-98 s before ``MaxStepsError``).
    - A stochastic adaptive solver whose local error shrinks like ``h^1.5`` (the Brownian term)
      needs about ``span / tol^(2/3)`` steps; more than ``10 max_steps`` is refused (float64
      ``sde_adaptive`` at ``1e-13`` needs ~5e8 steps: it ground for > 300 s).
    """
    if not isinstance(solver, AdaptiveSolver) or not dtype.is_floating_point:
        return
    floor = 8 * torch.finfo(dtype).eps
    if solver.rtol < floor and solver.atol < floor:
        raise tolerance_error()(
            f"rtol={solver.rtol:g} and atol={solver.atol:g} are below what the state's dtype {dtype} resolves "
            f"(8 eps = {floor:.3g}): a step's error estimate cannot fall below rounding, so the adaptive solver "
            f"{solver.name!r} would shrink its steps until it fails; use rtol >= {floor:.3g} or a float64 state")
    if solver.stochastic:
        tol = max(solver.rtol, solver.atol)
        span = abs(float(grid[0]) - float(grid[-1]))
        need = span / tol ** (2.0 / 3.0)
        if need > 10 * solver.max_steps:
            raise tolerance_error()(
                f"rtol={solver.rtol:g}, atol={solver.atol:g} would need ~{need:.2g} steps of the stochastic "
                f"adaptive solver {solver.name!r} over [{float(grid[-1]):.3g}, {float(grid[0]):.3g}] (its local "
                f"error shrinks like h^1.5), far more than max_steps={solver.max_steps}; loosen rtol/atol (e.g. "
                f">= {(span / solver.max_steps) ** 1.5:.2g})")
