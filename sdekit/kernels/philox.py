"""Counter-based noise: every normal is a pure function of (seed, sample index, draw, element).

:class:`PhiloxNoise` is a :class:`~sdekit.noise.NoiseSource` whose draws do not depend on
the batch they are drawn in: sample ``i`` of a batch of 8 gets exactly the noise that
sample ``i`` of a batch of 1000 gets (and, with ``sample_offset``, that sample
``sample_offset + i`` of a larger run gets), so samples are reproducible across batch
sizes, shards and ranks. On CUDA with Triton the normals are generated inside a kernel
(Philox4x32-10, Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"); the
torch reference computes the same Philox integers on any device, so the two backends
agree to float rounding.

"Draw" counts the calls made on the source during a run (each ``increment``,
``space_time_levy`` and ``normal`` is one draw): for a fixed solver and grid, draw ``k``
is always the same quantity of the same step, so draws are keyed by step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._utils import bcast, check_int
from ..noise import NoiseSource
from . import philox_normal

__all__ = ["PhiloxNoise"]


class PhiloxNoise(NoiseSource):
    """Batch-invariant Gaussian noise from a counter-based RNG (Philox4x32-10).

    Args:
        seed: a non-negative integer below ``2**63``: the Philox key.
        sample_offset: global index of the first sample of the batch (for sharded runs).

    Like :class:`~sdekit.noise.GaussianNoise`, querying the same step twice gives fresh
    draws; use :class:`~sdekit.noise.BrownianNoise` where an adaptive step is retried.
    Call :meth:`reset` (or make a new instance) to replay the same noise.
    """

    def __init__(self, seed: int, *, sample_offset: int = 0) -> None:
        self.seed = check_int("seed", seed, minimum=0)
        if self.seed >= 2 ** 63:
            raise ValueError(f"seed must be < 2**63, got {seed}")
        self.sample_offset = check_int("sample_offset", sample_offset, minimum=0)
        self.draws = 0

    def reset(self) -> None:
        """Start again from the first draw."""
        self.draws = 0

    def normal(self, like: Tensor) -> Tensor:
        z = philox_normal(like.shape, self.seed, self.draws, self.sample_offset, device=like.device, dtype=like.dtype)
        self.draws += 1
        return z

    def increment(self, t0: Tensor, t1: Tensor, like: Tensor) -> Tensor:
        return self.normal(like).mul_(bcast(torch.sqrt(torch.abs(t1 - t0)).to(like.dtype), like))

    def space_time_levy(self, t0: Tensor, t1: Tensor, like: Tensor) -> Tensor:
        return self.normal(like).mul_(bcast(torch.sqrt(torch.abs(t1 - t0) / 12.0).to(like.dtype), like))

    def __repr__(self) -> str:
        return f"PhiloxNoise(seed={self.seed}, sample_offset={self.sample_offset})"
