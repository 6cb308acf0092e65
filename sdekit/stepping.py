"""Time-stepping policies: where each step of :func:`sdekit.integrate.integrate` goes.

A policy owns the times of a run and nothing else (it never evaluates a drift except for an
adaptive controller's first-step rule). The driver loop asks it, per step::

    noise = policy.init(solver, process, x, state, noise)   # once; may wrap the noise source
    while not policy.done():
        t0, t1 = policy.propose(x)                           # (batch,) tensors
        x_new, state, err = solver.step(...)
        x, state = policy.update(solver, x, x_new, err, state)   # accept / reject, NaN guard
        ... hooks: policy.reached() (checkpoints for saved states), policy.t_now() (callbacks)
    policy.finish()                                          # end-of-run checks
    policy.stats()                                           # counters for Solution.stats

Two policies ship:

- :class:`FixedGrid`: one step per grid interval, every step accepted. It owns the NaN/Inf
  guard, immediate (raise at the step that produced the non-finite state, with the last
  finite state) or deferred (CUDA: device flags read every few steps, so a step makes no host
  synchronisation).
- :class:`Adaptive`: the grid points are checkpoints that every sample reaches exactly; a
  step-size controller (:class:`sdekit.controller.PIController` or anything with its
  interface, see :class:`sdekit.controller.StepSizeController`) proposes each step, and the
  policy accepts or rejects it, per sample or for the whole batch. A non-finite attempt is
  rejected like any other (the run ends in :class:`~sdekit.errors.StepSizeUnderflowError`
  naming it if it persists), so an accepted state is always finite.

A new policy (a step-to-times schedule, a PID controller, ...) subclasses :class:`StepPolicy`
and is passed as ``integrate(..., policy=...)``; a new step-size rule for the existing
adaptive solvers is a controller returned by their ``controller()`` method. Neither edits
the loop.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .errors import MaxStepsError, NonFiniteError, StepSizeUnderflowError
from .noise import BrownianNoise, BrownianPath, NoiseSource

__all__ = ["StepPolicy", "FixedGrid", "Adaptive", "default_policy", "retry_noise", "all_finite"]


def all_finite(x: Tensor) -> bool:
    """Whether every entry of ``x`` is finite: one reduction pass (a NaN/Inf anywhere makes the sum
    non-finite), confirmed entry by entry only when the sum is not finite (it may just overflow)."""
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def retry_noise(noise: NoiseSource, per_sample: bool) -> NoiseSource:
    """The noise source a stochastic adaptive run draws from: a rejected step must be retried on the
    same Brownian path. ``noise`` itself when it is a :class:`~sdekit.noise.BrownianPath` (or a
    :class:`~sdekit.noise.BrownianNoise` and one step shared by the batch), else a
    :class:`~sdekit.noise.BrownianPath` drawing its normals from ``noise``."""
    if isinstance(noise, BrownianPath) or (isinstance(noise, BrownianNoise) and not per_sample):
        return noise
    return BrownianPath(noise)


class StepPolicy:
    """The interface of a time-stepping policy (see the module docstring).

    Attributes:
        grid: the checkpoint times, 1-D float64 on the CPU (set by the constructor); saved states
            (``save_at``) refer to its indices.
        total: number of steps when known in advance (for the progress bar), else ``None``.
    """

    grid: Tensor
    total: int | None = None

    def init(self, solver: Any, process: Any, x: Tensor, state: dict, noise: NoiseSource, *,
             check_finite: bool = True, finite_check_every: int = 1) -> NoiseSource:
        """Start a run at ``x`` (after ``solver.init``); return the noise source the steps draw from.

        ``check_finite`` turns the NaN/Inf guard on; ``finite_check_every > 1`` lets it read its
        flags on the host only that often (a fixed grid on CUDA).
        """
        raise NotImplementedError

    def done(self) -> bool:
        """Whether every sample has reached the last checkpoint."""
        raise NotImplementedError

    def propose(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The next step ``(t0, t1)``, tensors of shape ``(batch,)`` in ``x``'s dtype."""
        raise NotImplementedError

    def update(self, solver: Any, x: Tensor, x_new: Tensor, err: Tensor | None,
               state: dict) -> tuple[Tensor, dict]:
        """Take the step's result ``x_new`` (from ``x``): return the state to continue from."""
        raise NotImplementedError

    def reached(self) -> list[tuple[int, Tensor | None]]:
        """Checkpoints reached by the last update: ``(grid index, rows)`` with ``rows`` a ``(batch,)``
        mask of the samples that reached it, or ``None`` for all of them. Called only when states
        are saved."""
        raise NotImplementedError

    def t_now(self) -> float:
        """The time reached (the least advanced sample's), for callbacks."""
        raise NotImplementedError

    def finish(self) -> None:
        """End-of-run checks (e.g. the deferred NaN guard's last flags)."""

    def stats(self) -> dict[str, Any]:
        """Step counters: at least ``accepted`` and ``rejected``."""
        raise NotImplementedError


