"""The one driver loop: every solver, every step, goes through :func:`integrate`.

The loop is only the loop: a time-stepping policy (:mod:`sdekit.stepping`) proposes each step,
the solver takes it, the policy accepts it (or not) and guards against NaN/Inf, and the hooks
run (saved states, callback, progress bar). A fixed grid (:class:`~sdekit.stepping.FixedGrid`)
and an adaptive controller (:class:`~sdekit.stepping.Adaptive`: the grid points become
checkpoints that every sample reaches exactly) are two policies behind one interface, so
saved states, callbacks and the NaN guard behave the same for both. Before any work,
:func:`sdekit.solvers.base.check_solver` checks the solver against the process and the noise.

The exceptions live in :mod:`sdekit.errors` (re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .capture import recompile_budget, step_function
from .errors import AdaptiveStepError, MaxStepsError, NonFiniteError, SamplingError, StepSizeUnderflowError
from .noise import NoiseSource
from .process import Process
from .solvers.base import Solver, check_solver
from .solvers.conditioned import Conditioned
from .stepping import StepPolicy, default_policy

__all__ = ["integrate", "Solution", "StepInfo", "SamplingError", "NonFiniteError", "MaxStepsError",
           "StepSizeUnderflowError", "AdaptiveStepError"]


@dataclass
class StepInfo:
    """What a callback receives after each step (``x`` is a copy the callback may keep)."""

    step: int
    t: float
    x: Tensor
    nfe: int


@dataclass
class Solution:
    """Result of :func:`sdekit.solve`.

    Attributes:
        x: final state (after the optional denoising step).
        nfe: score evaluations used, the denoising step included.
        steps: solver steps taken (adaptive solvers: step attempts, accepted or rejected).
        ts: times of the saved states (float64, CPU), if any were requested.
        xs: saved states stacked along a new first dimension, matching ``ts``.
        stats: step counters: ``accepted`` and ``rejected`` steps (for per-sample step sizes, the
            mean over samples; ``accepted_per_sample`` and ``rejected_per_sample`` give each
            sample's), ``attempts`` (solver calls).
    """

    x: Tensor
    nfe: int
    steps: int
    ts: Tensor | None = None
    xs: Tensor | None = None
    stats: dict[str, Any] = field(default_factory=dict)


#: On CUDA, the fixed-step loop reads its NaN/Inf flags on the host only every this many steps
#: (and at the end), so a step makes no host synchronisation. 1 checks every step.
FINITE_CHECK_EVERY = 32


def _defer_on(device: torch.device) -> bool:
    return device.type == "cuda"


class _Saved:
    """The states kept for ``save_at``, one way for every policy: per checkpoint, the rows that
    reached it (a fixed grid: all rows at once; per-sample adaptive steps: row by row, the rest NaN)."""

    def __init__(self, save_at: Sequence[float] | str | None, grid: Tensor, x: Tensor) -> None:
        self.grid, self.keep, self.xs = grid, _save_indices(save_at, grid), {}
        self.record([(0, None)], x)

    def record(self, reached: Callable[[], list] | list, x: Tensor) -> None:
        if not self.keep:
            return
        for j, rows in (reached() if callable(reached) else reached):
            if j not in self.keep:
                continue
            if rows is None:
                self.xs[j] = x.clone()
            else:
                self.xs.setdefault(j, torch.full_like(x, float("nan")))[rows] = x[rows]

    def into(self, sol: Solution) -> Solution:
        if self.keep:
            idx = sorted(self.xs)
            sol.ts, sol.xs = self.grid[idx].clone(), torch.stack([self.xs[i] for i in idx])
        return sol


def _save_indices(save_at: Sequence[float] | str | None, grid: Tensor) -> dict[int, int]:
    if save_at is None:
        return {}
    if isinstance(save_at, str):
        if save_at != "grid":
            raise ValueError(f"save_at must be 'grid', a sequence of times or None, got {save_at!r}")
        return {i: i for i in range(grid.numel())}
    out = {}
    for j, t in enumerate(save_at):
        i = int(torch.argmin(torch.abs(grid - float(t))))
        out.setdefault(i, j)
    return out


def _progress_bar(progress: bool, total: int | None, solver: Solver) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=solver.name or type(solver).__name__, unit="step")


def integrate(process: Process, solver: Solver, grid: Tensor, x: Tensor, noise: NoiseSource, *,
              save_at: Sequence[float] | str | None = None, callback: Callable[[StepInfo], Any] | None = None,
              progress: bool = False, check_finite: bool = True, condition: Any = None,
              compile: dict | None = None, policy: StepPolicy | None = None) -> Solution:
    """Integrate ``process`` with ``solver`` over the times ``grid`` starting from ``x``.

    Fixed-step solvers take one step per grid interval; adaptive ones (``solver.stepping ==
    "adaptive"``) reach every grid point exactly under their controller (:mod:`sdekit.stepping`).

    Args:
        process: a :class:`~sdekit.process.ReverseProcess` or any object with ``drift``,
            ``diffusion`` and ``nfe`` (the :class:`~sdekit.process.Process` protocol).
        solver: a solver instance.
        grid: 1-D tensor of times (any direction; float64 recommended), on any device.
        x: initial state at ``grid[0]`` (not modified).
        noise: source of the Brownian increments and standard normals.
        save_at: ``"grid"`` to keep every state, or times whose nearest grid states to keep.
        callback: called after each step (adaptive: after each step attempt, accepted or not)
            with a :class:`StepInfo`.
        progress: show a tqdm progress bar.
        check_finite: raise :class:`NonFiniteError` as soon as a state is not finite (adaptive
            solvers reject non-finite steps instead, ending in :class:`StepSizeUnderflowError`).
        condition: a projection applied after every step (inpainting, colorization: see
            :mod:`sdekit.guidance`); the solver is wrapped as ``Conditioned(solver, condition)``.
        compile: ``torch.compile`` options for the step (:mod:`sdekit.capture`); ``None``: eager.
        policy: the time-stepping policy (default: :func:`sdekit.stepping.default_policy`).

    Raises:
        NonFiniteError, MaxStepsError, StepSizeUnderflowError: subclasses of :class:`SamplingError`
            carrying ``step``, ``t`` and the last finite state ``x_last``.
    """
    solver = solver if condition is None else Conditioned(solver, condition)
    check_solver(solver, process, noise)
    step = step_function(compile, solver)  # refuses adaptive solvers
    policy = default_policy(solver, grid) if policy is None else policy
    x, b = x.clone(), x.shape[0]
    ts = grid.to(device=x.device, dtype=x.dtype)
    state = solver.init(process, x, ts[0].expand(b))
    state.setdefault("grid", ts)  # the whole fixed grid, for solvers that plan ahead (lower-order final steps)
    every = FINITE_CHECK_EVERY if _defer_on(x.device) and callback is None else 1
    noise = policy.init(solver, process, x, state, noise, check_finite=check_finite, finite_check_every=every)
    saved, bar, i = _Saved(save_at, policy.grid, x), _progress_bar(progress, policy.total, solver), 0
    try:
        with recompile_budget(compile):
            while not policy.done():
                t0, t1 = policy.propose(x)
                x_new, state, err = step(solver, process, t0, t1, x, state, noise)
                x, state = policy.update(solver, x, x_new, err, state)
                i += 1
                saved.record(policy.reached, x)
                if callback is not None:
                    callback(StepInfo(i, policy.t_now(), x.clone(), process.nfe))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(nfe=process.nfe, refresh=False)
            policy.finish()
    finally:
        if bar is not None:
            bar.close()
    return saved.into(Solution(x=x, nfe=process.nfe, steps=i, stats={**policy.stats(), "attempts": i}))
