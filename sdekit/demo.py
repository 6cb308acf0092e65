"""The built-in demo and the NFE-vs-FD sweep that ``benchmarks/nfe_vs_fd.py`` extends.

Samples exact Gaussian-mixture problems (whose scores are known in closed form) with
every registered solver at several NFE budgets and reports the Fréchet distance (FD) to
the exact distribution next to the floor that exact samples of the same size reach.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from .metrics import frechet_to_moments, sliced_wasserstein
from .sampling import solve
from .sde import SDE, VESDE, VPSDE
from .solvers import available
from .testing import GaussianMixture

__all__ = ["Problem", "Row", "problems", "sweep", "format_table", "plot", "main"]


@dataclass
class Problem:
    """A named exact problem: a mixture, an SDE and the number of samples to draw."""

    name: str
    mixture: GaussianMixture
    sde: SDE
    samples: int

    def floor(self, repeats: int = 3) -> float:
        """Mean FD of ``samples`` exact draws to the exact moments (the best any sampler can do)."""
        m, c = self.mixture.mean(), self.mixture.cov()
        draws = [self.mixture.sample(self.samples, generator=torch.Generator().manual_seed(10_000 + r))
                 for r in range(repeats)]
        fds = [frechet_to_moments(x, m, c) for x in draws]
        return sum(fds) / len(fds)


@dataclass
class Row:
    """One measurement of the sweep."""

    problem: str
    solver: str
    budget: int
    nfe: int
    steps: int
    fd: float
    sw2: float
    floor: float
    seconds: float


def problems(dims: Sequence[int] = (2, 64), sdes: Sequence[str] = ("vp",), samples: int = 5000) -> list[Problem]:
    """Standard problems: a random mixture per dimension (8 components in 2-D, 6 otherwise)."""
    makers: dict[str, Callable[[], SDE]] = {"vp": VPSDE, "ve": VESDE}
    out = []
    for d in dims:
        mix = GaussianMixture.random(d, 8 if d == 2 else 6, scale=2.0 if d == 2 else 3.0,
                                     std=(0.15, 0.4) if d == 2 else (0.3, 0.8),
                                     generator=torch.Generator().manual_seed(d))
        for name in sdes:
            out.append(Problem(f"gmm{d}d-{name}", mix, makers[name](), samples))
    return out


def default_solvers() -> list[str]:
    """Every registered solver except correctors."""
    return [i.name for i in available() if i.kind != "corrector"]


def sweep(probs: Sequence[Problem], solvers: Sequence[str], budgets: Sequence[int], *, seed: int = 0,
          log: Callable[[str], None] | None = print) -> list[Row]:
    """Run every solver on every problem at every NFE budget; adaptive solvers run once at their defaults."""
    rows: list[Row] = []
    info = {i.name: i for i in available()}
    for prob in probs:
        floor = prob.floor()
        m, c = prob.mixture.mean(), prob.mixture.cov()
        ref = prob.mixture.sample(prob.samples, generator=torch.Generator().manual_seed(99))
        score = prob.mixture.score_fn(prob.sde)
        for name in solvers:
            runs = [None] if info[name].adaptive else list(budgets)
            for budget in runs:
                kw = {} if budget is None else {"nfe": budget}
                try:
                    t0 = time.perf_counter()
                    sol = solve(score, prob.sde, name, shape=(prob.samples, *prob.mixture.event_shape),
                                generator=torch.Generator().manual_seed(seed), **kw)
                    secs = time.perf_counter() - t0
                except ValueError as e:  # budget too small for this solver
                    if log:
                        log(f"  skip {name} @ {budget}: {e}")
                    continue
                fd = frechet_to_moments(sol.x, m, c)
                sw = sliced_wasserstein(sol.x, ref, generator=torch.Generator().manual_seed(1))
                row = Row(prob.name, name, sol.nfe if budget is None else budget, sol.nfe, sol.steps, fd, sw, floor,
                          secs)
                rows.append(row)
                if log:
                    log(f"  {prob.name:<14} {name:<18} NFE {sol.nfe:>5}  FD {fd:10.4g}  floor {floor:8.3g}  "
                        f"{secs:6.2f}s")
    return rows


def format_table(rows: Sequence[Row]) -> str:
    """A markdown table of the rows."""
    lines = ["| problem | solver | NFE | FD | FD / floor | floor | sliced W2 | seconds |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.problem} | {r.solver} | {r.nfe} | {r.fd:.4g} | {r.fd / r.floor:.2f} | {r.floor:.3g} | "
                     f"{r.sw2:.4g} | {r.seconds:.2f} |")
    return "\n".join(lines)


def plot(rows: Sequence[Row], path: str | Path) -> Path | None:
    """Log-log plot of FD against NFE, one panel per problem; ``None`` if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return None
    probs = list(dict.fromkeys(r.problem for r in rows))
    fig, axes = plt.subplots(1, len(probs), figsize=(5.5 * len(probs), 4.5), squeeze=False)
    for ax, p in zip(axes[0], probs):
        sub = [r for r in rows if r.problem == p]
        names = list(dict.fromkeys(r.solver for r in sub))
        for j, name in enumerate(names):
            pts = sorted((r.nfe, r.fd) for r in sub if r.solver == name)
            ax.plot([a for a, _ in pts], [b for _, b in pts], marker="os^vD"[j % 5], ms=3.5, label=name,
                    color=plt.cm.tab20(j % 20), ls="-" if j < 20 else "--")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.axhline(sub[0].floor, color="k", ls="--", lw=1, label="exact-sample floor")
        ax.set(xscale="log", yscale="log", xlabel="NFE (score evaluations)", ylabel="Fréchet distance", title=p)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(rows: Sequence[Row], out: str | Path, stem: str) -> list[Path]:
    """Write JSON, markdown and PNG results for ``rows`` under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
    (out / f"{stem}.md").write_text(format_table(rows) + "\n")
    paths = [out / f"{stem}.json", out / f"{stem}.md"]
    png = plot(rows, out / f"{stem}.png")
    if png is not None:
        paths.append(png)
    return paths


def main(out: str = "sdekit-demo", budgets: Sequence[int] = (10, 30, 100), samples: int = 5000,
         solvers: Sequence[str] | None = None) -> list[Row]:
    """The demo: 2-D and 64-D mixtures under the VP SDE, every solver, a few NFE budgets."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    print(f"sdekit demo: exact Gaussian mixtures, Fréchet distance (FD) vs NFE; {samples} samples each")
    rows = sweep(problems((2, 64), ("vp",), samples), solvers or default_solvers(), budgets)
    print()
    print(format_table(rows))
    paths = write(rows, out, "demo")
    print(f"\nwrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - t0:.1f}s")
    return rows
