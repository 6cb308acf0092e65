"""Does dropping the order on the last steps of short grids (``lower_order_final``) help?

For the multistep exponential integrators at 10, 15 and 20 NFE, on the peers benchmark's exact
Gaussian-mixture problems (2-D and 64-D, VP and VE, ``--n`` samples), the Fréchet distance to the
exact distribution averaged over ``--seeds`` prior draws and noise seeds, with the option on and
off, on the solver's default grid and on ``logsnr``. The defaults of ``dpmpp_3m`` and
``dpmpp_3m_sde`` (off) and of ``dpmpp_2m``, ``dpmpp_2m_sde`` and ``unipc`` (on) follow this table.

    PYTHONPATH=. python benchmarks/lower_order_final.py [--n 5000] [--seeds 3]

Writes ``benchmarks/results/lower_order_final.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks._peers` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sdekit  # noqa: E402
from benchmarks._peers.common import make_problem  # noqa: E402

SOLVERS = ["dpmpp_3m", "dpmpp_3m_sde", "unipc", "dpmpp_2m", "dpmpp_2m_sde"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--nfe", type=int, nargs="+", default=[10, 15, 20])
    ap.add_argument("--problems", nargs="+", default=["2d-vp", "2d-ve", "64d-vp", "64d-ve"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "lower_order_final.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    lines = ["# lower_order_final on and off (multistep exponential integrators)", "",
             f"Mean FD to the exact mixture over {args.seeds} seeds of x_T and noise, {args.n} samples; "
             "`ratio` = off / on (< 1: turning it off is better). "
             f"`python benchmarks/lower_order_final.py --n {args.n} --seeds {args.seeds}`.", "",
             "| problem | floor | solver | NFE | grid | on | off | ratio |", "|---|---|---|---:|---|---:|---:|---:|"]
    for name in args.problems:
        dim, _, sde = name.partition("d-")
        p = make_problem(int(dim), sde, args.n)
        for solver in SOLVERS:
            default = sdekit.solvers.resolve(solver).default_schedule
            for nfe in args.nfe:
                for grid in dict.fromkeys([default, "logsnr"]):
                    fd = {}
                    for lof in (True, False):
                        vals = []
                        for s in range(args.seeds):
                            x = sdekit.sample(p.score, p.sde, sdekit.solvers.resolve(solver, lower_order_final=lof),
                                              x_T=p.x_T(1000 * s), nfe=nfe, schedule=grid,
                                              generator=torch.Generator().manual_seed(1000 * s + 1))
                            vals.append(p.fd(x))
                        fd[lof] = sum(vals) / len(vals)
                    row = (f"| {p.name} | {p.floor_fd:.3g} | {solver} | {nfe} | {grid} | {fd[True]:.3e} | "
                           f"{fd[False]:.3e} | {fd[False] / fd[True]:.2f} |")
                    lines.append(row)
                    print(row, flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
