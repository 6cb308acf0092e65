"""Choose every solver's default time grid (and ``sample()``'s default solver) on the TUNING split.

Problems come from :func:`sdekit.testing.mixture_family` (imbalanced, anisotropic mixtures with
component stds down to 1% of the spread of the means); problem ``i`` runs under VP for even ``i``
and VE for odd ``i``. Every solver runs on every grid of :data:`sdekit.grids.SCHEDULES` at each
NFE budget (``nfe=`` sizing, final denoising included), in float32, from the same prior draws:

- deterministic solvers: the ODE-map error (RMS distance to the float64 PF-ODE solution from the
  same x_T, over the data std; :func:`sdekit.metrics.ode_map_error`), the count of samples landing
  in another component (:func:`sdekit.metrics.mode_flips`) and FD;
- stochastic solvers: FD and sliced W2, averaged over ``--seeds`` draws of x_T and noise.

FD is in 32 projected dimensions (the span of the means, completed at random) for ``d > 256``.

A grid's score for a solver is the geometric mean, over problems and budgets, of its metric divided
by the best grid's for that solver on the same problem and budget (1 = best everywhere); the grid
with the lowest geometric mean of its two scores (ODE-map error and FD; FD and SW2 for stochastic
solvers) is the verdict. Run it on ``--split heldout`` to check that a verdict holds on problems it
was not chosen on. Outputs ``benchmarks/results/tune_defaults[-heldout].{json,md}``.

Example::

    PYTHONPATH=. python benchmarks/tune_defaults.py --split tuning
    PYTHONPATH=. python benchmarks/tune_defaults.py --split heldout
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sdekit  # noqa: E402
from benchmarks._peers.common import ProjectedFrechet  # noqa: E402
from sdekit.metrics import frechet_to_moments, mode_flips, ode_map_error, sliced_wasserstein  # noqa: E402
from sdekit.testing import mixture_family  # noqa: E402

GRIDS = ("snr_power", "logsnr", "karras", "quadratic", "uniform")
NFES = (5, 10, 20, 50)
#: (label, solver name, options)
DETERMINISTIC = [(n, n, {}) for n in ("ddim", "dpmpp_2m", "dpmpp_2s", "dpmpp_3m", "edm_heun", "ode_euler",
                                       "ode_heun", "ode_rk4", "unipc")]
STOCHASTIC = [(n, n, {}) for n in ("ancestral", "dpmpp_2m_sde", "dpmpp_3m_sde", "euler_maruyama", "pc",
                                    "reverse_diffusion", "srk")] + [
    ("dpmpp_2m_sde eta=0.5", "dpmpp_2m_sde", {"eta": 0.5}), ("dpmpp_3m_sde eta=0.5", "dpmpp_3m_sde", {"eta": 0.5}),
    ("ddim eta=1", "ddim", {"eta": 1.0}), ("pc snr=0.01", "pc", {"snr": 0.01}),
    # the forms of dpmpp_2m_sde (midpoint/heun, k-diffusion's rule for the last steps or sdekit's), spelled out:
    # the default became the midpoint count_denoise form (issue 12 item 5, benchmarks/stoch_defaults.py)
    ("dpmpp_2m_sde heun", "dpmpp_2m_sde", {"solver_type": "heun", "count_denoise": False}),
    ("dpmpp_2m_sde midpoint", "dpmpp_2m_sde", {"solver_type": "midpoint", "count_denoise": False}),
    ("dpmpp_2m_sde count_denoise", "dpmpp_2m_sde", {"solver_type": "heun", "count_denoise": True}),
    ("dpmpp_2m_sde midpoint count_denoise", "dpmpp_2m_sde", {"solver_type": "midpoint", "count_denoise": True})]


class Setup:
    """One benchmark problem: mixture, SDE, FD function, and exact reference samples."""

    def __init__(self, split: str, index: int, dim_cap: int, samples: int) -> None:
        drawn = mixture_family(split, index)
        dim = drawn.dim if drawn.dim <= dim_cap else None
        self.mix = drawn if dim is not None else mixture_family(split, index, dim=dim_cap)
        self.dim = self.mix.dim
        self.sde_name = "vp" if index % 2 == 0 else "ve"
        self.sde = sdekit.VPSDE() if self.sde_name == "vp" else sdekit.VESDE()
        self.name = f"{split}{index}-{self.dim}d-K{self.mix.means.shape[0]}-{self.sde_name}"
        self.samples = samples
        self.score = self.mix.score_fn(self.sde, matmul=True)
        self.data_std = self.mix.data_std()
        self.proj = ProjectedFrechet(self.mix) if self.dim > 256 else None
        self.mean, self.cov = self.mix.mean(), self.mix.cov()
        self.exact = self.mix.sample(samples, generator=torch.Generator().manual_seed(99))

    def x_T(self, seed: int) -> torch.Tensor:
        return self.sde.prior_sample((self.samples, self.dim), generator=torch.Generator().manual_seed(seed),
                                     dtype=torch.float32)

    def fd(self, x: torch.Tensor) -> float:
        return self.proj(x) if self.proj is not None else frechet_to_moments(x, self.mean, self.cov)


def run_one(s: Setup, name: str, opts: dict, grid: str, nfe: int, x_T: torch.Tensor, seed: int) -> torch.Tensor:
    return sdekit.sample(s.score, s.sde, name, x_T=x_T, nfe=nfe, schedule=grid,
                         generator=torch.Generator().manual_seed(seed + 1), **opts)


def sweep(args) -> list[dict]:
    rows = []
    for index in args.indices:
        s = Setup(args.split, index, args.dim_cap, args.samples)
        t0 = time.perf_counter()
        refs = {}
        for k in range(args.seeds):
            refs[k] = s.mix.ode_reference(s.sde, s.x_T(1000 * k + index).double(), rtol=1e-8)
        print(f"[tune] {s.name}: reference in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
        for kind, table in (("ode", DETERMINISTIC), ("sde", STOCHASTIC)):
            for label, name, opts in table:
                for grid in GRIDS:
                    for nfe in NFES:
                        try:
                            sdekit.steps_for_nfe(sdekit.solvers.resolve(name, **opts), nfe, denoise=True)
                        except ValueError:
                            continue
                        seeds = range(args.seeds) if kind == "sde" else range(args.ode_seeds)
                        vals = []
                        for k in seeds:
                            x_T = s.x_T(1000 * k + index)
                            try:
                                x = run_one(s, name, opts, grid, nfe, x_T, 1000 * k + index).double()
                                ok = bool(torch.isfinite(x).all())
                            except Exception as e:  # noqa: BLE001 - a failure is a result
                                x, ok = None, False
                                print(f"[tune] {label} {grid} {nfe}: {type(e).__name__}: {e}", file=sys.stderr)
                            v = {"fd": s.fd(x) if ok else float("inf"),
                                 "sw2": sliced_wasserstein(x, s.exact) if ok and kind == "sde" else float("nan")}
                            if kind == "ode":
                                v["ode"] = ode_map_error(x, refs[k], s.data_std) if ok else float("inf")
                                v["flips"] = mode_flips(s.mix, x, refs[k]) if ok else s.samples
                            vals.append(v)
                        row = {"problem": s.name, "kind": kind, "label": label, "solver": name, "grid": grid,
                               "nfe": nfe, "seeds": len(vals)}
                        for key in vals[0]:
                            xs = [v[key] for v in vals]
                            row[key] = sum(xs) / len(xs)
                            if len(xs) > 1 and all(math.isfinite(x) for x in xs):
                                row[key + "_se"] = math.sqrt(sum((x - row[key]) ** 2 for x in xs)
                                                             / (len(xs) - 1) / len(xs))
                        rows.append(row)
                print(f"[tune] {s.name} {label} done ({time.perf_counter() - t0:.0f}s)", file=sys.stderr,
                      flush=True)
    return rows


def _gmean(xs: list[float]) -> float:
    xs = [x for x in xs if x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def grid_scores(rows: list[dict], label: str, metrics: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Per grid: the geometric mean over (problem, NFE) of metric / best grid's metric, per metric."""
    mine = [r for r in rows if r["label"] == label]
    out: dict[str, dict[str, float]] = {}
    for grid in GRIDS:
        out[grid] = {}
        for m in metrics:
            ratios = []
            for r in (r for r in mine if r["grid"] == grid):
                best = min(q[m] for q in mine if q["problem"] == r["problem"] and q["nfe"] == r["nfe"])
                ratios.append(r[m] / best if best > 0 and math.isfinite(r[m]) else 1e3)
            out[grid][m] = _gmean(ratios) if ratios else float("nan")
        out[grid]["score"] = _gmean([out[grid][m] for m in metrics])
    return out


