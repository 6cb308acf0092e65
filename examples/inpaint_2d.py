"""Inpaint a 2-D Gaussian mixture along one axis (x1 = 0 known) and compare with the exact conditional.

Prints the Fréchet distance of the generated x0 to the exact conditional p(x0 | x1 = 0)
against the finite-sample floor, for the paper's replacement method with and without
corrector moves and RePaint resampling, and saves ``inpaint_2d.png`` (docs/img/ holds the
docs' copy: ``python examples/inpaint_2d.py docs/img``).

    python examples/inpaint_2d.py [OUT_DIR]      (default results-local/)
"""

from __future__ import annotations

import pathlib
import sys

import torch

import sdekit
from sdekit.guidance import Inpainting
from sdekit.metrics import frechet_to_moments

SDE = sdekit.VPSDE()
MIX = sdekit.testing.GaussianMixture(torch.tensor([1.0, 1.0, 1.0]),
                                     torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 2.0]]),
                                     torch.tensor([[0.7, 0.6], [0.6, 0.7], [0.6, 0.5]]))
# the setting to use (docs/guidance.md): 20 corrector moves per step of a 100-step reverse-diffusion sampler
RECOMMENDED = {"corrector_steps": 20}


def exact_conditional(y: float):
    lw = torch.log(MIX.weights) - 0.5 * ((y - MIX.means[:, 1]) / MIX.stds[:, 1]) ** 2 - torch.log(MIX.stds[:, 1])
    w = torch.softmax(lw, 0)
    mu, s = MIX.means[:, 0], MIX.stds[:, 0]
    return w, mu, s


def main(out: str = "results-local") -> None:
    n, y = 2000, 0.0
    w, mu, s = exact_conditional(y)
    m = (w * mu).sum().reshape(1)
    v = ((w * (s * s + mu * mu)).sum() - m[0] ** 2).reshape(1, 1)
    g = torch.Generator().manual_seed(1234)
    exact_fds = []
    for _ in range(20):
        k = torch.multinomial(w, n, replacement=True, generator=g)
        exact_fds.append(frechet_to_moments((mu[k] + s[k] * torch.randn(n, generator=g, dtype=torch.float64))[:, None],
                                            m, v))
    floor = sum(exact_fds) / len(exact_fds)
    print(f"exact conditional: weights {[round(float(a), 3) for a in w]}, floor FD (n={n}) = {floor:.5f}; "
          f"FD/floor of the 20 exact draws ranges {min(exact_fds) / floor:.2f} .. {max(exact_fds) / floor:.2f}")
    settings = [("reverse_diffusion", 100, {}), ("pc", 100, {}),
                ("reverse_diffusion", 100, {"corrector_steps": 5}),
                ("reverse_diffusion", 50, {"resample": 10}),
                ("reverse_diffusion", 50, {"corrector_steps": 10}),
                ("reverse_diffusion", 50, {"corrector_steps": 20}), ("reverse_diffusion", 100, RECOMMENDED)]
    results = {}
    for solver, steps, opts in settings:
        fds = []
        for seed in range(3):
            cond = Inpainting(torch.tensor([0.0, y], dtype=torch.float64), torch.tensor([False, True]), **opts)
            sol = sdekit.solve(MIX.score_fn(SDE), SDE, solver, shape=(n, 2), steps=steps, dtype=torch.float64,
                               generator=torch.Generator().manual_seed(seed), condition=cond)
            fds.append(frechet_to_moments(sol.x[:, :1], m, v))
        results[(solver, steps, str(opts))] = sol.x
        print(f"{solver:18s} steps={steps:3d} {str(opts):36s} nfe={sol.nfe:5d}  FD/floor per seed: "
              + ", ".join(f"{f / floor:6.2f}" for f in fds) + f"   mean {sum(fds) / len(fds) / floor:6.2f}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no figure")
        return
    path = pathlib.Path(out)
    path.mkdir(parents=True, exist_ok=True)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(8, 3.2))
    joint = MIX.sample(3000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ax0.scatter(joint[:, 0], joint[:, 1], s=1, alpha=0.3, color="gray", label="p(x0, x1)")
    ax0.axhline(y, color="C3", lw=1.5, label=f"known: x1 = {y:g}")
    ax0.set_xlabel("x0 (generated)")
    ax0.set_ylabel("x1 (known)")
    ax0.legend(fontsize=7, loc="upper left", markerscale=5)
    grid = torch.linspace(-4, 4, 400, dtype=torch.float64)
    dens = (w[:, None] * torch.exp(-0.5 * ((grid - mu[:, None]) / s[:, None]) ** 2) / (s[:, None] * 2.5066)).sum(0)
    ax1.plot(grid, dens, "k", lw=2, label="exact p(x0 | x1=0)")
    for key, lab in ((("reverse_diffusion", 100, "{}"), "replacement (101 NFE)"),
                     (("reverse_diffusion", 100, str(RECOMMENDED)), "replacement + 20 corrector moves (2101 NFE)")):
        ax1.hist(results[key][:, 0].numpy(), bins=40, range=(-4, 4), density=True, histtype="step", lw=1.2, label=lab)
    ax1.set_xlabel("x0")
    ax1.set_ylim(0, 0.55)
    ax1.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path / "inpaint_2d.png", dpi=90)
    print(f"saved {path / 'inpaint_2d.png'}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
