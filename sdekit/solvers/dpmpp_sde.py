"""DPM-Solver++ SDE: the stochastic single-step DPM-Solver++ of k-diffusion's ``sample_dpmpp_sde``
(the "DPM++ SDE" sampler; diffusers' ``DPMSolverSDEScheduler`` is the same step).

With ``sigma~ = sigma/alpha = e^{-lambda}`` and ``h = lambda_1 - lambda_0``, a step ``t0 -> t1`` has a
stage at ``lambda_s = lambda_0 + r h`` (``r = 1/2``: the geometric mean of the two noise levels):

1. an ``eta``-ancestral DDIM step to the stage (:func:`~sdekit.solvers._ancestral.ancestral_split`
   of ``sigma~_0 -> sigma~_s``): ``x~_s = (sigma~_d/sigma~_0) x~_0 + (1 - sigma~_d/sigma~_0) D_0
   + sigma~_u z_s``, and its data prediction ``D_s`` (the second NFE);
2. an ``eta``-ancestral step over the whole interval (the split of ``sigma~_0 -> sigma~_1``) with the
   data prediction ``(1 - 1/(2r)) D_0 + 1/(2r) D_s`` and the noise ``z_1``.

``z_s`` and ``z_1`` are increments of ONE Brownian path, as k-diffusion draws them from a Brownian
tree in ``sigma~``: ``z_s`` covers the fraction ``f = (sigma~_0 - sigma~_s)/(sigma~_0 - sigma~_1)`` of
the step (:meth:`~sdekit.noise.StepNoise.part`; correlation ``sqrt(f)`` with ``z_1``). With a
:class:`~sdekit.noise.BrownianNoise` (or any source that can be queried inside a step) the path is
queried there; with plain Gaussian noise the stage's increment is drawn from the Brownian bridge.
On an EDM SDE (``t = sigma``) and k-diffusion's tree the two agree to round-off
(``tests/test_dpmpp_sde.py``).

``eta = 0`` is the deterministic midpoint DPM-Solver++(2S) step (the same as ``dpmpp_2s_ancestral``
at ``eta = 0``): order 2. Otherwise weak order 1. NFE per step: 2. The last step into ``eps`` is
followed by the denoising step (k-diffusion's Euler step to ``sigma = 0`` is that jump).

Default grid: ``uniform`` in the SDE's time (on VE/EDM SDEs uniform in ``log sigma``, k-diffusion's
"exponential" sigmas; on VP close to diffusers' default linspace timesteps), chosen on the **tuning**
split (2-, 64- and 256-D mixtures, 5 seeds x 500 samples, ``benchmarks/results/dpmpp_sde-tuning.md``):
its FD and sliced W2 were the lowest of the ``uniform``, ``logsnr``, ``karras`` and ``snr_power`` grids
at 5-10 and at 20-50 NFE. ``schedule="karras"`` is "DPM++ SDE Karras".
"""

from __future__ import annotations

import torch

from .._utils import check_real
from ..kernels import lincomb
from ._ancestral import AncestralMidpoint, ancestral_split
from ._exponential import data_prediction, scaled_levels
from .base import buffer, register


@register
class DPMPPSDE(AncestralMidpoint):
    """DPM-Solver++ SDE, k-diffusion's ``sample_dpmpp_sde`` (stage at ``lambda_0 + r h``; 2 NFE/step)."""

    name = "dpmpp_sde"
    default_stop = 0.3  # tuning split: benchmarks/default_stop.py (results/default_stop-taper-sde*.md)
    kind = "sde"
    order = weak_order = 1.0
    stochastic = True
    lam = 1.0
    default_schedule = "uniform"  # chosen on the tuning split (module docstring)

    def __init__(self, *, eta: float = 1.0, r: float = 0.5) -> None:
        super().__init__(eta=eta)
        r = check_real("r", r, positive=True)
        if not r < 1.0:
            raise ValueError(f"r must be in (0, 1) (the stage's place in the step, in log-SNR), got {r}")
        self.r = r

    def step(self, process, t0, t1, x, state, noise):
        sde = process.sde
        c0, _, sig0, sig1, a0, a1 = scaled_levels(sde, t0, t1)
        lam0 = -torch.log(sig0)
        lam_s = lam0 + self.r * (-torch.log(sig1) - lam0)
        cs = sde.t_from_log_snr(lam_s)
        a_s, sig_s = sde.alpha(cs), torch.exp(-lam_s)
        ts = cs.to(t0.dtype).expand_as(t0)
        d0 = data_prediction(process, x, t0, c0, buffer(state, "d0", x))

        # the stage's share of the step's Brownian path, measured in sigma~ as k-diffusion's tree does (drawn
        # before the update is formed: no temporaries are alive across the draw, so a compiled step is reused)
        zs = noise.part((sig0 - sig_s) / (sig0 - sig1)) if self.stochastic else None
        down, up = ancestral_split(sig0, sig_s, self.eta)
        q = down / sig0  # x~_s = q x~_0 + (1 - q) D_0 + sigma~_u z_s
        terms = [((a_s * (1 - q)).to(x.dtype), d0)]
        if zs is not None:
            terms.append(((a_s * up).to(x.dtype), zs))
        xs = lincomb(x, (a_s / a0 * q).to(x.dtype), terms, out=buffer(state, "xm", x))
        ds = data_prediction(process, xs, ts, cs, buffer(state, "dm", x))

        down, up = ancestral_split(sig0, sig1, self.eta)
        q = down / sig0
        fac = 1.0 / (2.0 * self.r)
        terms = [((a1 * (1 - q) * fac).to(x.dtype), ds)]
        if fac != 1.0:
            terms.append(((a1 * (1 - q) * (1.0 - fac)).to(x.dtype), d0))
        return self.finish(x, state, noise, a1 / a0 * q, terms, a1, up)
