"""Fused per-step updates. Every solver forms its update through these primitives.

Two implementations stand behind one API:

- :mod:`sdekit.kernels.reference`: plain torch, in place into a caller-provided ``out``
  buffer (a step allocates nothing but the score); any device, any dtype, autograd.
- :mod:`sdekit.kernels.triton_kernels`: Triton kernels that read each input once and
  write once (CUDA tensors; CPU only under ``TRITON_INTERPRET=1``, for testing).

Which one runs is chosen per call from the backend setting (:func:`set_backend`,
:func:`use_backend`, or ``sdekit.sample(..., backend=...)``):

- ``"auto"`` (default): Triton for CUDA tensors when ``triton`` imports, torch otherwise.
- ``"triton"``: Triton wherever it can run; raises if ``triton`` is missing, or for CPU
  tensors outside interpreter mode.
- ``"torch"``: always the reference.

Under every setting, calls the kernels cannot serve go to the reference: tensors that
need autograd (Triton kernels have no backward), mixed dtypes/shapes/devices,
non-floating dtypes, or coefficient tensors on another device.
"""

from __future__ import annotations

import contextlib
import contextvars
from types import ModuleType
from typing import Iterator, Sequence

import torch
from torch import Tensor

from .._utils import compiling
from . import reference

__all__ = ["lincomb", "error_norm", "sq_norms", "lincomb_error_norm", "philox_normal",
           "set_backend", "get_backend", "use_backend", "triton_available", "backend_for", "BACKENDS"]

BACKENDS = ("auto", "triton", "torch")
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_backend: contextvars.ContextVar[str] = contextvars.ContextVar("sdekit_kernel_backend", default="auto")
_triton_mod: ModuleType | None = None
_triton_error: str | None = None


def _load_triton() -> ModuleType | None:
    global _triton_mod, _triton_error
    if _triton_mod is None and _triton_error is None:
        try:
            from . import triton_kernels
        except Exception as exc:  # ImportError, or a triton build that fails to initialise
            _triton_error = f"{type(exc).__name__}: {exc}"
        else:
            _triton_mod = triton_kernels
    return _triton_mod


def triton_available() -> bool:
    """True if the Triton kernels import (``pip install sdekit[triton]``)."""
    return _load_triton() is not None


def _check_name(backend: str) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if backend == "triton" and not triton_available():
        raise RuntimeError(f"backend='triton' needs the triton package (pip install sdekit[triton]); "
                           f"importing it failed with {_triton_error}")
    return backend


def set_backend(backend: str) -> None:
    """Set the kernel backend globally: ``"auto"``, ``"triton"`` or ``"torch"`` (see the module docstring)."""
    _backend.set(_check_name(backend))


def get_backend() -> str:
    """The current backend setting."""
    return _backend.get()


@contextlib.contextmanager
def use_backend(backend: str) -> Iterator[None]:
    """Context manager: use ``backend`` inside the ``with`` block, then restore the previous setting."""
    token = _backend.set(_check_name(backend))
    try:
        yield
    finally:
        _backend.reset(token)


def _eligible(tensors: Sequence[Tensor], coefs: Sequence[float | Tensor]) -> bool:
    x = tensors[0]
    if x.dtype not in _FLOATS or x.ndim < 1:
        return False
    grad = torch.is_grad_enabled()
    for v in tensors:
        if v.shape != x.shape or v.dtype != x.dtype or v.device != x.device or (grad and v.requires_grad):
            return False
    for c in coefs:
        if isinstance(c, Tensor):
            if c.device != x.device or not c.dtype.is_floating_point or (grad and c.requires_grad) \
                    or c.numel() not in (1, x.shape[0]) or c.ndim > 1:
                return False
        elif isinstance(c, bool) or not isinstance(c, (int, float)):
            return False
    return True


def _impl(tensors: Sequence[Tensor], coefs: Sequence[float | Tensor] = ()) -> ModuleType:
    if compiling():  # inside torch.compile: the compiler fuses the reference's ops itself
        return reference
    mode = _backend.get()
    if mode == "torch":
        return reference
    x = tensors[0]
    if mode == "auto" and not x.is_cuda:
        return reference
    mod = _load_triton()
    if mod is None:
        if mode == "triton":  # set before triton broke, e.g. via a saved context
            raise RuntimeError(f"backend='triton' but triton failed to import: {_triton_error}")
        return reference
    if not _eligible(tensors, coefs):
        return reference
    if not x.is_cuda and not mod.INTERPRETED:
        raise RuntimeError(f"backend='triton' runs on CUDA tensors (or on CPU with TRITON_INTERPRET=1 set before "
                           f"triton is imported); got a tensor on {x.device}. Use backend='auto' or 'torch'.")
    return mod


def backend_for(x: Tensor) -> str:
    """Which implementation a call on tensors like ``x`` would use now: ``"triton"`` or ``"torch"``."""
    return "triton" if _impl([x]) is not reference else "torch"


