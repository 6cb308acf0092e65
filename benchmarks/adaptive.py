"""Adaptive solvers against the original paper's samplers on a 64-D Gaussian mixture.

- PF-ODE: sdekit ``ode_adaptive`` (dopri5, shared and per-sample steps) and torchdiffeq dopri5
  against scipy's ``solve_ivp(method="RK45", rtol=atol=1e-5)`` on the flattened state (the
  ODE sampler of Song et al. 2021). Accuracy is the RMS distance to a tight-tolerance float64
  solve of the same ODE from the same x_T.
- reverse SDE: ``sde_adaptive`` (Jolicoeur-Martineau et al. 2021) against 1000-step
  Euler–Maruyama: Fréchet distance to the exact mixture and NFE; the floor is the FD of as
  many exact samples.
- work-precision (``--work-precision``): with ~10 accepted steps per solve, one tolerance is a
  coin toss of step placement, so both dopri5 implementations sweep ``rtol = atol`` from 1e-3 to
  3e-7 on several mixtures (float64 state for both); for each scipy point, sdekit's error at the
  same NFE is read off its own curve (log-log interpolation), and the geometric mean of the
  ratios is reported (< 1: sdekit is more accurate per NFE).

Run: ``PYTHONPATH=. python benchmarks/adaptive.py [--n 2000] [--dim 64] [--work-precision]``. Wall
times depend on the machine's load; NFE do not.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import sdekit
from sdekit.metrics import frechet_to_moments
from sdekit.testing import GaussianMixture


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work-precision", action="store_true", help="also sweep tolerances (see the docstring)")
    ap.add_argument("--problems", type=int, default=3, help="mixtures in the work-precision sweep")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    sde = sdekit.VPSDE()
    mix = GaussianMixture.random(dim=args.dim, components=4, generator=torch.Generator().manual_seed(args.seed))
    exact_score = mix.score_fn(sde, matmul=True)
    timer = {"s": 0.0}

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        out = exact_score(x, t)
        timer["s"] += time.perf_counter() - t0
        return out
    mean, cov = mix.mean(), mix.cov()
    x_T = sde.prior_sample((args.n, args.dim), generator=torch.Generator().manual_seed(args.seed + 1))
    floor = np.mean([frechet_to_moments(mix.sample(args.n, generator=torch.Generator().manual_seed(s)), mean, cov)
                     for s in range(5)])
    print(f"# {args.dim}-D mixture (K=4), n={args.n}, VP SDE; exact-sample FD floor (mean of 5) = {floor:.4f}")

    ref = sdekit.solve(exact_score, sde, "ode_adaptive", x_T=x_T.double(), rtol=1e-10, atol=1e-10, denoise=False).x

    def err(x: torch.Tensor) -> float:
        return float(((x.double() - ref) ** 2).mean().sqrt())

    print("\n## PF-ODE from the same x_T (no denoising step), float32 state")
    print(f"{'sampler':<38} {'NFE':>6} {'wall s':>8} {'overhead ms/NFE':>16} {'RMS err':>10} {'FD':>8}")
    rows = []
    for name, kw in [("sdekit ode_adaptive dopri5 shared", {}),
                     ("sdekit ode_adaptive dopri5 per-sample", {"per_sample": True}),
                     ("sdekit ode_adaptive bosh3 shared", {"method": "bosh3"})]:
        t, timer["s"] = time.perf_counter(), 0.0
        sol = sdekit.solve(score, sde, "ode_adaptive", x_T=x_T, rtol=1e-5, atol=1e-5, denoise=False, **kw)
        rows.append((name, sol.nfe, time.perf_counter() - t, timer["s"], sol.x))
    t, timer["s"] = time.perf_counter(), 0.0
    sol = sdekit.solve(score, sde, "torchdiffeq", x_T=x_T, rtol=1e-5, atol=1e-5, denoise=False)
    rows.append(("torchdiffeq dopri5", sol.nfe, time.perf_counter() - t, timer["s"], sol.x))

    from scipy.integrate import solve_ivp

    proc = sdekit.ReverseProcess(sde, score, lam=0.0)
    shape = x_T.shape

    def f(t: float, y: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(y.astype(np.float32)).reshape(shape)
        return proc.drift(x, torch.full((shape[0],), t)).numpy().reshape(-1).astype(np.float64)

    t, timer["s"] = time.perf_counter(), 0.0
    r = solve_ivp(f, (sde.T, sde.eps), x_T.numpy().reshape(-1).astype(np.float64), method="RK45", rtol=1e-5,
                  atol=1e-5)
    rows.append(("scipy solve_ivp RK45", r.nfev, time.perf_counter() - t, timer["s"],
                 torch.from_numpy(r.y[:, -1]).reshape(shape).float()))
    for name, nfe, wall, ts, x in rows:
        print(f"{name:<38} {nfe:>6} {wall:>8.3f} {1e3 * (wall - ts) / nfe:>16.3f} {err(x):>10.2e} "
              f"{frechet_to_moments(x, mean, cov):>8.4f}")

    print("\n## reverse SDE, with the final denoising step, FD to the exact mixture")
    print(f"{'sampler':<38} {'NFE':>6} {'wall s':>8} {'overhead ms/NFE':>16} {'FD':>8}")
    for name, solver, kw in [("euler_maruyama 1000 steps", "euler_maruyama", {"steps": 1000}),
                             ("sde_adaptive (paper tol 0.05/0.0078)", "sde_adaptive", {}),
                             ("sde_adaptive per-sample", "sde_adaptive", {"per_sample": True}),
                             ("sde_adaptive rtol=0.02", "sde_adaptive", {"rtol": 0.02}),
                             ("sde_adaptive rtol=atol=0.01", "sde_adaptive", {"rtol": 0.01, "atol": 0.01}),
                             ("srk sra1 50 steps", "srk", {"steps": 50})]:
        t, timer["s"] = time.perf_counter(), 0.0
        sol = sdekit.solve(score, sde, solver, x_T=x_T, generator=torch.Generator().manual_seed(7), **kw)
        wall = time.perf_counter() - t
        extra = ""
        if "rejected" in sol.stats and solver == "sde_adaptive":
            extra = f"  (accepted {sol.stats['accepted']:.1f}, rejected {sol.stats['rejected']:.1f})"
        print(f"{name:<38} {sol.nfe:>6} {wall:>8.3f} {1e3 * (wall - timer['s']) / sol.nfe:>16.3f} "
              f"{frechet_to_moments(sol.x, mean, cov):>8.4f}{extra}")
    if args.work_precision:
        work_precision(args.n, args.dim, args.problems)


TOLS = [1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7]


def work_precision(n: int, dim: int, problems: int) -> None:
    from scipy.integrate import solve_ivp

    print(f"\n## work-precision, PF-ODE, float64 state, {dim}-D K=4 mixtures, n={n}: (NFE, RMS error) per rtol=atol")
    for sde in (sdekit.VPSDE(), sdekit.VESDE()):
        ratios_all = []
        for seed in range(problems):
            mix = GaussianMixture.random(dim=dim, components=4, generator=torch.Generator().manual_seed(seed))
            score = mix.score_fn(sde, matmul=True)
            x_T = sde.prior_sample((n, dim), generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
            ref = sdekit.solve(score, sde, "ode_adaptive", x_T=x_T, rtol=1e-11, atol=1e-11, denoise=False).x
            proc = sdekit.ReverseProcess(sde, score, lam=0.0)

            def f(t: float, y: np.ndarray, proc=proc, shape=x_T.shape) -> np.ndarray:
                x = torch.from_numpy(y).reshape(shape)
                return proc.drift(x, torch.full((shape[0],), t, dtype=torch.float64)).numpy().reshape(-1)

            ours, theirs = [], []
            for tol in TOLS:
                r = solve_ivp(f, (sde.T, sde.eps), x_T.numpy().reshape(-1), method="RK45", rtol=tol, atol=tol)
                y = torch.from_numpy(r.y[:, -1]).reshape(x_T.shape)
                theirs.append((r.nfev, float(((y - ref) ** 2).mean().sqrt())))
                sol = sdekit.solve(score, sde, "ode_adaptive", x_T=x_T, rtol=tol, atol=tol, denoise=False)
                ours.append((sol.nfe, float(((sol.x - ref) ** 2).mean().sqrt())))
            xs, ys = np.log([a for a, _ in sorted(ours)]), np.log([b for _, b in sorted(ours)])
            ratios = [float(np.exp(np.interp(np.log(nf), xs, ys)) / e) for nf, e in theirs
                      if xs[0] <= np.log(nf) <= xs[-1]]
            ratios_all += ratios
            print(f"{type(sde).__name__} mixture {seed}: sdekit " + " ".join(f"{a}:{b:.2e}" for a, b in ours))
            print(f"{type(sde).__name__} mixture {seed}: scipy  " + " ".join(f"{a}:{b:.2e}" for a, b in theirs))
            print("    sdekit error / scipy error at scipy's NFE: " + " ".join(f"{q:.2f}" for q in ratios)
                  + f"  (geometric mean {np.exp(np.mean(np.log(ratios))):.2f})")
        print(f"{type(sde).__name__}: geometric mean over {len(ratios_all)} points: "
              f"{np.exp(np.mean(np.log(ratios_all))):.2f}")


if __name__ == "__main__":
    main()
