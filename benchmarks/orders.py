"""Measured convergence orders of every fixed-step solver, on problems with known answers.

- Deterministic solvers: error at ``eps`` against the exact probability-flow map of Gaussian
  data (``GaussianMixture.pf_ode_flow``), float64, nested grids (solver's default schedule).
- Stochastic solvers: strong error against the same solver at 4096 steps on the SAME
  Brownian path (torchsde ``BrownianInterval``), uniform grids.

Prints the slope of log(error) against log(1/steps) next to the order each solver claims,
and writes ``benchmarks/results/orders.md``. Run: ``python benchmarks/orders.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import sdekit
from sdekit.grids import get_grid, uniform
from sdekit.integrate import integrate
from sdekit.noise import BrownianNoise, GaussianNoise
from sdekit.process import ReverseProcess
from sdekit.solvers import available, resolve
from sdekit.testing import GaussianMixture, convergence_slope

slope = convergence_slope  # least-squares slope of log(error) against log(1/steps)


def ode_order(name: str, sde, steps) -> tuple[float, list[float]]:
    g = GaussianMixture(torch.ones(1), torch.tensor([[0.5, -1.0, 2.0]]), torch.tensor([[0.3, 0.8, 1.2]]))
    x_T = sde.prior_sample((32, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = g.pf_ode_flow(x_T, sde.T, sde.eps, sde)
    solver = resolve(name)
    errs = []
    for n in steps:
        grid = get_grid(solver.default_schedule, sde, n)
        sol = integrate(ReverseProcess(sde, g.score_fn(sde), lam=solver.lam), resolve(name), grid, x_T, GaussianNoise())
        errs.append(float((sol.x - exact).abs().max()))
    return slope(steps, errs), errs


def sde_order(name: str, sde, steps, batch: int = 400) -> tuple[float, list[float]]:
    g = GaussianMixture(torch.ones(1), torch.tensor([[0.5, -1.0]]), torch.tensor([[0.3, 0.8]]))
    x_T = sde.prior_sample((batch, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    bm = BrownianNoise(sde.eps, sde.T, (batch, 2), seed=5, dtype=torch.float64)

    def run(n, solver):
        return integrate(ReverseProcess(sde, g.score_fn(sde)), resolve(solver), uniform(sde, n), x_T, bm).x

    ref = run(4096, name)
    errs = [float((run(n, name) - ref).abs().mean()) for n in steps]
    return slope(steps, errs), errs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/orders.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    lines = ["| solver | kind | problem | claimed order | measured slope | errors |", "|---|---|---|---:|---:|---|"]
    for info in available():
        if info.kind == "corrector" or info.adaptive or info.name == "pc":
            continue
        try:
            if not info.stochastic:
                sde = sdekit.VPSDE()
                # order 4 (ode_rk4, lms, unipc's default predictor_order=3) from 64 steps: unipc is pre-asymptotic
                # below ~128 (tests/test_exponential.py)
                meas, errs = ode_order(info.name, sde, [32, 64, 128, 256] if info.order < 4 else [64, 128, 256, 512])
                prob = f"VP PF-ODE, exact Gaussian flow, {resolve(info.name).default_schedule} grid"
            else:
                sde = sdekit.VESDE(eps=1e-2)
                meas, errs = sde_order(info.name, sde, [16, 32, 64, 128])
                prob = "VE reverse SDE, strong, same Brownian path"
        except Exception as e:  # a solver that cannot run this problem is reported, not hidden
            lines.append(f"| {info.name} | {info.kind} | — | {info.order:g} | error: {type(e).__name__}: {e} | |")
            continue
        row = (f"| {info.name} | {info.kind} | {prob} | {info.order:g} | {meas:.2f} | "
               f"{', '.join(f'{e:.2e}' for e in errs)} |")
        print(row, flush=True)
        lines.append(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
