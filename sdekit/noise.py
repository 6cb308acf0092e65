"""Noise sources: the only place sdekit draws randomness.

Solvers never call ``torch.randn``. The driver hands every step a :class:`StepNoise`
whose Brownian increment, standard normals and space-time Lévy area come from one
:class:`NoiseSource`:

- :class:`GaussianNoise` draws fresh Gaussians from a ``torch.Generator`` in a fixed
  order (fast; reproducible under a seed).
- :class:`BrownianNoise` queries torchsde's ``BrownianInterval``, so the same Brownian
  path can be evaluated at any resolution and queried twice (nested-grid convergence
  tests, adaptive SDE steps that are rejected and retried).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._utils import bcast

__all__ = ["NoiseSource", "GaussianNoise", "BrownianNoise", "StepNoise"]


class NoiseSource:
    """Base class. ``increment`` must return a Brownian increment with variance ``|t1 - t0|``."""

    def increment(self, t0: Tensor, t1: Tensor, like: Tensor) -> Tensor:
        raise NotImplementedError

    def space_time_levy(self, t0: Tensor, t1: Tensor, like: Tensor) -> Tensor:
        """Space-time Lévy area ``H = (1/h) int (W_s - W_t0 - (s-t0)/h dW) ds``, variance ``|h|/12``."""
        raise NotImplementedError(f"{type(self).__name__} does not provide space-time Lévy area")

    def normal(self, like: Tensor) -> Tensor:
        """A standard normal tensor like ``like``, independent of the Brownian path."""
        raise NotImplementedError


class GaussianNoise(NoiseSource):
    """Independent Gaussian increments drawn from ``generator`` (``None`` uses torch's global RNG).

    Increments over disjoint steps are independent; querying the same step twice gives
    different draws, so use :class:`BrownianNoise` where a step may be retried.
    """

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def normal(self, like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=self.generator, device=like.device, dtype=like.dtype)

    def increment(self, t0: Tensor, t1: Tensor, like: Tensor) -> Tensor:
        z = self.normal(like)
        return z.mul_(bcast(torch.sqrt(torch.abs(t1 - t0)), like))

    def space_time_levy(self, t0: Tensor, t1: Tensor, like: Tensor) -> Tensor:
        z = self.normal(like)
        return z.mul_(bcast(torch.sqrt(torch.abs(t1 - t0) / 12.0), like))


class BrownianNoise(NoiseSource):
    """One Brownian path on ``[t_min, t_max]`` from torchsde's ``BrownianInterval``.

    All samples share the time grid (times are read from the first batch entry).
    The Brownian motion is indexed by forward time; a reverse step ``t0 > t1`` gets
    ``W(t0) - W(t1)``, so nested grids see the same path.

    Args:
        t_min, t_max: the time span to cover.
        shape: shape of the state (batch included).
        seed: entropy for the path; ``None`` draws one from ``generator``/torch.
        levy_area: torchsde's Lévy-area approximation (``"space-time"`` for SRK methods).
    """

    def __init__(self, t_min: float, t_max: float, shape: tuple[int, ...], *, seed: int | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                 levy_area: str = "space-time", generator: torch.Generator | None = None,
                 tol: float = 1e-12) -> None:
        import torchsde

        if seed is None:
            seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator).item())
        self.shape = tuple(shape)
        self._bm = torchsde.BrownianInterval(t0=float(t_min), t1=float(t_max), size=self.shape, dtype=dtype,
                                             device=device, entropy=seed, levy_area_approximation=levy_area,
                                             tol=tol, halfway_tree=True)
        gen_device = torch.device(device) if device is not None else torch.device("cpu")
        self._gen = torch.Generator(device=gen_device).manual_seed(seed ^ 0x5DEB1)
        self._t_min, self._t_max = float(t_min), float(t_max)

    def _span(self, t0: Tensor, t1: Tensor) -> tuple[float, float, float]:
        a, b = float(t0.reshape(-1)[0]), float(t1.reshape(-1)[0])
        lo, hi = (a, b) if a <= b else (b, a)
        lo, hi = max(lo, self._t_min), min(hi, self._t_max)
        return lo, hi, (1.0 if b >= a else -1.0)

    def increment(self, t0: Tensor, t1: Tensor, like: Tensor) -> Tensor:
        lo, hi, sign = self._span(t0, t1)
        if hi <= lo:
            return torch.zeros_like(like)
        w = self._bm(lo, hi)
        return (sign * w).to(dtype=like.dtype).reshape(like.shape)

    def space_time_levy(self, t0: Tensor, t1: Tensor, like: Tensor) -> Tensor:
        lo, hi, sign = self._span(t0, t1)
        if hi <= lo:
            return torch.zeros_like(like)
        _, u = self._bm(lo, hi, return_U=True)
        w = self._bm(lo, hi)
        h = hi - lo
        # torchsde returns U = int_lo^hi (W_s - W_lo) ds; H = U/h - W/2 (forward time).
        # Reversing time maps W -> -W and H -> +H.
        hh = u / h - 0.5 * w
        return hh.to(dtype=like.dtype).reshape(like.shape)

    def normal(self, like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=self._gen, device=like.device, dtype=like.dtype)


class StepNoise:
    """The noise of one step ``[t0, t1]``, drawn lazily so that ODE steps draw nothing.

    Attributes (computed on first access and cached):
        dW: Brownian increment with variance ``|t1 - t0|``.
        z: the same increment as a standard normal, ``dW / sqrt(|t1 - t0|)``.
        H: space-time Lévy area over the step (variance ``|h|/12``).
    """

    def __init__(self, source: NoiseSource, t0: Tensor, t1: Tensor, like: Tensor) -> None:
        self.source, self.t0, self.t1, self.like = source, t0, t1, like
        self._dW: Tensor | None = None
        self._z: Tensor | None = None
        self._H: Tensor | None = None

    @property
    def dW(self) -> Tensor:
        if self._dW is None:
            self._dW = self.source.increment(self.t0, self.t1, self.like)
        return self._dW

    @property
    def z(self) -> Tensor:
        if self._z is None:
            h = torch.abs(self.t1 - self.t0)
            self._z = self.dW / bcast(torch.sqrt(torch.clamp(h, min=torch.finfo(h.dtype).tiny)), self.like)
        return self._z

    @property
    def H(self) -> Tensor:
        if self._H is None:
            self._H = self.source.space_time_levy(self.t0, self.t1, self.like)
        return self._H

    def normal(self) -> Tensor:
        """A fresh standard normal (e.g. for a corrector), independent of ``dW``."""
        return self.source.normal(self.like)


