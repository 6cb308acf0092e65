"""Fused per-step updates. Every solver forms its update through these primitives.

The torch reference path works in place into a caller-provided ``out`` buffer, so a step
allocates nothing but the score. A Triton path for CUDA tensors can replace these
functions one by one without touching any solver.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .._utils import bcast

__all__ = ["lincomb", "error_norm"]

def lincomb(x: Tensor, a: float | Tensor, terms: Sequence[tuple[float | Tensor, Tensor]],
            out: Tensor | None = None) -> Tensor:
    """Return ``a * x + sum_i b_i * v_i``, written into ``out`` when given.

    Coefficients are Python floats or per-sample tensors of shape ``(batch,)``.
    ``out`` may alias ``x`` but no ``v_i``.
    """
    if out is None:
        out = x * bcast(a, x)
    elif isinstance(a, (int, float)) and a == 1:
        if out is not x:
            out.copy_(x)
    else:
        out = torch.mul(x, bcast(a, x), out=out)
    for b, v in terms:
        if isinstance(b, Tensor):
            out.addcmul_(v, bcast(b, v))
        else:
            out.add_(v, alpha=float(b))
    return out


def error_norm(err: Tensor, x0: Tensor, x1: Tensor, rtol: float, atol: float) -> Tensor:
    """Per-sample scaled RMS norm of an error estimate, shape ``(batch,)``.

    ``sqrt(mean_i (err_i / (atol + rtol * max(|x0_i|, |x1_i|)))^2)`` over all but the batch
    dimension (Hairer, Nørsett & Wanner, Sec. II.4). A step is accepted when it is <= 1.
    """
    scale = torch.maximum(x0.abs(), x1.abs()).mul_(rtol).add_(atol)
    r = (err / scale).reshape(err.shape[0], -1)
    return torch.sqrt((r * r).mean(1))
