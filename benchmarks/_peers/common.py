"""Shared pieces of the peer benchmark: problems, the counted/timed oracle, run specifications, metrics.

Every library is driven through the interface it natively consumes (a score, a Karras
denoiser ``D(x, sigma)``, or a DDPM ``eps(x, timestep)``). Each of those interfaces is one
counted call of :class:`Oracle`, which also accumulates the wall time spent inside it, so
that ``wall - time_in_model`` is the library's own overhead.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

import sdekit
from sdekit.metrics import frechet_to_moments, moments, sliced_wasserstein
from sdekit.testing import GaussianMixture, mixture_family

__all__ = ["Problem", "Oracle", "RunSpec", "make_problem", "steps_for", "CachedFrechet", "ProjectedFrechet"]


class CachedFrechet:
    """``sdekit.metrics.frechet_to_moments`` with the exact covariance's square root computed once.

    Same formula; for 3072-D problems with more samples than dimensions it halves the cost of every
    evaluation (with fewer, ``frechet_to_moments`` works on the ``n x n`` Gram matrix instead).
    """

    def __init__(self, mean: Tensor, cov: Tensor) -> None:
        self.mean, self.cov = mean.to(torch.float64), cov.to(torch.float64)
        w, v = torch.linalg.eigh(self.cov)
        self.sqrt_cov = (v * torch.sqrt(torch.clamp(w, min=0.0))) @ v.T
        self.tr_cov = float(torch.trace(self.cov))

    def __call__(self, x: Tensor) -> float:
        if x.shape[-1] <= 256 or x.shape[0] <= x.shape[-1]:  # small d, or the n x n path of fewer samples than d
            return frechet_to_moments(x, self.mean, self.cov)
        m1, c1 = moments(x)
        cross = torch.linalg.eigvalsh(self.sqrt_cov @ c1 @ self.sqrt_cov)
        fd = ((m1 - self.mean) ** 2).sum() + torch.trace(c1) + self.tr_cov - 2 * torch.sqrt(cross.clamp(min=0)).sum()
        return float(fd.clamp(min=0.0))


class ProjectedFrechet:
    """Fréchet distance after projecting onto ``k`` orthonormal directions: the span of the mixture's
    component means (where its modes are) completed by random directions.

    In 3072-D with ~1000 samples the full FD is dominated by the rank-deficient sample covariance,
    and a sampler that shrinks its samples can score below the exact-sample floor. Projected to
    ``k << n`` dimensions, the covariance is well estimated and the FD ranks samplers again.
    """

    def __init__(self, mix: GaussianMixture, k: int = 32, seed: int = 0) -> None:
        mu = mix.means.reshape(mix.means.shape[0], -1).to(torch.float64)
        g = torch.Generator().manual_seed(seed)
        basis = torch.cat([(mu - mu.mean(0)).T, torch.randn(mu.shape[1], k, generator=g, dtype=torch.float64)], 1)
        self.q = torch.linalg.qr(basis[:, :k]).Q                     # (d, k), orthonormal columns
        self.mean = mix.mean() @ self.q
        self.cov = self.q.T @ mix.cov() @ self.q

    def __call__(self, x: Tensor) -> float:
        return frechet_to_moments(x.reshape(x.shape[0], -1).to(torch.float64) @ self.q, self.mean, self.cov)


@dataclass
class Problem:
    """One exact benchmark problem: a Gaussian mixture, a forward SDE, a batch size and a seed."""

    name: str
    dim: int
    sde_name: str
    sde: sdekit.SDE
    mix: GaussianMixture
    samples: int
    seed: int
    fd: CachedFrechet
    reference: Tensor                  # exact samples for sliced W2
    floor_fd: float = float("nan")     # mean FD of exact sample sets of the same size
    floor_sw: float = float("nan")     # sliced W2 between two exact sample sets
    fd_proj: ProjectedFrechet | None = None  # FD in 32 dimensions (problems with d > 256)
    floor_fd_proj: float = float("nan")
    score: Callable[[Tensor, Tensor], Tensor] = field(default=None, repr=False)  # type: ignore[assignment]
    #: where the mixture comes from: "fixed" (``GaussianMixture.random(dim)``, seed 0: the problems the
    #: pre-issue-12 defaults were tuned on) or a split of ``sdekit.testing.mixture_family``
    split: str = "fixed"
    _refs: dict = field(default_factory=dict, repr=False)

    def ode_reference(self, x_T: Tensor) -> Tensor:
        """The float64 PF-ODE solution from ``x_T`` (denoising jump included), cached per draw."""
        key = (x_T.shape, float(x_T.double().sum()), float(x_T.double().pow(2).sum()))
        if key not in self._refs:
            self._refs[key] = self.mix.ode_reference(self.sde, x_T.to(torch.float64), rtol=1e-8)
        return self._refs[key]

    def x_T(self, seed: int | None = None) -> Tensor:
        g = torch.Generator().manual_seed(self.seed if seed is None else seed)
        return self.sde.prior_sample((self.samples, self.dim), generator=g, dtype=torch.float32)

    def t_of_log_snr(self, lam: Tensor) -> Tensor:
        return self.sde.t_from_log_snr(lam.to(torch.float64))

    def log_snr_range(self) -> tuple[float, float]:
        """``(lambda(T), lambda(eps))``."""
        ends = self.sde.log_snr(torch.tensor([self.sde.T, self.sde.eps], dtype=torch.float64))
        return float(ends[0]), float(ends[1])


def make_problem(dim: int, sde_name: str, samples: int, *, seed: int = 0, floor_repeats: int = 3,
                 split: str | None = None, index: int = 0) -> Problem:
    """The benchmark problem ``{dim}d-{vp|ve}`` under a default SDE.

    The mixture is ``GaussianMixture.random(dim)`` (seed 0) without ``split``, else
    ``sdekit.testing.mixture_family(split, index, dim=dim)`` (named ``{split}{index}-{dim}d-K{K}-{sde}``).
    """
    if sde_name == "vp":
        sde: sdekit.SDE = sdekit.VPSDE()
    elif sde_name == "ve":
        sde = sdekit.VESDE()
    else:
        raise ValueError(f"sde must be 'vp' or 've', got {sde_name!r}")
    if split is None:
        mix = GaussianMixture.random(dim, generator=torch.Generator().manual_seed(0))
        name = f"{dim}d-{sde_name}"
    else:
        mix = mixture_family(split, index, dim=dim)
        name = f"{split}{index}-{dim}d-K{mix.means.shape[0]}-{sde_name}"
    fd = CachedFrechet(mix.mean(), mix.cov())
    g = torch.Generator().manual_seed(10_000 + seed)
    ref = mix.sample(samples, generator=g)
    p = Problem(name, dim, sde_name, sde, mix, samples, seed, fd, ref, split=split or "fixed")
    if dim > 256:
        p.fd_proj = ProjectedFrechet(mix)
    fds, sws, fps = [], [], []
    for _ in range(floor_repeats):  # the floor is an average over independent exact sample sets
        other = mix.sample(samples, generator=g)
        fds.append(fd(other))
        sws.append(sliced_wasserstein(other, ref))
        if p.fd_proj is not None:
            fps.append(p.fd_proj(other))
    p.floor_fd, p.floor_sw = sum(fds) / len(fds), sum(sws) / len(sws)
    p.floor_fd_proj = sum(fps) / len(fps) if fps else float("nan")
    p.score = mix.score_fn(sde, matmul=True)  # matrix products when the batch shares one time
    return p


class Oracle:
    """Counted, timed access to the exact model of a :class:`Problem` in each library's convention.

    ``nfe`` counts calls of any of the interfaces; ``time_in`` is the wall time spent inside them.
    """

    def __init__(self, problem: Problem) -> None:
        self.p = problem
        self.nfe = 0
        self.time_in = 0.0

    def _t(self, x: Tensor, t: Tensor | float) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        return t.expand(x.shape[0]) if t.numel() == 1 else t

    def score(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Exact score at forward time ``t`` (scalar or ``(batch,)``)."""
        t0 = time.perf_counter()
        self.nfe += 1
        out = self.p.score(x, self._t(x, t))
        self.time_in += time.perf_counter() - t0
        return out

    def denoiser(self, x_tilde: Tensor, sigma_tilde: Tensor | float) -> Tensor:
        """Karras/k-diffusion denoiser in ``x_tilde = x/alpha`` space, ``sigma_tilde = sigma/alpha``."""
        t0 = time.perf_counter()
        self.nfe += 1
        st = torch.as_tensor(sigma_tilde, dtype=torch.float64).reshape(-1)
        if st.numel() > 1 and bool((st == st[0]).all()):
            st = st[:1]
        t = self.p.t_of_log_snr(-torch.log(st))
        a, s = self.p.sde.alpha(t), self.p.sde.sigma(t)
        if t.numel() == 1:
            a_, s_ = float(a), float(s)
            x = x_tilde * a_
            out = (x + (s_ * s_) * self.p.score(x, t.expand(x.shape[0]))) / a_
        else:
            shp = (-1,) + (1,) * (x_tilde.ndim - 1)
            a_, s_ = a.to(x_tilde.dtype).reshape(shp), s.to(x_tilde.dtype).reshape(shp)
            x = x_tilde * a_
            out = (x + s_ * s_ * self.p.score(x, t)) / a_
        self.time_in += time.perf_counter() - t0
        return out

    def eps(self, x_vp: Tensor, log_snr: float) -> Tensor:
        """DDPM epsilon at half log-SNR ``log_snr`` in the variance-preserving scaling.

        ``x_vp = x / sqrt(alpha^2 + sigma^2)`` (``= x`` for VP); ``eps = -sigma * score``.
        """
        t0 = time.perf_counter()
        self.nfe += 1
        t = self.p.t_of_log_snr(torch.tensor([log_snr], dtype=torch.float64))
        a, s = float(self.p.sde.alpha(t)), float(self.p.sde.sigma(t))
        c = math.hypot(a, s)
        out = -s * self.p.score(x_vp * c, t.expand(x_vp.shape[0]))
        self.time_in += time.perf_counter() - t0
        return out


