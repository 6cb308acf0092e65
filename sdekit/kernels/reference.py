"""Torch reference implementations of the fused per-step primitives.

Every function here is the definition the Triton kernels are tested against. They run
on any device and dtype, update in place into the caller's ``out`` buffer (allocation,
not arithmetic, is the cost of a step on CPU) and support autograd.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .._utils import bcast

__all__ = ["lincomb", "error_norm", "sq_norms", "lincomb_error_norm", "philox_normal"]

def lincomb(x: Tensor, a: float | Tensor, terms: Sequence[tuple[float | Tensor, Tensor]],
            out: Tensor | None = None) -> Tensor:
    """Return ``a * x + sum_i b_i * v_i`` (see :func:`sdekit.kernels.lincomb`).

    The increment ``sum_i b_i v_i`` is accumulated first and ``a * x`` added last, so a state
    update ``x + increment`` is rounded once at the size of ``x`` (the Triton kernel's order).
    """
    terms = list(terms)
    if not terms:
        if out is None:
            return x * bcast(a, x)
        if isinstance(a, (int, float)) and a == 1:
            return out if out is x else out.copy_(x)
        return torch.mul(x, bcast(a, x), out=out)
    # the increment needs a buffer that is none of the inputs: out, unless it aliases x
    acc = out if out is not None and out is not x else None
    (b0, v0), rest = terms[0], terms[1:]
    if acc is None:
        acc = v0 * bcast(b0, v0).to(v0.dtype) if isinstance(b0, Tensor) else v0 * float(b0)
        acc = acc.to(torch.promote_types(acc.dtype, x.dtype))  # mixed dtypes: accumulate in the wider one
    else:
        torch.mul(v0, bcast(b0, v0).to(v0.dtype) if isinstance(b0, Tensor) else float(b0), out=acc)
    for b, v in rest:
        _axpy(acc, b, v)
    if isinstance(a, (int, float)) and a == 1:
        acc.add_(x)
    else:
        _axpy(acc, a, x)
    if out is not None and acc is not out:
        return out.copy_(acc)
    return acc


def _axpy(acc: Tensor, b: float | Tensor, v: Tensor) -> None:
    if isinstance(b, Tensor):
        acc.addcmul_(v, bcast(b.to(v.dtype), v))
    else:
        acc.add_(v, alpha=float(b))


def error_norm(err: Tensor, x0: Tensor, x1: Tensor, rtol: float, atol: float) -> Tensor:
    """Per-sample scaled RMS norm (see :func:`sdekit.kernels.error_norm`)."""
    acc = torch.promote_types(_acc_dtype(err), _acc_dtype(x0))  # float64 if either is, else float32
    err, x0, x1 = err.to(acc), x0.to(acc), x1.to(acc)  # half precision: compute in float32 (no-op otherwise)
    scale = torch.maximum(x0.abs(), x1.abs()).mul_(rtol).add_(atol)
    r = (err / scale).reshape(err.shape[0], -1)
    return torch.sqrt((r * r).mean(1))


def _acc_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def sq_norms(tensors: Sequence[Tensor]) -> Tensor:
    """Per-sample squared Euclidean norms, shape ``(len(tensors), batch)``.

    Accumulated in float32 (float64 for float64 inputs).
    """
    rows = [torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1, dtype=_acc_dtype(v)) for v in tensors]
    return torch.stack(rows).square_()


def lincomb_error_norm(x: Tensor, a: float | Tensor, terms: Sequence[tuple[float | Tensor, Tensor]],
                       err_terms: Sequence[tuple[float | Tensor, Tensor]], rtol: float, atol: float,
                       out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Candidate ``x1 = a x + sum b_i v_i`` and the scaled norm of ``err = sum e_j w_j`` (see the dispatcher)."""
    x1 = lincomb(x, a, terms, out=out)
    acc = _acc_dtype(x)  # like the kernel, sum the error in float32 for half inputs (bfloat16 loses ~3% otherwise)
    (e0, w0), rest = err_terms[0], err_terms[1:]
    err = lincomb(w0.to(acc), e0, [(e, w.to(acc)) for e, w in rest])
    return x1, error_norm(err, x, x1, rtol, atol)


# ---------------------------------------------------------------- Philox4x32-10 (counter-based RNG)
# Pure torch on int64 tensors; bit-identical integers to the Triton kernel (tl.philox), the same
# uniform and Box-Muller conversions, so the normals agree to float rounding on any device.

_M32 = 0xFFFFFFFF
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85


def _mulhilo(a: int, b: Tensor) -> tuple[Tensor, Tensor]:
    """High and low 32-bit words of ``a * b`` for a 32-bit constant ``a`` and uint32 values ``b`` (int64)."""
    bh, bl = b >> 16, b & 0xFFFF
    lo_part = a * bl  # < 2**48
    hi = (a * bh + (lo_part >> 16)) >> 16
    lo = (a * b) & _M32  # wraps mod 2**64 in two's complement; the low word is exact
    return hi & _M32, lo


def philox4x32(c0: Tensor, c1: Tensor, c2: Tensor, c3: Tensor, seed: int, rounds: int = 10):
    """Philox4x32 (Salmon et al. 2011) on int64 tensors holding uint32 values; key from a 64-bit seed."""
    k0, k1 = seed & _M32, (seed >> 32) & _M32
    for _ in range(rounds):
        hi_b, lo_b = _mulhilo(_ROUND_B, c2)
        hi_a, lo_a = _mulhilo(_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _KEY_A) & _M32, (k1 + _KEY_B) & _M32
    return c0, c1, c2, c3


def uniform_from_u32(r: Tensor) -> Tensor:
    """Map uint32 values (int64) to float32 uniforms in (0, 1): ``((r >> 8) + 0.5) / 2**24``."""
    return ((r >> 8).to(torch.float32) + 0.5) * (1.0 / 16777216.0)


def philox_normal(shape: Sequence[int], seed: int, draw: int, sample_offset: int = 0,
                  device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normals keyed by ``(seed, sample index, draw, element)``: a pure function of those four.

    Element ``j`` of sample ``b`` uses the Philox block ``(j // 2, sample_offset + b, draw, 0)``;
    Box-Muller on its first two words gives the cosine branch for even ``j`` and the sine
    branch for odd ``j``. Computed in float32 (Box-Muller in float64 for float64 output).
    """
    b = shape[0]
    n = 1
    for s in shape[1:]:
        n *= s
    j = torch.arange(n, device=device, dtype=torch.int64)
    c0 = (j >> 1).expand(b, n)
    c1 = (torch.arange(b, device=device, dtype=torch.int64) + sample_offset).view(b, 1).expand(b, n) & _M32
    zero = torch.zeros((), device=device, dtype=torch.int64).expand(b, n)
    c2 = torch.full((), draw & _M32, device=device, dtype=torch.int64).expand(b, n)
    r0, r1, _, _ = philox4x32(c0, c1, c2, zero, seed)
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    u1, u2 = uniform_from_u32(r0).to(cdt), uniform_from_u32(r1).to(cdt)
    rad = torch.sqrt(-2.0 * torch.log(u1))
    th = 6.283185307179586 * u2
    z = torch.where((j & 1).bool().expand(b, n), rad * torch.sin(th), rad * torch.cos(th))
    return z.to(dtype).reshape(tuple(shape))
