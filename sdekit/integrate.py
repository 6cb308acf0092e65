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
        last = ("the last finite state is available as .x_last" if x_last is not None else
                "the last finite state was not kept (deferred check on CUDA; set "
                "sdekit.integrate.FINITE_CHECK_EVERY = 1 to check, and keep it, every step)")
        super().__init__(f"non-finite values (NaN/Inf) in the state after step {step} at t={t:.6g}"
                         f"{f' (solver {solver!r})' if solver else ''}; {last}")


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


#: On CUDA, the fixed-step loop reads its NaN/Inf flags on the host only every this many steps
#: (and at the end), so a step makes no host synchronisation. 1 checks every step.
FINITE_CHECK_EVERY = 32


def _defer_on(device: torch.device) -> bool:
    return device.type == "cuda"


class _FiniteGuard:
    """The NaN/Inf guard of the fixed-step loop.

    Immediate (the default, and always on CPU or with a callback): check after every step and
    raise naming the step, its ``t`` and the last finite state. Deferred (CUDA tensors,
    ``FINITE_CHECK_EVERY > 1``, no callback): each step records ``isfinite(x).all()`` in a
    device flag; the flags are read every ``FINITE_CHECK_EVERY`` steps and at the end, and
    the first failing step is named (its input state is no longer available).
    """

    def __init__(self, enabled: bool, x: Tensor, grid: Tensor, n: int, solver: str, deferrable: bool) -> None:
        self.enabled, self.grid, self.solver = enabled, grid, solver
        self.deferred = enabled and deferrable and _defer_on(x.device) and FINITE_CHECK_EVERY > 1
        self.every = FINITE_CHECK_EVERY
        self.flags = torch.ones(n, dtype=torch.bool, device=x.device) if self.deferred else None
        self.checked = 0

    def after_step(self, i: int, x: Tensor, x_prev: Tensor) -> None:
        """Check (or record) the state ``x`` reached by step ``i + 1``; ``x_prev`` is its input."""
        if not self.enabled:
            return
        if not self.deferred:
            if not bool(torch.isfinite(x).all()):
                raise NonFiniteError(i + 1, float(self.grid[i + 1]), x_prev.clone(), self.solver)
            return
        self.flags[i].copy_(torch.isfinite(x).all())
        if (i + 1) % self.every == 0:
            self.flush(i + 1)

    def flush(self, upto: int) -> None:
        """Read the flags of the steps not yet checked, up to ``upto``; raise at the first bad one."""
        if not self.deferred or upto <= self.checked:
            return
        window = self.flags[self.checked:upto]
        if not bool(window.all()):
            first = self.checked + int((~window).nonzero()[0, 0])
            raise NonFiniteError(first + 1, float(self.grid[first + 1]), None, self.solver)
        self.checked = upto


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
              progress: bool = False, check_finite: bool = True, condition: Any = None) -> Solution:
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
        condition: an object whose ``apply(process, x, t0, t1, noise) -> x`` projects the state after
            every step (inpainting, colorization: see :mod:`sdekit.guidance`).
    """
    n = grid.numel() - 1
    ts = grid.to(device=x.device, dtype=x.dtype)
    b = x.shape[0]
    x = x.clone()
    saves = _save_indices(save_at, grid)
    saved: dict[int, Tensor] = {0: x.clone()} if 0 in saves else {}
    state = solver.init(process, x, ts[0].expand(b))
    guard = _FiniteGuard(check_finite, x, grid, n, solver.name, deferrable=callback is None)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=solver.name or type(solver).__name__, unit="step")
    try:
        for i in range(n):
            t0, t1 = ts[i].expand(b), ts[i + 1].expand(b)
            x_prev = x
            x, state, _ = solver.step(process, t0, t1, x, state, StepNoise(noise, t0, t1, x))
            if condition is not None:
                x = condition.apply(process, x, t0, t1, noise)
            guard.after_step(i, x, x_prev)
            if i + 1 in saves:
                saved[i + 1] = x.clone()
            if callback is not None:
                callback(StepInfo(i + 1, float(grid[i + 1]), x.clone(), process.nfe))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(nfe=process.nfe, refresh=False)
        guard.flush(n)
    finally:
        if bar is not None:
            bar.close()
    sol = Solution(x=x, nfe=process.nfe, steps=n)
    if saves:
        idx = sorted(saved)
        sol.ts = grid[idx].clone()
        sol.xs = torch.stack([saved[i] for i in idx])
    return sol
