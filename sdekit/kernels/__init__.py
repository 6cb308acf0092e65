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

__all__ = ["lincomb"]

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
