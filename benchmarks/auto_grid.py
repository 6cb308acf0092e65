"""ODE-map error of schedule="auto" against fixed grids, on samples outside the pilot batch.

    PYTHONPATH=. python benchmarks/auto_grid.py

Mixtures: GaussianMixture.random(dim, K, std=(lo, hi), seed) under the VP SDE (seeds below, not
used to tune anything else). The pilot is 64 prior samples (seed 0); the error is measured on
256 other prior samples (seed 12345): RMS distance to the float64 dopri5 ODE map (rtol 1e-9,
denoising included) over the data's std, all runs float64 so only the grid differs.
"""

import sys

import torch

import sdekit
from sdekit.testing import GaussianMixture

PROBLEMS = [(8, 6, (0.05, 0.3), 101), (16, 10, (0.02, 0.2), 202), (2, 4, (0.2, 0.6), 303), (64, 10, (0.02, 0.1), 404)]
SOLVERS = ["unipc", "dpmpp_3m"]
NFES = [5, 10, 20]
SCHEDULES = ["auto", None, "logsnr", "karras"]


def main(n_problems: int = len(PROBLEMS)) -> None:
    sde = sdekit.VPSDE()
    for dim, k, std, seed in PROBLEMS[:n_problems]:
        gm = GaussianMixture.random(dim, k, std=std, generator=torch.Generator().manual_seed(seed))
        sf = gm.score_fn(sde)
        data_std = float(gm.cov().diagonal().mean().sqrt())
        x_T = sde.prior_sample((256, dim), generator=torch.Generator().manual_seed(12345), dtype=torch.float64)
        ref = sdekit.sample(sf, sde, "ode_adaptive", x_T=x_T, rtol=1e-9, atol=1e-9)
        print(f"\n## dim={dim} K={k} std={std} seed={seed}")
        print("| solver | NFE | auto | default | logsnr | karras | pilot NFE |")
        print("|---|---|---|---|---|---|---|")
        for solver in SOLVERS:
            for nfe in NFES:
                row, pilot = [], 0
                for sch in SCHEDULES:
                    sol = sdekit.solve(sf, sde, solver, x_T=x_T, nfe=nfe, schedule=sch)
                    pilot = sol.stats.get("pilot_nfe", pilot)
                    row.append(float((sol.x - ref).pow(2).mean().sqrt()) / data_std)
                print(f"| {solver} | {nfe} | " + " | ".join(f"{e:.2e}" for e in row) + f" | {pilot} |", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else len(PROBLEMS))
