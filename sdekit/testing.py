"""Exact oracles: diagonal Gaussian mixtures with closed-form scores under any linear SDE.

If ``x_0 ~ sum_k w_k N(mu_k, diag(s_k^2))`` then under ``x_t = alpha x_0 + sigma z``::

    p_t(x) = sum_k w_k N(x; alpha mu_k, diag(alpha^2 s_k^2 + sigma^2))

so the score, log-density, exact samples and moments are all available at any ``t``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ._utils import check_int, check_real
from .sde import SDE

__all__ = ["GaussianMixture", "convergence_slope", "SPLITS", "random_problem", "mixture_family", "split_of"]


def _softmax_rows(logits: Tensor) -> Tensor:
    """Softmax over the last of ``(B, K)`` logits (``torch.softmax`` is ~5x slower for a handful of columns)."""
    e = torch.exp(logits - logits.amax(1, keepdim=True))
    return e / e.sum(1, keepdim=True)


class GaussianMixture:
    """A mixture of Gaussians with diagonal covariances over events of shape ``event_shape``.

    Args:
        weights: ``(K,)`` positive mixture weights (normalised here).
        means: ``(K, *event_shape)`` component means.
        stds: ``(K, *event_shape)`` component standard deviations (or a scalar).
    """

    def __init__(self, weights: Tensor | Sequence[float], means: Tensor, stds: Tensor | float) -> None:
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim < 2 or means.shape[0] < 1 or means.numel() == 0:
            raise ValueError(f"means must have shape (K, *event_shape) with K >= 1, got {tuple(means.shape)}")
        if not bool(torch.isfinite(means).all()):
            raise ValueError("means contains NaN or Inf")
        w = torch.as_tensor(weights, dtype=torch.float64)
        if w.ndim != 1 or w.shape[0] != means.shape[0]:
            raise ValueError(f"weights must have shape ({means.shape[0]},), got {tuple(w.shape)}")
        if not bool(((w > 0) & torch.isfinite(w)).all()):
            raise ValueError("weights must be finite and > 0")
        stds = torch.as_tensor(stds, dtype=torch.float64)
        try:
            stds = stds.expand_as(means).clone()
        except RuntimeError:
            raise ValueError(f"stds of shape {tuple(stds.shape)} does not broadcast to the means' shape "
                             f"{tuple(means.shape)}") from None
        if not bool(((stds > 0) & torch.isfinite(stds)).all()):
            raise ValueError("stds must be finite and > 0")
        self.weights = w / w.sum()
        self.means = means
        self.stds = stds
        self.event_shape = tuple(means.shape[1:])
        self.dim = int(means[0].numel())

    # -- construction helpers -------------------------------------------------------------
    @classmethod
    def random(cls, dim: int, components: int = 4, *, scale: float = 2.0, std: tuple[float, float] = (0.2, 0.6),
               generator: torch.Generator | None = None,
               event_shape: tuple[int, ...] | None = None) -> GaussianMixture:
        """A random mixture: means uniform on the sphere of radius ``scale``, stds uniform in ``std``."""
        dim = check_int("dim", dim, minimum=1)
        components = check_int("components", components, minimum=1)
        scale = check_real("scale", scale, nonneg=True)
        if not (isinstance(std, (tuple, list)) and len(std) == 2):
            raise ValueError(f"std must be a pair (low, high), got {std!r}")
        lo, hi = check_real("std[0]", std[0], positive=True), check_real("std[1]", std[1], positive=True)
        if lo > hi:
            raise ValueError(f"std must be (low, high) with low <= high, got {std!r}")
        if event_shape is not None and math.prod(tuple(event_shape)) != dim:
            raise ValueError(f"event_shape={tuple(event_shape)} must have dim={dim} elements")
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        mu = torch.randn(components, dim, generator=g, dtype=torch.float64)
        mu = scale * mu / mu.norm(dim=1, keepdim=True)
        s = std[0] + (std[1] - std[0]) * torch.rand(components, dim, generator=g, dtype=torch.float64)
        w = 0.5 + torch.rand(components, generator=g, dtype=torch.float64)
        shape = (dim,) if event_shape is None else tuple(event_shape)
        return cls(w, mu.reshape(components, *shape), s.reshape(components, *shape))

    # -- moments and samples -------------------------------------------------------------
    def mean(self) -> Tensor:
        """Exact mean, flattened to ``(dim,)`` (float64)."""
        return (self.weights[:, None] * self._flat(self.means)).sum(0)

    def cov(self) -> Tensor:
        """Exact covariance, ``(dim, dim)`` (float64)."""
        mu, s = self._flat(self.means), self._flat(self.stds)
        m = self.mean()
        w = self.weights
        second = torch.einsum("k,ki,kj->ij", w, mu, mu) + torch.diag((w[:, None] * s * s).sum(0))
        return second - torch.outer(m, m)

    def sample(self, n: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None, return_labels: bool = False):
        """Exact samples from the mixture (``t = 0``)."""
        n = check_int("n", n, minimum=1)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn((n, *self.event_shape), generator=generator, dtype=torch.float64)
        x = (self.means[k] + self.stds[k] * z).to(device=device, dtype=dtype)
        return (x, k) if return_labels else x

    # -- densities and scores at any t ---------------------------------------------------
    def _flat(self, v: Tensor) -> Tensor:
        return v.reshape(v.shape[0], -1)

    def _marginal(self, sde: SDE | None, t: Tensor | None, x: Tensor):
        """Per-sample (alpha, sigma) columns of shape (B, 1), float64 on x's device."""
        b = x.shape[0]
        if sde is None or t is None:
            one = torch.ones(b, 1, dtype=torch.float64, device=x.device)
            return one, torch.zeros_like(one)
        t = t.to(device=x.device, dtype=torch.float64).expand(b)
        return sde.alpha(t)[:, None], sde.sigma(t)[:, None]

    def _component_terms(self, x: Tensor, sde: SDE | None, t: Tensor | None):
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a tensor, got {type(x).__name__}")
        if x.ndim < 1 or tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x must have shape (batch, *{self.event_shape}), got {tuple(x.shape)}")
        if sde is not None and not isinstance(sde, SDE):
            raise TypeError(f"sde must be an sdekit.SDE, got {type(sde).__name__}")
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"t must be a tensor of shape (batch,) or (), got {type(t).__name__}")
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        a, s = self._marginal(sde, t, x)
        mu, sd = self._flat(self.means).to(x.device), self._flat(self.stds).to(x.device)
        logw = torch.log(self.weights).to(x.device)
        return xf, a, s, mu, sd, logw

    def _shared_time(self, x: Tensor, a: Tensor, s: Tensor) -> bool:
        """Whether every sample is at the same time (then the per-component variances are shared)."""
        return x.shape[0] <= 1 or bool((a == a[:1]).all() & (s == s[:1]).all())

    def _logits(self, x: Tensor, t: Tensor | None, sde: SDE | None, matmul: bool):
        """``(logits (B, K), terms)`` with ``terms`` the per-component pieces the score reuses."""
        xf, a, s, mu, sd, logw = self._component_terms(x, sde, t)
        shared = self._shared_time(xf, a, s)
        if shared:
            a, s = a[:1], s[:1]
        var = a.unsqueeze(1) * a.unsqueeze(1) * (sd * sd) + (s * s).unsqueeze(1)   # (1 or B, K, d)
        if shared and matmul:
            # sum_d (x - a mu)^2 / v = x^2 @ (1/v) - 2a x @ (mu/v) + a^2 mu^2/v
            inv, a0 = 1.0 / var[0], a[0, 0]
            mi = mu * inv
            const = logw - 0.5 * (a0 * a0 * (mu * mi).sum(1) + torch.log(2 * math.pi * var[0]).sum(1))
            return const - 0.5 * ((xf * xf) @ inv.T) + a0 * (xf @ mi.T), (xf, a, mu, var, True)
        logdet = torch.log(2 * math.pi * var).sum(-1)                                  # (1 or B, K)
        out = []
        for k in range(mu.shape[0]):
            r = xf - a * mu[k]
            out.append(logw[k] - 0.5 * ((r * r / var[:, k]).sum(1) + logdet[:, k]))
        return torch.stack(out, 1), (xf, a, mu, var, False)

    def component_log_prob(self, x: Tensor, t: Tensor | None = None, sde: SDE | None = None, *,
                           matmul: bool = False) -> Tensor:
        """``log w_k + log N_k(x)`` at time ``t``: shape ``(B, K)``, float64 (``matmul``: see :meth:`score`)."""
        return self._logits(x, t, sde, matmul)[0]

    def log_prob(self, x: Tensor, t: Tensor | None = None, sde: SDE | None = None, *,
                 matmul: bool = False) -> Tensor:
        """Exact log-density of ``p_t`` (``p_0`` when ``t``/``sde`` are omitted), shape ``(B,)``, float64."""
        return torch.logsumexp(self.component_log_prob(x, t, sde, matmul=matmul), 1)

    def posterior(self, x: Tensor, t: Tensor | None = None, sde: SDE | None = None, *,
                  matmul: bool = False) -> Tensor:
        """Exact noisy classifier ``p_t(component = k | x)``, shape ``(B, K)``."""
        return _softmax_rows(self.component_log_prob(x, t, sde, matmul=matmul))

    def score(self, x: Tensor, t: Tensor, sde: SDE, *, matmul: bool = False) -> Tensor:
        """Exact score ``grad_x log p_t(x)``, in ``x``'s shape, dtype and device (computed in float64).

        By default each sample's score is computed from its own row alone, so results are identical
        bit for bit whatever the batch it sits in (the batch-invariance tests rely on that). With
        ``matmul=True`` and one time for the whole batch (every fixed-grid solver), the component
        sums are ``(B, d) @ (d, K)`` matrix products: several times faster for many dimensions or
        components, but the BLAS may round a row differently in batches of different sizes.
        """
        logits, (xf, a, mu, var, mm) = self._logits(x, t, sde, matmul)
        r = _softmax_rows(logits)
        if mm:
            inv = 1.0 / var[0]                                                        # (K, d)
            out = a * (r @ (mu * inv)) - xf * (r @ inv)
            return out.reshape(x.shape).to(x.dtype)
        out = torch.zeros_like(xf)
        for k in range(mu.shape[0]):
            out -= r[:, k:k + 1] * (xf - a * mu[k]) / var[:, k]
        return out.reshape(x.shape).to(x.dtype)

    def score_fn(self, sde: SDE, *, matmul: bool = False):
        """The exact score as a ``score_fn(x, t)`` for ``sdekit.sample`` (``matmul``: see :meth:`score`)."""
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be an sdekit.SDE, got {type(sde).__name__}")
        if not isinstance(matmul, bool):
            raise TypeError(f"matmul must be a bool, got {type(matmul).__name__}")

        def score_fn(x: Tensor, t: Tensor) -> Tensor:
            return self.score(x, t, sde, matmul=matmul)

        return score_fn

    def marginal_moments(self, t: float, sde: SDE) -> tuple[Tensor, Tensor]:
        """Exact mean and covariance of ``p_t`` (flattened, float64)."""
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be an sdekit.SDE, got {type(sde).__name__}")
        tt = torch.tensor([check_real("t", t, nonneg=True)], dtype=torch.float64)
        a, s = float(sde.alpha(tt)), float(sde.sigma(tt))
        return a * self.mean(), a * a * self.cov() + s * s * torch.eye(self.dim, dtype=torch.float64)

    def pf_ode_flow(self, x_T: Tensor, t_from: float, t_to: float, sde: SDE) -> Tensor:
        """Exact probability-flow ODE map from ``t_from`` to ``t_to`` (single Gaussian only).

        For one component, ``(x - alpha mu)/sqrt(alpha^2 s^2 + sigma^2)`` is constant along the flow.
        """
        if self.means.shape[0] != 1:
            raise ValueError("the exact PF-ODE flow is available for a single Gaussian (K=1) only")
        tf = torch.tensor([t_from, t_to], dtype=torch.float64)
        a, s = sde.alpha(tf), sde.sigma(tf)
        mu, sd = self.means[0].to(x_T.device), self.stds[0].to(x_T.device)
        v0, v1 = torch.sqrt(a[0] ** 2 * sd ** 2 + s[0] ** 2), torch.sqrt(a[1] ** 2 * sd ** 2 + s[1] ** 2)
        xf = x_T.to(torch.float64)
        return (a[1] * mu + v1 * (xf - a[0] * mu) / v0).to(x_T.dtype)

    def data_std(self) -> float:
        """The data's RMS standard deviation per coordinate, ``sqrt(tr Cov / dim)`` (the ODE-map error's unit)."""
        mu, s = self._flat(self.means), self._flat(self.stds)
        w = self.weights[:, None]
        var = (w * (mu * mu + s * s)).sum(0) - self.mean() ** 2
        return float(torch.sqrt(var.clamp(min=0).mean()))

    def ode_reference(self, sde: SDE, x_T: Tensor, *, eps: float | None = None, T: float | None = None,
                      denoise: bool = True, rtol: float = 1e-9, max_steps: int = 4096) -> Tensor:
        """The converged float64 probability-flow ODE solution from ``x_T`` (at ``T``) to ``eps``.

        The reference every deterministic sampler's output is compared with (the ODE-map error,
        :func:`sdekit.metrics.ode_map_error`): same start, same end time, and with ``denoise=True``
        the same final denoising jump ``(x + sigma^2 s) / alpha`` at ``eps`` that ``sdekit.sample``
        takes by default.

        The ODE is integrated as Karras et al.'s ``d x~ / d ln s~ = x~ - D(x~)`` in the scaled state
        ``x~ = x / alpha`` against ``ln s~ = -lambda`` (``s~ = sigma / alpha``), where its Jacobian has
        eigenvalues in ``[0, 1]`` within a component: non-stiff from pure noise down to a 1% component
        std. Classic RK4 on a uniform grid in ``ln s~`` with ``n = 32, 64, ...`` steps (each a refinement
        of the last), until the Richardson estimate of the error, ``|x_n - x_{n/2}| / 15`` in RMS over
        the batch, is below ``rtol`` times the RMS of ``x_n``; the result is the extrapolated
        ``x_n + (x_n - x_{n/2}) / 15``. Cost: about ``8 n`` score evaluations in float64.

        Args:
            sde: the forward SDE the score belongs to.
            x_T: the prior draws, ``(batch, *event_shape)``.
            eps: the end time (default ``sde.eps``); T: the start time (default ``sde.T``).
            denoise: finish with the denoising jump at ``eps`` (as ``sdekit.sample(..., denoise=True)``).
            rtol: target relative accuracy of the end point.
            max_steps: the largest RK4 step count tried before giving up with a ``RuntimeError``.

        Returns:
            The end points in float64, ``x_T``'s shape and device.
        """
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be an sdekit.SDE, got {type(sde).__name__}")
        if not isinstance(x_T, Tensor):
            raise TypeError(f"x_T must be a tensor, got {type(x_T).__name__}")
        if x_T.ndim < 1 or tuple(x_T.shape[1:]) != self.event_shape:
            raise ValueError(f"x_T must have shape (batch, *{self.event_shape}), got {tuple(x_T.shape)}")
        if not isinstance(denoise, bool):
            raise TypeError(f"denoise must be a bool, got {type(denoise).__name__}")
        rtol = check_real("rtol", rtol, positive=True)
        max_steps = check_int("max_steps", max_steps, minimum=32)
        e = sde.eps if eps is None else check_real("eps", eps, positive=True)
        t_end = sde.T if T is None else check_real("T", T, positive=True)
        if not e < t_end:
            raise ValueError(f"eps must be < T, got eps={e} and T={t_end}")
        lam_T, lam_e = (float(v) for v in sde.log_snr(torch.tensor([t_end, e], dtype=torch.float64)))
        y0 = x_T.to(torch.float64) / float(sde.alpha(torch.tensor([t_end], dtype=torch.float64)))

        def denoiser(y: Tensor, lam: float) -> Tensor:
            t = sde.t_from_log_snr(torch.tensor([lam], dtype=torch.float64))
            a, s = float(sde.alpha(t)), float(sde.sigma(t))
            x = a * y
            return (x + s * s * self.score(x, t.expand(x.shape[0]), sde, matmul=True)) / a

        def rk4(n: int) -> Tensor:
            # u = ln s~ = -lambda runs from -lam_T down to -lam_e; dy/du = y - D(y)
            us = torch.linspace(-lam_T, -lam_e, n + 1, dtype=torch.float64).tolist()
            y = y0.clone()
            for u0, u1 in zip(us[:-1], us[1:]):
                h = u1 - u0
                k1 = y - denoiser(y, -u0)
                y2 = y + 0.5 * h * k1
                k2 = y2 - denoiser(y2, -(u0 + 0.5 * h))
                y3 = y + 0.5 * h * k2
                k3 = y3 - denoiser(y3, -(u0 + 0.5 * h))
                y4 = y + h * k3
                k4 = y4 - denoiser(y4, -u1)
                y = y + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
            return y

        n, prev = 32, rk4(16)
        while True:
            cur = rk4(n)
            diff = (cur - prev) / 15
            if float(diff.pow(2).mean().sqrt()) <= rtol * float(cur.pow(2).mean().sqrt()):
                y = cur + diff
                break
            if 2 * n > max_steps:
                raise RuntimeError(f"ode_reference did not reach rtol={rtol:g} within {max_steps} RK4 steps")
            n, prev = 2 * n, cur
        if denoise:
            return denoiser(y, lam_e)
        return y * float(sde.alpha(torch.tensor([e], dtype=torch.float64)))

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.means.shape[0]}, event_shape={self.event_shape})"




