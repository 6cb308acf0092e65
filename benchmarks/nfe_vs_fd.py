"""NFE against Fréchet distance for every sdekit solver on exact Gaussian-mixture problems.

Writes JSON, a markdown table and a log-log plot per run under ``--out``
(default ``benchmarks/results``). Example::

    python benchmarks/nfe_vs_fd.py                         # 2-D and 64-D, VP and VE, 7 budgets
    python benchmarks/nfe_vs_fd.py --dims 3072 --samples 2000 --nfe 10 20 50 100
"""

from __future__ import annotations

import argparse
import time

import torch

from sdekit.demo import default_solvers, problems, sweep, write


def best_table(rows, budgets) -> str:
    """Best FD (and the solver reaching it) per problem and NFE bucket.

    A run lands in the smallest budget that its counted NFE fits (adaptive solvers, which
    pick their own NFE, included).
    """
    budgets = sorted(budgets)

    def bucket(nfe):
        return next((b for b in budgets if nfe <= b), None)

    out = ["| problem | NFE <= | best solver | NFE | FD | FD / floor |", "|---|---:|---|---:|---:|---:|"]
    for p in dict.fromkeys(r.problem for r in rows):
        for b in budgets:
            cand = [r for r in rows if r.problem == p and bucket(r.nfe) == b]
            if cand:
                r = min(cand, key=lambda r: r.fd)
                out.append(f"| {p} | {b} | {r.solver} | {r.nfe} | {r.fd:.4g} | {r.fd / r.floor:.2f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", type=int, nargs="+", default=[2, 64])
    ap.add_argument("--sdes", nargs="+", default=["vp", "ve"], choices=["vp", "ve"])
    ap.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 50, 100, 200, 500, 1000])
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--solvers", nargs="+", default=None)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--name", default=None, help="file stem (default nfe_vs_fd_<dims>)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows = sweep(problems(args.dims, args.sdes, args.samples), args.solvers or default_solvers(), args.nfe)
    stem = args.name or "nfe_vs_fd_" + "_".join(f"{d}d" for d in args.dims)
    paths = write(rows, args.out, stem)
    best = best_table(rows, args.nfe)
    (paths[1].parent / f"{stem}_best.md").write_text(best + "\n")
    print("\n" + best)
    print(f"\nwrote {', '.join(map(str, paths))} and {stem}_best.md in {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
