"""The built-in demo and the NFE-vs-FD sweep that ``benchmarks/nfe_vs_fd.py`` extends.

Samples exact Gaussian-mixture problems (whose scores are known in closed form) with
every registered solver at several NFE budgets and reports the Fréchet distance (FD) to
the exact distribution next to the floor that exact samples of the same size reach.

The floor is a band, not a line: the FD of ``n`` exact samples to the exact moments is itself
random (finite-sample noise of the mean and covariance estimates), so the table and the plot give
its mean ± one standard deviation over ``FLOOR_DRAWS`` independent exact draws. A sampler's FD
has the same noise (its ``n`` samples are random too), so a good one, a stochastic one
especially, can land below the floor's mean; only a value well below the band is suspicious.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from .metrics import frechet_to_moments, sliced_wasserstein
from .sampling import solve, steps_for_nfe
from .sde import SDE, VESDE, VPSDE
from .solvers import available, resolve
from .testing import GaussianMixture

__all__ = ["Problem", "Row", "OptionError", "FLOOR_DRAWS", "problems", "sweep", "format_table", "plot",
           "check_options", "can_plot", "main"]

#: number of independent exact-sample draws behind the floor's mean and standard deviation.
FLOOR_DRAWS = 8
#: what the floor band means, for the table and the plot.
FLOOR_NOTE = ("floor: FD of exact samples of the same size, mean ± s.d. over independent draws. The FD of n "
              "samples is noisy (finite-sample error of their mean and covariance), and a sampler's n samples are "
              "random too (x_T, noise), so a good sampler, stochastic samplers especially, can land below the "
              "floor's mean by chance")


@dataclass
class Problem:
    """A named exact problem: a mixture, an SDE and the number of samples to draw."""

    name: str
    mixture: GaussianMixture
    sde: SDE
    samples: int

    def floor(self, repeats: int = 3) -> float:
        """Mean FD of ``samples`` exact draws to the exact moments (the best any sampler can do on average)."""
        return self.floor_band(repeats)[0]

    def floor_band(self, repeats: int = FLOOR_DRAWS) -> tuple[float, float]:
        """Mean and standard deviation of the FD of ``repeats`` independent exact draws of ``samples`` points."""
        m, c = self.mixture.mean(), self.mixture.cov()
        draws = [self.mixture.sample(self.samples, generator=torch.Generator().manual_seed(10_000 + r))
                 for r in range(repeats)]
        fds = torch.tensor([frechet_to_moments(x, m, c) for x in draws], dtype=torch.float64)
        return float(fds.mean()), float(fds.std()) if repeats > 1 else 0.0


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
    #: standard deviation of the floor over the exact draws (the floor is their mean).
    floor_sd: float = 0.0


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
        floor, floor_sd = prob.floor_band()
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
                          secs, floor_sd)
                rows.append(row)
                if log:
                    log(f"  {prob.name:<14} {name:<18} NFE {sol.nfe:>5}  FD {fd:10.4g}  floor {floor:8.3g} ± "
                        f"{floor_sd:<8.2g} {secs:6.2f}s")
    return rows


def format_table(rows: Sequence[Row]) -> str:
    """A markdown table of the rows, with a note on what the floor band means."""
    lines = ["| problem | solver | NFE | FD | FD / floor | floor (mean ± s.d.) | sliced W2 | seconds |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.problem} | {r.solver} | {r.nfe} | {r.fd:.4g} | {r.fd / r.floor:.2f} | "
                     f"{r.floor:.3g} ± {r.floor_sd:.2g} | {r.sw2:.4g} | {r.seconds:.2f} |")
    lines += ["", f"FD / floor divides by the floor's mean. {FLOOR_NOTE[0].upper()}{FLOOR_NOTE[1:]}."]
    return "\n".join(lines)


def can_plot() -> bool:
    """Whether matplotlib can be imported (the plot is skipped without it)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


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
    if not probs:
        raise ValueError("rows is empty: nothing to plot")
    names = list(dict.fromkeys(r.solver for r in rows))  # one colour and marker per solver across panels
    fig, axes = plt.subplots(1, len(probs), figsize=(5.0 * len(probs) + 2.6, 4.5), squeeze=False)
    for ax, p in zip(axes[0], probs):
        sub = [r for r in rows if r.problem == p]
        for j, name in enumerate(names):
            pts = sorted((r.nfe, r.fd) for r in sub if r.solver == name)
            if pts:
                ax.plot([a for a, _ in pts], [b for _, b in pts], marker="os^vD"[j % 5], ms=3.5, label=name,
                        color=plt.cm.tab20(j % 20), ls="-" if j < 20 else "--")
        lo, hi = sub[0].floor - sub[0].floor_sd, sub[0].floor + sub[0].floor_sd
        ax.axhspan(max(lo, sub[0].floor * 1e-3), hi, color="0.6", alpha=0.35, lw=0,
                   label="exact-sample floor, mean ± s.d.")
        ax.axhline(sub[0].floor, color="k", ls="--", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="NFE (score evaluations)", ylabel="Fréchet distance", title=p)
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers (20, 0.05), also on the minor ticks of a short range
            axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(matplotlib.ticker.LogFormatter(labelOnlyBase=False))
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    # outside the axes, so it never covers a curve
    fig.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 0.97), frameon=False)
    fig.text(0.01, 0.01, "Grey band: FD of exact samples of the same size (mean ± s.d. over "
             f"{FLOOR_DRAWS} draws). FD of n samples is noisy, so a sampler can land below the band's mean by chance.",
             fontsize=7, ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
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


class OptionError(ValueError):
    """A bad option of the demo.

    Attributes:
        option: its command-line name (``samples``, ``nfe``, ``solvers``, ``out``).
        detail: the message without the option's name (the exception's text starts with the name of
            :func:`main`'s parameter: ``budgets`` for ``--nfe``).
    """

    def __init__(self, option: str, detail: str) -> None:
        super().__init__(f"{'budgets' if option == 'nfe' else option}: {detail}")
        self.option = option
        self.detail = detail


def _check_int(option: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(option, f"expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise OptionError(option, f"expected an integer >= {minimum}, got {value}")
    return value


def check_options(out: str | os.PathLike, budgets: Sequence[int], samples: int,
                  solvers: Sequence[str] | None) -> list[str]:
    """Check the demo's options before any work; return the solver names to run.

    Raises:
        OptionError: (a ``ValueError``) naming the option: ``out`` is a file or not writable, a budget
            is not a positive integer or repeats, ``samples < 2``, a solver name is unknown, repeats or
            is a corrector, or no budget fits a fixed-step solver's first step plus the denoising step.
    """
    if not isinstance(out, (str, os.PathLike)) or not str(out):
        raise OptionError("out", f"expected a folder path, got {out!r}")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise OptionError("out", f"{str(path)!r} exists and is not a folder")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OptionError("out", f"cannot write under {str(parent)!r}")
    if isinstance(budgets, (str, bytes)) or not isinstance(budgets, Sequence) or not budgets:
        raise OptionError("nfe", f"expected one or more NFE budgets, got {budgets!r}")
    budgets = [_check_int("nfe", b, 1) for b in budgets]
    if len(set(budgets)) != len(budgets):
        raise OptionError("nfe", f"budgets repeat: {' '.join(map(str, budgets))}")
    _check_int("samples", samples, 2)
    if solvers is None:
        names = default_solvers()
    else:
        if isinstance(solvers, (str, bytes)) or not isinstance(solvers, Sequence) or not solvers:
            raise OptionError("solvers", f"expected one or more solver names, got {solvers!r}")
        names = list(solvers)
        if len(set(names)) != len(names):
            raise OptionError("solvers", f"solver names repeat: {' '.join(map(str, names))}")
    for name in names:
        try:
            solver = resolve(name)
        except (TypeError, ValueError) as e:
            raise OptionError("solvers", str(e)) from None
        if solver.adaptive:
            continue
        try:
            steps_for_nfe(solver, max(budgets), denoise=True)
        except ValueError as e:
            raise OptionError("nfe", f"no budget fits solver {name!r} ({e}); raise --nfe or drop the solver") from None
    return names


def main(out: str = "sdekit-demo", budgets: Sequence[int] = (10, 30, 100), samples: int = 5000,
         solvers: Sequence[str] | None = None) -> list[Row]:
    """The demo: 2-D and 64-D mixtures under the VP SDE, every solver, a few NFE budgets.

    The options are checked first (:func:`check_options`); without matplotlib the plot is skipped
    and a line on stderr says so.
    """
    names = check_options(out, budgets, samples, solvers)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    print(f"sdekit demo: exact Gaussian mixtures, Fréchet distance (FD) vs NFE; {samples} samples each")
    rows = sweep(problems((2, 64), ("vp",), samples), names, budgets)
    print()
    print(format_table(rows))
    paths = write(rows, out, "demo") if rows else []
    print(f"\nwrote {', '.join(str(p) for p in paths) or 'nothing (no run finished)'} in "
          f"{time.perf_counter() - t0:.1f}s")
    if rows and not any(p.suffix == ".png" for p in paths):
        print(f"skipped {Path(out) / 'demo.png'}: matplotlib is not installed; "
              "install it with: pip install \".[bench]\"", file=sys.stderr)
    return rows
