"""Small internal helpers shared by every module (validation and broadcasting)."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import torch
from torch import Tensor


def _is_compiling_fn() -> Any:
    fn = getattr(getattr(torch, "compiler", None), "is_compiling", None)  # torch >= 2.3
    if fn is None:
        from torch import _dynamo

        fn = _dynamo.is_compiling
    return fn


_is_compiling = _is_compiling_fn()


def compiling() -> bool:
    """Whether this code is being traced by ``torch.compile`` (host reads and Python-side dispatch
    would split its graph)."""
    return _is_compiling()


def bcast(c: Tensor | float, x: Tensor) -> Tensor | float:
    """View a per-sample coefficient of shape ``(batch,)`` so it broadcasts against ``x``.

    Python scalars and 0-d tensors pass through unchanged.
    """
    if isinstance(c, Tensor) and c.ndim == 1 and x.ndim > 1:
        return c.view(c.shape[0], *([1] * (x.ndim - 1)))
    return c


def check_real(name: str, value: Any, *, positive: bool = False, nonneg: bool = False,
               finite: bool = True) -> float:
    """Return ``value`` as a float after checking it is a real number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    v = float(value)
    if finite and not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v!r}")
    if positive and not v > 0:
        raise ValueError(f"{name} must be > 0, got {v!r}")
    if nonneg and not v >= 0:
        raise ValueError(f"{name} must be >= 0, got {v!r}")
    return v


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int after checking it is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def as_time(t: Tensor | float, like: Tensor) -> Tensor:
    """Return ``t`` as a tensor of shape ``(batch,)`` on ``like``'s device and dtype."""
    b = like.shape[0]
    if isinstance(t, Tensor):
        t = t.to(device=like.device, dtype=like.dtype)
        if t.ndim == 0:
            return t.expand(b)
        return t
    return torch.full((b,), float(t), device=like.device, dtype=like.dtype)


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` after checking it is a bool (nothing is coerced)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} ({value!r})")
    return value


def check_lam(lam: Any) -> float:
    """Return the reverse-family noise level ``lam`` as a float after checking it is a number in [0, 1]."""
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"lam must be a number in [0, 1], got {lam!r}")
    return float(lam)


def check_buffer(buf: Tensor | None, like: Tensor) -> bool:
    """Whether ``buf`` can be reused as a scratch tensor for ``like`` (same shape, dtype and device)."""
    return buf is not None and buf.shape == like.shape and buf.dtype == like.dtype and buf.device == like.device


def check_not_meta(name: str, device: Any) -> None:
    """Refuse the ``meta`` device (tensors without data) with sdekit context, before any work."""
    if device is not None and torch.device(device).type == "meta":
        raise ValueError(f"{name} is on the meta device, which holds shapes but no data: sdekit cannot sample or "
                         "evaluate there. Materialise the model and inputs on a real device first (e.g. "
                         "model.to_empty(device='cpu') plus loading the weights, or load with a real device_map)")
