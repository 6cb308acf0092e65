"""Every exception sdekit raises on its own account (bad input is a plain ``TypeError``/``ValueError``).

- :class:`SamplingError` and its family: numerical faults during a run
  (:class:`NonFiniteError`, and for adaptive runs :class:`MaxStepsError` and
  :class:`StepSizeUnderflowError`, both :class:`AdaptiveStepError`). Each carries ``step``,
  ``t`` and the last finite state ``x_last``.
- :class:`ScoreError`: the score function returned something that is not a tensor like ``x``.
- :class:`IncompatibleSolverError`: a solver that cannot integrate the process (or use the
  noise source) it was given, refused before any work.

They are also importable from their historical homes (``sdekit``, ``sdekit.integrate``,
``sdekit.process``).
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["SamplingError", "AdaptiveStepError", "MaxStepsError", "StepSizeUnderflowError", "NonFiniteError",
           "ScoreError", "IncompatibleSolverError", "NoiseCapabilityError"]


class SamplingError(RuntimeError):
    """Base class of numerical faults during a run."""


class AdaptiveStepError(SamplingError):
    """Base class of the faults of adaptive runs; carries ``step``, ``t`` and the last finite state ``x_last``."""

    def __init__(self, message: str, step: int, t: float, x_last: Tensor | None) -> None:
        self.step, self.t, self.x_last = step, t, x_last
        super().__init__(message)


class MaxStepsError(AdaptiveStepError):
    """An adaptive run used ``max_steps`` step attempts before reaching the end time."""


class StepSizeUnderflowError(AdaptiveStepError):
    """The adaptive step size fell below ``h_min`` or the time resolution of the state's dtype."""


class NonFiniteError(SamplingError):
    """The state became NaN or Inf.

    Attributes:
        step: 1-based index of the step that produced the non-finite state.
        t: the time that step reached.
        x_last: the last finite state (at the start of that step).
    """

    def __init__(self, step: int, t: float, x_last: Tensor | None, solver: str = "") -> None:
        self.step, self.t, self.x_last = step, t, x_last
        last = ("the last finite state is available as .x_last" if x_last is not None else
                "the last finite state was not kept (deferred check on CUDA; set "
                "sdekit.integrate.FINITE_CHECK_EVERY = 1 to check, and keep it, every step)")
        super().__init__(f"non-finite values (NaN/Inf) in the state after step {step} at t={t:.6g}"
                         f"{f' (solver {solver!r})' if solver else ''}; {last}")


class ScoreError(ValueError):
    """The score function returned something that is not a tensor like ``x``."""


class IncompatibleSolverError(ValueError):
    """A solver cannot integrate the process it was given (see :func:`sdekit.solvers.base.check_solver`)."""


class NoiseCapabilityError(IncompatibleSolverError, NotImplementedError):
    """The noise source lacks what the solver draws (e.g. space-time Lévy area for ``srk``).

    Also a ``NotImplementedError``: the noise source does not implement that draw.
    """
