"""Controllable generation from an unconditional score (Song et al. 2021, Sec. 5 and App. I).

Two kinds of tools, both usable with EVERY solver:

- **Score transformations** return a new ``score_fn(x, t)``:
  :func:`classifier_guidance` adds ``scale * grad_x log p_t(y | x)`` (Bayes:
  ``grad log p_t(x | y) = grad log p_t(x) + grad log p_t(y | x)``; exact at ``scale = 1``),
  :func:`classifier_free` mixes a conditional and an unconditional score, and
  :func:`log_prob_gradient` turns a time-dependent classifier ``log p_t(y | x)`` into its gradient.
- **Conditions** are projections applied after every step, passed as
  ``sdekit.sample(..., condition=...)``, which wraps the solver as
  :class:`~sdekit.solvers.conditioned.Conditioned` (so they work with every solver, adaptive
  ones included): :class:`Inpainting` (known entries under a mask of
  any shape), :class:`LinearMeasurement` (``y = A x`` with ``A`` having orthonormal rows)
  and :func:`colorization` (the gray channel of an image as such a measurement). After
  each step to ``t1`` the measured part is replaced by a fresh forward-noised copy of the
  measurement, ``alpha(t1) y + sigma(t1) xi`` (the paper's method). Two optional
  refinements reduce the method's bias (measured in ``docs/guidance.md``):

  * ``corrector_steps``: Langevin moves of the free (unmeasured) part at ``t1`` after the
    replacement, each followed by a replacement (the paper's corrector; 1 NFE each). The step
    size comes from the free part's norms alone (see :meth:`Condition._correct`). Recommended:
    ``corrector_steps=20`` with ``reverse_diffusion`` and 100 steps (tested within 3x the
    finite-sample floor of the exact conditional of a 2-D mixture);
  * ``resample``: RePaint-style resampling (Lugmayr et al. 2022): ``resample - 1`` times,
    noise the state forward ``t1 -> t0`` with the exact transition, take one reverse-diffusion
    step back ``t0 -> t1`` and replace again (1 NFE each). This lets the unknown part
    harmonise with the known one (measured less effective than the corrector per NFE).

A condition object only needs ``apply(process, x, t0, t1, noise) -> x`` (called by the
wrapper after each step of the solver) and, optionally, ``check(x)`` (called before any score
evaluation: raise on samples it cannot condition) and ``finalize(x) -> x`` (called after the
final denoising step; here it sets the measured part to the clean measurement).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from ._utils import bcast, check_int, check_real
from .kernels import lincomb
from .noise import NoiseSource, StepNoise
from .process import ScoreFn
from .solvers.langevin import snr_step_size
from .solvers.reverse_diffusion import ReverseDiffusion

__all__ = ["classifier_guidance", "classifier_free", "log_prob_gradient", "Condition", "Inpainting",
           "LinearMeasurement", "colorization", "cfg_batched", "BatchedCFG"]


def _check_callable(name: str, fn: Any) -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be callable (x, t) -> tensor, got {type(fn).__name__}")


def classifier_guidance(score_fn: ScoreFn, grad_log_p_y: Callable[[Tensor, Tensor], Tensor],
                        scale: float = 1.0) -> ScoreFn:
    """Score of ``p_t(x | y)`` from an unconditional score and a noisy classifier's gradient.

    Returns ``s(x, t) + scale * grad_x log p_t(y | x)``. ``scale = 1`` is exact Bayes; larger
    scales sharpen the class (Dhariwal & Nichol 2021).

    Args:
        score_fn: unconditional score ``s(x, t)``.
        grad_log_p_y: ``(x, t) -> grad_x log p_t(y | x)`` (see :func:`log_prob_gradient`). It runs
            with autograd enabled (also inside the samplers' ``no_grad``), so it may call
            ``torch.autograd.grad`` on ``x.requires_grad_()`` itself.
        scale: guidance scale (any real number; negative values push away from ``y``).
    """
    _check_callable("score_fn", score_fn)
    _check_callable("grad_log_p_y", grad_log_p_y)
    scale = check_real("scale", scale)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        # grad_log_p_y usually calls torch.autograd.grad: give it autograd even under the samplers'
        # no_grad, on a detached view (its requires_grad_ must not flag the solver's state); when x
        # itself requires grad (likelihood), x is passed as is so the result can stay differentiable
        keep = x.requires_grad
        with torch.enable_grad():
            g = grad_log_p_y(x if keep else x.detach(), t)
        if isinstance(g, Tensor) and not keep:
            g = g.detach()
        if not isinstance(g, Tensor) or g.shape != x.shape:
            raise ValueError(f"grad_log_p_y must return a tensor of x's shape {tuple(x.shape)}, got "
                             f"{tuple(g.shape) if isinstance(g, Tensor) else type(g).__name__}")
        return score_fn(x, t) + scale * g.to(x.dtype)

    return guided


def classifier_free(cond_score: ScoreFn, uncond_score: ScoreFn, scale: float = 1.0) -> ScoreFn:
    """Classifier-free guidance (Ho & Salimans 2022): ``u + scale * (c - u)``.

    ``scale = 1`` is the conditional score itself, ``scale = 0`` the unconditional one; in the
    eps-prediction convention ``(1 + w) eps_c - w eps_u`` this is ``scale = 1 + w``. Note that
    ``c - u = grad log p_t(y | x)`` exactly, so this equals :func:`classifier_guidance` with that
    implicit classifier. Both scores are evaluated once per call (counted as one NFE by the
    driver; a batched model can evaluate them together inside its own ``score_fn``).
    """
    _check_callable("cond_score", cond_score)
    _check_callable("uncond_score", uncond_score)
    scale = check_real("scale", scale)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        u = uncond_score(x, t)
        return u + scale * (cond_score(x, t) - u)

    return guided


class BatchedCFG:
    """Classifier-free guidance with ONE batched forward pass per evaluation (see :func:`cfg_batched`).

    Attributes:
        model_calls: forward passes of ``fn`` so far (one per score evaluation, each on ``2B`` rows).
        rows: rows evaluated so far (``2B`` per call): the cost in single-sample evaluations.
    """

    def __init__(self, fn: Callable[..., Tensor], scale: float, null_label: Any) -> None:
        self.fn, self.scale, self.null_label = fn, scale, null_label
        self.model_calls = 0
        self.rows = 0

    def __call__(self, labels: Any) -> Callable[[Tensor, Tensor], Tensor]:
        """The guided ``(x, t) -> output`` for this sampling call's class ``labels`` (one per sample)."""
        if not isinstance(labels, Tensor) or labels.ndim < 1:
            raise TypeError(f"labels must be a tensor with one entry per sample (batch first), got "
                            f"{type(labels).__name__}")
        null = self.null_label
        null = (torch.full_like(labels, null) if not isinstance(null, Tensor)
                else null.to(labels.device).expand_as(labels))
        both = torch.cat([labels, null])

        def guided(x: Tensor, t: Tensor) -> Tensor:
            if x.shape[0] != labels.shape[0]:
                raise ValueError(f"cfg_batched: the labels were given for a batch of {labels.shape[0]} samples "
                                 f"but the state has {x.shape[0]}; pass one label per sample")
            t2 = torch.cat([t, t]) if isinstance(t, Tensor) and t.ndim >= 1 else t
            out = self.fn(torch.cat([x, x]), t2, both.to(x.device))
            self.model_calls += 1
            self.rows += 2 * x.shape[0]
            c, u = out.chunk(2)
            return u + self.scale * (c - u)

        return guided

    def __repr__(self) -> str:
        return f"BatchedCFG(scale={self.scale}, model_calls={self.model_calls})"


def cfg_batched(fn: Callable[..., Tensor], scale: float, *, null_label: Any) -> BatchedCFG:
    """Classifier-free guidance (Ho & Salimans 2022) with the conditional and unconditional
    evaluations in one ``2B`` forward pass, the class labels given per sampling call.

    ``fn(x, t, labels)`` is the model in ANY parametrisation (score, eps, x0/denoiser, v or flow
    velocity: the guided combination ``u + scale (c - u)`` is affine with weights summing to 1, so
    it is the same guidance in each); wrap the result with the matching adapter of
    :mod:`sdekit.score`. Each score evaluation makes exactly one call of ``fn`` (so the NFE the
    driver reports is the number of forward passes); :attr:`BatchedCFG.model_calls` and
    :attr:`BatchedCFG.rows` count them.

    Args:
        fn: ``fn(x2, t2, labels2) -> output like x2`` on the doubled batch.
        scale: guidance scale (1: conditional, 0: unconditional).
        null_label: the "no class" label of the unconditional half (e.g. 1000 for DiT).

    Example:
        >>> cfg = sdekit.guidance.cfg_batched(lambda x, t, y: net(x, t, y), 4.0, null_label=1000)  # doctest: +SKIP
        >>> score = sdekit.score.from_eps(cfg(labels), sde)  # doctest: +SKIP
    """
    _check_callable("fn", fn)
    return BatchedCFG(fn, check_real("scale", scale), null_label)


def log_prob_gradient(log_p_y: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """Turn a time-dependent classifier ``log_p_y(x, t) -> (batch,)`` into ``grad_x log p_t(y | x)``.

    Gradients are switched on locally, so this works inside the samplers' ``no_grad``. When ``x``
    itself requires grad (as in :func:`sdekit.likelihood`), the result stays differentiable.
    """
    _check_callable("log_p_y", log_p_y)

    def grad_fn(x: Tensor, t: Tensor) -> Tensor:
        keep = x.requires_grad
        with torch.enable_grad():
            xr = x if keep else x.detach().requires_grad_(True)
            lp = log_p_y(xr, t)
            if not isinstance(lp, Tensor) or lp.shape != (x.shape[0],):
                raise ValueError(f"log_p_y must return a tensor of shape (batch,) = ({x.shape[0]},), got "
                                 f"{tuple(lp.shape) if isinstance(lp, Tensor) else type(lp).__name__}")
            (g,) = torch.autograd.grad(lp.sum(), xr, create_graph=keep)
        return g.to(x.dtype)

    return grad_fn


# ----------------------------------------------------------------------------- conditions


class Condition:
    """Base class of projections applied by the driver after each step (see the module docstring).

    Subclasses implement :meth:`replace` (measured part set to ``a * y + s * xi``),
    :meth:`finalize` and :meth:`free_part` (the projection the corrector moves along).

    Args:
        corrector_steps: Langevin moves of the free part after each replacement (each followed by a
            replacement).
        snr: signal-to-noise ratio of those Langevin moves.
        resample: RePaint resampling: total passes per step (1 = the paper's plain replacement).
    """

    def __init__(self, *, corrector_steps: int = 0, snr: float = 0.16, resample: int = 1, jump: int = 1) -> None:
        self.jump = check_int("jump", jump, minimum=1)
        self.corrector_steps = check_int("corrector_steps", corrector_steps, minimum=0)
        self.snr = check_real("snr", snr, positive=True)
        self.resample = check_int("resample", resample, minimum=1)
        self._reverse = ReverseDiffusion()

    def replace(self, x: Tensor, a: Tensor, s: Tensor, noise: NoiseSource) -> Tensor:
        """Return ``x`` with its measured part replaced by ``a * y + s * xi`` (``xi`` standard normal)."""
        raise NotImplementedError

    def check(self, x: Tensor) -> None:
        """Raise ``ValueError`` if samples shaped like ``x`` cannot be conditioned (called before any work)."""

    def finalize(self, x: Tensor) -> Tensor:
        """Return ``x`` with its measured part set to the clean measurement."""
        raise NotImplementedError

    def nfe_per_step(self) -> int:
        """Extra score evaluations this condition spends per driver step."""
        return self.resample - 1 + self.corrector_steps

    def apply(self, process: Any, x: Tensor, t0: Tensor, t1: Tensor, noise: NoiseSource) -> Tensor:
        """Project the state reached at ``t1`` by the step from ``t0`` (called after each solver step)."""
        sde = getattr(process, "sde", None)
        if sde is None:
            raise TypeError("a condition needs a process with an .sde (sdekit.ReverseProcess)")
        a1, s1 = sde.alpha(t1), sde.sigma(t1)
        x = self.replace(x, a1, s1, noise)
        if self.resample > 1:
            t_back = torch.clamp(t1 + self.jump * (t0 - t1), max=sde.T)
            for _ in range(self.resample - 1):
                ta, ts = sde.transition(t1, t_back)
                x = bcast(ta, x) * x + bcast(ts, x) * noise.normal(x)
                for j in range(self.jump):
                    u0 = t_back + (t1 - t_back) * (j / self.jump)
                    u1 = t_back + (t1 - t_back) * ((j + 1) / self.jump)
                    x, _, _ = self._reverse.step(process, u0, u1, x, {}, StepNoise(noise, u0, u1, x))
                    x = self.replace(x, sde.alpha(u1), sde.sigma(u1), noise)
        for _ in range(self.corrector_steps):
            x = self._correct(process, t1, x, noise)
            x = self.replace(x, a1, s1, noise)
        return x

    def _correct(self, process: Any, t: Tensor, x: Tensor, noise: NoiseSource) -> Tensor:
        """One Langevin move of the unmeasured part only (the measured part is replaced right after).

        The step size ``e = 2 (snr mean||z_free|| / mean||score_free||)^2`` (norms over the batch, as
        in the paper's corrector) is computed from the free part alone: the score of the measured
        part is irrelevant (that part is overwritten) and, once ``sigma(t)`` is small, much larger
        than the free part's, so including it (as a plain Langevin corrector does) shrinks the
        steps several-fold and leaves the modes of the conditional unmixed.
        """
        score = self.free_part(process.score(x, t))
        z = self.free_part(noise.normal(x))
        e = snr_step_size(score, z, self.snr)
        return lincomb(x, 1.0, [(e, score), (torch.sqrt(2 * e), z)])

    def free_part(self, v: Tensor) -> Tensor:
        """``v`` with its measured part set to zero (the orthogonal projection onto the free part)."""
        raise NotImplementedError


def _as_float_tensor(name: str, v: Any) -> Tensor:
    if not isinstance(v, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(v).__name__}")
    if not v.dtype.is_floating_point:
        raise TypeError(f"{name} must have a floating dtype, got {v.dtype}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return v


class Inpainting(Condition):
    """Known entries ``x[mask] = y[mask]``; the rest is generated (Song et al. 2021, App. I.2).

    Args:
        y: the known values, any tensor broadcastable to the samples' shape (entries outside the
            mask are ignored).
        mask: boolean tensor broadcastable to the samples' shape, ``True`` where ``y`` is known
            (e.g. ``(C, H, W)`` for one mask shared by the batch, or ``(B, C, H, W)``).
        corrector_steps, snr, resample: see :class:`Condition`.
    """

    def __init__(self, y: Tensor, mask: Tensor, *, corrector_steps: int = 0, snr: float = 0.16,
                 resample: int = 1, jump: int = 1) -> None:
        super().__init__(corrector_steps=corrector_steps, snr=snr, resample=resample, jump=jump)
        self.y = _as_float_tensor("y", y)
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"mask must be a boolean tensor, got "
                            f"{mask.dtype if isinstance(mask, Tensor) else type(mask).__name__}")
        try:
            torch.broadcast_shapes(self.y.shape, mask.shape)
        except RuntimeError as err:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast with y of shape "
                             f"{tuple(self.y.shape)}") from err
        self.mask = mask

    def check(self, x: Tensor) -> None:
        self._check(x)

    def _check(self, x: Tensor) -> None:
        try:
            ok = torch.broadcast_shapes(x.shape, self.y.shape, self.mask.shape) == x.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"y {tuple(self.y.shape)} and mask {tuple(self.mask.shape)} must broadcast to the "
                             f"samples' shape {tuple(x.shape)}")

    def replace(self, x: Tensor, a: Tensor, s: Tensor, noise: NoiseSource) -> Tensor:
        self._check(x)
        y = self.y.to(device=x.device, dtype=x.dtype)
        target = bcast(a, x) * y + bcast(s, x) * noise.normal(x)
        return torch.where(self.mask.to(x.device), target, x)

    def finalize(self, x: Tensor) -> Tensor:
        self._check(x)
        return torch.where(self.mask.to(x.device), self.y.to(device=x.device, dtype=x.dtype), x)

    def free_part(self, v: Tensor) -> Tensor:
        return torch.where(self.mask.to(v.device), torch.zeros((), device=v.device, dtype=v.dtype), v)


