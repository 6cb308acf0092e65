"""torchdiffeq ``odeint`` on the probability-flow ODE ``dx/dt = f(t) x - 1/2 g(t)^2 s(x, t)`` from T to eps.

Fixed-grid methods (euler, midpoint, rk4) step on a uniform, log-SNR or Karras time grid
(given through ``grid_constructor``); adaptive methods (dopri5, bosh3) run at several
``rtol = atol``. Every run finishes with Tweedie's denoising step at ``eps`` (1 NFE).
"""

from __future__ import annotations

import torch

import sdekit

from .common import Oracle, Problem, RunSpec, steps_for, tweedie

LIBRARY = "torchdiffeq"
FIXED = {"euler": 1, "midpoint": 2, "rk4": 4}
ADAPTIVE = ("dopri5", "bosh3")


def available() -> bool:
    try:
        import torchdiffeq  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def _func(p: Problem, oracle: Oracle):
    sde = p.sde

    def func(t, y):
        tt = t.detach().to(torch.float64).reshape(1)
        return float(sde.f(tt)) * y - 0.5 * float(sde.g2(tt)) * oracle.score(y, tt)

    return func


def _solve(p: Problem, oracle: Oracle, x_T: torch.Tensor, method: str, *, grid: torch.Tensor | None = None,
           tol: float | None = None) -> torch.Tensor:
    from torchdiffeq import odeint

    t = torch.tensor([p.sde.T, p.sde.eps], dtype=x_T.dtype)
    if grid is not None:
        g = grid.to(x_T.dtype)
        ys = odeint(_func(p, oracle), x_T, t, method=method, options={"grid_constructor": lambda f, y0, tt: g})
    else:
        ys = odeint(_func(p, oracle), x_T, t, method=method, rtol=tol, atol=tol)
    return tweedie(oracle, ys[-1], p.sde.eps)


def specs(p: Problem, budgets: list[int], *, tolerances: list[float]) -> list[RunSpec]:
    out = []
    for method, per_step in FIXED.items():
        for sched in ("uniform", "logsnr", "karras"):
            for budget in budgets:
                n = steps_for(budget, per_step, extra=1)
                grid = sdekit.grids.get_grid(sched, p.sde, n)

                def run(oracle, x_T, seed, method=method, grid=grid):
                    return _solve(p, oracle, x_T, method, grid=grid)

                out.append(RunSpec(LIBRARY, method, f"{sched} n={n} +denoise", budget, run, deterministic=True))
    for method in ADAPTIVE:
        for tol in tolerances:
            def run_a(oracle, x_T, seed, method=method, tol=tol):
                return _solve(p, oracle, x_T, method, tol=tol)

            out.append(RunSpec(LIBRARY, method, f"rtol=atol={tol:g} +denoise", None, run_a, deterministic=True))
    return out


def overhead_specs(p: Problem, nfe: int) -> list[RunSpec]:
    out = []
    for method, per_step in (("euler", 1), ("rk4", 4)):
        n = steps_for(nfe, per_step, extra=1)
        grid = sdekit.grids.get_grid("uniform", p.sde, n)
        out.append(RunSpec(LIBRARY, method, f"uniform n={n} +denoise", nfe,
                           lambda oracle, x_T, seed, method=method, grid=grid: _solve(p, oracle, x_T, method,
                                                                                       grid=grid)))
    return out
