"""schedule="auto" before and after its refinement stage, on fresh samples (issue 12, item 4).

    PYTHONPATH=. python benchmarks/auto_refine.py --split tuning
    PYTHONPATH=. python benchmarks/auto_refine.py --split heldout --indices 0,1,2

Problems: :func:`sdekit.testing.mixture_family` (split and indices as given; dimension capped at
``--dim-cap``; VP for even indices, VE for odd). For each solver and budget, the ODE-map error and
the mode flips of 1000 float32 samples from prior draws that are NOT the pilot's (seed ``777 + i``),
against the float64 reference (:meth:`GaussianMixture.ode_reference`, rtol 1e-8), on:

- ``default``: the solver's default grid;
- ``old auto``: :func:`sdekit.grids.tune` as it was (pilot of 64, coordinate search only:
  ``pilot_batch=64, refine_nfe=0``);
- ``auto``: :func:`sdekit.grids.tune` with its defaults (pilot of 256, coordinate search, then
  Nelder–Mead on at most ``refine_nfe`` score evaluations).

Pilots run in float32 (what ``schedule="auto"`` does for a float32 run), seed 0. The pilot NFE of
each tuned grid is shown apart. Outputs ``benchmarks/results/auto_refine[-heldout].{md,json}``.
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

import sdekit  # noqa: E402
from sdekit import grids  # noqa: E402
from sdekit.metrics import mode_flips, ode_map_error  # noqa: E402
from sdekit.testing import mixture_family  # noqa: E402

# (both end at eps, as tune did when these results were measured: tune(free_end=True) came later)
VARIANTS = {"old auto": {"pilot_batch": 64, "refine_nfe": 0, "free_end": False}, "auto": {"free_end": False}}


def run(split: str, index: int, dim_cap: int, solvers: list[str], nfes: list[int], samples: int,
        variants: dict | None = None) -> list[dict]:
    """One problem's rows: the ``default`` grid and each of ``variants`` (label: ``grids.tune`` options;
    default :data:`VARIANTS`), on fresh samples."""
    mix = mixture_family(split, index)
    if mix.dim > dim_cap:
        mix = mixture_family(split, index, dim=dim_cap)
    sde = sdekit.VPSDE() if index % 2 == 0 else sdekit.VESDE()
    name = f"{split}{index}-{mix.dim}d-K{mix.means.shape[0]}-{'vp' if index % 2 == 0 else 've'}"
    score, std = mix.score_fn(sde, matmul=True), mix.data_std()
    x_T = sde.prior_sample((samples, mix.dim), generator=torch.Generator().manual_seed(777 + index),
                           dtype=torch.float32)
    ref = mix.ode_reference(sde, x_T.double(), rtol=1e-8)
    rows = []
    for solver in solvers:
        for nfe in nfes:
            steps = sdekit.steps_for_nfe(sdekit.solvers.resolve(solver), nfe, denoise=True)
            grids_ = {"default": (grids.get_grid(grids.default_schedule(sdekit.solvers.resolve(solver), sde), sde,
                                                 steps), None)}
            for label, opts in (VARIANTS if variants is None else variants).items():
                info: dict = {}
                g = grids.tune(score, sde, solver, steps=steps, shape=(1, mix.dim), dtype=torch.float32,
                               cache=False, info=info, **opts)
                grids_[label] = (g, info["pilot_nfe"])
            row = {"problem": name, "solver": solver, "nfe": nfe}
            for label, (g, pilot) in grids_.items():
                x = sdekit.sample(score, sde, solver, x_T=x_T, schedule=g).double()
                row[label] = {"ode": ode_map_error(x, ref, std), "flips": mode_flips(mix, x, ref), "pilot_nfe": pilot}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def render(rows: list[dict], split: str) -> str:
    labels = ["default", *VARIANTS]
    out = [f"# schedule=\"auto\" before/after its refinement stage (**{split}** split)", "",
           "Cell: ODE-map error [flips of 1000 samples] (pilot NFE). Samples are not the pilot's. "
           "`old auto` = `tune(pilot_batch=64, refine_nfe=0)`; `auto` = `tune()` defaults.", "",
           "| problem | solver | NFE | " + " | ".join(labels) + " | auto / old auto |",
           "|---|---|---:|" + "---|" * len(labels) + "---:|"]
    logs: dict[int, list[float]] = {}
    for r in rows:
        cells = []
        for lab in labels:
            c = r[lab]
            cells.append(f"{c['ode']:.3g} [{c['flips']}]" + (f" ({c['pilot_nfe']})" if c["pilot_nfe"] else ""))
        ratio = r["auto"]["ode"] / r["old auto"]["ode"]
        logs.setdefault(r["nfe"], []).append(math.log(ratio))
        out.append(f"| {r['problem']} | {r['solver']} | {r['nfe']} | " + " | ".join(cells) + f" | {ratio:.3g} |")
    out += ["", "Geometric mean of auto / old auto per budget: "
            + ", ".join(f"{n} NFE {math.exp(sum(v) / len(v)):.3g} ({len(v)} cases)" for n, v in sorted(logs.items()))]
    return "\n".join(out) + "\n"


def parser(doc: str, *, nfe: str, samples: int) -> argparse.ArgumentParser:
    """The command line shared with ``auto_shift.py``: split, family indices, dimension cap, solvers, budgets,
    fresh samples and output folder."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--split", choices=("tuning", "heldout"), default="tuning")
    ap.add_argument("--indices", default="0,1,2,3,4,5")
    ap.add_argument("--dim-cap", type=int, default=128)
    ap.add_argument("--solvers", default="unipc,dpmpp_2m,dpmpp_3m")
    ap.add_argument("--nfe", default=nfe)
    ap.add_argument("--samples", type=int, default=samples)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    return ap


def main() -> None:
    args = parser(__doc__, nfe="5,10,20", samples=1000).parse_args()
    torch.set_num_threads(1)
    rows = []
    for i in (int(v) for v in args.indices.split(",")):
        rows += run(args.split, i, args.dim_cap, args.solvers.split(","), [int(v) for v in args.nfe.split(",")],
                    args.samples)
    stem = os.path.join(args.out, "auto_refine" + ("" if args.split == "tuning" else "-heldout"))
    with open(stem + ".json", "w") as f:
        json.dump({"argv": sys.argv[1:], "rows": rows}, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(render(rows, args.split))
    print(f"wrote {stem}.md", file=sys.stderr)


if __name__ == "__main__":
    main()