def lincomb(x: Tensor, a: float | Tensor, terms: Sequence[tuple[float | Tensor, Tensor]],
            out: Tensor | None = None) -> Tensor:
    """Return ``a * x + sum_i b_i * v_i``, written into ``out`` when given.

    Coefficients are Python floats or tensors of shape ``()`` or ``(batch,)`` (per-sample),
    on the device of ``x``; a tensor coefficient is never read on the host. Scaled noise
    is one more term (``(c, z)``). ``out`` may alias ``x`` but no ``v_i``.

    Precision: the increment ``sum_i b_i v_i`` is summed first and ``a * x`` added last, so
    a state update written as ``lincomb(x, 1.0, [(c, x), (b, v), ...])`` (``a`` exactly 1, the
    state's own change ``c`` among the terms) is rounded once at the size of ``x``, like
    ``x + dx``. Passing ``a = 1 + c`` instead rounds ``1 + c`` to the dtype of ``x`` first, an
    error of one unit in the last place of ``x`` that repeats, with the same sign, over many
    small steps. Terms in ``x`` itself are folded into ``a`` only when ``a`` is not exactly 1.
    """
    terms = list(terms)
    unit = isinstance(a, (int, float)) and not isinstance(a, bool) and a == 1
    if not unit and any(v is x for _, v in terms):  # fold terms in x itself into a: one pass fewer
        a = a + sum(b for b, v in terms if v is x)
        terms = [(b, v) for b, v in terms if v is not x]
    tensors = [x] + [v for _, v in terms] + ([out] if out is not None else [])
    return _impl(tensors, [a] + [b for b, _ in terms]).lincomb(x, a, terms, out=out)


def error_norm(err: Tensor, x0: Tensor, x1: Tensor, rtol: float, atol: float) -> Tensor:
    """Per-sample scaled RMS norm of an error estimate, shape ``(batch,)``.

    ``sqrt(mean_i (err_i / (atol + rtol * max(|x0_i|, |x1_i|)))^2)`` over all but the batch
    dimension (Hairer, Nørsett & Wanner, Sec. II.4). A step is accepted when it is <= 1.
    Accumulated (and returned) in float32, or float64 for float64 inputs.
    """
    return _impl([err, x0, x1]).error_norm(err, x0, x1, rtol, atol)


def sq_norms(tensors: Sequence[Tensor]) -> Tensor:
    """Per-sample squared Euclidean norms of same-shaped tensors, shape ``(len(tensors), batch)``.

    One pass over all of them (the Langevin corrector's ``||score||^2`` and ``||z||^2``);
    accumulated in float32 (float64 for float64 inputs).
    """
    tensors = list(tensors)
    if not tensors:
        raise ValueError("sq_norms needs at least one tensor")
    return _impl(tensors).sq_norms(tensors)


def lincomb_error_norm(x: Tensor, a: float | Tensor, terms: Sequence[tuple[float | Tensor, Tensor]],
                       err_terms: Sequence[tuple[float | Tensor, Tensor]], rtol: float, atol: float,
                       out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """An embedded-pair step: the candidate and its error norm in one pass.

    Returns ``(x1, norm)`` with ``x1 = a x + sum_i b_i v_i`` (into ``out`` when given) and
    ``norm = error_norm(sum_j e_j w_j, x, x1, rtol, atol)``; the error estimate itself is
    never materialised. ``terms`` and ``err_terms`` may (and usually do) share tensors.
    """
    terms, err_terms = list(terms), list(err_terms)
    if not err_terms:
        raise ValueError("err_terms must not be empty")
    tensors = [x] + [v for _, v in terms] + [w for _, w in err_terms] + ([out] if out is not None else [])
    coefs = [a] + [b for b, _ in terms] + [e for e, _ in err_terms]
    return _impl(tensors, coefs).lincomb_error_norm(x, a, terms, err_terms, rtol, atol, out=out)


def philox_normal(shape: Sequence[int], seed: int, draw: int, sample_offset: int = 0, *,
                  device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normals that are a pure function of ``(seed, sample_offset + sample, draw, element)``.

    See :func:`sdekit.kernels.reference.philox_normal` for the construction; the Triton
    kernel produces the same Philox integers, so the two agree to float rounding.
    """
    if _philox_op is not None and compiling():  # one opaque node in the graph, the kernel at run time
        return _philox_op(list(shape), seed, draw, sample_offset, torch.device(device or "cpu"), dtype)
    return _philox_eager(list(shape), seed, draw, sample_offset, device, dtype)


def _philox_eager(shape: list[int], seed: int, draw: int, sample_offset: int, device: torch.device | str | None,
                  dtype: torch.dtype) -> Tensor:
    like = torch.empty((), device=device, dtype=dtype).expand(tuple(shape)) if all(shape) else None
    mod = reference if like is None else _impl([like])
    return mod.philox_normal(shape, seed, draw, sample_offset, device=device, dtype=dtype)


def _register_philox_op() -> object | None:
    """``sdekit::philox_normal`` as a custom op (torch >= 2.4), so ``torch.compile`` keeps the draw as one
    node that runs the kernel (Triton or the reference) instead of tracing and compiling the 10 Philox
    rounds of the reference (minutes of C++ compilation on CPU, and no Triton kernel on CUDA)."""
    custom_op = getattr(torch.library, "custom_op", None)
    if custom_op is None:
        return None

    @custom_op("sdekit::philox_normal", mutates_args=())
    def op(shape: list[int], seed: int, draw: int, sample_offset: int, device: torch.device,
           dtype: torch.dtype) -> Tensor:
        return _philox_eager(shape, seed, draw, sample_offset, device, dtype)

    @op.register_fake
    def _(shape, seed, draw, sample_offset, device, dtype):
        return torch.empty(shape, device=device, dtype=dtype)

    return op


_philox_op = _register_philox_op()
