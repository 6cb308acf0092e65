"""The step-size controller of adaptive solvers: a PI controller on a mixed abs/rel error norm.

The controller owns the tolerances and the next step size; it never evaluates a drift.
After a step of size ``h`` with scaled error ``E`` (accept when ``E <= 1``) it proposes::

    h_next = h * clip(safety * E^(-alpha) * E_prev^(beta), factor_min, factor_max)   (accepted)
    h_next = h * clip(safety * E^(-alpha), factor_min, 1)                            (rejected)

``E_prev`` is the error of the last accepted step. With ``beta = 0`` this is the classical
integral (I) controller; the default exponents ``alpha = 0.7/k, beta = 0.4/k`` (``k`` = the
order of the error estimate plus one) are the PI.3.4 controller of Gustafsson (1991), see
Hairer & Wanner, *Solving ODEs II*, Sec. IV.2. The error norm is the scaled RMS norm of
:func:`sdekit.kernels.error_norm` (or, with ``combine="max"``, the scale
``max(atol, rtol |x|)`` of Jolicoeur-Martineau et al. 2021), per sample, or pooled over the batch (``per_sample=False``,
which equals the RMS norm over the flattened state that scipy and torchdiffeq use).

:class:`StepSizeController` is the interface :class:`sdekit.stepping.Adaptive` uses; any object
with it (a PID controller, a controller with other limits) plugs in as
``integrate(..., policy=Adaptive(grid, my_controller))`` or through an adaptive solver's
``controller()`` method, without editing the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import Tensor

from ._utils import check_bool, check_int, check_real
from .kernels import error_norm

__all__ = ["PIController", "StepSizeController"]


class StepSizeController(Protocol):
    """What :class:`sdekit.stepping.Adaptive` asks of a step-size controller (all tensors ``(batch,)``).

    Attributes:
        per_sample: every sample its own step (else one step shared by the batch).
        h_min: the smallest step allowed before :class:`~sdekit.errors.StepSizeUnderflowError`.
        max_steps: the most step attempts before :class:`~sdekit.errors.MaxStepsError`.
    """

    per_sample: bool
    h_min: float
    max_steps: int

    def initial_step(self, x: Tensor, f0: Tensor | None, span: float, *,
                     drift: Callable[[Tensor, Tensor], Tensor] | None = None, t0: Tensor | None = None,
                     direction: float = -1.0) -> Tensor:
        """The first step size per sample (float64); ``f0`` is the solver's initial derivative or ``None``."""
        ...

    def norm(self, err: Tensor, x0: Tensor, x1: Tensor) -> Tensor:
        """The scaled error of a step (accept where ``<= 1``)."""
        ...

    def factor(self, e: Tensor, e_prev: Tensor, accepted: Tensor) -> Tensor:
        """The factor from this step's size to the next (``e_prev``: the last accepted step's error)."""
        ...


