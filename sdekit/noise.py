"""Noise sources: the only place sdekit draws randomness.

Solvers never call ``torch.randn``. The driver hands every step a :class:`StepNoise`
whose Brownian increment, standard normals and space-time Lévy area come from one
:class:`NoiseSource`:

- :class:`GaussianNoise` draws fresh Gaussians from a ``torch.Generator`` in a fixed
  order (fast; reproducible under a seed).
- :class:`BrownianNoise` queries torchsde's ``BrownianInterval``, so the same Brownian
  path can be evaluated at any resolution and queried twice (nested-grid convergence
  tests, adaptive SDE steps that are rejected and retried). All samples share one time grid.
- :class:`BrownianPath` samples a Brownian path lazily with its own times per sample and
  remembers what it drew, so an adaptive SDE solver with per-sample step sizes retries a
  rejected step on the same path.
- :class:`PerSampleNoise` draws each row from its own sample's generator (``seed=``; the
  seeding rules are in :mod:`sdekit.seeding`).
- :class:`PhiloxNoise` draws counter-based normals, batch-invariant and generated in-kernel
  on CUDA (see :mod:`sdekit.kernels.philox`).

``sdekit.seeding.PerSampleNoise`` and ``sdekit.kernels.philox.PhiloxNoise`` still import.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ._utils import bcast, check_int
from .kernels import philox_normal
from .seeding import check_indices, check_seed, sample_seed

__all__ = ["NoiseSource", "GaussianNoise", "BrownianNoise", "BrownianPath", "StepNoise", "PerSampleNoise",
           "GeneratorListNoise", "PhiloxNoise"]


class NoiseSource:
    """Base class. ``increment`` must return a Brownian increment with variance ``|t1 - t0|``."""

    #: True if ``increment`` over any sub-interval of a step is the same Brownian path's increment
    #: (a path that can be queried anywhere: :class:`BrownianNoise`, :class:`BrownianPath`). Otherwise
    #: :meth:`StepNoise.part` draws a sub-step increment from the Brownian bridge given ``dW``.
    subintervals: bool = False

    def increment(self, t0: Tensor, t1: Tensor, like: Tensor) -> Tensor:
        raise NotImplementedError

    def space_time_levy(self, t0: Tensor, t1: Tensor, like: Tensor) -> Tensor:
        """Space-time Lévy area ``H = (1/h) int (W_s - W_t0 - (s-t0)/h dW) ds``, variance ``|h|/12``."""
        raise NotImplementedError(f"{type(self).__name__} does not provide space-time Lévy area")

    def normal(self, like: Tensor) -> Tensor:
        """A standard normal tensor like ``like``, independent of the Brownian path."""
        raise NotImplementedError

    def check_run(self, grid: Tensor, x: Tensor) -> None:
        """Refuse, before any work, a run over the times ``grid`` from the state ``x`` that this source
        cannot serve (a span or shape it was not built for). The default accepts every run."""


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

    subintervals = True

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

    def check_run(self, grid: Tensor, x: Tensor) -> None:
        """The path must cover the run's times and have the state's shape (it is clamped to
        ``[t_min, t_max]``: outside it the increments would silently be zero)."""
        lo, hi = float(grid.min()), float(grid.max())
        tol = 1e-9 * max(abs(lo), abs(hi), 1e-300)
        if lo < self._t_min - tol or hi > self._t_max + tol:
            raise ValueError(f"BrownianNoise covers [t_min, t_max] = [{self._t_min:.6g}, {self._t_max:.6g}] but the "
                             f"run's grid spans [{lo:.6g}, {hi:.6g}]: outside its span the noise would be zero. "
                             "Build it with t_min <= eps and t_max >= T")
        if tuple(x.shape) != self.shape:
            raise ValueError(f"BrownianNoise was built for states of shape {self.shape} but the run's state has "
                             f"shape {tuple(x.shape)}; build it with shape=x_T.shape")

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


class BrownianPath(NoiseSource):
    """A Brownian path per sample, drawn lazily at per-sample times and remembered (Lévy's construction).

    ``W_b(t)`` is drawn conditionally on the points of sample ``b``'s path known so far: a
    Brownian bridge between the nearest known neighbours, or a Gaussian increment beyond the
    outermost one; the new point is then remembered. Any set of queries therefore sees one
    Brownian motion, whatever the order of the queries, and a step that is rejected and
    retried with a smaller step reuses the same path (as in Rackauckas & Nie 2017, "Rejection
    sampling with memory"). Times are per-sample tensors of shape ``(batch,)``.

    Args:
        base: source of the standard normals (default: :class:`GaussianNoise` of ``generator``).
        generator: used when ``base`` is not given.
        keep_history: remember every point (so the path can be re-queried later, e.g. by a
            fixed-step reference solve). Otherwise :meth:`forget` drops the points behind the
            current time of each sample, which keeps memory and work per query small.
    """

    subintervals = True

    def __init__(self, base: NoiseSource | None = None, *, generator: torch.Generator | None = None,
                 keep_history: bool = False) -> None:
        if base is not None and not isinstance(base, NoiseSource):
            raise TypeError(f"base must be a NoiseSource or None, got {type(base).__name__}")
        if base is not None and generator is not None:
            raise ValueError("give base= or generator=, not both")
        self.base = GaussianNoise(generator) if base is None else base
        self.keep_history = bool(keep_history)
        self._t: Tensor | None = None  # (B, capacity) float64 times, +inf where empty
        self._w: Tensor | None = None  # (B, capacity, *event) values
        self._n = 0  # columns in use

    @property
    def points(self) -> int:
        """Number of remembered points per sample (the width of the storage)."""
        return self._n

    def _append(self, s: Tensor, w: Tensor) -> None:
        if self._t is None:
            self._t = torch.full((s.shape[0], 4), float("inf"), dtype=torch.float64, device=s.device)
            self._w = w.new_zeros((w.shape[0], 4, *w.shape[1:]))
            self._n = 0
        if self._n == self._t.shape[1]:  # grow by doubling: appends cost O(1) amortised
            self._t = torch.cat([self._t, torch.full_like(self._t, float("inf"))], 1)
            self._w = torch.cat([self._w, torch.zeros_like(self._w)], 1)
        self._t[:, self._n] = s
        self._w[:, self._n] = w
        self._n += 1

    def value(self, t: Tensor, like: Tensor) -> Tensor:
        """``W(t)`` per sample (``t`` of shape ``(batch,)``), drawn and remembered if new."""
        b = like.shape[0]
        s = t.to(device=like.device, dtype=torch.float64).reshape(-1).expand(b)
        if self._t is None:  # the path is pinned to 0 at the first time queried
            self._append(s, torch.zeros_like(like))
            return torch.zeros_like(like)
        if self._t.shape[0] != b or self._w.shape[2:] != like.shape[1:]:
            raise ValueError(f"BrownianPath was started with shape {(self._t.shape[0], *self._w.shape[2:])}, "
                             f"queried with {tuple(like.shape)}")
        tt, col = self._t[:, :self._n], s[:, None]
        inf = torch.full_like(tt, float("inf"))
        lt, li = torch.where(torch.isfinite(tt) & (tt <= col), tt, -inf).max(1)
        rt, ri = torch.where(torch.isfinite(tt) & (tt > col), tt, inf).min(1)
        has_l, has_r = torch.isfinite(lt), torch.isfinite(rt)
        both = has_l & has_r
        lt0, rt0 = torch.where(has_l, lt, s), torch.where(has_r, rt, s)
        span = torch.where(both, rt0 - lt0, torch.ones_like(s))
        var = torch.where(both, (s - lt0) * (rt0 - s) / span, torch.where(has_l, s - lt0, rt0 - s)).clamp_(min=0.0)
        wr = torch.where(both, (s - lt0) / span, torch.where(has_l, torch.zeros_like(s), torch.ones_like(s)))
        rows = torch.arange(b, device=like.device)
        w_l, w_r = self._w[rows, li], self._w[rows, ri]
        wr_x = bcast(wr.to(like.dtype), like)
        out = w_l * (1 - wr_x) + w_r * wr_x
        new = ~(has_l & (lt0 == s))  # not a point already known (a row with no points pins W = 0)
        if bool(new.any()):
            out = out + self.base.normal(like) * bcast(torch.sqrt(var).to(like.dtype), like)
            self._append(torch.where(new, s, torch.full_like(s, float("inf"))), out)
        return out

    def increment(self, t0: Tensor, t1: Tensor, like: Tensor) -> Tensor:
        w0 = self.value(t0, like)
        return self.value(t1, like) - w0

    def normal(self, like: Tensor) -> Tensor:
        return self.base.normal(like)

    def forget(self, t: Tensor, direction: float) -> None:
        """Drop each sample's points behind its time ``t`` (``direction`` < 0: times above ``t``)."""
        if self.keep_history or self._t is None:
            return
        tt = self._t[:, :self._n]
        s = t.to(device=tt.device, dtype=torch.float64).reshape(-1, 1)
        behind = tt > s if direction < 0 else tt < s
        # keep the nearest point behind t too: the path continues from it (t and the queried times
        # may differ by a rounding when the state is float32)
        inf = torch.full_like(tt, float("inf"))
        if direction < 0:
            nearest = torch.where(behind, tt, inf).min(1, keepdim=True).values
        else:
            nearest = torch.where(behind, tt, -inf).max(1, keepdim=True).values
        tt = torch.where(behind & (tt != nearest), inf, tt)
        keep = torch.isfinite(tt)
        width = max(int(keep.sum(1).max()), 1)
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :width]
        self._t = torch.gather(tt, 1, order)
        idx = order.view(*order.shape, *([1] * (self._w.ndim - 2))).expand(*order.shape, *self._w.shape[2:])
        self._w = torch.gather(self._w[:, :self._n], 1, idx)
        self._n = width


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

    def part(self, f: Tensor) -> Tensor:
        """The Brownian increment over the first fraction ``f`` of the step, ``[t0, t0 + f (t1 - t0)]``
        (``f`` in ``[0, 1]``, shape ``(batch,)``), as a standard normal on the same path as ``dW``: its
        correlation with :attr:`z` is ``sqrt(f)``.

        A source that can be queried anywhere on its path (``source.subintervals``) is asked for it;
        otherwise it is drawn from the Brownian bridge given ``dW`` (one more normal from the source).
        """
        f = f.to(torch.float64).clamp(0.0, 1.0)
        h = (self.t1 - self.t0).to(torch.float64)
        if getattr(self.source, "subintervals", False):
            w = self.source.increment(self.t0, self.t0.to(torch.float64) + f * h, self.like)
        else:
            w = self.dW * bcast(f.to(self.like.dtype), self.like) + self.source.normal(self.like) * bcast(
                torch.sqrt(f * (1.0 - f) * h.abs()).to(self.like.dtype), self.like)
        span = (f * h.abs()).clamp(min=torch.finfo(torch.float64).tiny)
        return w / bcast(torch.sqrt(span).to(self.like.dtype), self.like)


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

    def _check(self, x: Tensor, what: str) -> None:
        """One generator per sample, on one device: ``x`` must have that batch and device type."""
        if x.ndim < 1 or x.shape[0] != len(self._gens):
            raise ValueError(f"PerSampleNoise was built for {len(self._gens)} samples (indices) but {what} "
                             f"{tuple(x.shape)}")
        if x.device.type != self.device.type:
            raise ValueError(f"PerSampleNoise draws on {self.device} but the state is on {x.device}")

    def normal(self, like: Tensor) -> Tensor:
        self._check(like, "was asked for noise of shape")
        out = torch.empty(like.shape, device=like.device, dtype=like.dtype)
        row_shape = tuple(like.shape[1:])
        for j, g in enumerate(self._gens):
            torch.randn(row_shape, generator=g, out=out[j])
        return out

    def check_run(self, grid: Tensor, x: Tensor) -> None:
        """One generator per sample: the run's batch must be the one the indices were given for."""
        self._check(x, "the run's state has shape")

    def prior(self, sde, shape: Sequence[int], *, dtype: torch.dtype) -> Tensor:
        """``x_T`` from the prior ``N(0, sde.prior_std^2 I)``, each row from its own sample's stream."""
        z = self.normal(torch.empty(tuple(shape), device=self.device, dtype=dtype))
        return z.mul_(sde.prior_std)

    def __repr__(self) -> str:
        return f"PerSampleNoise(seed={self.seed}, samples={len(self._gens)}, device={self.device})"


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


class GeneratorListNoise(PerSampleNoise):
    """Gaussian noise with the user's own generator per sample (``generator=[g0, g1, ...]``, as diffusers
    allows): row ``j``'s prior and every later draw come from ``generators[j]`` alone."""

    def __init__(self, generators: Sequence[torch.Generator]) -> None:
        GaussianNoise.__init__(self, None)
        self._gens = list(generators)
        self.device = self._gens[0].device

    def __repr__(self) -> str:
        return f"GeneratorListNoise(samples={len(self._gens)}, device={self.device})"