def report(rows: list[dict], args) -> str:
    md = [f"# Default grids chosen on the `{args.split}` split", "",
          f"Split: **{args.split}** (`sdekit.testing.mixture_family({args.split!r}, i)`, i = "
          f"{', '.join(map(str, args.indices))}; dims capped at {args.dim_cap}; VP for even i, VE for odd i), "
          f"{args.samples} samples, float32, NFE {', '.join(map(str, NFES))}; deterministic solvers over "
          f"{args.ode_seeds} x_T draw(s), stochastic over {args.seeds}. Problems: "
          f"{', '.join(sorted({r['problem'] for r in rows}))}.", "",
          "Cell: geometric mean over problems and NFE of (metric / best grid's metric for this solver); "
          "1.00 = best grid everywhere. ODE = ODE-map error (flips: total samples in another component, "
          "summed over problems and NFE), FD, SW2 = sliced W2.", "",
          "| solver | current default | " + " | ".join(GRIDS) + " | verdict |",
          "|---|---|" + "---|" * len(GRIDS) + "---|"]
    verdicts = {}
    for kind, table in (("ode", DETERMINISTIC), ("sde", STOCHASTIC)):
        metrics = ("ode", "fd") if kind == "ode" else ("fd", "sw2")
        for label, name, opts in table:
            if not any(r["label"] == label for r in rows):
                continue
            sc = grid_scores(rows, label, metrics)
            cur = sdekit.solvers.resolve(name, **opts).default_schedule
            best = min(GRIDS, key=lambda g: sc[g]["score"])
            verdicts[label] = best
            cells = []
            for g in GRIDS:
                flips = sum(r.get("flips", 0) for r in rows if r["label"] == label and r["grid"] == g)
                txt = " / ".join(f"{m} {sc[g][m]:.2f}" for m in metrics)
                cells.append(("**" + txt + "**" if g == best else txt) + (f" ({flips:.0f} flips)" if kind == "ode"
                                                                           else ""))
            md.append(f"| {label} | {cur} | " + " | ".join(cells) + f" | {best} |")
    md += ["", "## Best configuration per NFE (normalised across solvers)", "",
           "Per problem and NFE, every (solver, grid)'s metric over the best of all; geometric mean over problems. "
           "Deterministic and stochastic solvers ranked on FD together; the ODE-map error ranks the deterministic "
           "ones.",
           ""]
    md += ["| NFE | best by FD (all solvers) | FD ratio | best by ODE-map error | ODE ratio | "
           "pc (default grid) FD ratio |",
           "|---:|---|---:|---|---:|---:|"]
    for nfe in NFES:
        at = [r for r in rows if r["nfe"] == nfe]
        def rel(metric, keep, at=at):
            cfg = {}
            for r in at:
                if not keep(r):
                    continue
                best = min(q[metric] for q in at if q["problem"] == r["problem"] and keep(q))
                cfg.setdefault((r["label"], r["grid"]), []).append(r[metric] / best if best > 0 else 1e3)
            return {k: _gmean(v) for k, v in cfg.items()}
        fd = rel("fd", lambda r: True)
        ode = rel("ode", lambda r: r["kind"] == "ode")
        if not fd:
            continue
        bf = min(fd, key=fd.get)
        bo = min(ode, key=ode.get) if ode else None  # an --only run of stochastic solvers has no ODE rows
        pc = fd.get(("pc", "uniform"), float("nan"))
        ode_cell = f"{bo[0]} ({bo[1]}) | {ode[bo]:.2f}" if bo else "— | —"
        md.append(f"| {nfe} | {bf[0]} ({bf[1]}) | {fd[bf]:.2f} | {ode_cell} | {pc:.2f} |")
    md += ["", "## Raw means per problem", "", "| problem | solver | grid | NFE | ODE-map err | flips | FD | SW2 |",
           "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['problem']} | {r['label']} | {r['grid']} | {r['nfe']} | {r.get('ode', float('nan')):.3g} | "
                  f"{r.get('flips', float('nan')):.3g} | {r['fd']:.4g} | {r.get('sw2', float('nan')):.4g} |")
    return "\n".join(md), verdicts


