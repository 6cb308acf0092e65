"""Time grids from ``T`` down to ``eps``: uniform, quadratic, log-SNR-uniform and Karras (rho).

Every schedule returns a strictly decreasing 1-D tensor of ``steps + 1`` times with
``grid[0] = T`` and ``grid[-1] = eps``. Times are computed in float64 and cast at the end.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ._utils import check_bool, check_int, check_real
from .sde import SDE

__all__ = ["uniform", "quadratic", "logsnr", "karras", "snr_power", "get_grid", "default_schedule", "default_grid",
           "default_stop", "check_run_grid",
           "check_grid_memory", "check_save_memory", "tune", "check_tunable", "is_auto", "resolve_auto", "SCHEDULES",
           "Schedule", "TunedGrid", "SHIFTABLE", "shifted_score", "apply_tuned"]


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


def default_schedule(solver: Any, sde: SDE) -> str:
    """The grid a run of ``solver`` on ``sde`` uses when no ``schedule=`` is given: the solver's
    ``default_schedule``, unless the process replaces it (``sde.schedule_defaults``; e.g. a
    :class:`~sdekit.sde.FlowSDE` runs the karras-default solvers on ``logsnr``)."""
    name = solver.default_schedule
    return getattr(sde, "schedule_defaults", {}).get(name, name)


#: the default grids of solvers with a ``default_stop`` stop short of ``eps`` only below this budget: score
#: evaluations of the grid's steps, the denoising step not counted (:func:`default_stop`)
DEFAULT_STOP_UNTIL = 20


def default_stop(solver: Any, sde: SDE, steps: int) -> float:
    """The fraction of the log-SNR range by which ``solver``'s default grid of ``steps`` steps on ``sde`` stops
    short of ``eps`` (the run's denoising step then evaluates the model there).

    ``solver.default_stop * clip((DEFAULT_STOP_UNTIL - n) / (DEFAULT_STOP_UNTIL - 4), 0, 1)``, where ``n`` is the
    score evaluations of the steps (``solver.nfe_for(steps)``): the solver's whole ``default_stop`` at 4 of them or
    fewer, tapering linearly to 0 (the grid ending at ``eps``) at ``DEFAULT_STOP_UNTIL``, so that more steps never
    jump back and every solver converges to the ODE's (or SDE's) solution at ``eps``. ``default_stop`` was
    chosen per solver, with its default options, on the tuning split (``benchmarks/default_stop.py``): an
    instance whose options change whether it is stochastic (``ddim`` with ``eta > 0``) ends at ``eps``, and so
    do processes with ``sde.default_stops_short = False`` (:class:`~sdekit.sde.FlowSDE`: the rule was chosen on
    VP and VE problems).
    """
    f0 = float(getattr(solver, "default_stop", 0.0))
    if f0 == 0.0 or not getattr(sde, "default_stops_short", True):
        return 0.0
    if bool(solver.stochastic) != bool(getattr(type(solver), "stochastic", solver.stochastic)):
        return 0.0  # measured with the default options: ddim with eta > 0, dpmpp_2m_sde with eta = 0 end at eps
    return _taper(f0, solver.nfe_for(check_int("steps", steps, minimum=1)), DEFAULT_STOP_UNTIL)


def _taper(f0: float, nfe: int, until: float) -> float:
    """``f0`` at ``nfe <= 4`` score evaluations, falling linearly to 0 at ``until`` (:func:`default_stop`'s rule;
    ``benchmarks/default_stop.py`` studies other ``until``)."""
    return f0 * min(1.0, max(0.0, (until - nfe) / (until - 4)))


def default_grid(solver: Any, sde: SDE, steps: int, *, eps: float | None = None, stop_short: bool = True) -> Tensor:
    """The grid a run of ``solver`` on ``sde`` uses when no ``schedule=`` is given: :func:`default_schedule`'s
    grid, which stops short of ``eps`` by :func:`default_stop` when ``stop_short`` and no ``eps=`` is given.

    :func:`sdekit.solve` passes ``stop_short`` only for a run that ends with the denoising step and saves no
    states (``denoise=True``, no ``save_at=``): an explicit ``eps=`` says where the run ends, ``save_at=`` times
    may name ``eps``, and without the denoising step the run would return the noisy state at the grid's end.
    """
    check_bool("stop_short", stop_short)
    grid = get_grid(default_schedule(solver, sde), sde, steps, eps=eps)
    frac = default_stop(solver, sde, steps) if stop_short and eps is None else 0.0
    if frac > 0.0:
        grid = _stop_short(sde, grid, frac, _log_snr_ends(sde, sde.T, sde.eps), sde.T)
    return grid


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
        if schedule == "auto":  # needs the model: sample()/solve() resolve it (resolve_auto) before this
            raise ValueError('schedule="auto" needs the score function: use it in sdekit.sample/solve, or '
                             "build the grid with sdekit.grids.tune(score_fn, sde, solver, nfe, shape=...)")
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
        what = f"schedule {schedule!r}" if isinstance(schedule, str) else "the schedule"
        raise ValueError(f"{what} produced non-finite times on [eps={eps if eps is not None else sde.eps}, "
                         f"sde.T={sde.T}] for {sde!r} (a log-SNR grid needs alpha(t), sigma(t) > 0 in float64 at "
                         "both ends: a too large T or a too small eps underflows them)")
    if not bool((torch.diff(grid) < 0).all()):
        if isinstance(schedule, str):  # a named schedule is decreasing in exact arithmetic: its times collapsed
            e, t_end = _endpoints(sde, eps, T)
            raise ValueError(f"schedule {schedule!r} with steps={steps} gives times that are not distinct in float64 "
                             f"between eps={e:.6g} and T={t_end:.6g}: eps is too small (or steps too many) for "
                             "the SDE's time <-> log-SNR conversion to resolve; use a larger eps")
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


def check_run_grid(schedule: Schedule, grid: Tensor, sde: SDE, *, steps: int | None = None, nfe: int | None = None,
                   eps: float | None = None, x_T_given: bool = False, save_at: object = None,
                   dtype: torch.dtype | None = None, needs_sde: bool = False) -> None:
    """Refuse a grid that contradicts the other options of a run (before any work).

    An explicit schedule (a tensor, or a callable whose output is not what it was asked for) must not
    silently override ``steps=``, ``nfe=`` or ``eps=``:

    - a tensor fixes the steps: ``steps=`` (or the steps that fit ``nfe=``) must equal ``len(schedule) - 1``;
    - a callable is called with the ``steps`` (from ``steps=`` or ``nfe=``) and ``eps``; it must return
      ``steps + 1`` times when ``steps=`` or ``nfe=`` was given;
    - with ``eps=``, the grid must end at ``eps``.

    A grid that starts below ``sde.T`` needs ``x_T`` (a state at ``grid[0]``): the prior lives at ``T``.
    ``save_at`` times must lie within the grid's span ``[grid[-1], grid[0]]`` (each is kept at its
    nearest grid time; times outside used to snap silently to an end).

    Args:
        schedule: the ``schedule=`` argument as given (``None`` for the solver's default).
        grid: the resolved grid (from :func:`get_grid`).
        sde: the forward SDE.
        steps: the steps the run asks for (from ``steps=`` or ``nfe=``; ``None`` when neither was given).
        nfe, eps: the arguments as the user gave them (``None`` when not given).
        x_T_given: whether the run starts from a given ``x_T`` (else from the prior at ``T``).
        save_at: the ``save_at=`` argument (``None``, ``"grid"`` or times).
        dtype: the state's dtype: solvers see the times in it, so they must stay positive and distinct.
        needs_sde: the solver reads ``alpha(t)``, ``sigma(t)``: they must be finite and positive at every
            grid time in ``dtype`` (e.g. ``VPSDE(T=50)``: ``alpha(50)`` underflows to 0).
    """
    explicit = isinstance(schedule, Tensor) or (callable(schedule) and not isinstance(schedule, str))
    n = grid.numel() - 1
    kind = "tensor" if isinstance(schedule, Tensor) else "callable"
    if explicit:
        if steps is not None and n != steps:
            asked = f"steps={steps}" if nfe is None else f"the {steps} steps that fit nfe={nfe}"
            raise ValueError(f"the {kind} schedule gives {n} steps ({n + 1} times) but {asked}"
                             + ("; drop steps= or make them agree" if kind == "tensor" else
                                " were asked for: a schedule callable must honour its steps argument"))
        if eps is not None and abs(float(grid[-1]) - eps) > 1e-9 * eps:
            raise ValueError(f"the {kind} schedule ends at t={float(grid[-1]):.9g} but eps={eps}; drop eps= or "
                             "make them agree")
    if not x_T_given and float(grid[0]) < sde.T * (1 - 1e-12):
        raise ValueError(f"the schedule starts at t={float(grid[0]):.9g}, below sde.T={sde.T} where the prior is "
                         "drawn: give x_T= (a state at that time) or start the grid at T")
    if save_at is not None and not isinstance(save_at, str):
        times = save_at.reshape(-1).tolist() if isinstance(save_at, Tensor) else list(save_at)
        lo, hi = float(grid.min()), float(grid.max())
        tol = 1e-9 * max(abs(lo), abs(hi))
        out = [float(t) for t in times if not lo - tol <= float(t) <= hi + tol]
        if out:
            raise ValueError(f"save_at times must lie within the grid's span [{lo:.6g}, {hi:.6g}] (each is kept at "
                             f"its nearest grid time), got {out[0]!r}")
    if dtype is not None and dtype.is_floating_point:  # (a non-float x_T is refused later, with its own message)
        tg = grid.to(dtype)
        if not float(tg[-1]) > 0 or not bool((torch.diff(tg) < 0).all()):
            raise ValueError(f"the grid's times are not distinct and positive in the state's dtype {dtype}: it ends "
                             f"at eps={float(grid[-1]):.6g} (={float(tg[-1]):.6g} in {dtype}) with {n} steps from "
                             f"T={float(grid[0]):.6g}; use a larger eps, fewer steps or a float64 state")
        if needs_sde:
            a, sg = sde.alpha(tg), sde.sigma(tg)
            # an exact pure-noise point (log-SNR = -inf analytically: FlowSDE at t=1) is not an underflow; the
            # solvers that cannot start there are refused by sde.check_start
            pure = torch.isneginf(sde.log_snr(grid.to(torch.float64)))
            bad = ~(torch.isfinite(a) & torch.isfinite(sg) & ((a > 0) | pure) & (sg > 0))
            if bool(bad.any()):
                j = int(bad.nonzero()[0, 0])
                raise ValueError(f"alpha(t)={float(a[j]):.6g}, sigma(t)={float(sg[j]):.6g} at t={float(tg[j]):.6g} in "
                                 f"{dtype}: the solver divides by them, so it cannot run there (alpha underflows at "
                                 f"large t: sde.T={sde.T} is too large for this SDE; use a smaller T, or a solver "
                                 "that only needs the drift, e.g. 'ode_heun')")


def _memory_bytes(device: torch.device | None) -> int | None:
    """Free memory of ``device`` (CUDA: free device memory; else the host's available memory), or ``None``."""
    try:
        if device is not None and device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (OSError, ValueError, AttributeError, RuntimeError):
        return None


def _gib(b: float) -> str:
    return f"{b / 2 ** 30:.3g} GiB"


def check_grid_memory(steps: int, argument: str = "steps") -> None:
    """Refuse a number of steps whose time grid alone (float64, a host and a device copy: 24 bytes per
    time) would not fit in the host's available memory, naming ``argument`` (``"steps"`` or ``"nfe"``)."""
    need = 24 * (int(steps) + 1)
    if need < 2 ** 26:  # under 64 MiB: not worth reading the host's memory figures
        return
    have = _memory_bytes(None)
    if have is not None and need > have:
        raise ValueError(f"{argument} asks for {steps} steps: their time grid alone needs {_gib(need)}, more than the "
                         f"{_gib(have)} of memory available; use fewer steps")


def check_save_memory(save_at: object, grid: Tensor, x: Tensor) -> None:
    """Refuse a ``save_at`` whose saved states (one copy of ``x`` per kept time) do not fit in the free
    memory of ``x``'s device."""
    if save_at is None:
        return
    k = grid.numel() if isinstance(save_at, str) else len(save_at.reshape(-1) if isinstance(save_at, Tensor)
                                                          else save_at)
    need = 2 * min(k, grid.numel()) * x.numel() * x.element_size()  # the saved copies, then their stack
    have = _memory_bytes(x.device)
    if have is not None and need > have:
        raise ValueError(f"save_at={save_at if isinstance(save_at, str) else '[...]'!r} keeps {min(k, grid.numel())} "
                         f"states of {_gib(x.numel() * x.element_size())} each: {_gib(need)} with their stack, more "
                         f"than the {_gib(have)} free on {x.device}; save fewer times")


# ------------------------------------------------------------------ schedule="auto": a grid tuned per model

_TUNED: dict[tuple, tuple[Callable[[], Any], Tensor, int, dict]] = {}


def _fn_ref(fn: Callable) -> tuple[tuple, Callable[[], Any]]:
    """Identity key and a weak reference of a score function (bound methods by their object and function),
    so the cache neither keeps a model alive nor confuses a new function with a dead one's id."""
    if hasattr(fn, "__self__") and hasattr(fn, "__func__"):
        key: tuple = (id(fn.__self__), id(fn.__func__))
        try:
            return key, weakref.WeakMethod(fn)
        except TypeError:
            return key, lambda: fn
    try:
        return (id(fn),), weakref.ref(fn)
    except TypeError:  # not weak-referenceable: held strongly
        return (id(fn),), lambda: fn


def _same_fn(a: Any, b: Callable) -> bool:
    if a is b:
        return True
    return getattr(a, "__self__", None) is getattr(b, "__self__", 0) and getattr(a, "__func__", None) is getattr(
        b, "__func__", 0)


def _sde_key(sde: SDE) -> tuple:
    return (type(sde).__qualname__, repr(sde), tuple(sorted((k, repr(v)) for k, v in vars(sde).items())))


def _solver_key(solver: Any) -> tuple:
    return (type(solver).__qualname__, tuple(sorted((k, repr(v)) for k, v in vars(solver).items())))


def _lam_grid(sde: SDE, lam: Tensor, t_end: float, e: float | None) -> Tensor:
    """The times of log-SNRs ``lam``, the first pinned to ``t_end`` and the last to ``e`` (unless ``None``: a
    free end, :func:`tune`'s ``free_end=True``)."""
    t = sde.t_from_log_snr(lam)
    if e is None:
        t = t.clone()
        t[0] = t_end
        return t
    return _pin(t, t_end, e)


#: fractions of the log-SNR range that ``tune(free_end=True)`` first tries to stop short of ``eps``
STOP_FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.4)


def _grid_lam(sde: SDE, grid: Tensor, lam_ends: Tensor) -> Tensor:
    """The log-SNRs of ``grid`` for :func:`tune`'s search, the first replaced by ``lam_ends[0]`` (finite even where
    ``lambda(T) = -inf``, as in :func:`_log_snr_ends`)."""
    lam = sde.log_snr(grid.to(torch.float64)).clone()
    lam[0] = lam_ends[0]
    return lam


def _stop_short(sde: SDE, grid: Tensor, frac: float, lam_ends: Tensor, t_end: float) -> Tensor:
    """``grid`` compressed in log-SNR towards ``T`` so that it ends ``frac`` of the log-SNR range
    ``lam_ends`` short of ``eps`` (its knots keep their relative places)."""
    lam = _grid_lam(sde, grid, lam_ends)
    lam = lam_ends[0] + (lam - lam[0]) * (1.0 - frac) * (lam_ends[1] - lam_ends[0]) / (lam[-1] - lam[0])
    return _lam_grid(sde, lam, t_end, None)


def _density_grid(sde: SDE, times: Tensor, steps: int, order: float, t_end: float, e: float) -> Tensor:
    """Knots equidistributing the local error of an order-``order`` method, from a pilot's accepted steps.

    A tolerance-controlled dopri5 run makes ``C(lambda) h^6`` the same on every step, so its step
    ``h_d`` gives the error density ``C ~ h_d^-6``; an order-``p`` method with local error
    ``C h^(p+1)`` equidistributes it with ``h ~ C^(-1/(p+1)) = h_d^(6/(p+1))`` (in log-SNR time).
    """
    lam = sde.log_snr(times.to(torch.float64))
    lam, _ = torch.sort(torch.unique(lam))
    dl = torch.diff(lam)
    keep = dl > 0
    if int(keep.sum()) < 2:
        return logsnr(sde, steps, eps=e, T=t_end)
    lam_lo, dl = lam[:-1][keep], dl[keep]
    dens = dl ** (-6.0 / (order + 1.0))                          # knots per unit lambda (unnormalised)
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(dens * dl, 0)])
    nodes = torch.cat([lam_lo, lam_lo[-1:] + dl[-1:]])
    ends = sde.log_snr(torch.tensor([t_end, e], dtype=torch.float64))
    targets = torch.linspace(0.0, float(cum[-1]), steps + 1, dtype=torch.float64)
    idx = torch.searchsorted(cum, targets).clamp(1, cum.numel() - 1)
    w = (targets - cum[idx - 1]) / (cum[idx] - cum[idx - 1])
    knots = nodes[idx - 1] + w * (nodes[idx] - nodes[idx - 1])
    knots = ends[0] + (knots - knots[0]) * (ends[1] - ends[0]) / (knots[-1] - knots[0])
    return _lam_grid(sde, knots, t_end, e)


