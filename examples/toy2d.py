"""Train a score MLP on two moons in seconds, then sample it with several solvers side by side.

    python -m examples.toy2d --steps 1500 --nfe 50 --out toy2d.png

Prints, per solver, the NFE used and the sliced Wasserstein-2 distance to held-out data, and
writes one PNG with a panel per solver.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sdekit
from examples.nets import MLPScore
from examples.training import train

DEFAULT_SOLVERS = ("euler_maruyama", "reverse_diffusion", "ancestral", "pc", "ode_euler", "ode_heun", "ode_rk4")


def two_moons(n: int, *, noise: float = 0.06, seed: int = 0) -> torch.Tensor:
    """``n`` points of the two-moons data set, standardised to zero mean and unit variance per axis."""
    g = torch.Generator().manual_seed(seed)
    k = n // 2
    a = torch.rand(n, generator=g) * math.pi
    upper = torch.stack([torch.cos(a[:k]), torch.sin(a[:k])], 1)
    lower = torch.stack([1 - torch.cos(a[k:]), 0.5 - torch.sin(a[k:])], 1)
    x = torch.cat([upper, lower]) + noise * torch.randn(n, 2, generator=g)
    return (x - torch.tensor([0.5, 0.25])) / torch.tensor([0.87, 0.5])


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1500, help="training steps")
    p.add_argument("--nfe", type=int, default=50, help="score evaluations per solver")
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--solvers", nargs="*", default=list(DEFAULT_SOLVERS))
    p.add_argument("--weighting", default="sigma2", choices=["sigma2", "likelihood"])
    p.add_argument("--out", default="toy2d.png", help="PNG path ('' to skip the plot)")
    p.add_argument("--checkpoint", default=None, help="load/save the EMA weights here")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    torch.set_num_threads(1)  # one thread: far faster than two on a shared 2-core machine
    sde = sdekit.VPSDE()
    data, held_out = two_moons(8192, seed=0), two_moons(args.samples, seed=1)
    model = train(MLPScore(sde, dim=2), sde, data, steps=args.steps, batch_size=256, weighting=args.weighting,
                  checkpoint=args.checkpoint, progress=not args.no_progress)
    score_fn = sdekit.score.from_eps(model, sde)

    results: dict[str, float] = {}
    samples: dict[str, torch.Tensor] = {}
    for name in args.solvers:
        sol = sdekit.solve(score_fn, sde, name, shape=(args.samples, 2), nfe=args.nfe,
                           generator=torch.Generator().manual_seed(0))
        samples[name] = sol.x
        results[name] = sdekit.metrics.sliced_wasserstein(sol.x, held_out)
        print(f"{name:<20} nfe={sol.nfe:<5} steps={sol.steps:<5} SW2 to data = {results[name]:.4f}")
    results["data (floor)"] = sdekit.metrics.sliced_wasserstein(two_moons(args.samples, seed=2), held_out)
    print(f"{'held-out data':<20} SW2 floor = {results['data (floor)']:.4f}")

    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = [("data", held_out)] + list(samples.items())
        fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 2.6))
        for ax, (name, x) in zip(axes, panels):
            ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.5)
            ax.set_title(name if name == "data" else f"{name}\nSW2={results[name]:.3f}", fontsize=8)
            ax.set_xlim(-2.5, 2.5)
            ax.set_ylim(-2.5, 2.5)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"two moons, VP SDE, {args.nfe} NFE per solver", fontsize=9)
        fig.tight_layout()
        fig.savefig(args.out, dpi=110)
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
