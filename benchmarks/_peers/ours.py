"""Every sdekit solver in ``sdekit.solvers.available()`` (correctors and the ``torchdiffeq`` bridge excluded),
picked up from the registry.

Fixed-step solvers run as a list of :class:`Config` (solver, grid, options) at each NFE budget
(``nfe=`` sizing, Tweedie denoising included): by default each solver on its default schedule
and on the log-SNR, Karras and uniform grids (:func:`grid_configs`), or only its defaults
(:func:`default_configs`, ``peers.py --sdekit defaults``); :data:`EXTRA_CONFIGS` are added to
either. Adaptive solvers run at each tolerance (``rtol = atol``) when their constructor takes
``rtol``/``atol``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

import sdekit

from .common import Problem, RunSpec

LIBRARY = "sdekit"
#: registered solvers that run another library's method through sdekit's API: they belong to that
#: library's column (torchdiffeq's own runs), not to sdekit's
BRIDGES = {"torchdiffeq"}
SCHEDULES = ("logsnr", "karras", "uniform")


def available() -> bool:
    return True


def solver_names() -> list[str]:
    return [i.name for i in sdekit.solvers.available() if i.kind != "corrector"]


def _params(name: str) -> set[str]:
    return set(inspect.signature(type(sdekit.solvers.resolve(name)).__init__).parameters) - {"self"}


@dataclass
class Config:
    """One sdekit configuration of the peers benchmark: a solver, its grid and options.

    Args:
        solver: a registered solver name.
        schedule: a grid name, ``None`` for the solver's ``default_schedule``, or a callable
            ``(problem, budget, solver) -> (grid, pilot_nfe)`` run BEFORE the counted run (with the
            problem's uncounted score ``problem.score``), for grids tuned per model such as
            ``schedule="auto"``: the run's NFE stays the sampler's, ``pilot_nfe`` is recorded beside it.
        options: solver constructor options (``eta=0.5``...).
        label: the table's setting text (default: the grid's name and the options).
    """

    solver: str
    schedule: str | Callable[..., tuple[Tensor, int]] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    label: str | None = None


#: configurations every run adds to the generated ones (``ours.EXTRA_CONFIGS.append(Config(...))``,
#: or ``--sdekit-config solver[:schedule]`` on the command line)
EXTRA_CONFIGS: list[Config] = []


def default_configs(solvers: list[str] | None = None) -> list[Config]:
    """Each fixed-step solver (or those in ``solvers``) with its defaults: what ``sample(..., solver)`` does."""
    return [Config(i.name) for i in sdekit.solvers.available()
            if i.kind != "corrector" and i.name not in BRIDGES and not i.adaptive
            and (solvers is None or i.name in solvers)]


#: seed of the ``schedule="auto"`` pilot's prior samples: distinct from every evaluated draw (``peers.py``
#: draws x_T with seeds ``problem.seed + 1000 k``), so the grid is never tuned on the samples it is judged on
AUTO_PILOT_SEED = 7919
AUTO_PILOT_BATCH = 256  # sdekit.grids.tune's default


def auto_schedule(*, pilot_batch: int = AUTO_PILOT_BATCH, seed: int = AUTO_PILOT_SEED,
                  dtype: torch.dtype = torch.float32, shift: bool = False,
                  free_end: bool | None = None) -> Callable[..., tuple[Tensor, int]]:
    """A :class:`Config` schedule ``(problem, budget, solver) -> (grid, pilot_nfe)`` doing what
    ``schedule="auto"`` does (:func:`sdekit.grids.tune`, a pilot in the run's float32), on a pilot batch
    of ``pilot_batch`` prior samples drawn with ``seed`` instead of the evaluated ``x_T``.

    The grid is tuned once per problem, budget and solver (one model, one pilot) and reused for every
    seed of x_T; ``pilot_nfe`` is the score evaluations that one tuning spent, reported with every seed's
    run and never added to the run's NFE. ``shift=True``: ``tune(shift=True)``, a
    :class:`sdekit.grids.TunedGrid` whose model evaluation times are tuned too. ``free_end``: ``tune``'s
    (``None``: its default), whether the grid may stop short of ``eps``.
    """
    tuned: dict[tuple, tuple[Tensor, int]] = {}

    def auto(p: Problem, budget: int, solver: Any) -> tuple[Tensor, int]:
        key = (p.name, p.sde_name, budget, solver.name, repr(getattr(solver, "__dict__", {})))
        if key not in tuned:
            info: dict = {}
            grid = sdekit.grids.tune(p.score, p.sde, solver, budget, shape=(1, p.dim), pilot_batch=pilot_batch,
                                     seed=seed, dtype=dtype, cache=False, shift=shift, free_end=free_end, info=info)
            tuned[key] = (grid, int(info["pilot_nfe"]))
        return tuned[key]

    auto.__name__ = "auto"
    return auto


#: setting label (prefix) of the ``tune(shift=True)`` configurations (``peers.py --auto-shift``)
AUTO_SHIFT_LABEL = "auto+shift"


def auto_label(shift: bool, free_end: bool, pilot_batch: int) -> str:
    """The setting text of an auto configuration: ``auto[+shift][+end] pilot_batch=N``, ``+end`` when the grid
    may stop short of ``eps`` (``free_end``)."""
    return f"{AUTO_SHIFT_LABEL if shift else 'auto'}{'+end' if free_end else ''} pilot_batch={pilot_batch}"


def auto_configs(solvers: list[str], *, shift: bool = False, pilot_batch: int = AUTO_PILOT_BATCH,
                 free_end: bool | None = None) -> list[Config]:
    """``schedule="auto"`` configurations of ``solvers`` (fixed-step ODE or SDE solvers, refused otherwise
    before any work), each on its own pilot (see :func:`auto_schedule`); ``shift=True``: with
    tuned evaluation times (solvers of :data:`sdekit.grids.SHIFTABLE` only); ``pilot_batch``: the pilot's
    prior samples; ``free_end``: whether the grid may stop short of ``eps`` (``None``: ``tune``'s default)."""
    known = {i.name: i for i in sdekit.solvers.available()}
    out = []
    for name in solvers:
        info = known.get(name)
        if info is None or name in BRIDGES:
            raise ValueError(f"auto solvers must be registered sdekit solvers, got {name!r}")
        solver = sdekit.solvers.resolve(name)
        try:
            sdekit.grids.check_tunable(solver)
        except ValueError as err:
            raise ValueError(f"schedule='auto': {err}") from None
        if shift and name not in sdekit.grids.SHIFTABLE:
            raise ValueError(f"--auto-shift needs solvers of sdekit.grids.SHIFTABLE, got {name!r}")
        end = sdekit.grids.default_free_end(solver) if free_end is None else free_end  # tune's default
        out.append(Config(name, schedule=auto_schedule(shift=shift, pilot_batch=pilot_batch, free_end=end),
                          label=auto_label(shift, end, pilot_batch)))
    return out


def grid_configs(solvers: list[str] | None = None, schedules: tuple[str, ...] = SCHEDULES) -> list[Config]:
    """Each fixed-step solver on its default grid and on each of ``schedules``."""
    out = []
    for c in default_configs(solvers):
        out.append(c)
        default = sdekit.solvers.resolve(c.solver).default_schedule
        out += [Config(c.solver, s) for s in schedules if s != default]
    return out


def config_specs(p: Problem, budgets: list[int], configs: list[Config]) -> list[RunSpec]:
    """RunSpecs of ``configs`` at each budget (``nfe=`` sizing, Tweedie denoising included)."""
    out = []
    for c in configs:
        solver = sdekit.solvers.resolve(c.solver, **c.options)
        opts = "".join(f" {k}={v}" for k, v in c.options.items())
        for budget in budgets:
            try:
                steps = sdekit.steps_for_nfe(solver, budget, denoise=True)
            except ValueError:
                continue
            if callable(c.schedule):
                name = c.label or getattr(c.schedule, "__name__", "custom")
            else:
                name = c.label or (c.schedule or solver.default_schedule) + opts
            extra: dict[str, Any] = {"config": c}

            def run(oracle, x_T, seed, c=c, budget=budget, extra=extra):
                sched, size = c.schedule, {"nfe": budget}
                if callable(sched):  # a tuned grid: its times fix the steps (sized for ``budget`` by the tuner)
                    sched, extra["pilot_nfe"] = sched(p, budget, sdekit.solvers.resolve(c.solver, **c.options))
                    size = {}
                g = torch.Generator().manual_seed(seed + 1)
                return sdekit.sample(oracle.score, p.sde, c.solver, x_T=x_T, schedule=sched, generator=g,
                                     **size, **c.options)

            out.append(RunSpec(LIBRARY, c.solver, f"{name} steps={steps}", budget, run, extra,
                               deterministic=not solver.stochastic))
    return out


def specs(p: Problem, budgets: list[int], *, tolerances: list[float], solvers: list[str] | None = None,
          schedules: tuple[str, ...] = SCHEDULES, configs: list[Config] | None = None) -> list[RunSpec]:
    """Adaptive solvers at each tolerance, then ``configs`` (default: :func:`grid_configs`) and
    :data:`EXTRA_CONFIGS` at each budget."""
    out = []
    for info in sdekit.solvers.available():
        if info.kind == "corrector" or info.name in BRIDGES or (solvers is not None and info.name not in solvers):
            continue
        name = info.name
        if info.adaptive:
            params = _params(name)
            if not {"rtol", "atol"} <= params:
                continue
            for tol in tolerances:
                def run_a(oracle, x_T, seed, name=name, tol=tol):
                    g = torch.Generator().manual_seed(seed + 1)
                    return sdekit.sample(oracle.score, p.sde, name, x_T=x_T, generator=g, rtol=tol, atol=tol)

                out.append(RunSpec(LIBRARY, name, f"rtol=atol={tol:g}", None, run_a,
                                   deterministic=not sdekit.solvers.resolve(name).stochastic))
    if configs is None:
        configs = grid_configs(solvers, schedules)
    return out + config_specs(p, budgets, list(configs) + EXTRA_CONFIGS)


def overhead_specs(p: Problem, nfe: int) -> list[RunSpec]:
    out = []
    for info in sdekit.solvers.available():
        if info.kind == "corrector" or info.adaptive:
            continue
        solver = sdekit.solvers.resolve(info.name)
        try:
            sdekit.steps_for_nfe(solver, nfe, denoise=True)
        except ValueError:
            continue

        def run(oracle, x_T, seed, name=info.name):
            g = torch.Generator().manual_seed(seed + 1)
            return sdekit.sample(oracle.score, p.sde, name, x_T=x_T, nfe=nfe, generator=g)

        out.append(RunSpec(LIBRARY, info.name, f"{solver.default_schedule} nfe<={nfe}", nfe, run))
    return out