def tune(score_fn: Callable[[Tensor, Tensor], Tensor], sde: SDE, solver: Any, nfe: int | None = None, *,
         steps: int | None = None, shape: Sequence[int] | None = None, x_pilot: Tensor | None = None,
         pilot_batch: int = 256, seed: int = 0, passes: int = 3, refine_nfe: int = 3000, eps: float | None = None,
         rtol: float | None = None, ref_steps: int | None = None, dtype: torch.dtype = torch.float64,
         device: torch.device | str | None = None, cache: bool = True, shift: bool = False,
         free_end: bool | None = None, progress: bool = False, info: dict | None = None) -> Union[Tensor, "TunedGrid"]:
    """Tune an ``N``-step time grid to ``score_fn`` from a cheap pilot (``schedule="auto"``).

    1. Pilot: ``pilot_batch`` prior samples (``seed``; or ``x_pilot``) are integrated (in ``dtype``) by
       the adaptive dopri5 solver (``ode_adaptive``, ``rtol = atol = rtol``), with the denoising
       step: the pilot's reference end points, and its accepted steps.
    2. Start: knots that equidistribute the solver's local error over log-SNR time, from the
       density of the pilot's accepted steps (see :func:`_density_grid`); the solver's default
       grid, ``logsnr`` and ``karras`` compete with it, and the one with the least pilot error wins.
    3. ``passes`` of coordinate search over the log-SNR increments (a monotone parametrisation:
       ``log`` of each increment, the end points fixed but for step 6) directly minimise the RMS distance between
       the solver's pilot end points (``steps`` steps, denoising included, float64) and the reference;
       a move is kept only if it lowers that error and raises it on neither half of the pilot (so no
       move is paid for by a few pilot samples alone, which fits the pilot instead of the model).
    4. A Nelder–Mead simplex search over the same parameters, from the coordinate search's grid,
       spends at most ``refine_nfe`` more score evaluations on the same error (joint moves of
       several knots, which one-at-a-time moves miss); its grid is kept only if it lowers the error
       on both halves of the pilot too.
    5. With ``shift=True`` (solvers of :data:`SHIFTABLE`: they evaluate the model once per grid time,
       there only), the model's evaluation times are decoupled from the grid times (the LD3 idea,
       Tong et al. 2024): a second Nelder–Mead stage over the log-SNR increments and one log-SNR
       shift ``delta_i`` per grid time (from 0; evaluation time ``lambda^-1(lambda(t_i) + delta_i)``,
       clamped to ``[eps, T]``), the solver's coefficients staying at ``t_i`` (see
       :func:`shifted_score`), spends at most ``refine_nfe`` more score evaluations; kept only if it
       lowers the pilot error on the whole pilot and on both halves (else no shift).
    6. With ``free_end=True``, the grid's last time (where the final denoising step evaluates the model)
       is tuned too, between ``eps`` and the time before it; the pilot's reference still ends at ``eps``.
       Before step 3, the best start grid is compressed in log-SNR so that it stops a fraction
       ``0.05, 0.1, 0.2, 0.3`` or ``0.4`` of the log-SNR range short of ``eps`` (its last evaluations then
       move to noisier times); the best of these is kept if it :func:`_improves` on the grid ending at
       ``eps``, and steps 3-5 then search the end time with the increments (the unused log-SNR range is one
       more increment). Diffusers' schedulers stop short of ``eps`` too (their last step jumps from
       ``t_{999/n}`` to the data), but at a fixed place; here the pilot chooses it, and keeps ``eps``
       when stopping short does not lower the pilot error.

    A **stochastic** solver (``dpmpp_2m_sde``, ``ancestral``, ``euler_maruyama``, ...) is tuned the same way
    on one fixed Brownian path per pilot sample (a :class:`~sdekit.noise.BrownianNoise` of seed
    ``seed + 1``, the same for every grid tried): the reference is the same solver on a ``ref_steps``-step
    ``logsnr`` grid on that path (the reverse SDE's solution from the same ``x_T`` and noise), there is no
    density start, and the error is the sliced W2 distance between the two sets of end points (over
    ``min(1024, max(128, 2 d))`` fixed random directions in ``d`` dimensions) instead of their RMS distance.
    The pathwise RMS bounds W2 from above but is dominated by samples that land in another mode than their
    reference, which a sampler need not reproduce. Chosen on the tuning split (2-, 64- and 256-D,
    ``dpmpp_2m_sde`` at 5-10 NFE, FD on 500 fresh samples x 5 seeds, ``benchmarks/results/auto_sde.md``):
    the RMS objective's grids were worse than the default grid in 2-D at every budget (5 NFE: FD 0.129
    against 0.023); with 128 directions in 256-D the sliced-W2 grids fitted those directions (6 NFE: FD 3.79
    against the default's 2.42; with 512 directions 2.43).

    Args:
        score_fn: the model, ``score_fn(x, t)``.
        sde: the forward SDE.
        solver: a fixed-step ODE or SDE solver (name, class or instance, as for :func:`sdekit.sample`).
        nfe: score-evaluation budget of the sampling run (denoising included); or give ``steps``.
        steps: number of grid steps instead of ``nfe``.
        shape: sample shape ``(batch, ...)`` (only its trailing dimensions are used), or ``x_pilot``.
        x_pilot: the pilot's starting points at ``T`` (instead of ``shape``, ``pilot_batch``, ``seed``).
        pilot_batch: number of pilot samples. The pilot's score evaluations are batched, so a larger
            pilot costs compute but no more evaluations; with 64, tuned grids partly fitted the pilot
            (``mixture_family("tuning", 0)``, ``unipc`` at 10 NFE, coordinate search alone: 0.18
            ODE-map error on 1000 fresh samples with a pilot of 64, 0.14 with 256; the whole change,
            both stages against the old tuner: ``benchmarks/results/auto_refine.md``).
        seed: seed of the pilot's prior samples.
        passes: coordinate-search passes (0: none; with ``refine_nfe=0`` too, the best starting grid).
        refine_nfe: score evaluations the Nelder–Mead stage may spend (0: none).
        eps: end time of the pilot's reference (default ``sde.eps``); the grid ends there, or later with
            ``free_end``.
        rtol: tolerance of the pilot's reference solve of an ODE solver (default 1e-7; at least 10 ulps
            of ``dtype``); refused for a stochastic solver, whose reference has no tolerance.
        ref_steps: steps of the reference solve of a stochastic solver (on the pilot's Brownian path;
            default 250); refused for an ODE solver, whose reference is adaptive.
        dtype, device: of the pilot's samples (a float32 network needs ``dtype=torch.float32``;
            ``schedule="auto"`` uses the sampling run's); ignored when ``x_pilot`` is given.
        cache: reuse a grid tuned before with the same score function (identity), SDE, solver
            configuration, steps, eps, pilot and settings.
        shift: also tune the model's evaluation times (step 5; refused, before any score call, for a
            solver outside :data:`SHIFTABLE`). On the tuning split of ``mixture_family`` it lowered
            the ODE-map error on fresh samples by 15% at 5 NFE and 10% at 10 NFE (geometric means of
            18 cases: ``benchmarks/results/auto_shift.md``) for about 3000 more pilot evaluations, by
            35% at 5 NFE with ``pilot_batch=1024`` (its extra parameters partly fit a pilot of 256).
        free_end: also tune where the grid stops (step 6): the returned grid may end after ``eps``, and
            its final denoising step is then taken there (``sdekit.sample`` denoises at the grid's last
            time; pass such a grid without ``eps=``, which must be where a grid ends). ``None`` (default):
            ``True`` for an ODE solver, ``False`` for a stochastic one. Chosen on the tuning split of
            ``mixture_family`` (6 problems, dims capped at 128, ``unipc``/``dpmpp_2m``/``dpmpp_3m``, 500 fresh
            samples; ``benchmarks/results/auto_shift-end.md``): the ODE-map error over that of the grid
            ending at ``eps``, geometric mean of 18 cases, 0.71 at 5 NFE and 0.94 at 10 NFE (with
            ``shift=True`` 0.73 and 0.99 of ``shift=True`` alone). For ``dpmpp_2m_sde`` on the tuning split
            (2-, 64-, 256-D, 5 seeds x 500 samples; ``peers-sde-end-tuning.json`` against
            ``peers-auto_sde-tuning.json``) it changed FD by 0.97x at 5 NFE and 1.36x at 8 NFE (sliced W2 1.00x,
            1.05x): off for stochastic solvers.
        progress: show a tqdm bar of the pilot's score evaluations (with the best pilot error so far); the
            pilot of ``schedule="auto"`` shows it when the run asks for ``progress=True``.
        info: a dict that receives ``pilot_nfe`` (score evaluations this call spent: 0 when cached),
            ``pilot_error`` / ``default_error`` (the pilot's end-point error on the tuned grid and on the
            grid a run with no ``schedule=`` uses, :func:`default_grid`, which ``tune`` never does worse than:
            RMS distance, or sliced W2 for a stochastic solver) and ``cached``; with
            ``shift=True`` also ``unshifted_error`` (the pilot error before step 5).

    Returns:
        A float64 grid of ``steps + 1`` strictly decreasing times from ``sde.T`` to ``eps`` (with
        ``free_end=True``: to ``eps`` or a later time); pass it as ``schedule=`` to reuse it. With
        ``shift=True``, a :class:`TunedGrid` (its ``times`` and ``eval_times``), which :func:`sdekit.sample`
        accepts as ``schedule=`` just the same.
    """
    from .sampling import solve, steps_for_nfe
    from .solvers import resolve

    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable (x, t) -> tensor, got {type(score_fn).__name__}")
    e, t_end = _endpoints(sde, eps, None)
    solver = resolve(solver)
    check_tunable(solver)
    if (nfe is None) == (steps is None):
        raise ValueError("give nfe= or steps=, exactly one")
    steps = steps_for_nfe(solver, check_int("nfe", nfe, minimum=1), denoise=True) if steps is None \
        else check_int("steps", steps, minimum=1)
    pilot_batch = check_int("pilot_batch", pilot_batch, minimum=1)
    passes = check_int("passes", passes, minimum=0)
    refine_nfe = check_int("refine_nfe", refine_nfe, minimum=0)
    seed = check_int("seed", seed, minimum=0)
    if solver.stochastic:
        if rtol is not None:
            raise ValueError(f"rtol applies to an ODE solver's adaptive reference; {solver.name!r} is stochastic "
                             "(its reference takes ref_steps)")
        ref_steps = 250 if ref_steps is None else check_int("ref_steps", ref_steps, minimum=1)
    else:
        if ref_steps is not None:
            raise ValueError(f"ref_steps applies to a stochastic solver's reference; {solver.name!r} is an ODE solver "
                             "(its reference is adaptive, set by rtol)")
        rtol = 1e-7 if rtol is None else check_real("rtol", rtol, positive=True)
    if not isinstance(shift, bool):
        raise TypeError(f"shift must be a bool, got {type(shift).__name__}")
    if shift:
        _check_shiftable(solver)
    if free_end is None:
        free_end = default_free_end(solver)
    for name, flag in (("free_end", free_end), ("progress", progress)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool{' or None' if name == 'free_end' else ''}, got "
                            f"{type(flag).__name__}")
    if x_pilot is None:
        if shape is None or len(shape) < 1:
            raise ValueError("give shape=(batch, ...) or x_pilot= for the pilot")
        x_pilot = sde.prior_sample((pilot_batch, *tuple(shape)[1:]), generator=torch.Generator().manual_seed(seed),
                                   dtype=dtype).to(device)
        pilot_key: Any = (tuple(shape)[1:], pilot_batch, seed, dtype, str(x_pilot.device))
    else:
        if not isinstance(x_pilot, Tensor) or x_pilot.ndim < 1:
            raise TypeError("x_pilot must be a tensor of shape (batch, ...)")
        x_pilot = x_pilot.detach()
        pilot_key = ("x_pilot", tuple(x_pilot.shape), x_pilot.dtype, str(x_pilot.device),
                     hash(x_pilot.cpu().numpy().tobytes()))
    fn_key, fn_ref = _fn_ref(score_fn)
    key = (fn_key, _sde_key(sde), _solver_key(solver), steps, e, pilot_key, passes, refine_nfe, rtol, ref_steps,
           shift, free_end)
    hit = _TUNED.get(key) if cache else None
    if hit is not None and _same_fn(hit[0](), score_fn):
        if info is not None:
            info.update(hit[3], pilot_nfe=0, cached=True)
        return _copy(hit[1])

    nfe_used = 0
    times: list[float] = []
    bar = _pilot_bar(progress, solver)
    path = _pilot_path(solver, sde, x_pilot, seed, e)
    if path is None:
        tol = max(rtol, 10 * torch.finfo(x_pilot.dtype).eps)

        def on_step(s: Any) -> None:  # the reference's accepted steps, and its evaluations on the bar
            times.append(s.t)
            if bar is not None:
                bar.update(s.nfe - bar.n)  # (only the reference has counted on the bar so far)

        ref_sol = solve(score_fn, sde, "ode_adaptive", x_T=x_pilot, rtol=tol, atol=tol, eps=e, callback=on_step)
    else:  # the same solver on a fine grid, on the same Brownian path: the strong (pathwise) reference
        ref_sol = solve(score_fn, sde, solver, x_T=x_pilot, steps=ref_steps, schedule="logsnr", eps=e, noise=path())
    ref, nfe_used = ref_sol.x, ref_sol.nfe
    if bar is not None:
        bar.update(nfe_used - bar.n)  # what the reference's steps did not report (its denoising step)
    default = default_grid(solver, sde, steps, eps=e, stop_short=False)  # the default grid ending at eps
    n_pilot = ref.shape[0]
    half = max(1, n_pilot // 2)
    halves = (slice(0, n_pilot), slice(0, half), slice(half, n_pilot))  # the whole pilot and its two halves
    if path is not None:
        # sliced W2 over at least 2 d directions (up to 1024): with 128 in 256-D the grids fitted those directions
        proj = _directions(ref[0].numel(), seed, ref, n=min(1024, max(128, 2 * ref[0].numel())))
        ref_proj = [_projected(ref.reshape(n_pilot, -1)[sl], proj) for sl in halves]  # the same for every grid

    def loss(grid: Tensor, eval_times: Tensor | None = None) -> tuple[float, float, float]:
        nonlocal nfe_used
        fn = score_fn if eval_times is None else shifted_score(score_fn, sde, grid, eval_times)
        # (no eps=: the grid says where the run ends, eps or, with a free end, later)
        sol = solve(fn, sde, solver, x_T=x_pilot, schedule=grid, **({} if path is None else {"noise": path()}))
        nfe_used += sol.nfe
        if bar is not None:
            bar.update(sol.nfe)
        if path is not None:  # a stochastic solver: the distance between the two sample sets (sliced W2)
            out = sol.x.reshape(n_pilot, -1)
            if not bool(torch.isfinite(out).all()):
                return float("inf"), float("inf"), float("inf")
            return tuple(_sliced_w2(_projected(out[sl], proj), r) for sl, r in zip(halves, ref_proj))
        per = (sol.x - ref).reshape(ref.shape[0], -1).pow(2).mean(1)
        per = torch.where(torch.isfinite(per), per, torch.full_like(per, float("inf")))  # NaN: worst
        half = max(1, per.numel() // 2)
        return (float(per.mean().sqrt()), float(per[:half].mean().sqrt()), float(per[half:].mean().sqrt())
                if per.numel() > 1 else float(per.mean().sqrt()))

    starts = [default, logsnr(sde, steps, eps=e), karras(sde, steps, eps=e)]
    if steps >= 2 and path is None:
        starts.insert(0, _density_grid(sde, torch.tensor([t_end] + times), steps, solver.order, t_end, e))
    scored = [(loss(g), g) for g in starts]
    # a run's default grid (it may stop short of eps at low NFE: default_stop) is the floor of what tune returns:
    # it is scored apart, not as a start, since the search from it stays near its end (measured: the VE/VP pilots
    # of tests/test_auto_end.py reached 0.155 / 0.219 from it, 0.063 / 0.064 from the starts ending at eps)
    run_default = default_grid(solver, sde, steps, eps=eps, stop_short=free_end)
    run_default_errs = scored[-3][0] if torch.equal(run_default, default) else loss(run_default)
    default_err = run_default_errs[0]
    best_errs, best = min(scored, key=lambda p: p[0][0])
    lam_ends = _log_snr_ends(sde, t_end, e)  # finite: from -|lambda(eps)| where lambda(T) = -inf (FlowSDE)
    free = False  # whether the grid's end is a parameter (free_end=True and stopping short of eps won)
    if free_end:
        stops = [_stop_short(sde, best, f, lam_ends, t_end) for f in STOP_FRACTIONS]
        stop_errs, stop = min(((loss(g), g) for g in stops), key=lambda p: p[0][0])
        if _improves(stop_errs, best_errs):
            best_errs, best, free = stop_errs, stop, True

    def params_of(grid: Tensor) -> Tensor:
        """The search's parameters of ``grid``: the logs of its log-SNR increments, and with a free end the
        log of the log-SNR range left between its end and ``eps`` (one more increment, never used)."""
        lam = _grid_lam(sde, grid, lam_ends)
        return torch.log(torch.cat([torch.diff(lam), lam_ends[1:] - lam[-1:]]) if free else torch.diff(lam))

    def grid_of(u: Tensor) -> Tensor:
        inc = torch.softmax(u, 0)
        lam = lam_ends[0] + (lam_ends[1] - lam_ends[0]) * torch.cat([torch.zeros(1, dtype=torch.float64),
                                                                    torch.cumsum(inc, 0)])
        return _lam_grid(sde, lam[:-1], t_end, None) if free else _lam_grid(sde, lam, t_end, e)

    u = params_of(best)
    delta = 0.5
    for _ in range(passes if u.numel() >= 2 else 0):
        for i in range(u.numel()):
            for sign in (1.0, -1.0):
                trial = u.clone()
                trial[i] += sign * delta
                g = grid_of(trial)
                if not bool((torch.diff(g) < 0).all()):
                    continue
                errs = loss(g)
                if _improves(errs, best_errs):
                    best_errs, best, u = errs, g, trial
                    break
        delta *= 0.5
    simplex_evals = refine_nfe // (solver.nfe_for(steps) + 1)  # pilot runs per Nelder-Mead stage
    if u.numel() >= 2 and refine_nfe > 0:
        best_errs, best = _refine(loss, grid_of, u, best_errs, best, simplex_evals)
    if run_default_errs[0] < best_errs[0]:  # the search did not beat the run's default grid on the pilot
        best_errs, best = run_default_errs, run_default
        free = float(run_default[-1]) > e * (1 + 1e-9)  # (the shift stage's parameters, with its end)
    stats = {"pilot_error": best_errs[0], "default_error": default_err}
    out: Union[Tensor, TunedGrid] = best.clone()
    if shift:
        stats["unshifted_error"] = best_errs[0]
        best_errs, out = _refine_shifts(loss, grid_of, params_of(best), sde, best, best_errs, simplex_evals, t_end, e)
        stats["pilot_error"] = best_errs[0]
    if bar is not None:
        bar.set_postfix(pilot_error=f"{best_errs[0]:.3g}", default_error=f"{default_err:.3g}")
        bar.close()
    if cache:
        _TUNED[key] = (fn_ref, _copy(out), nfe_used, stats)
    if info is not None:
        info.update(stats, pilot_nfe=nfe_used, cached=False)
    return _copy(out)


def _pilot_bar(progress: bool, solver: Any) -> Any:
    """:func:`tune`'s progress bar (``None`` without ``progress``): the pilot's score evaluations, whose total
    is not known in advance (the reference is adaptive, the searches stop early)."""
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(desc=f"tune {solver.name}", unit="NFE")


def _copy(g: Union[Tensor, "TunedGrid"]) -> Union[Tensor, "TunedGrid"]:
    return TunedGrid(g.times.clone(), g.eval_times.clone()) if isinstance(g, TunedGrid) else g.clone()


def _shift_times(sde: SDE, grid: Tensor, delta: Tensor, t_end: float, e: float) -> Tensor:
    """Evaluation times ``lambda^-1(lambda(t_i) + delta_i)``, clamped to ``[e, t_end]`` (the model's
    range); exactly ``t_i`` where ``delta_i = 0``."""
    ev = sde.t_from_log_snr(sde.log_snr(grid) + delta).clamp(e, t_end)
    return torch.where(delta == 0, grid, ev)


def _refine_shifts(loss: Callable[..., tuple[float, float, float]], grid_of: Callable[[Tensor], Tensor], u: Tensor,
                   sde: SDE, best: Tensor, best_errs: tuple[float, float, float], max_evals: int, t_end: float,
                   e: float) -> tuple[tuple, "TunedGrid"]:
    """:func:`tune`'s ``shift=True`` stage: Nelder–Mead over ``best``'s grid parameters ``u`` (``grid_of(u)``
    is ``best``: its log-SNR increments, and with a free end the range left before ``eps``) and one log-SNR
    shift per knot (from 0) of its evaluation times (``max_evals`` pilot runs). The result is kept only if
    it lowers the pilot error overall and on both halves; else the evaluation times are the grid's own (no
    shift)."""
    n, k = best.numel() - 1, u.numel()
    v0 = np.concatenate([u.numpy(), np.zeros(n + 1)])

    def point(v: np.ndarray) -> tuple[Tensor, Tensor] | None:
        w = torch.as_tensor(v, dtype=torch.float64)
        g = grid_of(w[:k]) if k >= 2 else best
        if not bool((torch.diff(g) < 0).all()):
            return None
        return g, _shift_times(sde, g, w[k:], t_end, e)

    found = _simplex_stage(loss, point, v0, best_errs, max_evals) if n >= 1 else None
    return (best_errs, TunedGrid(best.clone(), best.clone())) if found is None else (found[0], TunedGrid(*found[1]))


def _directions(d: int, seed: int, like: Tensor, n: int) -> Tensor:
    """``n`` fixed random unit directions in ``R^d`` (columns; from ``seed``) for :func:`_sliced_w2`."""
    proj = torch.randn(d, n, generator=torch.Generator().manual_seed(seed + 2), dtype=torch.float64)
    return (proj / proj.norm(dim=0, keepdim=True)).to(like.device, like.dtype)


def _projected(x: Tensor, proj: Tensor) -> Tensor:
    """The sample set ``x`` (rows) projected on the unit directions ``proj``'s columns, sorted per direction."""
    return torch.sort(x @ proj, dim=0)[0]


def _sliced_w2(pa: Tensor, pb: Tensor) -> float:
    """Sliced W2 between two sample sets of one size, given as :func:`_projected` of each."""
    return float((pa - pb).pow(2).mean().sqrt())


def _pilot_path(solver: Any, sde: SDE, x_pilot: Tensor, seed: int, e: float) -> Callable[[], Any] | None:
    """For a stochastic solver, a factory of the pilot's Brownian path (a fresh
    :class:`~sdekit.noise.BrownianNoise` with one seed: every call gives the same path, and the same
    sequence of extra normals for a corrector), so that every pilot run of every grid sees the same noise;
    ``None`` for an ODE solver."""
    if not solver.stochastic:
        return None
    from .noise import BrownianNoise

    t_end = float(sde.T)
    shape, dev, dt = tuple(x_pilot.shape), x_pilot.device, x_pilot.dtype
    return lambda: BrownianNoise(e, t_end, shape, seed=seed + 1, device=dev, dtype=dt, tol=1e-9 * (t_end - e))


def _refine(loss: Callable[[Tensor], tuple[float, float, float]], grid_of: Callable[[Tensor], Tensor], u: Tensor,
            best_errs: tuple[float, float, float], best: Tensor, max_evals: int) -> tuple[tuple, Tensor]:
    """:func:`tune`'s simplex stage: Nelder–Mead over the log-SNR increments ``u`` (``max_evals`` pilot
    runs); its end grid replaces ``best`` only if it lowers the pilot error overall and on both halves."""

    def point(v: np.ndarray) -> tuple[Tensor] | None:
        g = grid_of(torch.as_tensor(v, dtype=torch.float64))
        return (g,) if bool((torch.diff(g) < 0).all()) else None

    found = _simplex_stage(loss, point, u.numpy().astype(np.float64), best_errs, max_evals)
    return (best_errs, best) if found is None else (found[0], found[1][0])


def _improves(errs: tuple[float, float, float], best: tuple[float, float, float]) -> bool:
    """:func:`tune`'s acceptance rule: ``errs`` (whole pilot, first half, second half) lowers the error on the
    whole pilot and raises it on neither half: a move that one half's samples alone pay for fits the pilot
    rather than the model."""
    return errs[0] < best[0] and errs[1] <= best[1] and errs[2] <= best[2]


def _simplex_stage(loss: Callable[..., tuple[float, float, float]], point: Callable[[np.ndarray], tuple | None],
                   v0: np.ndarray, best_errs: tuple[float, float, float], max_evals: int) -> tuple[tuple, tuple] | None:
    """Nelder–Mead from ``v0`` (at most ``max_evals`` pilot runs) over parameters that ``point`` maps to the
    arguments of ``loss`` (``None``: not a valid grid). ``(errors, arguments)`` of its end point if that
    point :func:`_improves` on ``best_errs``, else ``None`` (also when the budget cannot build a simplex)."""
    from ._search import nelder_mead

    if max_evals < v0.size + 2:
        return None

    def value(v: np.ndarray) -> float:
        p = point(v)
        return float("inf") if p is None else loss(*p)[0]

    v, _, _ = nelder_mead(value, v0, step=0.1, max_evals=max_evals)
    p = point(v)
    if p is None:
        return None
    errs = loss(*p)
    return (errs, p) if _improves(errs, best_errs) else None


def default_free_end(solver: Any) -> bool:
    """:func:`tune`'s ``free_end=None``: whether ``solver``'s tuned grid may stop short of ``eps`` by default;
    ``True`` for ODE solvers, ``False`` for stochastic ones: on the tuning split it lowered the ODE-map error of
    ``unipc``/``dpmpp_2m``/``dpmpp_3m`` (``benchmarks/results/auto_shift-end.md``) and raised the FD of
    ``dpmpp_2m_sde`` at 8 NFE (see :func:`tune`'s ``free_end``)."""
    return not solver.stochastic


def check_tunable(solver: Any) -> None:
    """Refuse a solver :func:`tune` cannot tune a grid for (it needs a fixed-step ODE or SDE solver)."""
    if solver.kind not in ("ode", "sde") or getattr(solver, "adaptive", False) or solver.stepping != "fixed":
        raise ValueError(f"tune needs a fixed-step ODE or SDE solver, got {solver.name!r}")


def is_auto(schedule: Any) -> bool:
    """Whether ``schedule`` is ``"auto"`` (a grid :func:`tune` makes for the run's score function)."""
    return isinstance(schedule, str) and schedule == "auto"


def resolve_auto(score_fn: Callable, sde: SDE, solver: Any, steps: int, x: Tensor, *,
                 eps: float | None, stop_short: bool = True, progress: bool = False) -> tuple[Tensor, dict]:
    """``schedule="auto"``: the grid :func:`tune` makes for this model, with its pilot statistics for
    ``Solution.stats``. The pilot runs in the dtype and on the device of the run's starting state ``x``
    (a float32 model needs float32); :func:`sdekit.solve` calls it after every other check.

    The grid may stop short of ``eps`` (``tune``'s default ``free_end``: for ODE solvers) only with
    ``stop_short`` and no ``eps=``; :func:`sdekit.solve` passes ``stop_short`` for a run that ends with its
    denoising step and saves no states: a run without the denoising step returns the state at the grid's
    last time, ``save_at=`` times may name ``eps``, and an explicit ``eps=`` says where the run ends."""
    info: dict = {}
    return tune(score_fn, sde, solver, steps=steps, shape=tuple(x.shape), eps=eps, dtype=x.dtype, device=x.device,
                free_end=None if eps is None and stop_short else False, progress=progress, info=info), info


# ------------------------------------------------------------------ decoupled evaluation times (tune(shift=True))

#: solvers that evaluate the model once per grid time, at that time and nowhere else (checked by
#: tests/test_auto_shift.py): only for them does "the evaluation at grid time t_i" name one evaluation
SHIFTABLE = frozenset({"unipc", "dpmpp_2m", "dpmpp_3m", "ddim", "deis", "lms", "ode_euler"})


@dataclass(frozen=True)
class TunedGrid:
    """A time grid whose model evaluations are decoupled from its times (:func:`tune` with ``shift=True``).

    The solver steps over ``times`` with its coefficients at ``times``; the model output it uses at
    ``times[i]`` is the denoiser evaluated at ``eval_times[i]`` (see :func:`shifted_score`). Pass it as
    ``schedule=`` to :func:`sdekit.sample` / :func:`sdekit.solve` with a solver of :data:`SHIFTABLE`.

    Attributes:
        times: float64, strictly decreasing, ``steps + 1`` times from ``sde.T`` to ``eps`` (or, tuned with
            ``free_end=True``, to a later time).
        eval_times: float64, one evaluation time per grid time, within ``[eps, sde.T]``.
    """

    times: Tensor
    eval_times: Tensor

    def __post_init__(self) -> None:
        for name in ("times", "eval_times"):
            v = getattr(self, name)
            if not isinstance(v, Tensor) or v.ndim != 1:
                raise TypeError(f"TunedGrid.{name} must be a 1-D tensor")
        if self.times.shape != self.eval_times.shape:
            raise ValueError(f"TunedGrid.eval_times must have one time per grid time ({self.times.numel()}), "
                             f"got {self.eval_times.numel()}")
        if not bool(torch.isfinite(self.eval_times).all()) or not bool((self.eval_times > 0).all()):
            raise ValueError("TunedGrid.eval_times must be finite and positive")


def _check_shiftable(solver: Any) -> None:
    if solver.name not in SHIFTABLE:
        raise ValueError(f"decoupled evaluation times (shift=True, or a TunedGrid schedule) need a solver that "
                         f"evaluates the model only at its grid times, once each ({', '.join(sorted(SHIFTABLE))}); "
                         f"got {solver.name!r}")


def shifted_score(score_fn: Callable[[Tensor, Tensor], Tensor], sde: SDE, times: Tensor,
                  eval_times: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """The score a solver sees on ``times`` when the model is evaluated at ``eval_times`` instead.

    At grid time ``t = times[i]`` with evaluation time ``s = eval_times[i]`` it returns::

        score_used(x, t) = (alpha(t) D(x, s) - x) / sigma(t)^2,   D(x, s) = (x + sigma(s)^2 score_fn(x, s)) / alpha(s)

    i.e. the solver's data prediction ``D_t = (x + sigma(t)^2 score_used)/alpha(t)`` is exactly the
    denoiser at ``s`` (with ``x`` unchanged). This form is chosen (rather than moving the noise
    prediction, ``score(x, s) sigma(s)/sigma(t)``) because the solvers it is meant for (UniPC,
    DPM-Solver++) integrate ``D``: the shift then moves only where their integrand is sampled, as in
    LD3 (Tong et al. 2024, "Learning to Discretize Denoising Diffusion ODEs"). It is computed as
    ``c_x x + c_s score_fn(x, s)`` with ``c_x = (alpha(t)/alpha(s) - 1)/sigma(t)^2`` and
    ``c_s = alpha(t) sigma(s)^2 / (alpha(s) sigma(t)^2)`` (float64, cast to ``x``'s dtype); where
    ``s == t``, ``c_x = 0`` and ``c_s = 1`` exactly, so the wrap is the identity.

    A score function that predicts ``D`` itself (a ``data_prediction(x, t)`` method, e.g.
    :func:`sdekit.score.from_flow`) keeps that path: the wrap's ``data_prediction(x, t_i)`` is its
    ``data_prediction(x, s_i)`` (exact where ``alpha(t_i) = 0``, which the score form cannot be).

    The time ``t`` the solver asks for must be one of ``times`` (in its dtype): anything else raises
    ``RuntimeError`` (the solver evaluated off the grid). Finding it reads ``t`` on the host.
    """
    times = times.detach().to(device="cpu", dtype=torch.float64)
    ev = eval_times.detach().to(device="cpu", dtype=torch.float64)
    same = ev == times
    a_t, s_t, a_s, s_s = sde.alpha(times), sde.sigma(times), sde.alpha(ev), sde.sigma(ev)
    r = torch.where(same, torch.ones_like(a_t), a_t / torch.where(same, torch.ones_like(a_s), a_s))
    cx = torch.where(same, torch.zeros_like(r), (r - 1.0) / (s_t * s_t))
    cs = torch.where(same, torch.ones_like(r), r * (s_s * s_s) / (s_t * s_t))
    cache: dict = {}

    def lookup(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        k = (t.dtype, t.device, x.dtype)
        if k not in cache:
            cache[k] = (times.to(device=t.device, dtype=t.dtype), ev.to(device=t.device, dtype=t.dtype),
                        cx.to(device=x.device, dtype=x.dtype), cs.to(device=x.device, dtype=x.dtype))
        tg, evg, cxg, csg = cache[k]
        tt = t.reshape(-1)
        d = (tt[:, None] - tg[None, :]).abs()
        idx = d.argmin(1)
        if not bool((d.gather(1, idx[:, None]) == 0).all()):
            raise RuntimeError(f"shifted_score: the solver asked for the model at t={float(tt[0]):.9g}, which is not "
                               "a time of the tuned grid (shifted evaluations need a solver that evaluates only at "
                               "its grid times)")
        view = (-1,) + (1,) * (x.ndim - 1)
        return evg[idx].reshape(t.shape), cxg[idx].reshape(view), csg[idx].reshape(view), idx

    def score_used(x: Tensor, t: Tensor) -> Tensor:
        s, c_x, c_s, _ = lookup(x, t)
        return c_x * x + c_s * score_fn(x, s)

    predict = getattr(score_fn, "data_prediction", None)
    if callable(predict):
        def data_prediction(x: Tensor, t: Tensor) -> Tensor:
            return predict(x, lookup(x, t)[0])

        score_used.data_prediction = data_prediction  # type: ignore[attr-defined]
    return score_used


def apply_tuned(score_fn: Callable[[Tensor, Tensor], Tensor], sde: SDE, solver: Any,
                schedule: Any) -> tuple[Callable[[Tensor, Tensor], Tensor], Any]:
    """For :func:`sdekit.solve`: a :class:`TunedGrid` schedule becomes its ``times`` and the score
    :func:`shifted_score` makes (refused before any score call for a solver outside :data:`SHIFTABLE`);
    any other schedule passes through unchanged."""
    if not isinstance(schedule, TunedGrid):
        return score_fn, schedule
    _check_shiftable(solver)
    return shifted_score(score_fn, sde, schedule.times, schedule.eval_times), schedule.times
