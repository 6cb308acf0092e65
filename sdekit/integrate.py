"""The one driver loop: every solver, every step, goes through :func:`integrate`.

It owns stepping over the time grid, the NaN/Inf guard, the progress bar, callbacks,
saved states and NFE bookkeeping. Solvers only implement one step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .noise import NoiseSource, StepNoise
from .solvers.base import Solver

__all__ = ["integrate", "Solution", "StepInfo", "SamplingError", "NonFiniteError"]


class SamplingError(RuntimeError):
    """Base class of numerical faults during a run."""


class NonFiniteError(SamplingError):
    """The state became NaN or Inf.

    Attributes:
        step: 1-based index of the step that produced the non-finite state.
        t: the time that step reached.
        x_last: the last finite state (at the start of that step).
    """

    def __init__(self, step: int, t: float, x_last: Tensor | None, solver: str = "") -> None:
        self.step, self.t, self.x_last = step, t, x_last
        super().__init__(f"non-finite values (NaN/Inf) in the state after step {step} at t={t:.6g}"
                         f"{f' (solver {solver!r})' if solver else ''}; the last finite state is "
                         "available as .x_last")


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
        steps: solver steps taken.
        ts: times of the saved states (float64, CPU), if any were requested.
        xs: saved states stacked along a new first dimension, matching ``ts``.
        stats: extra counters (rejected steps for adaptive solvers, ...).
    """

    x: Tensor
    nfe: int
    steps: int
    ts: Tensor | None = None
    xs: Tensor | None = None
    stats: dict[str, Any] = field(default_factory=dict)


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


def integrate(process: Any, solver: Solver, grid: Tensor, x: Tensor, noise: NoiseSource, *,
              save_at: Sequence[float] | str | None = None, callback: Callable[[StepInfo], Any] | None = None,
              progress: bool = False, check_finite: bool = True) -> Solution:
    """Integrate ``process`` with ``solver`` over the times ``grid`` starting from ``x``.

    Args:
        process: a :class:`~sdekit.process.ReverseProcess` or any object with ``drift``,
            ``diffusion`` and ``nfe``.
        solver: a solver instance.
        grid: 1-D tensor of times (any direction; float64 recommended).
        x: initial state at ``grid[0]``; it is not modified.
        noise: source of the Brownian increments and standard normals.
        save_at: ``"grid"`` to keep every state, or times whose nearest grid states to keep.
        callback: called after each step with a :class:`StepInfo`.
        progress: show a tqdm progress bar.
        check_finite: raise :class:`NonFiniteError` as soon as a state is not finite.
    """
    n = grid.numel() - 1
    ts = grid.to(device=x.device, dtype=x.dtype)
    b = x.shape[0]
    x = x.clone()
    saves = _save_indices(save_at, grid)
    saved: dict[int, Tensor] = {0: x.clone()} if 0 in saves else {}
    state = solver.init(process, x, ts[0].expand(b))
    state.setdefault("grid", ts)  # the whole fixed grid, for solvers that plan ahead (lower-order final steps)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=solver.name or type(solver).__name__, unit="step")
    try:
        for i in range(n):
            t0, t1 = ts[i].expand(b), ts[i + 1].expand(b)
            x_prev = x
            x, state, _ = solver.step(process, t0, t1, x, state, StepNoise(noise, t0, t1, x))
            if check_finite and not bool(torch.isfinite(x).all()):
                raise NonFiniteError(i + 1, float(grid[i + 1]), x_prev.clone(), solver.name)
            if i + 1 in saves:
                saved[i + 1] = x.clone()
            if callback is not None:
                callback(StepInfo(i + 1, float(grid[i + 1]), x.clone(), process.nfe))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(nfe=process.nfe, refresh=False)
    finally:
        if bar is not None:
            bar.close()
    sol = Solution(x=x, nfe=process.nfe, steps=n)
    if saves:
        idx = sorted(saved)
        sol.ts = grid[idx].clone()
        sol.xs = torch.stack([saved[i] for i in idx])
    return sol
