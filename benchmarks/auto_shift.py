"""schedule="auto" with decoupled evaluation times (``grids.tune(shift=True)``, the LD3 idea), issue 12.

    PYTHONPATH=. python benchmarks/auto_shift.py --split tuning
    PYTHONPATH=. python benchmarks/auto_shift.py --split heldout --indices 0,1,2

Problems, fresh samples (not the pilot's), the float64 reference and the ODE-map error are those of
``benchmarks/auto_refine.py`` (its ``run``). Variants, each a :func:`sdekit.grids.tune` call:

- ``auto``: the current tuner (defaults);
- ``auto 2x``: the same with twice the Nelder–Mead budget (``refine_nfe=6000``): a control for the
  shift stage's extra pilot evaluations;
- ``auto+shift``: ``shift=True``: after the current tuner, a second Nelder–Mead stage over the
  log-SNR increments and one log-SNR shift per knot of the model's evaluation times (from 0), with
  the same pilot, the same halves guard and ``refine_nfe`` more evaluations.

Outputs ``benchmarks/results/auto_shift[-heldout].{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.auto_refine import run  # noqa: E402

VARIANTS = {"auto": {}, "auto 2x": {"refine_nfe": 6000}, "auto+shift": {"shift": True}}


def _geo(v: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in v) / len(v))


def render(rows: list[dict], split: str, samples: int) -> str:
    labels = ["default", *VARIANTS]
    out = [f"# schedule=\"auto\" with decoupled evaluation times (**{split}** split)", "",
           f"Cell: ODE-map error [flips of {samples} fresh samples] (pilot NFE). `auto` = `tune()`; "
           "`auto 2x` = `tune(refine_nfe=6000)`; `auto+shift` = `tune(shift=True)`.", "",
           "| problem | solver | NFE | " + " | ".join(labels) + " | shift / auto | 2x / auto |",
           "|---|---|---:|" + "---|" * len(labels) + "---:|---:|"]
    ratios: dict[tuple[str, int], list[float]] = {}
    for r in rows:
        cells = [f"{r[lab]['ode']:.3g} [{r[lab]['flips']}]" + (f" ({r[lab]['pilot_nfe']})" if r[lab]["pilot_nfe"]
                                                               else "") for lab in labels]
        sh, dbl = r["auto+shift"]["ode"] / r["auto"]["ode"], r["auto 2x"]["ode"] / r["auto"]["ode"]
        for key, v in (((r["nfe"], "all"), sh), ((r["nfe"], r["solver"]), sh)):
            ratios.setdefault(("auto+shift / auto",) + key, []).append(v)
        ratios.setdefault(("auto 2x / auto", r["nfe"], "all"), []).append(dbl)
        out.append(f"| {r['problem']} | {r['solver']} | {r['nfe']} | " + " | ".join(cells)
                   + f" | {sh:.3g} | {dbl:.3g} |")
    out += ["", "Geometric means of the error ratios (fresh samples):", ""]
    for (name, nfe, solver), v in sorted(ratios.items()):
        out.append(f"- {name}, {nfe} NFE, {'all solvers' if solver == 'all' else solver}: {_geo(v):.3g} "
                   f"({len(v)} cases)")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=("tuning", "heldout"), default="tuning")
    ap.add_argument("--indices", default="0,1,2,3,4,5")
    ap.add_argument("--dim-cap", type=int, default=128)
    ap.add_argument("--solvers", default="unipc,dpmpp_2m,dpmpp_3m")
    ap.add_argument("--nfe", default="5,10")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for i in (int(v) for v in args.indices.split(",")):
        rows += run(args.split, i, args.dim_cap, args.solvers.split(","), [int(v) for v in args.nfe.split(",")],
                    args.samples, variants=VARIANTS)
    stem = os.path.join(args.out, "auto_shift" + ("" if args.split == "tuning" else "-heldout"))
    with open(stem + ".json", "w") as f:
        json.dump({"argv": sys.argv[1:], "rows": rows}, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(render(rows, args.split, args.samples))
    print(f"wrote {stem}.md", file=sys.stderr)


if __name__ == "__main__":
    main()