def convergence_slope(steps: Sequence[float], errors: Sequence[float]) -> float:
    """The measured order: least-squares slope of ``log(error)`` against ``log(1/steps)``.

    ``steps`` are step counts (or any quantity proportional to ``1/h``); the shared helper of the
    convergence tests and ``benchmarks/orders.py``.
    """
    lh = torch.log(1.0 / torch.tensor(list(steps), dtype=torch.float64))
    le = torch.log(torch.tensor(list(errors), dtype=torch.float64))
    a = torch.stack([lh, torch.ones_like(lh)], 1)
    return float(torch.linalg.lstsq(a, le[:, None]).solution[0])


# -- held-out problem families ---------------------------------------------------------------

#: the disjoint seed splits of :func:`mixture_family`: problem ``index`` of a split has seed
#: ``2 * index`` (tuning: defaults are chosen on these) or ``2 * index + 1`` (heldout: tables are
#: reported on these, never tuned on).
SPLITS = ("tuning", "heldout")


def split_of(seed: int) -> str:
    """The split a :func:`random_problem` seed belongs to (even: ``"tuning"``, odd: ``"heldout"``)."""
    return SPLITS[check_int("seed", seed, minimum=0) % 2]


def _log_uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * float(torch.rand((), generator=g,
                                                                                    dtype=torch.float64)))