@dataclass
class RunSpec:
    """One sampler configuration of one library.

    ``run(oracle, x_T, seed)`` returns samples in the data space; ``budget`` is the NFE budget it
    was sized for (``None`` for tolerance-driven adaptive runs).
    """

    library: str
    method: str
    setting: str
    budget: int | None
    run: Callable[[Oracle, Tensor, int], Tensor]
    extra: dict[str, Any] = field(default_factory=dict)
    #: the same x_T always gives the same output (an ODE sampler): ranked by the ODE-map error too
    deterministic: bool = False


def geometric_mean(xs: list[float]) -> float:
    """Geometric mean of ratios; ``inf`` when any is non-finite or <= 0 (a failed run counts as the worst), or
    when there are none."""
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs and all(math.isfinite(x) and x > 0 for x in xs) \
        else math.inf


def steps_for(budget: int, nfe_per_step: int, extra: int = 0) -> int:
    """Largest step count ``n`` with ``n * nfe_per_step + extra <= budget`` (at least 1)."""
    return max(1, (budget - extra) // nfe_per_step)


def tweedie(oracle: Oracle, x: Tensor, t: float) -> Tensor:
    """Final denoising ``(x + sigma^2 s) / alpha`` at forward time ``t`` (one counted NFE)."""
    tt = torch.tensor([t], dtype=torch.float64)
    a, s = float(oracle.p.sde.alpha(tt)), float(oracle.p.sde.sigma(tt))
    return (x + (s * s) * oracle.score(x, tt)) / a
