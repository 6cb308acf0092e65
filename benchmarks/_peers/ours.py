"""Every sdekit solver in ``sdekit.solvers.available()`` (correctors and the ``torchdiffeq`` bridge excluded),
picked up from the registry.

Fixed-step solvers run at each NFE budget (``nfe=`` sizing, Tweedie denoising included) on
their default schedule and on the log-SNR, Karras and uniform grids; adaptive solvers run at
each tolerance (``rtol = atol``) when their constructor takes ``rtol``/``atol``.
"""

from __future__ import annotations

import inspect

import torch

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


def specs(p: Problem, budgets: list[int], *, tolerances: list[float], solvers: list[str] | None = None,
          schedules: tuple[str, ...] = SCHEDULES) -> list[RunSpec]:
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

                out.append(RunSpec(LIBRARY, name, f"rtol=atol={tol:g}", None, run_a))
            continue
        solver = sdekit.solvers.resolve(name)
        scheds = [solver.default_schedule] + [s for s in schedules if s != solver.default_schedule]
        for sched in scheds:
            for budget in budgets:
                try:
                    steps = sdekit.steps_for_nfe(solver, budget, denoise=True)
                except ValueError:
                    continue

                def run(oracle, x_T, seed, name=name, sched=sched, budget=budget):
                    g = torch.Generator().manual_seed(seed + 1)
                    return sdekit.sample(oracle.score, p.sde, name, x_T=x_T, nfe=budget, schedule=sched,
                                         generator=g)

                out.append(RunSpec(LIBRARY, name, f"{sched} steps={steps}", budget, run))
    return out


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
