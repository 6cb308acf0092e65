"""Langevin MCMC correctors (Song et al. 2021, Algorithms 4 and 5).

Both take one unadjusted Langevin step at fixed ``t``::

    x <- x + e * score(x, t) + sqrt(2 e) z

``langevin`` picks the step size from a target signal-to-noise ratio,
``e = 2 a (snr ||z|| / ||score||)^2``, with the norms averaged over the batch as in the
paper's code (robust in low dimension, where one sample's score can vanish) or, with
``per_sample=True``, per sample (batch-invariant; sound when the dimension is large);
``annealed_langevin`` uses the marginal std,
``e = 2 a (snr sigma(t))^2`` (Song & Ermon 2019). ``a`` is the discrete chain's
``alpha_i = (alpha(t)/alpha(t_next))^2`` (1 for VE). NFE per call: 1.
"""

from __future__ import annotations

import torch

from .._utils import check_bool, check_real
from ..kernels import lincomb, sq_norms
from .base import Corrector, register, spare


def snr_step_size(score, z, snr: float, *, per_sample: bool = False):
    """Langevin step size ``2 (snr ||z|| / ||score||)^2`` of shape ``(batch,)``.

    The norms are averaged over the batch (the paper's code) unless ``per_sample``; one fused
    pass over ``score`` and ``z`` (float32/64 accumulation).
    """
    gn, zn = sq_norms([score, z]).sqrt_()
    if not per_sample:
        gn, zn = gn.mean().expand_as(gn), zn.mean().expand_as(zn)
    ratio = snr * zn / torch.clamp(gn, min=torch.finfo(gn.dtype).tiny)
    return 2 * ratio * ratio


def _chain_alpha(sde, t, t_next):
    return (sde.alpha(t) / sde.alpha(t_next)) ** 2


@register
class Langevin(Corrector):
    """Langevin corrector with per-sample step size from a target signal-to-noise ratio."""

    name = "langevin"
    needs_sde = True

    def __init__(self, snr: float = 0.16, per_sample: bool = False) -> None:
        self.snr = check_real("snr", snr, positive=True)
        self.per_sample = check_bool("per_sample", per_sample)

    def step_size(self, process, t, t_next, x, score, z):
        return _chain_alpha(process.sde, t, t_next) * snr_step_size(score, z, self.snr, per_sample=self.per_sample)

    def correct(self, process, t, t_next, x, state, noise):
        score = process.score(x, t)
        z = noise.normal()
        e = self.step_size(process, t, t_next, x, score, z)
        return lincomb(x, 1.0, [(e, score), (torch.sqrt(2 * e), z)], out=spare(state, x))


@register
class AnnealedLangevin(Langevin):
    """Annealed Langevin dynamics corrector (step size from the marginal std sigma(t))."""

    name = "annealed_langevin"

    def step_size(self, process, t, t_next, x, score, z):
        std = process.sde.sigma(t)
        return 2 * _chain_alpha(process.sde, t, t_next) * (self.snr * std) ** 2
