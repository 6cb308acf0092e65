"""Time grids from ``T`` down to ``eps``: uniform, quadratic, log-SNR-uniform and Karras (rho).

Every schedule returns a strictly decreasing 1-D tensor of ``steps + 1`` times with
``grid[0] = T`` and ``grid[-1] = eps``. Times are computed in float64 and cast at the end.
"""

from __future__ import annotations

from typing import Callable, Union

import torch
from torch import Tensor

from ._utils import check_int, check_real
from .sde import SDE

__all__ = ["uniform", "quadratic", "logsnr", "karras", "snr_power", "get_grid", "SCHEDULES", "Schedule"]


def _endpoints(sde: SDE, eps: float | None, T: float | None) -> tuple[float, float]:
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sdekit.SDE, got {type(sde).__name__}")
    e = sde.eps if eps is None else check_real("eps", eps, positive=True)
    t_end = sde.T if T is None else check_real("T", T, positive=True)
    if not e < t_end:
        raise ValueError(f"eps must be < T, got eps={e} and T={t_end}")
    return e, t_end


def _log_snr_ends(sde: SDE, t_end: float, e: float) -> Tensor:
    """``[lambda(T), lambda(eps)]`` (float64). Where ``lambda(T) = -inf`` (pure noise at ``T``, e.g.
    :class:`~sdekit.sde.FlowSDE` at ``t = 1``), the schedule is laid out from ``-|lambda(eps)|`` instead
    and its first time is then pinned to ``T``: the first step jumps from pure noise straight to the
    second point (the exponential integrators take that step exactly)."""
    ends = sde.log_snr(torch.tensor([t_end, e], dtype=torch.float64))
    if float(ends[0]) == float("-inf"):
        ends[0] = min(-abs(float(ends[1])), float(ends[1]) - 1.0)
    return ends


def uniform(sde: SDE, steps: int, *, eps: float | None = None, T: float | None = None) -> Tensor:
    """Uniform in t."""
    e, t_end = _endpoints(sde, eps, T)
    return torch.linspace(t_end, e, check_int("steps", steps, minimum=1) + 1, dtype=torch.float64)


def quadratic(sde: SDE, steps: int, *, eps: float | None = None, T: float | None = None) -> Tensor:
    """Quadratic in t (dense near the data end), as DDIM's "quadratic" skip."""
    e, t_end = _endpoints(sde, eps, T)
    u = torch.linspace(1.0, 0.0, check_int("steps", steps, minimum=1) + 1, dtype=torch.float64)
    return e + (t_end - e) * u * u


def logsnr(sde: SDE, steps: int, *, eps: float | None = None, T: float | None = None) -> Tensor:
    """Uniform in the half log-SNR ``lambda = ln(alpha/sigma)`` (DPM-Solver's choice)."""
    e, t_end = _endpoints(sde, eps, T)
    ends = _log_snr_ends(sde, t_end, e)
    lam = torch.linspace(float(ends[0]), float(ends[1]), check_int("steps", steps, minimum=1) + 1,
                         dtype=torch.float64)
    return _pin(sde.t_from_log_snr(lam), t_end, e)


