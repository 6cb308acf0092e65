"""The one driver loop: every solver, every step, goes through :func:`integrate`.

It owns stepping over the time grid, the NaN/Inf guard, the progress bar, callbacks,
saved states and NFE bookkeeping. Solvers only implement one step.

Adaptive solvers (``solver.adaptive``) run through the same loop: the grid points become
checkpoints that every sample reaches exactly, a :class:`~sdekit.controller.PIController`
(from ``solver.controller()``) proposes each step, and the loop accepts or rejects it, per
sample or for the whole batch. A fixed grid is the special case where every step is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .capture import recompile_budget, step_function
from .noise import BrownianNoise, BrownianPath, NoiseSource
from .solvers.base import Solver

__all__ = ["integrate", "Solution", "StepInfo", "SamplingError", "NonFiniteError", "MaxStepsError",
           "StepSizeUnderflowError"]


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


def _all_finite(x: Tensor) -> bool:
    """Whether every entry of ``x`` is finite: one reduction pass (a NaN/Inf anywhere makes the sum
    non-finite), confirmed entry by entry only when the sum is not finite (it may just overflow)."""
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


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
            if not _all_finite(x):
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


class _AdaptiveRun:
    """Bookkeeping of an adaptive run inside :func:`integrate`: per-sample times, steps and counters."""

    def __init__(self, solver: Solver, grid: Tensor, x: Tensor, noise: NoiseSource, state: dict,
                 process: Any = None) -> None:
        self.ctrl = solver.controller()
        b, dev = x.shape[0], x.device
        self.grid = grid.to(device=dev, dtype=torch.float64)
        self.n = grid.numel() - 1
        self.direction = 1.0 if float(grid[-1]) > float(grid[0]) else -1.0
        self.t = self.grid[0].expand(b).clone()
        self.seg = torch.zeros(b, dtype=torch.long, device=dev)  # samples are between grid[seg] and grid[seg+1]
        f0 = state.get("k") if isinstance(state.get("k"), Tensor) else None
        # deterministic solvers pick the first step from a second drift evaluation (Hairer's rule)
        drift = process.drift if (process is not None and not solver.stochastic and f0 is not None) else None
        self.h = self.ctrl.initial_step(x, f0, abs(float(grid[1]) - float(grid[0])), drift=drift,
                                        t0=self.grid[0].to(x.dtype).expand(b), direction=self.direction)
        self.e_prev = torch.ones(b, dtype=torch.float64, device=dev)
        self.n_acc = torch.zeros(b, dtype=torch.long, device=dev)
        self.n_rej = torch.zeros(b, dtype=torch.long, device=dev)
        self.res = 4 * torch.finfo(x.dtype).eps
        self.nonfinite = False
        if solver.stochastic:
            # a rejected step must be retried on the same Brownian path
            if isinstance(noise, BrownianPath) or (isinstance(noise, BrownianNoise) and not self.ctrl.per_sample):
                self.noise = noise
            else:
                self.noise = BrownianPath(noise)
        else:
            self.noise = noise

    def t_now(self) -> float:
        """Time of the least advanced sample (for messages and callbacks)."""
        return float(self.t.min() if self.direction > 0 else self.t.max())

    def propose(self, x: Tensor, step: int) -> tuple[Tensor, Tensor]:
        self.active = self.seg < self.n
        self.t_stop = self.grid[(self.seg + 1).clamp(max=self.n)]
        remaining = (self.t_stop - self.t).abs()
        hh = torch.where(self.active, torch.minimum(self.h, remaining), torch.zeros_like(self.h))
        h_min = torch.clamp(self.res * self.t.abs(), min=self.ctrl.h_min)
        under = self.active & (hh < h_min) & (hh < remaining)
        if bool(under.any()):
            why = " after non-finite values in the last attempt" if self.nonfinite else ""
            raise StepSizeUnderflowError(
                f"adaptive step size underflow{why}: h={float(hh[under].min()):.3g} at t={self.t_now():.6g} "
                f"(step {step}); loosen rtol/atol or check score_fn there. The last finite state is .x_last",
                step, self.t_now(), x.clone())
        self.hh = hh
        self.t1 = torch.where(hh >= remaining, self.t_stop, self.t + self.direction * hh)
        return self.t.to(x.dtype), self.t1.to(x.dtype)

    def update(self, solver: Solver, x: Tensor, x_new: Tensor, err: Tensor | None,
               state: dict) -> tuple[Tensor, dict, Tensor]:
        if err is None:
            raise TypeError(f"adaptive solver {solver.name!r} returned no error estimate")
        b = x.shape[0]
        e = self.ctrl.norm(err, x, x_new).to(torch.float64)
        finite = torch.isfinite(x_new.reshape(b, -1)).all(1)
        self.nonfinite = not bool(finite.all())
        acc = (e <= 1.0) & finite & self.active
        if bool(acc.all()):
            x, state = x_new, solver.accept(state, None)
        else:
            m = acc.view(b, *([1] * (x.ndim - 1)))
            x = torch.where(m, x_new, x, out=x_new) if bool(acc.any()) else x
            state = solver.accept(state, acc)
        clipped = self.hh < self.h
        h_new = self.hh * self.ctrl.factor(e, self.e_prev, acc)
        self.h = torch.where(self.active, torch.where(acc & clipped, torch.maximum(self.h, h_new), h_new), self.h)
        self.e_prev = torch.where(acc, e.clamp(min=1e-4), self.e_prev)
        self.t = torch.where(acc, self.t1, self.t)
        reached = acc & (self.t1 == self.t_stop)
        self.seg += reached.long()
        self.n_acc += acc.long()
        self.n_rej += (self.active & ~acc).long()
        forget = getattr(self.noise, "forget", None)
        if forget is not None:
            forget(self.t, self.direction)
        return x, state, reached

    def stats(self) -> dict[str, Any]:
        if self.ctrl.per_sample:
            acc, rej = float(self.n_acc.double().mean()), float(self.n_rej.double().mean())
        else:
            acc, rej = int(self.n_acc[0]), int(self.n_rej[0])
        return {"accepted": acc, "rejected": rej, "accepted_per_sample": self.n_acc.cpu(),
                "rejected_per_sample": self.n_rej.cpu()}


def integrate(process: Any, solver: Solver, grid: Tensor, x: Tensor, noise: NoiseSource, *,
              save_at: Sequence[float] | str | None = None, callback: Callable[[StepInfo], Any] | None = None,
              progress: bool = False, check_finite: bool = True, condition: Any = None,
              compile: dict | None = None) -> Solution:
    """Integrate ``process`` with ``solver`` over the times ``grid`` starting from ``x``.

    Fixed-step solvers take one step per grid interval. Adaptive solvers (``solver.adaptive``)
    reach every grid point exactly with steps chosen by their controller (each sample its own
    steps when the controller is per-sample); a stochastic adaptive solver draws its noise from
    a Brownian path that a retried step queries again (``noise`` itself when it is a
    :class:`~sdekit.noise.BrownianPath`, or a :class:`~sdekit.noise.BrownianNoise` with a shared
    step; otherwise a :class:`~sdekit.noise.BrownianPath` drawing its normals from ``noise``).

    Args:
        process: a :class:`~sdekit.process.ReverseProcess` or any object with ``drift``,
            ``diffusion`` and ``nfe``.
        solver: a solver instance.
        grid: 1-D tensor of times (any direction; float64 recommended), on any device.
        x: initial state at ``grid[0]``; it is not modified.
        noise: source of the Brownian increments and standard normals.
        save_at: ``"grid"`` to keep every state, or times whose nearest grid states to keep.
        callback: called after each step (adaptive: after each step attempt, accepted or not)
            with a :class:`StepInfo`.
        progress: show a tqdm progress bar.
        check_finite: raise :class:`NonFiniteError` as soon as a state is not finite (adaptive
            solvers reject non-finite steps instead, ending in :class:`StepSizeUnderflowError`).
        condition: an object whose ``apply(process, x, t0, t1, noise) -> x`` projects the state after
            every step (inpainting, colorization: see :mod:`sdekit.guidance`); fixed-step solvers only.
        compile: ``torch.compile`` options for the step (see :mod:`sdekit.capture`); ``None`` runs
            eagerly. Fixed-step solvers only.

    Raises:
        NonFiniteError, MaxStepsError, StepSizeUnderflowError: subclasses of :class:`SamplingError`
            carrying ``step``, ``t`` and the last finite state ``x_last``.
    """
    n = grid.numel() - 1
    ts = grid.to(device=x.device, dtype=x.dtype)
    grid = grid.detach().cpu()  # read on the host (times for callbacks, errors, saves): one copy, not one per step
    b = x.shape[0]
    x = x.clone()
    saves = _save_indices(save_at, grid)
    saved: dict[int, Tensor] = {0: x.clone()} if 0 in saves else {}
    state = solver.init(process, x, ts[0].expand(b))
    state.setdefault("grid", ts)  # the whole fixed grid, for solvers that plan ahead (lower-order final steps)
    # adaptive solvers with a controller step under it; others (torchdiffeq) take one step per interval
    run = (_AdaptiveRun(solver, grid, x, noise, state, process)
           if solver.adaptive and hasattr(solver, "controller") else None)
    if run is not None:
        if condition is not None:
            raise ValueError(f"condition= is not supported with the adaptive solver {solver.name!r}; "
                             "use a fixed-step solver")
        noise = run.noise
    step = step_function(compile, solver)  # refuses adaptive solvers
    guard = _FiniteGuard(check_finite and run is None, x, grid, n, solver.name, deferrable=callback is None)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n if run is None else None, desc=solver.name or type(solver).__name__, unit="step")
    i = 0  # steps taken (fixed grid: index of the current grid point)
    try:
        with recompile_budget(compile):
            while True:
                if run is None:
                    if i == n:
                        break
                    t0, t1 = ts[i].expand(b), ts[i + 1].expand(b)
                else:
                    if not bool((run.seg < n).any()):
                        break
                    if i >= run.ctrl.max_steps:
                        raise MaxStepsError(f"adaptive solver {solver.name!r} reached max_steps={run.ctrl.max_steps} "
                                            f"at t={run.t_now():.6g} before t={float(grid[-1]):.6g}; raise max_steps "
                                            "or loosen rtol/atol. The last state is .x_last", i, run.t_now(), x.clone())
                    t0, t1 = run.propose(x, i + 1)
                x_prev = x
                x, state, err = step(solver, process, t0, t1, x, state, noise)
                i += 1
                if run is None:
                    if condition is not None:
                        x = condition.apply(process, x, t0, t1, noise)
                    guard.after_step(i - 1, x, x_prev)
                    if i in saves:
                        saved[i] = x.clone()
                    t_done = float(grid[i])
                else:
                    x, state, reached = run.update(solver, x_prev, x, err, state)
                    if saves and bool(reached.any()):
                        for j in torch.unique(run.seg[reached]).tolist():
                            if j in saves:
                                rows = reached & (run.seg == j)
                                saved.setdefault(j, torch.full_like(x, float("nan")))[rows] = x[rows]
                    t_done = run.t_now()
                if callback is not None:
                    callback(StepInfo(i, t_done, x.clone(), process.nfe))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(nfe=process.nfe, refresh=False)
            if run is None:
                guard.flush(n)
    finally:
        if bar is not None:
            bar.close()
    sol = Solution(x=x, nfe=process.nfe, steps=i)
    sol.stats = {"accepted": n, "rejected": 0} if run is None else run.stats()
    sol.stats["attempts"] = i
    if saves:
        idx = sorted(saved)
        sol.ts = grid[idx].clone()
        sol.xs = torch.stack([saved[i] for i in idx])
    return sol