#: the defaults before issue 12 (the grid of each solver whose default this sweep changed)
BEFORE = {"ddim": "logsnr", "dpmpp_2m": "snr_power", "dpmpp_2s": "logsnr", "dpmpp_3m": "snr_power",
          "unipc": "snr_power", "dpmpp_2m_sde": "snr_power"}


def before_after(paths: list[str]) -> str:
    """Markdown: each changed default's old and new grid per NFE, on every split in ``paths``.

    Deterministic solvers: geometric-mean ODE-map error over the problems, total flips, mean FD;
    stochastic: mean FD and SW2 (± the s.e. over seeds, averaged over problems).
    """
    md = ["# Defaults before and after issue 12", "",
          "Per NFE: geometric mean over the split's problems of the ODE-map error [total flips over the problems], "
          "and the mean FD (stochastic solvers: mean FD ± mean seed s.e., mean SW2). Old grid → new grid.", ""]
    for path in paths:
        with open(path) as fh:
            res = json.load(fh)
        rows, split = res["rows"], res["meta"]["split"]
        md += [f"## {split} split ({len({r['problem'] for r in rows})} problems)", "",
               "| solver | old → new grid | " + " | ".join(f"NFE {n}" for n in NFES) + " |",
               "|---|---|" + "---|" * len(NFES)]
        for name, old in BEFORE.items():
            new = sdekit.solvers.resolve(name).default_schedule
            cells = []
            for nfe in NFES:
                parts = []
                for grid in (old, new):
                    rs = [r for r in rows if r["label"] == name and r["grid"] == grid and r["nfe"] == nfe]
                    if not rs:
                        parts.append("—")
                        continue
                    fd = sum(r["fd"] for r in rs) / len(rs)
                    if rs[0]["kind"] == "ode":
                        parts.append(f"{_gmean([r['ode'] for r in rs]):.3g} [{sum(r['flips'] for r in rs):.0f}], "
                                     f"FD {fd:.3g}")
                    else:
                        se = sum(r.get("fd_se", 0.0) for r in rs) / len(rs)
                        sw = sum(r["sw2"] for r in rs) / len(rs)
                        parts.append(f"FD {fd:.3g} ± {se:.2g}, SW2 {sw:.3g}")
                cells.append(" → ".join(parts))
            md.append(f"| {name} | {old} → {new} | " + " | ".join(cells) + " |")
        md.append("")
    return "\n".join(md)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=("tuning", "heldout"), default="tuning")
    ap.add_argument("--indices", default="0,1,2,3,4,5,6,7", help="problem indices within the split")
    ap.add_argument("--dim-cap", type=int, default=256, help="problems drawn above this dimension are set to it")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=2, help="x_T/noise draws for stochastic solvers")
    ap.add_argument("--ode-seeds", type=int, default=1, help="x_T draws for deterministic solvers")
    ap.add_argument("--only", default=None, help="comma list of solver labels to run (default all)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--before-after", nargs="+", default=None, metavar="JSON",
                    help="only write tune_defaults-before-after.md from saved sweeps (tuning and heldout)")
    args = ap.parse_args(argv)
    if args.before_after:
        md = before_after(args.before_after)
        with open(os.path.join(args.out, "tune_defaults-before-after.md"), "w") as fh:
            fh.write(md + "\n")
        print(md)
        return {}
    args.indices = [int(i) for i in args.indices.split(",") if i.strip()]
    if args.only:
        keep = set(args.only.split(","))
        global DETERMINISTIC, STOCHASTIC
        DETERMINISTIC = [c for c in DETERMINISTIC if c[0] in keep]
        STOCHASTIC = [c for c in STOCHASTIC if c[0] in keep]
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = sweep(args)
    md, verdicts = report(rows, args)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "tune_defaults" + ("" if args.split == "tuning" else f"-{args.split}"))
    result = {"meta": {"argv": sys.argv[1:] if argv is None else argv, "split": args.split, "indices": args.indices,
                       "samples": args.samples, "dim_cap": args.dim_cap, "nfe": list(NFES), "grids": list(GRIDS),
                       "elapsed_s": time.perf_counter() - t0},
              "verdicts": verdicts, "rows": rows}
    with open(stem + ".json", "w") as fh:
        json.dump(result, fh, indent=1)
    with open(stem + ".md", "w") as fh:
        fh.write(md + "\n")
    print(md.split("## Raw")[0])
    return result


if __name__ == "__main__":
    main()
