"""Per-sample seeding: sample ``i``'s prior and noise depend only on ``(seed, i)``.

:class:`PerSampleNoise` keeps one ``torch.Generator`` per sample (as EDM does with a
generator per image). Every draw a solver asks for is taken row by row, each row from
its own sample's generator, so the random stream of sample ``i`` is the same whatever
else is in the batch. Together with a solver whose arithmetic is per-sample, the
samples are identical for any batching, any order of the indices and any number of
ranks (see ``docs/distributed.md``).

Cost: one generator call per sample and draw instead of one per draw, i.e. a Python
loop over the batch at every noise draw. ``generator=`` stays the fast path.

Seeds: generator ``i`` is seeded with ``mix32(seed, i)``, a bijection of ``i`` modulo
``2**32`` for each ``seed``, so two indices below ``2**32`` never share a stream within
one run (torch's CPU Mersenne Twister only uses 32 bits of its seed: hashing
``(seed, i)`` to 64 bits and truncating would give a ~30% chance of two identical
samples among 50,000).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["PerSampleNoise", "sample_seed", "check_seed", "check_indices", "generator_list"]  # noqa: F822  (PerSampleNoise: see __getattr__)

_M32 = 0xFFFFFFFF


def _fmix32(h: int) -> int:
    """MurmurHash3's 32-bit finaliser: a bijection of ``[0, 2**32)`` with good avalanche."""
    h &= _M32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h


def sample_seed(seed: int, index: int) -> int:
    """The generator seed of sample ``index`` under the run seed ``seed`` (a 32-bit integer).

    For a fixed ``seed`` the map ``index -> sample_seed`` is injective on ``[0, 2**32)``.
    """
    key = _fmix32((seed & _M32) ^ _fmix32((seed >> 32) ^ 0x9E3779B9))
    return _fmix32((index + key) & _M32)


def check_seed(seed: object) -> int:
    """Return ``seed`` after checking it is an int in ``[0, 2**63)``."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} ({seed!r})")
    if not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    return int(seed)


def check_indices(indices: object, batch: int | None = None) -> list[int]:
    """Return ``indices`` as a list of ints after checking them (distinct, in ``[0, 2**32)``, one per sample)."""
    if isinstance(indices, Tensor):
        if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
            raise TypeError(f"indices must be integers, got a tensor of dtype {indices.dtype}")
        if indices.ndim != 1:
            raise ValueError(f"indices must be 1-D, got a tensor of shape {tuple(indices.shape)}")
        out = [int(i) for i in indices.tolist()]
    elif isinstance(indices, (str, bytes)) or not isinstance(indices, (Sequence, range)):
        raise TypeError(f"indices must be a sequence of ints (or a 1-D integer tensor), got {type(indices).__name__}")
    else:
        out = []
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, int):
                raise TypeError(f"indices must be ints, got an element {i!r} of type {type(i).__name__}")
            out.append(int(i))
    if not out:
        raise ValueError("indices must not be empty")
    if min(out) < 0:
        raise ValueError(f"indices must be >= 0, got {min(out)}")
    if max(out) >= 2 ** 32:
        raise ValueError(f"indices must be < 2**32 (the per-sample streams are a bijection of the index modulo "
                         f"2**32, so index {max(out)} would share the stream of index {max(out) % 2 ** 32}), "
                         f"got {max(out)}")
    if len(set(out)) != len(out):
        seen: set[int] = set()
        dup = next(i for i in out if i in seen or seen.add(i))
        raise ValueError(f"indices must be distinct (two samples with one index get the same noise, i.e. the "
                         f"same sample), got index {dup} more than once")
    if batch is not None and len(out) != batch:
        raise ValueError(f"indices has {len(out)} entries but the batch has {batch} samples")
    return out


def __getattr__(name: str):
    # PerSampleNoise moved to sdekit.noise (every noise source lives there); this path keeps working
    if name == "PerSampleNoise":
        from .noise import PerSampleNoise

        return PerSampleNoise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def generator_list(sde, generator, *, shape, x_T, noise, device, dtype):
    """Resolve ``generator=`` given as a list (one generator per sample) for :func:`sdekit.solve`.

    Returns ``(x_T, generator, noise)``: unchanged when ``generator`` is not a list or tuple; else
    ``x_T`` drawn from the prior row by row (unless given), ``generator=None`` and a
    :class:`GeneratorListNoise`. A list whose length is not the batch size is refused.
    """
    if not isinstance(generator, (list, tuple)):
        return x_T, generator, noise
    if not generator or not all(isinstance(g, torch.Generator) for g in generator):
        raise TypeError("generator must be a torch.Generator, a non-empty list of them (one per sample) or None")
    if len({g.device.type for g in generator}) != 1:
        raise ValueError("the generators of generator=[...] must all be on the same device")
    if noise is not None:
        raise ValueError("give generator=[...] (one stream per sample) or noise=, not both")
    if isinstance(x_T, Tensor):
        batch = x_T.shape[0] if x_T.ndim >= 1 else 0
    elif isinstance(shape, (tuple, list, torch.Size)) and len(shape) >= 1 and isinstance(shape[0], int):
        batch = shape[0]
    else:
        raise ValueError("generator=[...] needs shape= (batch first) or x_T= to know the batch size")
    if len(generator) != batch:
        raise ValueError(f"generator is a list of {len(generator)} generators but the batch has {batch} samples; "
                         f"give one generator per sample")
    from .noise import GeneratorListNoise  # noise imports this module

    src = GeneratorListNoise(generator)
    if x_T is None:
        gdev = src.device
        if device is not None and torch.device(device).type != gdev.type:
            raise ValueError(f"generator is on {gdev} but device={device}; use generators on the sampling device")
        x_T = src.prior(sde, tuple(shape), dtype=dtype or torch.get_default_dtype())
    return x_T, None, src
