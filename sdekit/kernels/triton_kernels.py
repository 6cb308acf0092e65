"""Triton implementations of the fused per-step primitives (CUDA tensors, or CPU under ``TRITON_INTERPRET=1``).

Importing this module imports :mod:`triton`; :mod:`sdekit.kernels` does so lazily, on the
first call that selects the Triton backend, so ``triton`` stays an optional dependency.
Whether the kernels are compiled or interpreted is decided by triton when this module is
imported (``TRITON_INTERPRET=1`` in the environment at that moment gives the interpreter).

Each kernel reads every input once and writes its output once:

- ``lincomb``: ``out = a x + sum_i b_i v_i`` for up to ``MAX_TERMS - 1`` terms in one pass
  (longer sums are chained into a scratch increment). The increment is summed first and
  ``a x`` added last, so ``x + increment`` is rounded once at the size of ``x``.
  Coefficients are Python floats (passed as kernel arguments, split into a float32 hi/lo pair
  so float64 states keep ~48 bits) or tensors of shape
  ``()``/``(batch,)`` read on the device, so no coefficient ever crosses to the host.
- ``sq_norms``: per-sample sums of squares of k tensors (two-level: per-block partial
  sums, then a deterministic torch sum, so results do not depend on scheduling).
- ``error_norm`` and ``lincomb_error_norm``: the candidate update of an embedded
  Runge–Kutta pair fused with its scaled RMS error norm (the error itself is never stored).
- ``philox_normal``: Philox4x32-10 normals keyed by ``(seed, sample, draw, element)``.

Arithmetic is float32 for float16/bfloat16/float32 states and float64 for float64 states;
the result is rounded once to the state's dtype.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["lincomb", "sq_norms", "error_norm", "lincomb_error_norm", "philox_normal", "MAX_TERMS", "INTERPRETED"]

#: most tensors (x included) one ``lincomb`` launch reads (RK4 on the reverse process: 9; dopri5: 13);
#: longer increments are summed in a scratch tensor first.
MAX_TERMS = 16
#: True when triton runs these kernels in its CPU interpreter (TRITON_INTERPRET=1 at import time).
INTERPRETED = (bool(triton.knobs.runtime.interpret) if hasattr(triton, "knobs")
               else os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes"))

_FLAT_BLOCK = 1024
_RED_BLOCK_MAX = 2048


@triton.jit
def _coef(ptrs, strides, hi, lo, row, i: tl.constexpr, VEC: tl.constexpr, F64: tl.constexpr, mask):
    """Coefficient ``i``: a per-sample tensor entry (``row``) or a scalar hi/lo pair."""
    if (VEC >> i) & 1:
        if F64:
            c = tl.load(ptrs[i] + row * strides[i], mask=mask, other=0.0).to(tl.float64)
        else:
            c = tl.load(ptrs[i] + row * strides[i], mask=mask, other=0.0).to(tl.float32)
    else:
        if F64:
            c = tl.to_tensor(hi[i]).to(tl.float64) + tl.to_tensor(lo[i]).to(tl.float64)
        else:
            c = hi[i]
    return c


@triton.jit
def _lincomb_kernel(out_ptr, vs, ptrs, strides, hi, lo, total, N,
                    NT: tl.constexpr, VEC: tl.constexpr, F64: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    if VEC != 0:
        row = offs // N
    else:
        row = offs * 0
    if F64:
        acc = tl.zeros((BLOCK,), tl.float64)
    else:
        acc = tl.zeros((BLOCK,), tl.float32)
    for i in tl.static_range(1, NT):  # the increment first, then a x: one rounding at the size of x
        c = _coef(ptrs, strides, hi, lo, row, i, VEC, F64, mask)
        v = tl.load(vs[i] + offs, mask=mask, other=0.0)
        acc += c * v.to(acc.dtype)
    x = tl.load(vs[0] + offs, mask=mask, other=0.0)
    acc += _coef(ptrs, strides, hi, lo, row, 0, VEC, F64, mask) * x.to(acc.dtype)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sq_norms_kernel(part_ptr, vs, N, B, NCHUNK,
                     NT: tl.constexpr, F64: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1).to(tl.int64)
    idx = c * BLOCK + tl.arange(0, BLOCK)
    mask = idx < N
    offs = b * N + idx
    for i in tl.static_range(NT):
        v = tl.load(vs[i] + offs, mask=mask, other=0.0)
        if F64:
            v = v.to(tl.float64)
        else:
            v = v.to(tl.float32)
        tl.store(part_ptr + (i * B + b) * NCHUNK + c, tl.sum(v * v, axis=0))


@triton.jit
def _error_norm_kernel(part_ptr, err_ptr, x0_ptr, x1_ptr, rtol, atol, N, NCHUNK,
                       F64: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1).to(tl.int64)
    idx = c * BLOCK + tl.arange(0, BLOCK)
    mask = idx < N
    offs = b * N + idx
    if F64:
        dt = tl.float64
    else:
        dt = tl.float32
    e = tl.load(err_ptr + offs, mask=mask, other=0.0).to(dt)
    x0 = tl.load(x0_ptr + offs, mask=mask, other=0.0).to(dt)
    x1 = tl.load(x1_ptr + offs, mask=mask, other=0.0).to(dt)
    r = e / (tl.maximum(tl.abs(x0), tl.abs(x1)) * rtol + atol)
    r = tl.where(mask, r, 0.0)
    tl.store(part_ptr + b * NCHUNK + c, tl.sum(r * r, axis=0))


@triton.jit
def _lincomb_error_kernel(out_ptr, part_ptr, x_ptr, vs, ptrs, strides, hi, lo, eptrs, estrides, ehi, elo,
                          rtol, atol, N, NCHUNK,
                          NT: tl.constexpr, VEC: tl.constexpr, EVEC: tl.constexpr, F64: tl.constexpr,
                          BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1).to(tl.int64)
    idx = c * BLOCK + tl.arange(0, BLOCK)
    mask = idx < N
    offs = b * N + idx
    if F64:
        dt = tl.float64
    else:
        dt = tl.float32
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(dt)
    acc = tl.zeros((BLOCK,), dt)
    err = tl.zeros((BLOCK,), dt)
    for i in tl.static_range(NT):
        v = tl.load(vs[i] + offs, mask=mask, other=0.0).to(dt)
        acc += _coef(ptrs, strides, hi, lo, b, i + 1, VEC, F64, True) * v
        err += _coef(eptrs, estrides, ehi, elo, b, i, EVEC, F64, True) * v
    acc += _coef(ptrs, strides, hi, lo, b, 0, VEC, F64, True) * x  # increment first, then a x
    x1 = acc.to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + offs, x1, mask=mask)
    r = err / (tl.maximum(tl.abs(x), tl.abs(x1.to(dt))) * rtol + atol)
    r = tl.where(mask, r, 0.0)
    tl.store(part_ptr + b * NCHUNK + c, tl.sum(r * r, axis=0))


@triton.jit
def _philox_normal_kernel(out_ptr, total, N, seed, draw, sample_offset, F64: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    row = offs // N
    j = offs - row * N
    c0 = ((j >> 1) & 0xFFFFFFFF).to(tl.uint32)
    c1 = ((row + sample_offset) & 0xFFFFFFFF).to(tl.uint32)
    c2 = (offs * 0 + draw).to(tl.uint32)
    c3 = c2 * 0
    r0, r1, _, _ = tl.philox(seed, c0, c1, c2, c3)
    u1 = ((r0 >> 8).to(tl.float32) + 0.5) * (1.0 / 16777216.0)
    u2 = ((r1 >> 8).to(tl.float32) + 0.5) * (1.0 / 16777216.0)
    if F64:
        u1 = u1.to(tl.float64)
        u2 = u2.to(tl.float64)
    rad = tl.sqrt(-2.0 * tl.log(u1))
    th = 6.283185307179586 * u2
    z = tl.where((j & 1) == 1, rad * tl.sin(th), rad * tl.cos(th))
    tl.store(out_ptr + offs, z.to(out_ptr.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------------------- host side

def _f64(x: Tensor) -> bool:
    return x.dtype == torch.float64


def _pack(coefs: Sequence[float | Tensor], batch: int, like: Tensor):
    """Kernel arguments for coefficients: (pointer tuple, stride tuple, hi tuple, lo tuple, vec bitmask)."""
    ptrs, strides, his, los, vec = [], [], [], [], 0
    for i, c in enumerate(coefs):
        if isinstance(c, Tensor):
            c = c.reshape(-1)
            if c.numel() == 1:
                c = c.expand(batch)
            ptrs.append(c)
            strides.append(c.stride(0))
            his.append(0.0)
            los.append(0.0)
            vec |= 1 << i
        else:
            v = float(c)
            h = float(np.float32(v))
            ptrs.append(like)
            strides.append(0)
            his.append(h)
            los.append(v - h)
    return tuple(ptrs), tuple(strides), tuple(his), tuple(los), vec


def _per_sample(x: Tensor) -> int:
    return x.numel() // x.shape[0] if x.shape[0] else 0


def _red_block(n: int) -> int:
    return max(16, min(_RED_BLOCK_MAX, triton.next_power_of_2(max(n, 1))))


def lincomb(x: Tensor, a: float | Tensor, terms: Sequence[tuple[float | Tensor, Tensor]],
            out: Tensor | None = None) -> Tensor:
    """Fused ``a x + sum_i b_i v_i`` (all tensors of ``x``'s shape, dtype and device)."""
    terms = list(terms)
    if len(terms) + 1 > MAX_TERMS:  # sum the increment in a scratch tensor (chained), then add a x once
        (b0, v0), rest = terms[0], terms[1:]
        return lincomb(x, a, [(1.0, lincomb(v0, b0, rest))], out=out)
    target = out
    if out is None or not out.is_contiguous():
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    vs = tuple(t.contiguous() for t in [x] + [v for _, v in terms])
    total = x.numel()
    if total:
        ptrs, strides, hi, lo, vec = _pack([a] + [b for b, _ in terms], x.shape[0], x)
        grid = (triton.cdiv(total, _FLAT_BLOCK),)
        _lincomb_kernel[grid](out, vs, ptrs, strides, hi, lo, total, max(_per_sample(x), 1),
                              NT=len(vs), VEC=vec, F64=_f64(x), BLOCK=_FLAT_BLOCK)
    if target is not None and target is not out:
        target.copy_(out)
        return target
    return out


def sq_norms(tensors: Sequence[Tensor]) -> Tensor:
    """Per-sample squared norms of k same-shaped tensors, shape ``(k, batch)``."""
    vs = tuple(t.contiguous() for t in tensors)
    x = vs[0]
    b, n = x.shape[0], _per_sample(x)
    acc = torch.float64 if _f64(x) else torch.float32
    if n == 0:
        return torch.zeros((len(vs), b), device=x.device, dtype=acc)
    block = _red_block(n)
    nchunk = triton.cdiv(n, block)
    part = torch.empty((len(vs), b, nchunk), device=x.device, dtype=acc)
    _sq_norms_kernel[(b, nchunk)](part, vs, n, b, nchunk, NT=len(vs), F64=_f64(x), BLOCK=block)
    return part.sum(-1)


def error_norm(err: Tensor, x0: Tensor, x1: Tensor, rtol: float, atol: float) -> Tensor:
    """Per-sample ``sqrt(mean((err / (atol + rtol max(|x0|, |x1|)))^2))`` in one pass."""
    err, x0, x1 = err.contiguous(), x0.contiguous(), x1.contiguous()
    b, n = err.shape[0], _per_sample(err)
    block = _red_block(n)
    nchunk = triton.cdiv(n, block)
    part = torch.empty((b, nchunk), device=err.device, dtype=torch.float64 if _f64(err) else torch.float32)
    _error_norm_kernel[(b, nchunk)](part, err, x0, x1, float(rtol), float(atol), n, nchunk,
                                    F64=_f64(err), BLOCK=block)
    return torch.sqrt(part.sum(-1) / n)


def lincomb_error_norm(x: Tensor, a: float | Tensor, terms: Sequence[tuple[float | Tensor, Tensor]],
                       err_terms: Sequence[tuple[float | Tensor, Tensor]], rtol: float, atol: float,
                       out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Candidate ``x1 = a x + sum b_i v_i`` and the scaled RMS norm of ``sum e_j w_j``, in one pass."""
    uniq: list[Tensor] = []
    bco: list[float | Tensor] = []
    eco: list[float | Tensor] = []

    def slot(v: Tensor) -> int:
        for k, u in enumerate(uniq):
            if u is v:
                return k
        uniq.append(v)
        bco.append(0.0)
        eco.append(0.0)
        return len(uniq) - 1

    for b_, v in terms:
        k = slot(v)
        bco[k] = b_ if isinstance(bco[k], float) and bco[k] == 0.0 else bco[k] + b_
    for e_, w in err_terms:
        k = slot(w)
        eco[k] = e_ if isinstance(eco[k], float) and eco[k] == 0.0 else eco[k] + e_
    if len(uniq) + 1 > MAX_TERMS:
        raise ValueError(f"lincomb_error_norm takes at most {MAX_TERMS - 1} distinct tensors, got {len(uniq)}")
    target = out
    if out is None or not out.is_contiguous():
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    xc = x.contiguous()
    vs = tuple(v.contiguous() for v in uniq)
    bsz, n = x.shape[0], _per_sample(x)
    block = _red_block(n)
    nchunk = triton.cdiv(n, block)
    part = torch.empty((bsz, nchunk), device=x.device, dtype=torch.float64 if _f64(x) else torch.float32)
    ptrs, strides, hi, lo, vec = _pack([a] + bco, bsz, x)
    eptrs, estrides, ehi, elo, evec = _pack(eco, bsz, x)
    _lincomb_error_kernel[(bsz, nchunk)](out, part, xc, vs, ptrs, strides, hi, lo, eptrs, estrides, ehi, elo,
                                         float(rtol), float(atol), n, nchunk, NT=len(vs), VEC=vec, EVEC=evec,
                                         F64=_f64(x), BLOCK=block)
    if target is not None and target is not out:
        target.copy_(out)
        out = target
    return out, torch.sqrt(part.sum(-1) / n)


def philox_normal(shape: Sequence[int], seed: int, draw: int, sample_offset: int = 0,
                  device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normals keyed by ``(seed, sample, draw, element)`` (same stream as the torch reference)."""
    out = torch.empty(tuple(shape), device=device, dtype=dtype)
    total = out.numel()
    if total:
        n = max(_per_sample(out), 1)
        _philox_normal_kernel[(triton.cdiv(total, _FLAT_BLOCK),)](out, total, n, int(seed), int(draw) & 0xFFFFFFFF,
                                                                  int(sample_offset), F64=dtype == torch.float64,
                                                                  BLOCK=_FLAT_BLOCK)
    return out