def karras(sde: SDE, steps: int, *, eps: float | None = None, T: float | None = None, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022): uniform in ``sigma_tilde^(1/rho)`` with ``sigma_tilde = sigma/alpha``."""
    e, t_end = _endpoints(sde, eps, T)
    rho = check_real("rho", rho, positive=True)
    ends = torch.exp(-_log_snr_ends(sde, t_end, e))
    u = torch.linspace(0.0, 1.0, check_int("steps", steps, minimum=1) + 1, dtype=torch.float64)
    hi, lo = ends[0] ** (1 / rho), ends[1] ** (1 / rho)
    s = (hi + u * (lo - hi)) ** rho
    return _pin(sde.t_from_log_snr(-torch.log(s)), t_end, e)


def snr_power(sde: SDE, steps: int, *, eps: float | None = None, T: float | None = None, p: float = 0.15) -> Tensor:
    """Uniform in ``(alpha/sigma)^p = exp(p lambda)``: between log-SNR-uniform (``p -> 0``) and
    time-uniform, with more steps at high noise than ``logsnr`` for ``p > 0`` (``p = -1/rho`` is
    Karras' grid). ``p = 0.15`` was tuned for 10-NFE multistep sampling of Gaussian mixtures
    (benchmarks/exponential_fd.py).
    """
    e, t_end = _endpoints(sde, eps, T)
    p = check_real("p", p)
    ends = _log_snr_ends(sde, t_end, e)
    u = torch.linspace(0.0, 1.0, check_int("steps", steps, minimum=1) + 1, dtype=torch.float64)
    if p == 0.0:
        lam = ends[0] + u * (ends[1] - ends[0])
    else:
        # log((1-u) e^{p l0} + u e^{p l1}) / p, in log space for stability
        lam = torch.logaddexp(torch.log1p(-u) + p * ends[0], torch.log(u) + p * ends[1]) / p
    return _pin(sde.t_from_log_snr(lam), t_end, e)


def _pin(t: Tensor, t_end: float, e: float) -> Tensor:
    t = t.clone()
    t[0], t[-1] = t_end, e
    return t


Schedule = Union[str, Callable[..., Tensor], Tensor]
# a grid may start this far (relative) above sde.T and is then clamped to T: 8 float32 ulps, so a
# peer's float32 sigmas or timesteps (diffusers' EulerDiscreteScheduler) are accepted as they are
_T_RTOL = 8 * 2.0 ** -23
SCHEDULES: dict[str, Callable[..., Tensor]] = {"uniform": uniform, "quadratic": quadratic, "logsnr": logsnr,
                                               "karras": karras, "snr_power": snr_power}


def get_grid(schedule: Schedule, sde: SDE, steps: int, *, eps: float | None = None,
             T: float | None = None) -> Tensor:
    """Resolve ``schedule`` (a name, a callable ``(sde, steps, eps=, T=)`` or an explicit tensor) to times.

    Returns a float64 tensor of shape ``(steps + 1,)``, strictly decreasing, within ``(0, sde.T]``.
    """
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sdekit.SDE, got {type(sde).__name__}")
    if isinstance(schedule, Tensor):
        grid = schedule.detach().to(device="cpu", dtype=torch.float64)
        if grid.ndim != 1 or grid.numel() < 2:
            raise ValueError(f"schedule tensor must be 1-D with at least 2 times, got shape {tuple(grid.shape)}")
    elif isinstance(schedule, str):
        fn = SCHEDULES.get(schedule)
        if fn is None:
            raise ValueError(f"unknown schedule {schedule!r}; valid schedules: {', '.join(SCHEDULES)}")
        grid = fn(sde, steps, eps=eps, T=T)
    elif callable(schedule):
        grid = schedule(sde, steps, eps=eps, T=T)
        if not isinstance(grid, Tensor) or grid.ndim != 1:
            raise ValueError("a schedule callable must return a 1-D tensor of times")
        grid = grid.detach().to(device="cpu", dtype=torch.float64)
    else:
        raise TypeError(f"schedule must be a name, a callable or a tensor of times, got {type(schedule).__name__}")
    if not bool(torch.isfinite(grid).all()):
        raise ValueError("schedule produced non-finite times")
    if not bool((torch.diff(grid) < 0).all()):
        raise ValueError("schedule times must be strictly decreasing (from T to eps)")
    if float(grid[-1]) <= 0:
        raise ValueError(f"schedule must end at a positive time, got {float(grid[-1])}")
    if float(grid[0]) > sde.T * (1 + _T_RTOL):
        raise ValueError(f"schedule must start at or below sde.T={sde.T} (where the prior lives), "
                         f"got {float(grid[0])}")
    if float(grid[0]) > sde.T:  # a few float32 ulps above T (a peer's float32 grid): T itself
        grid = grid.clone()
        grid[0] = sde.T
        if grid.numel() > 1 and not float(grid[1]) < sde.T:
            raise ValueError("schedule times must be strictly decreasing (from T to eps)")
    return grid
