"""Is ``unipc``'s ``predictor_order=3`` (diffusers' ``solver_order=3``) a better default than 2?

Runs :mod:`benchmarks.tune_defaults`'s sweep (same problems, prior draws, float32, ``nfe=`` sizing,
ODE-map error / flips / FD) for UniPC variants only, on every grid of ``tune_defaults.GRIDS``, and
compares each variant with the current default (``predictor_order=2``, ``lower_order_final=True``)
on the same problem, grid and NFE: the cell is the geometric mean over problems of the variant's
metric over the default's (< 1: the variant is better).

    PYTHONPATH=. python benchmarks/unipc_order.py --split tuning
    PYTHONPATH=. python benchmarks/unipc_order.py --split heldout

Writes ``benchmarks/results/tune_defaults-unipc-order[-heldout][-tag].{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks import tune_defaults as td  # noqa: E402

#: (label, solver, options); the first is the reference every other is divided by
VARIANTS = [("unipc p=2", "unipc", {"predictor_order": 2}),
            ("unipc p=3", "unipc", {"predictor_order": 3}),
            ("unipc p=3 lof=False", "unipc", {"predictor_order": 3, "lower_order_final": False}),
            ("unipc p=2 lof=False", "unipc", {"predictor_order": 2, "lower_order_final": False})]


def ratio_table(rows: list[dict], grids: tuple[str, ...]) -> str:
    ref = VARIANTS[0][0]
    md = [f"Cell: geometric mean over problems of variant / `{ref}` (same problem, grid, NFE, x_T): "
          "ODE-map error, FD; [flips variant vs reference, summed over problems]. < 1: the variant is better.", "",
          "| variant | grid | " + " | ".join(f"NFE {n}" for n in td.NFES) + " | all NFE |",
          "|---|---|" + "---|" * (len(td.NFES) + 1)]
    for label, _, _ in VARIANTS[1:]:
        for grid in grids:
            cells, all_o, all_f = [], [], []
            for nfe in td.NFES:
                o, f, fl_v, fl_r = [], [], 0.0, 0.0
                for r in rows:
                    if r["label"] != label or r["grid"] != grid or r["nfe"] != nfe:
                        continue
                    q = next(q for q in rows if q["label"] == ref and q["grid"] == grid and q["nfe"] == nfe
                             and q["problem"] == r["problem"])
                    if q["ode"] > 0 and math.isfinite(r["ode"]):
                        o.append(r["ode"] / q["ode"])
                    if q["fd"] > 0 and math.isfinite(r["fd"]):
                        f.append(r["fd"] / q["fd"])
                    fl_v, fl_r = fl_v + r["flips"], fl_r + q["flips"]
                all_o += o
                all_f += f
                cells.append(f"ode {td._gmean(o):.3f}, FD {td._gmean(f):.3f} [{fl_v:.0f} vs {fl_r:.0f}]")
            md.append(f"| {label} | {grid} | " + " | ".join(cells)
                      + f" | ode {td._gmean(all_o):.3f}, FD {td._gmean(all_f):.3f} |")
    return "\n".join(md)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=("tuning", "heldout"), default="tuning")
    ap.add_argument("--indices", default="0,1,2,3,4,5")
    ap.add_argument("--dim-cap", type=int, default=128)
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--ode-seeds", type=int, default=1)
    ap.add_argument("--grids", default=",".join(td.GRIDS))
    ap.add_argument("--tag", default="", help="suffix of the output file names")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args(argv)
    args.indices = [int(i) for i in args.indices.split(",") if i.strip()]
    args.seeds = args.ode_seeds  # tune_defaults.sweep draws the ODE references for range(seeds)
    grids = tuple(g for g in args.grids.split(",") if g)
    td.GRIDS, td.DETERMINISTIC, td.STOCHASTIC = grids, VARIANTS, []
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = td.sweep(args)
    md = [f"# UniPC predictor order on the `{args.split}` split", "",
          f"`python benchmarks/unipc_order.py {' '.join(sys.argv[1:] if argv is None else argv)}`: "
          f"`mixture_family({args.split!r}, i)`, i = {', '.join(map(str, args.indices))} (dims capped at "
          f"{args.dim_cap}, VP for even i, VE for odd i), {args.samples} samples, float32, {args.ode_seeds} x_T "
          f"draw(s); problems: {', '.join(sorted({r['problem'] for r in rows}))}.", "", ratio_table(rows, grids), "",
          "## Raw", "", "| problem | variant | grid | NFE | ODE-map err | flips | FD |",
          "|---|---|---|---:|---:|---:|---:|"]
    md += [f"| {r['problem']} | {r['label']} | {r['grid']} | {r['nfe']} | {r['ode']:.3g} | {r['flips']:.0f} | "
           f"{r['fd']:.4g} |" for r in rows]
    stem = os.path.join(args.out, "tune_defaults-unipc-order" + ("" if args.split == "tuning" else f"-{args.split}")
                        + (f"-{args.tag}" if args.tag else ""))
    with open(stem + ".json", "w") as fh:
        json.dump({"meta": {"argv": sys.argv[1:] if argv is None else argv, "split": args.split,
                            "elapsed_s": time.perf_counter() - t0}, "rows": rows}, fh, indent=1)
    with open(stem + ".md", "w") as fh:
        fh.write("\n".join(md) + "\n")
    print("\n".join(md).split("## Raw")[0])
    return {"rows": rows}


if __name__ == "__main__":
    main()
