"""Choose each solver's default grid and stop together, from ``benchmarks/default_stop.py`` runs on several base grids.

Each input is ``GRID=PATH.jsonl``: a ``default_stop.py`` run whose stopped grids are ``GRID`` compressed (its
``--schedule``; ``default=PATH``: a run without it, each solver on its default grid). Every run is from the same
problems, x_T and exact samples, so their numbers compare directly; the variants of several runs on one grid are
merged (the first run's values win).
For every solver, each candidate (base grid, variant; ``eps`` = the base grid ending at eps) is scored against
the solver's current default grid ending at eps (the ``eps`` rows of the runs on the grid
``sdekit.grids.default_schedule`` names): per budget, the geometric mean over the
problems of the candidate's metric over the baseline's, for the first metric (ODE-map error, or sliced W2 for a
stochastic solver) and FD. A candidate is admissible when both ratios are <= ``--tol`` at every budget; the
verdict is the admissible candidate with the lowest geometric mean of all its ratios. Writes a markdown table::

    PYTHONPATH=. python benchmarks/choose_stop.py default=benchmarks/results/default_stop-taper.jsonl \\
        logsnr=benchmarks/results/default_stop-taper-logsnr.jsonl \\
        karras=benchmarks/results/default_stop-taper-karras.jsonl --variants ':20$' \\
        --out benchmarks/results/choose_stop.md

(the ``logsnr`` / ``karras`` runs: ``default_stop.py --split tuning --schedule GRID --solvers <every fixed-step ODE
solver> --nfe 5,6,8,10,15,20,30 --variants t=0.2:20,t=0.3:20,t=0.4:20 --tag taper-GRID``)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import defaultdict

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sdekit  # noqa: E402
from benchmarks._peers.common import geometric_mean as _gm  # noqa: E402


def _default_of(solver: str) -> str:
    return sdekit.grids.default_schedule(sdekit.solvers.resolve(solver), sdekit.VPSDE())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="GRID=PATH.jsonl")
    ap.add_argument("--tol", type=float, default=1.05)
    ap.add_argument("--variants", default=None, help="a regular expression: only the variants it matches (and eps)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    data: dict = {}  # (grid, solver, problem, nfe) -> row
    for spec in args.runs:
        grid, sep, path = spec.partition("=")
        if not sep or (grid not in sdekit.grids.SCHEDULES and grid != "default"):
            raise SystemExit(f"each run is GRID=PATH.jsonl with GRID one of {sorted(sdekit.grids.SCHEDULES)} or "
                             f"'default' (a run without --schedule: each solver on its default grid), got {spec!r}")
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                g = _default_of(r["solver"]) if grid == "default" else grid
                data.setdefault((g, r["solver"], r["problem"], r["nfe"]), {}).update(
                    {k: v for k, v in r.items() if k not in data.get((g, r["solver"], r["problem"], r["nfe"]), {})})
    keep = re.compile(args.variants) if args.variants else None
    grids = sorted({k[0] for k in data})
    solvers = sorted({k[1] for k in data})
    lines = ["# Default grid and stop chosen together (**tuning** split)", "",
             f"`python benchmarks/choose_stop.py {' '.join(sys.argv[1:])}`. Candidate: base grid + variant of "
             "`default_stop.py` (`eps`: the base grid ending at eps). Cell: geometric mean over budgets and problems "
             "of the candidate's ODE-map error (SW2 for a stochastic solver) and FD over those of the solver's "
             f"current default grid ending at eps; admissible: both per-budget ratios <= {args.tol}. Worst "
             "per-budget ratio in brackets.", "",
             "| solver | current default | " + " | ".join(f"best on {g}" for g in grids) + " | verdict |",
             "|---|---|" + "---|" * (len(grids) + 1)]
    for solver in solvers:
        base = _default_of(solver)
        if base not in grids:
            lines.append(f"| {solver} | {base} (not run) |" + " — |" * (len(grids) + 1))
            continue
        cells, verdict = [], None
        for g in grids:
            keys = [k for k in data if k[0] == g and k[1] == solver]
            variants = [v for v in data[keys[0]] if v not in ("problem", "solver", "nfe")
                        and (v == "eps" or keep is None or keep.search(v))] if keys else []
            best_g = None
            for v in variants:
                per_nfe: dict = defaultdict(lambda: ([], []))
                for k in keys:
                    ref = data.get((base, solver, k[2], k[3]))
                    if ref is None:
                        continue
                    first = "ode" if "ode" in ref["eps"] else "sw2"
                    per_nfe[k[3]][0].append(data[k][v][first] / ref["eps"][first])
                    per_nfe[k[3]][1].append(data[k][v]["fd"] / ref["eps"]["fd"])
                ratios = [(_gm(a), _gm(b)) for a, b in per_nfe.values()]
                if not ratios:
                    continue
                score = _gm([x for pair in ratios for x in pair])
                worst = max(max(pair) for pair in ratios)
                cand = (score, worst, v)
                if best_g is None or (worst <= args.tol, -score) > (best_g[1] <= args.tol, -best_g[0]):
                    best_g = cand
                if worst <= args.tol and (verdict is None or score < verdict[0]):
                    verdict = (score, worst, f"{g} {v}")
            cells.append(f"{best_g[2]}: {best_g[0]:.3f} [{best_g[1]:.2f}]" if best_g else "—")
        lines.append(f"| {solver} | {base} | " + " | ".join(cells) + " | "
                     + (f"**{verdict[2]}** {verdict[0]:.3f}" if verdict else "none") + " |")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
