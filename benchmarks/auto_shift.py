"""schedule="auto" with decoupled evaluation times (``grids.tune(shift=True)``, the LD3 idea), issue 12.

Problems, fresh samples (not the pilot's), the float64 reference and the ODE-map error are those of
``benchmarks/auto_refine.py`` (its ``run``). Variants, each a :func:`sdekit.grids.tune` call:

- ``auto``: the current tuner (defaults);
- ``auto 2x``: the same with twice the Nelder–Mead budget (``refine_nfe=6000``): a control for the
  shift stage's extra pilot evaluations;
- ``auto+shift``: ``shift=True``: after the current tuner, a second Nelder–Mead stage over the
  log-SNR increments and one log-SNR shift per knot of the model's evaluation times (from 0), with
  the same pilot, the same halves guard and ``refine_nfe`` more evaluations;
- ``auto+shift p1024``: the same on a pilot of 1024 samples (its evaluations are batched: a larger
  pilot costs compute, not pilot NFE); ``auto p1024``: ``auto`` on that pilot; ``auto+shift p1024 2x``:
  with ``refine_nfe=6000`` (the shift stage uses up its budget at 5 NFE; the first simplex stage does not);
  ``auto+shift p4096``: a pilot of 4096;
- ``auto+end``, ``auto+shift+end``, ``auto+shift+end p1024``: the same with ``free_end=True`` (the grid may
  stop short of eps, where its denoising step then evaluates the model; ``tune``'s default since then). The
  variants without ``+end`` pass ``free_end=False``: they end at eps, as ``tune`` did when they were measured.

``--variants`` picks them (default the first three), ``--tag`` suffixes the outputs:
``benchmarks/results/auto_shift[-heldout][-tag].{md,json}``. Runs::

    PYTHONPATH=. python benchmarks/auto_shift.py --split tuning                   # auto_shift.md
    PYTHONPATH=. python benchmarks/auto_shift.py --split tuning --nfe 5 \
        --variants "auto,auto+shift,auto+shift p1024" --tag p1024                 # auto_shift-p1024.md
    PYTHONPATH=. python benchmarks/auto_shift.py --split tuning --nfe 5 \
        --variants "auto,auto p1024" --tag p1024-noshift                          # auto_shift-p1024-noshift.md
    PYTHONPATH=. python benchmarks/auto_shift.py --split tuning --nfe 5 \
        --variants "auto,auto+shift p1024 2x" --tag p1024-2x                      # auto_shift-p1024-2x.md
    PYTHONPATH=. python benchmarks/auto_shift.py --split tuning --indices 1,5 --solvers unipc,dpmpp_2m \
        --nfe 5 --variants "auto,auto+shift p4096" --tag p4096-ve                 # auto_shift-p4096-ve.md
    PYTHONPATH=. python benchmarks/auto_shift.py --split tuning --nfe 5,10 \
        --variants "auto,auto+end,auto+shift,auto+shift+end,auto+shift+end p1024" --tag end   # auto_shift-end.md
"""

from __future__ import annotations

import json
import math
import os
import sys

import torch

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.auto_refine import parser, run  # noqa: E402

_EPS = {"free_end": False}  # the variants without "+end" end at eps (as tune did before free_end=True)
ALL_VARIANTS = {"auto": _EPS, "auto 2x": {"refine_nfe": 6000, **_EPS}, "auto+shift": {"shift": True, **_EPS},
                "auto+shift p1024": {"shift": True, "pilot_batch": 1024, **_EPS},
                "auto p1024": {"pilot_batch": 1024, **_EPS},
                "auto+shift p1024 2x": {"shift": True, "pilot_batch": 1024, "refine_nfe": 6000, **_EPS},
                "auto+shift p4096": {"shift": True, "pilot_batch": 4096, **_EPS}, "auto+end": {"free_end": True},
                "auto+shift+end": {"shift": True, "free_end": True},
                "auto+shift+end p1024": {"shift": True, "free_end": True, "pilot_batch": 1024}}
VARIANTS = ["auto", "auto 2x", "auto+shift"]


def _geo(v: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in v) / len(v))


def render(rows: list[dict], split: str, samples: int) -> str:
    variants = [k for k in rows[0] if k in ALL_VARIANTS]
    others = [v for v in variants if v != "auto"]
    labels = ["default", *variants]
    out = [f"# schedule=\"auto\" with decoupled evaluation times (**{split}** split)", "",
           f"Cell: ODE-map error [flips of {samples} fresh samples] (pilot NFE). "
           + "; ".join(f"`{k}` = `tune({', '.join(f'{a}={b!r}' for a, b in ALL_VARIANTS[k].items())})`"
                       for k in variants) + ".", "",
           "| problem | solver | NFE | " + " | ".join(labels) + "".join(f" | {v} / auto" for v in others) + " |",
           "|---|---|---:|" + "---|" * len(labels) + "---:|" * len(others)]
    ratios: dict[tuple[str, int, str], list[float]] = {}
    for r in rows:
        cells = [f"{r[lab]['ode']:.3g} [{r[lab]['flips']}]" + (f" ({r[lab]['pilot_nfe']})" if r[lab]["pilot_nfe"]
                                                               else "") for lab in labels]
        rat = [r[v]["ode"] / r["auto"]["ode"] for v in others]
        for v, x in zip(others, rat):
            for solver in ("all", r["solver"]):
                ratios.setdefault((f"{v} / auto", r["nfe"], solver), []).append(x)
        out.append(f"| {r['problem']} | {r['solver']} | {r['nfe']} | " + " | ".join(cells)
                   + "".join(f" | {x:.3g}" for x in rat) + " |")
    out += ["", "Geometric means of the error ratios (fresh samples):", ""]
    for (name, nfe, solver), v in sorted(ratios.items()):
        out.append(f"- {name}, {nfe} NFE, {'all solvers' if solver == 'all' else solver}: {_geo(v):.3g} "
                   f"({len(v)} cases)")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = parser(__doc__, nfe="5,10", samples=500)
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma list from {', '.join(ALL_VARIANTS)} ('auto' is the reference of the ratios)")
    ap.add_argument("--tag", default="", help="suffix of the output file names")
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "auto" not in names or not set(names) <= set(ALL_VARIANTS):
        raise ValueError(f"--variants must include 'auto' and come from {', '.join(ALL_VARIANTS)}, "
                         f"got {args.variants!r}")
    variants = {k: ALL_VARIANTS[k] for k in names}
    rows = []
    for i in (int(v) for v in args.indices.split(",")):
        rows += run(args.split, i, args.dim_cap, args.solvers.split(","), [int(v) for v in args.nfe.split(",")],
                    args.samples, variants=variants)
    stem = os.path.join(args.out, "auto_shift" + ("" if args.split == "tuning" else "-heldout")
                        + (f"-{args.tag}" if args.tag else ""))
    with open(stem + ".json", "w") as f:
        json.dump({"argv": sys.argv[1:], "rows": rows}, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(render(rows, args.split, args.samples))
    print(f"wrote {stem}.md", file=sys.stderr)


if __name__ == "__main__":
    main()
