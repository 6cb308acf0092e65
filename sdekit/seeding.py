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

from .noise import GaussianNoise

__all__ = ["PerSampleNoise", "sample_seed", "check_seed", "check_indices"]

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


class PerSampleNoise(GaussianNoise):
    """Gaussian noise with one generator per sample: row ``j`` is drawn from ``sample_seed(seed, indices[j])``.

    Args:
        seed: the run seed, an int in ``[0, 2**63)``.
        indices: the global index of each sample in the batch (ints >= 0).
        device: where the generators live and the noise is drawn (default CPU). The same
            seed gives different numbers on CPU and CUDA (different generators).

    Increments, Lévy areas and the prior are all built from :meth:`normal`, so every
    draw is batch-invariant.
    """

    def __init__(self, seed: int, indices: Sequence[int] | Tensor, *,
                 device: torch.device | str | None = None) -> None:
        super().__init__(None)
        self.seed = check_seed(seed)
        self.indices = check_indices(indices)
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self._gens = [torch.Generator(device=self.device).manual_seed(sample_seed(self.seed, i))
                      for i in self.indices]

    def normal(self, like: Tensor) -> Tensor:
        if like.ndim < 1 or like.shape[0] != len(self._gens):
            raise ValueError(f"PerSampleNoise was built for {len(self._gens)} samples (indices) but was asked "
                             f"for noise of shape {tuple(like.shape)}")
        if like.device.type != self.device.type:
            raise ValueError(f"PerSampleNoise draws on {self.device} but the state is on {like.device}")
        out = torch.empty(like.shape, device=like.device, dtype=like.dtype)
        row_shape = tuple(like.shape[1:])
        for j, g in enumerate(self._gens):
            torch.randn(row_shape, generator=g, out=out[j])
        return out

    def check_run(self, grid: Tensor, x: Tensor) -> None:
        """One generator per sample: the run's batch must be the one the indices were given for."""
        if x.ndim < 1 or x.shape[0] != len(self._gens):
            raise ValueError(f"PerSampleNoise was built for {len(self._gens)} samples (indices) but the run's state "
                             f"has shape {tuple(x.shape)}")
        if x.device.type != self.device.type:
            raise ValueError(f"PerSampleNoise draws on {self.device} but the state is on {x.device}")

    def prior(self, sde, shape: Sequence[int], *, dtype: torch.dtype) -> Tensor:
        """``x_T`` from the prior ``N(0, sde.prior_std^2 I)``, each row from its own sample's stream."""
        z = self.normal(torch.empty(tuple(shape), device=self.device, dtype=dtype))
        return z.mul_(sde.prior_std)

    def __repr__(self) -> str:
        return f"PerSampleNoise(seed={self.seed}, samples={len(self._gens)}, device={self.device})"
