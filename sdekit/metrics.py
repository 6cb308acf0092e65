"""Sample-quality metrics: Fréchet distance, sliced Wasserstein-2, and the ODE-map error with mode flips.

All computations run in float64. Fréchet distance between Gaussians fitted to the
samples (or given exactly)::

    FD = |m1 - m2|^2 + tr(C1 + C2 - 2 (C1^{1/2} C2 C1^{1/2})^{1/2})
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._utils import check_int

__all__ = ["frechet_distance", "frechet_to_moments", "moments", "sliced_wasserstein", "ode_map_error", "mode_flips"]


def _samples(name: str, x: object) -> Tensor:
    """``x`` flattened to ``(n, d)`` in float64, after checking it is a finite real tensor with a batch dim."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor of samples (batch first), got {type(x).__name__}")
    if x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"{name} must be a real tensor, got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[0] < 1 or x.numel() == 0:
        raise ValueError(f"{name} must have a non-empty batch dimension, got shape {tuple(x.shape)}")
    xf = x.reshape(x.shape[0], -1).to(torch.float64)
    if not bool(torch.isfinite(xf).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return xf


def moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``(d,)`` and unbiased covariance ``(d, d)`` of samples flattened to ``(n, d)`` (float64)."""
    return _moments("x", x)


def _moments(name: str, x: Tensor) -> tuple[Tensor, Tensor]:
    return _moments_of(name, _samples(name, x))


def _moments_of(name: str, xf: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance of already checked ``(n, d)`` float64 samples."""
    if xf.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples for a covariance, got {xf.shape[0]}")
    m = xf.mean(0)
    c = xf - m
    return m, (c.T @ c) / (xf.shape[0] - 1)


def _sqrtm_psd(c: Tensor) -> Tensor:
    w, v = torch.linalg.eigh(c)
    return (v * torch.sqrt(torch.clamp(w, min=0.0))) @ v.T


def frechet_to_moments(x: Tensor, mean: Tensor, cov: Tensor) -> float:
    """Fréchet distance between the Gaussian fitted to samples ``x`` and ``N(mean, cov)``."""
    xf = _samples("x", x)
    m1, c1 = _moments_of("x", xf)
    for name, v in (("mean", mean), ("cov", cov)):
        if not isinstance(v, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(v).__name__}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{name} contains NaN or Inf")
    m2 = mean.reshape(-1).to(device=m1.device, dtype=torch.float64)
    c2 = cov.to(device=m1.device, dtype=torch.float64)
    if m2.shape != m1.shape or c2.shape != c1.shape:
        d = m1.shape[0]
        raise ValueError(f"mean of shape {tuple(m2.shape)} / cov of shape {tuple(c2.shape)} do not match samples "
                         f"of dimension {d} (expected mean ({d},) and cov ({d}, {d}))")
    fd = ((m1 - m2) ** 2).sum() + torch.trace(c1) + torch.trace(c2) - 2 * _trace_sqrt_product(xf, m1, c1, c2)
    return float(torch.clamp(fd, min=0.0))


def _trace_sqrt_product(xf: Tensor, m1: Tensor, c1: Tensor, c2: Tensor) -> Tensor:
    """``tr sqrt(c2^1/2 c1 c2^1/2)`` for the sample covariance ``c1`` of the ``(n, d)`` samples ``xf``.

    With no more samples than dimensions, ``c1 = Y^T Y / (n - 1)`` (``Y`` the centred samples) has rank
    below ``n``, and the nonzero eigenvalues of ``c2^1/2 c1 c2^1/2`` are those of the ``n x n`` matrix
    ``Y c2 Y^T / (n - 1)``: no ``d x d`` square root or eigendecomposition is needed.
    """
    n, d = xf.shape
    if n <= d:
        y = xf - m1
        cross = torch.linalg.eigvalsh((y @ c2 @ y.T) / (n - 1))
    else:
        s2 = _sqrtm_psd(c2)
        cross = torch.linalg.eigvalsh(s2 @ c1 @ s2)
    return torch.sqrt(torch.clamp(cross, min=0.0)).sum()


def frechet_distance(x: Tensor, y: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two sample sets."""
    _samples("x", x)
    m, c = _moments("y", y)
    return frechet_to_moments(x, m, c)


def sliced_wasserstein(x: Tensor, y: Tensor, *, projections: int = 256,
                       generator: torch.Generator | None = None) -> float:
    """Sliced Wasserstein-2 distance between two sample sets of equal size (random unit directions).

    Deterministic for a given ``generator``; returns ``sqrt(mean_theta W2^2(<x,theta>, <y,theta>))``.
    """
    projections = check_int("projections", projections, minimum=1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    xf = _samples("x", x)
    yf = _samples("y", y).to(device=xf.device)
    if xf.shape != yf.shape:
        raise ValueError(f"x and y must have the same number of samples and dimension, got {tuple(xf.shape)} "
                         f"and {tuple(yf.shape)}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    theta = torch.randn(xf.shape[1], projections, generator=g, dtype=torch.float64).to(xf.device)
    theta /= theta.norm(dim=0, keepdim=True)
    px, _ = torch.sort(xf @ theta, dim=0)
    py, _ = torch.sort(yf @ theta, dim=0)
    return float(torch.sqrt(((px - py) ** 2).mean()))


def _pair(x: Tensor, x_ref: Tensor) -> tuple[Tensor, Tensor]:
    xf, rf = _samples("x", x), _samples("x_ref", x_ref)
    if xf.shape != rf.shape:
        raise ValueError(f"x and x_ref must have the same shape (one reference per sample), got {tuple(x.shape)} "
                         f"and {tuple(x_ref.shape)}")
    return xf, rf.to(xf.device)


def ode_map_error(x: Tensor, x_ref: Tensor, data_std: float) -> float:
    """RMS distance between a deterministic sampler's outputs and the reference ODE map, in data stds.

    ``sqrt(mean((x - x_ref)^2)) / data_std`` over every sample and coordinate, where ``x_ref`` is the
    converged probability-flow ODE solution from the SAME prior draws to the same end point
    (:meth:`sdekit.testing.GaussianMixture.ode_reference`) and ``data_std`` the data's RMS standard
    deviation per coordinate (:meth:`~sdekit.testing.GaussianMixture.data_std`). Unlike FD, which
    sees two moments, it sees every sample that lands in the wrong place; count those that land in
    another mixture component with :func:`mode_flips`.
    """
    if isinstance(data_std, bool) or not isinstance(data_std, (int, float)):
        raise TypeError(f"data_std must be a positive float, got {type(data_std).__name__}")
    if not (data_std > 0 and torch.isfinite(torch.tensor(float(data_std)))):
        raise ValueError(f"data_std must be a positive finite number, got {data_std}")
    xf, rf = _pair(x, x_ref)
    return float(torch.sqrt(((xf - rf) ** 2).mean())) / float(data_std)


def mode_flips(mixture, x: Tensor, x_ref: Tensor) -> int:
    """Number of samples whose most likely component of ``mixture`` differs from their reference's.

    ``mixture`` is a :class:`sdekit.testing.GaussianMixture`; the component of a point is the argmax of
    ``log w_k + log N_k(x)`` at ``t = 0`` (the data distribution).
    """
    if not callable(getattr(mixture, "component_log_prob", None)):
        raise TypeError(f"mixture must be an sdekit.testing.GaussianMixture, got {type(mixture).__name__}")
    xf, rf = _pair(x, x_ref)
    shape = (-1, *mixture.event_shape)
    if xf.shape[1] != mixture.dim:
        raise ValueError(f"x has {xf.shape[1]} coordinates per sample, the mixture {mixture.dim}")
    k = mixture.component_log_prob(xf.reshape(shape), matmul=True).argmax(1)
    k_ref = mixture.component_log_prob(rf.reshape(shape), matmul=True).argmax(1)
    return int((k != k_ref).sum())