@dataclass
class PIController:
    """Tolerances, step-size limits and the PI update rule (see the module docstring).

    Args:
        rtol, atol: relative and absolute tolerances (``atol`` may be 0 when ``rtol > 0``).
        err_order: order of the embedded error estimate (its local error is ``O(h^(err_order+1))``).
        per_sample: give every sample its own step size (error norm per sample) instead of one
            shared step (error pooled over the batch).
        combine: ``"sum"`` scales by ``atol + rtol*|x|`` (Hairer), ``"max"`` by ``max(atol, rtol*|x|)``
            (Jolicoeur-Martineau et al. 2021).
        safety: safety factor of the update.
        alpha, beta: exponents of the current and previous error (default ``0.7/k``, ``0.4/k``).
        factor_min, factor_max: bounds of the step-size change per step.
        h0: first step size as a fraction-free absolute value (default: chosen from the initial
            derivative when the solver provides one, else 1% of the time span).
        h_min: the smallest step size allowed before :class:`StepSizeUnderflowError` (it is also
            never smaller than the resolution of the state's dtype at the current time).
        max_steps: the most step attempts (accepted + rejected, batched calls) before
            :class:`MaxStepsError`.
    """

    rtol: float = 1e-5
    atol: float = 1e-5
    err_order: int = 4
    per_sample: bool = False
    combine: str = "sum"
    safety: float = 0.9
    alpha: float | None = None
    beta: float | None = None
    factor_min: float = 0.2
    factor_max: float = 10.0
    h0: float | None = None
    h_min: float = 0.0
    max_steps: int = 10_000

    def __post_init__(self) -> None:
        self.rtol = check_real("rtol", self.rtol, nonneg=True)
        self.atol = check_real("atol", self.atol, nonneg=True)
        if self.rtol == 0 and self.atol == 0:
            raise ValueError("rtol and atol cannot both be 0")
        self.err_order = check_int("err_order", self.err_order, minimum=0)
        check_bool("per_sample", self.per_sample)
        if self.combine not in ("sum", "max"):
            raise ValueError(f"combine must be 'sum' or 'max', got {self.combine!r}")
        self.safety = check_real("safety", self.safety, positive=True)
        if self.safety > 1:
            raise ValueError(f"safety must be in (0, 1], got {self.safety}")
        k = self.err_order + 1
        self.alpha = 0.7 / k if self.alpha is None else check_real("alpha", self.alpha, positive=True)
        self.beta = 0.4 / k if self.beta is None else check_real("beta", self.beta, nonneg=True)
        self.factor_min = check_real("factor_min", self.factor_min, positive=True)
        self.factor_max = check_real("factor_max", self.factor_max, positive=True)
        if not self.factor_min < 1 < self.factor_max:
            raise ValueError(f"need factor_min < 1 < factor_max, got {self.factor_min}, {self.factor_max}")
        if self.h0 is not None:
            self.h0 = check_real("h0", self.h0, positive=True)
        self.h_min = check_real("h_min", self.h_min, nonneg=True)
        self.max_steps = check_int("max_steps", self.max_steps, minimum=1)

    def _norm(self, err: Tensor, x0: Tensor, x1: Tensor) -> Tensor:
        if self.combine == "sum":
            return error_norm(err, x0, x1, self.rtol, self.atol)
        # the mixed tolerance of Jolicoeur-Martineau et al. (2021): max(atol, rtol * max(|x0|, |x1|))
        scale = torch.maximum(x0.abs(), x1.abs()).mul_(self.rtol).clamp_(min=self.atol)
        r = (err / scale).reshape(err.shape[0], -1)
        return torch.sqrt((r * r).mean(1))

    def norm(self, err: Tensor, x0: Tensor, x1: Tensor) -> Tensor:
        """Scaled error of a step, shape ``(batch,)`` (pooled into every entry when not per-sample)."""
        e = self._norm(err, x0, x1)
        if not self.per_sample:
            e = torch.sqrt((e * e).mean()).expand(e.shape[0])
        return e

    def _pooled(self, v: Tensor, x: Tensor) -> Tensor:
        """Scaled RMS norm of ``v`` per sample (float64), pooled over the batch when not per-sample."""
        d = self._norm(v, x, x).to(torch.float64)
        return d if self.per_sample else torch.sqrt((d * d).mean()).expand(d.shape[0])

    def initial_step(self, x: Tensor, f0: Tensor | None, span: float, *,
                     drift: Callable[[Tensor, Tensor], Tensor] | None = None, t0: Tensor | None = None,
                     direction: float = -1.0) -> Tensor:
        """First step size per sample (float64).

        ``h0`` when given. Otherwise the rule of Hairer, Nørsett & Wanner (*Solving ODEs I*, II.4) from
        the scaled norms ``d0 = ||x||``, ``d1 = ||f0||``: a trial ``h = 0.01 d0 / d1``; with ``drift``
        (deterministic solvers; one more evaluation, counted like any other) the derivative at the
        trial point gives ``d2 = ||f1 - f0|| / h`` and the step ``(0.01 / max(d1, d2))^(1/(p+1))``
        (``p = err_order``), at most ``100 h``. Without ``drift`` (or ``f0``) the trial step, at most
        1% of the span, is used and the controller grows it within a few steps.
        """
        b = x.shape[0]
        if self.h0 is not None:
            return torch.full((b,), min(self.h0, span), dtype=torch.float64, device=x.device)
        if f0 is None:
            return torch.full((b,), 0.01 * span, dtype=torch.float64, device=x.device)
        d0, d1 = self._pooled(x, x), self._pooled(f0, x)
        h = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6 * span), 0.01 * d0 / d1)
        if drift is None or t0 is None:
            return torch.clamp(h, max=0.01 * span)
        h = torch.clamp(h, max=span)
        hx = h.to(x.dtype).view(b, *([1] * (x.ndim - 1)))
        f1 = drift(x + direction * hx * f0, t0 + direction * h.to(t0.dtype))
        d2 = self._pooled(f1 - f0, x) / h
        big = torch.maximum(d1, d2)
        h1 = torch.where(big <= 1e-15, torch.clamp(h * 1e-3, min=1e-6 * span),
                         (0.01 / big.clamp(min=1e-300)) ** (1.0 / (self.err_order + 1)))
        h1 = torch.clamp(torch.minimum(100 * h, h1), max=span)
        return torch.where(torch.isfinite(h1) & (h1 > 0), h1, torch.clamp(h, max=0.01 * span))  # a bad trial point

    def factor(self, e: Tensor, e_prev: Tensor, accepted: Tensor) -> Tensor:
        """Step-size factor per sample given this step's error ``e`` (float64, ``(batch,)``)."""
        e = e.to(torch.float64)
        bad = ~torch.isfinite(e)
        e = torch.clamp(torch.where(bad, torch.ones_like(e), e), min=1e-10)
        f_acc = self.safety * e.pow(-self.alpha) * e_prev.pow(self.beta)
        f_rej = self.safety * e.pow(-self.alpha)
        f = torch.where(accepted, f_acc.clamp(self.factor_min, self.factor_max), f_rej.clamp(self.factor_min, 1.0))
        return torch.where(bad, torch.full_like(f, self.factor_min), f)
