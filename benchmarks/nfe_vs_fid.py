"""FID against NFE for every registered solver on the trained digits model.

    python benchmarks/nfe_vs_fid.py                        # all non-corrector solvers, NFE 10..1000
    python benchmarks/nfe_vs_fid.py --samples 300 --nfe 10 25 50 100 250 1000

Solvers come from ``sdekit.solvers.available()`` at run time (correctors excluded), so solvers
added later are picked up automatically; adaptive solvers are run at a ladder of tolerances and
placed at the NFE they used. FID uses the digits-classifier features of ``examples/digits.py``;
the floor is held-out real digits against the training digits. Writes
``benchmarks/results/nfe_vs_fid_digits.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sdekit  # noqa: E402
from examples.digits import fid_backend, make_fid, setup  # noqa: E402


def run_one(score_fn, sde, name, shape, *, nfe=None, tol=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    kw = {} if tol is None else {"rtol": tol, "atol": tol}
    t0 = time.perf_counter()
    sol = sdekit.solve(score_fn, sde, name, shape=shape, nfe=nfe, generator=g, **kw)
    return sol, time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--nfe", type=int, nargs="*", default=[10, 25, 50, 100, 250, 1000])
    p.add_argument("--tols", type=float, nargs="*", default=[1e-1, 3e-2, 1e-2, 3e-3, 1e-3])
    p.add_argument("--solvers", nargs="*", default=None, help="default: every non-corrector solver")
    p.add_argument("--arch", default="mlp", choices=["mlp", "unet"])
    p.add_argument("--train-steps", type=int, default=4000)
    p.add_argument("--workdir", default=str(ROOT / "runs" / "digits"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "nfe_vs_fid_digits"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    score_fn, sde, x_tr, x_ho, features, info = setup(args.workdir, arch=args.arch, steps=args.train_steps,
                                                      progress=False)
    fid = make_fid(features)
    fid.update(x_tr, real=True)
    fid.update(x_ho[: args.samples], real=False)
    floor = float(fid.compute())
    print(f"floor (held-out real, n={min(args.samples, x_ho.shape[0])}): FID {floor:.3f}   [{fid_backend()}]")

    infos = [s for s in sdekit.solvers.available() if s.kind != "corrector"]
    if args.solvers:
        infos = [s for s in infos if s.name in args.solvers]
    shape = (args.samples, 1, 8, 8)
    rows, skipped = [], []
    for s in infos:
        settings = [("tol", t) for t in args.tols] if s.adaptive else [("nfe", n) for n in args.nfe]
        for kind, val in settings:
            try:
                sol, secs = run_one(score_fn, sde, s.name, shape, **{kind: val})
            except (ValueError, TypeError) as e:  # budget below one step, or options the solver lacks
                skipped.append({"solver": s.name, kind: val, "reason": str(e).splitlines()[0][:160]})
                continue
            except sdekit.SamplingError as e:
                rows.append({"solver": s.name, ("nfe_budget" if kind == "nfe" else "tol"): val, "nfe": None,
                             "fid": math.inf, "error": str(e)[:160]})
                continue
            fid.reset()
            fid.update(sol.x.clamp(-1, 1), real=False)
            row = {"solver": s.name, "kind": s.kind, "order": s.order, "stochastic": s.stochastic,
                   "adaptive": s.adaptive, ("nfe_budget" if kind == "nfe" else "tol"): val, "nfe": sol.nfe,
                   "steps": sol.steps, "fid": float(fid.compute()), "seconds": round(secs, 3)}
            rows.append(row)
            print(f"{s.name:<22} {kind}={val:<7g} nfe={sol.nfe:<5} FID={row['fid']:8.3f}  ({secs:.1f}s)", flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"samples": args.samples, "floor_fid": floor, "fid_backend": fid_backend(), "sde": repr(sde),
            "torch": torch.__version__, "machine": platform.machine(), "threads": torch.get_num_threads(),
            "note": "timings measured on a shared, heavily loaded 2-core CPU", **info}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "skipped": skipped}, indent=1))

    budgets = args.nfe
    lines = [f"# FID vs NFE on 8x8 digits ({args.samples} samples per cell)", "",
             f"Score model: {info['arch']} trained {info['train_steps']} steps on {info['n_train']} digits, VP SDE. "
             f"FID on digits-classifier features (held-out accuracy {info['classifier_heldout_acc']:.3f}) by "
             f"{fid_backend()}. **Floor** (held-out real digits): **{floor:.3f}**.", "",
             "| solver | " + " | ".join(f"NFE {n}" for n in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    for s in infos:
        if s.adaptive:
            continue
        cells = []
        for n in budgets:
            r = next((r for r in rows if r["solver"] == s.name and r.get("nfe_budget") == n), None)
            cells.append("—" if r is None else f"{r['fid']:.2f}")
        lines.append(f"| {s.name} | " + " | ".join(cells) + " |")
    ad = [r for r in rows if "tol" in r]
    if ad:
        lines += ["", "Adaptive solvers (tolerance → NFE used, FID):", ""]
        lines += [f"- {r['solver']} tol={r['tol']:g}: NFE {r['nfe']}, FID {r['fid']:.2f}" for r in ad]
    lines += ["", "— : the budget is smaller than one step of that solver (plus the final denoising step).",
              "Times are wall-clock on a shared, heavily loaded 2-core CPU; see the JSON."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in infos:
        pts = sorted((r["nfe"], r["fid"]) for r in rows if r["solver"] == s.name and r.get("nfe")
                     and math.isfinite(r["fid"]))
        if pts:
            ax.plot(*zip(*pts), marker="o" if not s.adaptive else "s", ms=3, lw=1.2,
                    ls="-" if s.stochastic else "--", label=s.name)
    ax.axhline(floor, color="k", lw=1, ls=":", label="held-out real (floor)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE (score evaluations, denoising step included)")
    ax.set_ylabel("FID (digit-classifier features)")
    ax.set_title("8x8 digits: FID vs NFE (solid: SDE, dashed: ODE)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print(f"wrote {out.with_suffix('.json')}, .md, .png")


if __name__ == "__main__":
    main()
