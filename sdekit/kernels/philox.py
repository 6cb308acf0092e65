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

from ..noise import PhiloxNoise  # noqa: F401  (moved to sdekit.noise, with every noise source; this path keeps working)

__all__ = ["PhiloxNoise"]