def random_problem(seed: int, *, dim: int | None = None, components: int | None = None) -> GaussianMixture:
    """A seeded random mixture from the family the defaults are tuned and reported on.

    Drawn from ``seed`` (the same mixture for the same seed and options, on every machine):

    - dimension log-uniform in ``[2, 3072]`` (unless ``dim`` is given), components log-uniform in
      ``[2, 50]`` (unless ``components`` is given);
    - imbalanced weights: log-normal with a log-std drawn in ``[0, 1.5]``;
    - means ``N(0, diag(a^2))`` with anisotropic per-dimension scales ``a_d = exp(c N(0, 1))``,
      ``c`` in ``[0, 1]``, then centred and scaled so the RMS spread of the means per coordinate is
      an overall data scale drawn log-uniform in ``[0.5, 2]``;
    - within-component stds: a per-component level log-uniform in ``[0.01, 0.5]`` times the spread,
      times per-dimension factors in ``[0.5, 2]`` (anisotropic), never below 1% of the spread.

    The other draws do not depend on ``dim``/``components``, which only replace their own draw, so
    fixing the dimension for a benchmark keeps each seed's other properties.

    Use :func:`mixture_family` to pick problems by split: even seeds are the tuning split, odd seeds
    the held-out split (:func:`split_of`).
    """
    seed = check_int("seed", seed, minimum=0)
    g = torch.Generator().manual_seed(1_000_003 * seed + 12345)
    d_draw = int(round(_log_uniform(g, 2, 3072)))
    k_draw = int(round(_log_uniform(g, 2, 50)))
    w_spread = 1.5 * float(torch.rand((), generator=g, dtype=torch.float64))
    aniso = float(torch.rand((), generator=g, dtype=torch.float64))
    scale = _log_uniform(g, 0.5, 2.0)
    d = d_draw if dim is None else check_int("dim", dim, minimum=1)
    k = k_draw if components is None else check_int("components", components, minimum=1)
    # tensor draws from their own streams, so a fixed dim/components leaves the others unchanged
    gw = torch.Generator().manual_seed(1_000_003 * seed + 1)
    gm = torch.Generator().manual_seed(1_000_003 * seed + 2)
    gs = torch.Generator().manual_seed(1_000_003 * seed + 3)
    w = torch.exp(w_spread * torch.randn(k, generator=gw, dtype=torch.float64))
    a = torch.exp(aniso * torch.randn(d, generator=gm, dtype=torch.float64))
    mu = torch.randn(k, d, generator=gm, dtype=torch.float64) * a
    mu = mu - (w[:, None] * mu).sum(0) / w.sum() if k > 1 else mu
    spread = float(mu.pow(2).mean().sqrt()) if k > 1 else 1.0
    mu = mu * (scale / spread)
    level = torch.exp(math.log(0.01) + (math.log(0.5) - math.log(0.01)) * torch.rand(k, 1, generator=gs,
                                                                                   dtype=torch.float64))
    per_dim = torch.exp(math.log(2.0) * (2 * torch.rand(k, d, generator=gs, dtype=torch.float64) - 1))
    stds = torch.clamp(level * per_dim, min=0.01) * scale
    return GaussianMixture(w, mu, stds)


def mixture_family(split: str, index: int, *, dim: int | None = None,
                   components: int | None = None) -> GaussianMixture:
    """Problem ``index`` of a split of :func:`random_problem`'s family.

    Args:
        split: ``"tuning"`` (seeds ``0, 2, 4, ...``: choose defaults on these) or ``"heldout"``
            (seeds ``1, 3, 5, ...``: report on these only). The splits never share a seed.
        index: ``0, 1, 2, ...`` within the split.
        dim, components: override the drawn dimension / number of components (see :func:`random_problem`).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    index = check_int("index", index, minimum=0)
    return random_problem(2 * index + SPLITS.index(split), dim=dim, components=components)