class FixedGrid(StepPolicy):
    """One step per interval of ``grid``, every step accepted; owns the NaN/Inf guard.

    Immediate guard (CPU, a callback, or ``finite_check_every == 1``): check after every step
    and raise :class:`~sdekit.errors.NonFiniteError` naming the step, its ``t`` and the last
    finite state. Deferred: each step records ``isfinite(x).all()`` in a device flag; the flags
    are read every ``finite_check_every`` steps and at the end, and the first failing step is
    named (its input state is no longer available).
    """

    def __init__(self, grid: Tensor) -> None:
        self.grid = grid.detach().cpu()  # read on the host (times for callbacks, errors): one copy
        self.total = self.grid.numel() - 1

    def init(self, solver, process, x, state, noise, *, check_finite=True, finite_check_every=1):
        self.ts = self.grid.to(device=x.device, dtype=x.dtype)
        self.b, self.i, self.solver = x.shape[0], 0, solver.name
        self.check = check_finite
        self.every = finite_check_every if check_finite else 1
        self.flags = torch.ones(self.total, dtype=torch.bool, device=x.device) if self.every > 1 else None
        self.checked = 0
        return noise

    def done(self) -> bool:
        return self.i == self.total

    def propose(self, x):
        return self.ts[self.i].expand(self.b), self.ts[self.i + 1].expand(self.b)

    def update(self, solver, x, x_new, err, state):
        i = self.i
        self.i += 1
        if self.flags is not None:
            self.flags[i].copy_(torch.isfinite(x_new).all())
            if self.i % self.every == 0:
                self._flush(self.i)
        elif self.check and not all_finite(x_new):
            raise NonFiniteError(self.i, float(self.grid[self.i]), x.clone(), self.solver)
        return x_new, state

    def _flush(self, upto: int) -> None:
        """Read the flags of the steps not yet checked, up to ``upto``; raise at the first bad one."""
        if upto <= self.checked:
            return
        window = self.flags[self.checked:upto]
        if not bool(window.all()):
            first = self.checked + int((~window).nonzero()[0, 0])
            raise NonFiniteError(first + 1, float(self.grid[first + 1]), None, self.solver)
        self.checked = upto

    def finish(self) -> None:
        if self.flags is not None:
            self._flush(self.total)

    def reached(self):
        return [(self.i, None)]

    def t_now(self) -> float:
        return float(self.grid[self.i])

    def stats(self):
        return {"accepted": self.total, "rejected": 0}