class LinearMeasurement(Condition):
    """A linear measurement ``y = A x`` with orthonormal rows (``A A^T = I``), along one dimension.

    ``A`` of shape ``(m, n)`` acts on dimension ``dim`` of the samples (size ``n``), so ``y`` has
    size ``m`` there. The state is split orthogonally, ``x = A^T A x + (I - A^T A) x``, and the
    measured part is replaced by ``A^T (alpha y + sigma xi)`` with ``xi ~ N(0, I_m)``
    (the distribution of ``A x_t``). Colorization is the case ``A = [1, 1, 1] / sqrt(3)`` on the
    channel dimension; inpainting the case of rows of the identity.

    Args:
        A: ``(m, n)`` matrix with orthonormal rows.
        y: the measurement, shaped like the samples with size ``m`` along ``dim``.
        dim: the dimension ``A`` acts on (default 1, the channels of ``(B, C, ...)``).
        corrector_steps, snr, resample: see :class:`Condition`.
    """

    def __init__(self, A: Tensor, y: Tensor, *, dim: int = 1, corrector_steps: int = 0, snr: float = 0.16,
                 resample: int = 1) -> None:
        super().__init__(corrector_steps=corrector_steps, snr=snr, resample=resample)
        A = _as_float_tensor("A", A)
        if A.ndim != 2 or A.shape[0] > A.shape[1]:
            raise ValueError(f"A must be an (m, n) matrix with m <= n, got shape {tuple(A.shape)}")
        gram = A.to(torch.float64) @ A.to(torch.float64).T
        if not torch.allclose(gram, torch.eye(A.shape[0], dtype=torch.float64), atol=1e-5):
            raise ValueError("A must have orthonormal rows (A @ A.T == I)")
        self.A = A
        self.y = _as_float_tensor("y", y)
        self.dim = check_int("dim", dim)
        if self.y.ndim < 2 or not -self.y.ndim <= self.dim < self.y.ndim or self.y.shape[self.dim] != A.shape[0]:
            raise ValueError(f"y of shape {tuple(self.y.shape)} must have size m={A.shape[0]} along dim={dim}")

    def check(self, x: Tensor) -> None:
        d = self.dim if self.dim >= 0 else self.dim + x.ndim
        if not 0 <= d < x.ndim or x.shape[d] != self.A.shape[1]:
            raise ValueError(f"the samples of shape {tuple(x.shape)} have no dim={self.dim} of size "
                             f"{self.A.shape[1]} (the columns of A)")
        meas = list(x.shape)
        meas[d] = self.A.shape[0]
        try:
            ok = torch.broadcast_shapes(tuple(meas), self.y.shape) == tuple(meas)
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"the measurement y of shape {tuple(self.y.shape)} does not broadcast to the "
                             f"measured samples' shape {tuple(meas)} (samples {tuple(x.shape)})")

    def _apply_A(self, x: Tensor, M: Tensor) -> Tensor:
        return torch.movedim(torch.movedim(x, self.dim, -1) @ M.T, -1, self.dim)

    def _project(self, x: Tensor, target_meas: Tensor) -> Tensor:
        if x.shape[self.dim] != self.A.shape[1]:
            raise ValueError(f"the samples have size {x.shape[self.dim]} along dim={self.dim}, but A has "
                             f"{self.A.shape[1]} columns")
        A = self.A.to(device=x.device, dtype=x.dtype)
        return x + self._apply_A(target_meas - self._apply_A(x, A), A.T)

    def replace(self, x: Tensor, a: Tensor, s: Tensor, noise: NoiseSource) -> Tensor:
        y = self.y.to(device=x.device, dtype=x.dtype)
        shape = list(x.shape)
        shape[self.dim] = self.A.shape[0]
        xi = noise.normal(x.new_empty(shape))
        return self._project(x, bcast(a, xi) * y + bcast(s, xi) * xi)

    def finalize(self, x: Tensor) -> Tensor:
        return self._project(x, self.y.to(device=x.device, dtype=x.dtype))

    def free_part(self, v: Tensor) -> Tensor:
        A = self.A.to(device=v.device, dtype=v.dtype)
        return v - self._apply_A(self._apply_A(v, A), A.T)


def colorization(gray: Tensor, *, channels: int = 3, dim: int = 1, corrector_steps: int = 0, snr: float = 0.16,
                 resample: int = 1) -> LinearMeasurement:
    """Colorization as a linear measurement: the channel mean ``gray`` of an image is known.

    The gray channel is the orthonormal direction ``A = [1, ..., 1] / sqrt(C)`` of the channel
    dimension (the paper's decoupling), measured as ``A x = sqrt(C) * gray``.

    Args:
        gray: the channel mean, shaped like the images with size 1 along ``dim`` (e.g. ``(B, 1, H, W)``).
        channels: number of channels ``C`` of the images.
        dim: the channel dimension.
    """
    channels = check_int("channels", channels, minimum=1)
    gray = _as_float_tensor("gray", gray)
    A = torch.full((1, channels), 1.0 / math.sqrt(channels), dtype=gray.dtype, device=gray.device)
    return LinearMeasurement(A, gray * math.sqrt(channels), dim=dim, corrector_steps=corrector_steps, snr=snr,
                             resample=resample)