class Adaptive(StepPolicy):
    """Steps chosen by a step-size controller; every sample reaches every point of ``grid`` exactly.

    Args:
        grid: the checkpoints (any direction).
        controller: a :class:`~sdekit.controller.PIController` or any object with its interface
            (``initial_step``, ``norm``, ``factor``, ``per_sample``, ``h_min``, ``max_steps``).

    The solver must follow the adaptive contract (:class:`~sdekit.solvers.adaptive.AdaptiveSolver`):
    ``step`` returns an error estimate, ``accept(state, mask)`` commits the accepted samples and
    ``initial_derivative(state)`` gives the derivative at the start (or ``None``) for the first
    step size.
    """

    def __init__(self, grid: Tensor, controller: Any) -> None:
        self.grid = grid.detach().cpu()
        self.ctrl = controller

    def init(self, solver, process, x, state, noise, *, check_finite=True, finite_check_every=1):
        b, dev = x.shape[0], x.device
        self.solver = solver.name
        self.g = self.grid.to(device=dev, dtype=torch.float64)
        self.n = self.grid.numel() - 1
        self.direction = 1.0 if float(self.grid[-1]) > float(self.grid[0]) else -1.0
        self.t = self.g[0].expand(b).clone()
        self.seg = torch.zeros(b, dtype=torch.long, device=dev)  # samples are between grid[seg] and grid[seg+1]
        f0 = solver.initial_derivative(state)
        # deterministic solvers pick the first step from a second drift evaluation (Hairer's rule)
        drift = process.drift if (not solver.stochastic and f0 is not None) else None
        self.h = self.ctrl.initial_step(x, f0, abs(float(self.grid[1]) - float(self.grid[0])), drift=drift,
                                        t0=self.g[0].to(x.dtype).expand(b), direction=self.direction)
        self.e_prev = torch.ones(b, dtype=torch.float64, device=dev)
        self.n_acc = torch.zeros(b, dtype=torch.long, device=dev)
        self.n_rej = torch.zeros(b, dtype=torch.long, device=dev)
        self.res = 4 * torch.finfo(x.dtype).eps
        self.nonfinite = False
        self.attempts = 0
        self.noise = retry_noise(noise, self.ctrl.per_sample) if solver.stochastic else noise
        return self.noise

    def done(self) -> bool:
        return not bool((self.seg < self.n).any())

    def t_now(self) -> float:
        return float(self.t.min() if self.direction > 0 else self.t.max())

    def propose(self, x):
        step = self.attempts + 1
        if self.attempts >= self.ctrl.max_steps:
            raise MaxStepsError(f"adaptive solver {self.solver!r} reached max_steps={self.ctrl.max_steps} "
                                f"at t={self.t_now():.6g} before t={float(self.grid[-1]):.6g}; raise max_steps "
                                "or loosen rtol/atol. The last state is .x_last", self.attempts, self.t_now(),
                                x.clone())
        self.active = self.seg < self.n
        self.t_stop = self.g[(self.seg + 1).clamp(max=self.n)]
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
        self.attempts = step
        self.hh = hh
        self.t1 = torch.where(hh >= remaining, self.t_stop, self.t + self.direction * hh)
        return self.t.to(x.dtype), self.t1.to(x.dtype)

    def update(self, solver, x, x_new, err, state):
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
        self.just = acc & (self.t1 == self.t_stop)
        self.seg += self.just.long()
        self.n_acc += acc.long()
        self.n_rej += (self.active & ~acc).long()
        forget = getattr(self.noise, "forget", None)
        if forget is not None:
            forget(self.t, self.direction)
        return x, state

    def reached(self):
        if not bool(self.just.any()):
            return []
        return [(j, self.just & (self.seg == j)) for j in torch.unique(self.seg[self.just]).tolist()]

    def stats(self):
        if self.ctrl.per_sample:
            acc, rej = float(self.n_acc.double().mean()), float(self.n_rej.double().mean())
        else:
            acc, rej = int(self.n_acc[0]), int(self.n_rej[0])
        return {"accepted": acc, "rejected": rej, "accepted_per_sample": self.n_acc.cpu(),
                "rejected_per_sample": self.n_rej.cpu()}


def default_policy(solver: Any, grid: Tensor) -> StepPolicy:
    """The policy a solver declares: :class:`Adaptive` under ``solver.controller()`` when
    ``solver.stepping == "adaptive"``, else :class:`FixedGrid` (which includes solvers that are
    adaptive inside one driver step, like the torchdiffeq bridge)."""
    if solver.stepping == "adaptive":
        return Adaptive(grid, solver.controller())
    if solver.stepping != "fixed":
        raise ValueError(f"solver {solver.name!r} declares stepping={solver.stepping!r}; expected 'fixed' or "
                         "'adaptive' (or pass integrate(..., policy=...))")
    return FixedGrid(grid)
