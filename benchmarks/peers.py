"""sdekit against the peer libraries on exact Gaussian-mixture problems.

Every library samples the same target (``GaussianMixture.random(d)`` under a VP or VE SDE)
from the same prior draw ``x_T``, driven by the exact model in the form it consumes (score,
Karras denoiser, or DDPM epsilon on its discrete schedule). For each run we record the
counted NFE, wall time, time inside the model, Fréchet distance to the exact distribution
(exact mean and covariance) and sliced W2 to an exact sample set of the same size. A run
belongs to NFE bucket ``b`` = the smallest budget ``>= its counted NFE``.

Outputs (``--out``, default ``benchmarks/results``): ``peers{-tag}.json`` (every run),
``peers{-tag}.md`` (best FD per library per bucket per problem, the exact-sample floor, and the
overhead table) and ``peers{-tag}_{problem}.png`` (log-log FD against NFE).

Examples::

    PYTHONPATH=. python benchmarks/peers.py --quick
    PYTHONPATH=. python benchmarks/peers.py --problems 2d-vp,2d-ve,64d-vp,64d-ve --samples 10000
    PYTHONPATH=. python benchmarks/peers.py --problems 3072d-vp:1000 --nfe 10,20,50 --tag 3072
    # sdekit's defaults and schedule="auto" columns on the held-out problems, merged into the peers' run
    PYTHONPATH=. python benchmarks/peers.py --split heldout --problems 2d-vp,64d-ve,256d-vp --samples 500 \
        --nfe 5,6,8,10,15,20,50 --seeds 3 --tolerances "" --no-overhead --sdekit defaults --libraries sdekit \
        --auto unipc,dpmpp_3m,dpmpp_2m --tag heldout-sdekit
    PYTHONPATH=. python benchmarks/peers.py --render benchmarks/results/peers-heldout.json \
        benchmarks/results/peers-heldout-sdekit.json

Peers are optional: ``pip install k-diffusion --no-deps``, ``pip install diffusers`` (torchsde,
torchdiffeq and scipy are sdekit's own test dependencies).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from types import SimpleNamespace
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks._peers` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._peers import MODULES, ours  # noqa: E402
from benchmarks._peers.common import Oracle, Problem, RunSpec, make_problem  # noqa: E402
from sdekit.metrics import mode_flips, ode_map_error, sliced_wasserstein  # noqa: E402

DEFAULT_NFE = [5, 6, 8, 10, 15, 20, 50, 100, 200, 500, 1000]
DEFAULT_TOLS = [1e-2, 1e-3, 1e-4, 1e-5]


def parse_problems(text: str, samples: int) -> list[tuple[int, str, int]]:
    """``"2d-vp,64d-ve:5000"`` -> ``[(2, "vp", samples), (64, "ve", 5000)]``."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, n = item.partition(":")
        dim, _, sde = name.partition("d-")
        if not dim.isdigit() or sde not in ("vp", "ve"):
            raise ValueError(f"--problems items look like '64d-vp' or '3072d-ve:2000', got {item!r}")
        out.append((int(dim), sde, int(n) if n else samples))
    if not out:
        raise ValueError("--problems is empty")
    return out


def bucket_of(nfe: int, budgets: list[int]) -> int | None:
    """The smallest budget that the run fits in (``None`` if it fits in none)."""
    fits = [b for b in sorted(budgets) if nfe <= b]
    return fits[0] if fits else None


def execute(spec: RunSpec, p: Problem, x_T: torch.Tensor, budgets: list[int], *, metrics: bool = True,
            seed: int | None = None, sw2: bool = True) -> dict:
    """Run one spec from ``x_T`` with noise seed ``seed`` (default: the problem's seed).

    Never raises: a failing run is recorded with its error.
    """
    oracle = Oracle(p)
    seed = p.seed if seed is None else seed
    rec: dict[str, Any] = {"problem": p.name, "library": spec.library, "method": spec.method,
                           "setting": spec.setting, "budget": spec.budget, "seed": seed,
                           "deterministic": spec.deterministic}
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            x = spec.run(oracle, x_T, seed)
        err = None
    except Exception as e:  # noqa: BLE001 - a failing peer is a result, not a crash
        x, err = None, f"{type(e).__name__}: {str(e)[:200]}"
    wall = time.perf_counter() - t0
    if "pilot_nfe" in spec.extra:  # a grid tuned before the run: its NFE is reported apart from the run's
        rec["pilot_nfe"] = spec.extra["pilot_nfe"]
    rec.update(nfe=oracle.nfe, wall_s=wall, model_s=oracle.time_in,
               overhead_ms_per_nfe=1e3 * (wall - oracle.time_in) / max(oracle.nfe, 1),
               bucket=bucket_of(oracle.nfe, budgets), error=err)
    finite = x is not None and bool(torch.isfinite(x).all())
    rec["finite"] = finite
    if x is not None and not finite and err is None:
        rec["error"] = "non-finite samples"
    if metrics and finite:
        x = x.reshape(x.shape[0], -1)
        rec["fd"] = p.fd(x)
        rec["sw2"] = sliced_wasserstein(x, p.reference) if sw2 else float("nan")
        rec["fd_proj"] = p.fd_proj(x) if p.fd_proj is not None else float("nan")
        if spec.deterministic:  # against the float64 PF-ODE solution from the same x_T
            ref = p.ode_reference(x_T)
            rec["ode"] = ode_map_error(x, ref.reshape(x.shape), p.mix.data_std())
            rec["flips"] = mode_flips(p.mix, x, ref.reshape(x.shape))
        else:
            rec["ode"] = rec["flips"] = float("nan")
    else:
        rec["fd"] = rec["sw2"] = rec["fd_proj"] = rec["ode"] = rec["flips"] = float("nan")
    return rec


def seed_means(records: list[dict]) -> list[dict]:
    """One row per configuration (problem, library, method, setting): each metric averaged over its seeds.

    A configuration counts only if every seed finished with finite samples; its NFE is the largest
    counted over the seeds (adaptive runs may differ from seed to seed).
    """
    groups: dict[tuple, dict] = {}
    for r in records:  # one run per seed: a configuration sized alike for two budgets ran twice per seed
        groups.setdefault((r["problem"], r["library"], r["method"], r["setting"]), {}).setdefault(r.get("seed"), r)
    groups = {k: list(v.values()) for k, v in groups.items()}
    out = []
    for rs in groups.values():
        ok = all(r["finite"] and math.isfinite(r["fd"]) for r in rs)
        row = dict(rs[0])
        row["nfe"] = max(r["nfe"] for r in rs)
        row["bucket"] = max((r["bucket"] for r in rs), key=lambda b: float("inf") if b is None else b)
        row["seeds"] = len(rs)
        for key in METRICS:
            vals = [r.get(key, float("nan")) for r in rs]
            mean = sum(vals) / len(vals) if ok else float("nan")
            row[key] = mean
            row[key + "_se"] = (math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1) / len(vals))
                                if ok and len(vals) > 1 else float("nan"))
        row["fd_per_seed"] = [r["fd"] for r in rs]
        row["finite"] = ok
        out.append(row)
    return out


#: per-run metrics: Fréchet distance, sliced W2, FD projected to 32 dimensions (d > 256 only), and for
#: deterministic samplers the ODE-map error (RMS distance to the float64 PF-ODE solution from the same
#: x_T, over the data std) with the number of samples in another mixture component (flips)
METRICS = {"fd": "FD", "sw2": "sliced W2", "fd_proj": "FD in 32 projected dimensions",
           "ode": "ODE-map error (deterministic samplers)", "flips": "mode flips"}


def floor_of(problem: Problem, metric: str) -> float:
    """The exact-sample floor of ``metric`` (one of :data:`METRICS`) on ``problem``."""
    return {"fd": problem.floor_fd, "sw2": problem.floor_sw, "fd_proj": problem.floor_fd_proj,
            "ode": 0.0}[metric]


def best_table(records: list[dict], problem: Problem, budgets: list[int], libraries: list[str],
               metric: str = "fd") -> str:
    """Best seed-averaged ``metric`` per library per NFE bucket (see :func:`seed_means`)."""
    means = seed_means([r for r in records if r["problem"] == problem.name])
    rows = [r for r in means if r["bucket"] is not None and math.isfinite(r.get(metric, float("nan")))]
    libs = [lib for lib in libraries if any(r["library"] == lib for r in rows)]
    seeds = max((r["seeds"] for r in means), default=1)
    floor = floor_of(problem, metric)
    split = getattr(problem, "split", "fixed")
    where = ("fixed problem `GaussianMixture.random(dim)`, seed 0" if split == "fixed"
             else f"**{split}** split of `sdekit.testing.mixture_family`")
    floor_txt = "flips: mean samples in another component than the reference's" if metric == "ode" \
        else f"exact-sample floor = {floor:.4g}"
    lines = [f"### {problem.name}: {METRICS[metric]} ({where}; {problem.samples} samples, averaged over {seeds} "
             f"seed(s) of x_T and noise; {floor_txt})", "",
             "| NFE ≤ | " + " | ".join(libs) + " | sdekit / best peer |",
             "|---:|" + "---|" * len(libs) + "---:|"]
    for b in sorted(budgets):
        cells, best = [], {}
        for lib in libs:
            cand = [r for r in rows if r["library"] == lib and r["bucket"] == b]
            if not cand:
                cells.append("—")
                continue
            r = min(cand, key=lambda r: r[metric])
            best[lib] = r[metric]
            se = r.get(metric + "_se", float("nan"))
            flips = f", {r['flips']:.3g} flips" if metric == "ode" and math.isfinite(r.get("flips", math.nan)) else ""
            pilot = f", pilot {r['pilot_nfe']}" if r.get("pilot_nfe") is not None else ""
            cells.append(f"{r[metric]:.4g}{f' ± {se:.1g}' if math.isfinite(se) else ''} "
                         f"({r['method']}, {r['setting']}, {r['nfe']}{pilot}{flips})")
        peers = [v for k, v in best.items() if k != "sdekit"]
        ratio = f"{best['sdekit'] / min(peers):.3g}" if "sdekit" in best and peers and min(peers) > 0 else "—"
        lines.append(f"| {b} | " + " | ".join(cells) + f" | {ratio} |")
    nonfinite = sorted({f"{r['library']} {r['method']} ({r['setting']})" for r in records
                        if r["problem"] == problem.name and not r["finite"] and r.get("error")})
    if nonfinite:
        lines += ["", "Runs that failed or returned NaN/Inf: " + "; ".join(nonfinite)]
    return "\n".join(lines)


def summary_table(records: list[dict], problems: list, budgets: list[int], metric: str,
                  deterministic: bool | None = None) -> str:
    """Per NFE bucket: sdekit's best over the best peer's best, per problem and as a geometric mean.

    ``deterministic``: only deterministic (``True``) or stochastic (``False``) runs; ``None``: all.
    """
    def best(rows, lib, b):
        c = [r[metric] for r in rows if r["bucket"] == b and (r["library"] == "sdekit") == (lib == "sdekit")
             and math.isfinite(r.get(metric, math.nan))]
        return min(c) if c else math.nan

    kind = {True: "deterministic", False: "stochastic", None: "all"}[deterministic]
    lines = [f"### Summary: {METRICS[metric]}, {kind} samplers — sdekit's best / the best peer's best "
             "(< 1: sdekit ahead)", "", "| NFE ≤ | " + " | ".join(p.name for p in problems) + " | geometric mean |",
             "|---:|" + "---:|" * (len(problems) + 1)]
    for b in sorted(budgets):
        cells, logs = [], []
        for p in problems:
            rows = [r for r in seed_means([r for r in records if r["problem"] == p.name])
                    if deterministic is None or bool(r.get("deterministic")) == deterministic]
            ours_, peer = best(rows, "sdekit", b), best(rows, "peer", b)
            if math.isfinite(ours_) and math.isfinite(peer) and peer > 0 and ours_ > 0:
                cells.append(f"{ours_ / peer:.3g}")
                logs.append(math.log(ours_ / peer))
            else:
                cells.append("—")
        gm = f"{math.exp(sum(logs) / len(logs)):.3g}" if logs else "—"
        lines.append(f"| {b} | " + " | ".join(cells) + f" | {gm} |")
    return "\n".join(lines)


def auto_table(records: list[dict], problems: list, budgets: list[int]) -> str:
    """Deterministic samplers per NFE bucket: sdekit's best default configuration, its best ``schedule="auto"``
    one (a grid tuned before the run on a separate pilot batch: ``pilot N`` score evaluations, not in the
    run's NFE) and the best peer's best, by ODE-map error [mean flips] and FD ± s.e.; then the geometric
    means over problems of the ratios to the best peer, and whether auto at the smallest budget beats every
    peer at the bucket that is twice as large."""
    def best(rows, keep, b, metric):
        c = [r for r in rows if r["bucket"] == b and keep(r) and math.isfinite(r.get(metric, math.nan))]
        return min(c, key=lambda r: r[metric]) if c else None

    def shifted(r):
        return r["setting"].startswith((ours.AUTO_SHIFT_LABEL + " ", ours.AUTO_SHIFT_LABEL + "+"))

    kinds = {"sdekit default": lambda r: r["library"] == "sdekit" and r.get("pilot_nfe") is None,
             "sdekit auto": lambda r: r["library"] == "sdekit" and r.get("pilot_nfe") is not None and not shifted(r),
             "sdekit auto+shift": lambda r: r["library"] == "sdekit" and r.get("pilot_nfe") is not None and shifted(r),
             "best peer": lambda r: r["library"] != "sdekit"}
    if not any(kinds["sdekit auto+shift"](r) for r in records):  # (tables of runs without --auto-shift unchanged)
        del kinds["sdekit auto+shift"]
    autos = [k for k in kinds if k.startswith("sdekit auto")]
    pilots = " or ".join(sorted({m.group(1) for r in records if r.get("pilot_nfe") is not None
                                 for m in [re.search(r"pilot_batch=(\d+)", r["setting"])] if m}, key=int)) \
        or str(ours.AUTO_PILOT_BATCH)
    means = {p.name: [r for r in seed_means([r for r in records if r["problem"] == p.name]) if r.get("deterministic")]
             for p in problems}

    def cell(r, metric):
        if r is None:
            return "—"
        se = r.get(metric + "_se", math.nan)
        extra = f" [{r['flips']:.3g}]" if metric == "ode" else (f" ± {se:.2g}" if math.isfinite(se) else "")
        who = r["method"] if r["library"] == "sdekit" else f"{r['library']} {r['method']}"
        pilot = f", pilot {r['pilot_nfe']}" if r.get("pilot_nfe") is not None else ""
        return f"{r[metric]:.3g}{extra} ({who}, {r['nfe']}{pilot})"

    lines = ["### schedule=\"auto\": sdekit default vs auto vs the best peer (deterministic samplers)", "",
             "Cell: ODE-map error [mean flips] / FD ± s.e. (method, counted NFE, pilot NFE of the auto grid, tuned "
             f"once per problem and budget on {pilots} prior samples that are not the evaluated ones).", "",
             "| NFE ≤ | problem | " + " | ".join(kinds) + " |", "|---:|---|" + "---|" * len(kinds)]
    ratios: dict[tuple, list[float]] = {}
    for b in sorted(budgets):
        for p in problems:
            rows = means[p.name]
            cells = []
            for keep in kinds.values():
                o, f = best(rows, keep, b, "ode"), best(rows, keep, b, "fd")
                cells.append(f"{cell(o, 'ode')} / {cell(f, 'fd')}")
            lines.append(f"| {b} | {p.name} | " + " | ".join(cells) + " |")
            for metric in ("ode", "fd"):
                peer = best(rows, kinds["best peer"], b, metric)
                for kind in ("sdekit default", *autos):
                    r = best(rows, kinds[kind], b, metric)
                    if r is not None and peer is not None and peer[metric] > 0 and r[metric] > 0:
                        ratios.setdefault((b, kind, metric), []).append(r[metric] / peer[metric])
    lines += ["", "Geometric mean over problems of sdekit / best peer (< 1: sdekit ahead):", "",
              "| NFE ≤ | " + " | ".join(f"{k.removeprefix('sdekit ')} {m}" for m in ("ODE", "FD")
                                         for k in ("sdekit default", *autos)) + " |",
              "|---:|" + "---:|" * (2 * (1 + len(autos)))]
    for b in sorted(budgets):
        def gm(kind, metric, b=b):
            v = ratios.get((b, kind, metric), [])
            return f"{math.exp(sum(map(math.log, v)) / len(v)):.3g}" if len(v) == len(problems) else "—"
        lines.append(f"| {b} | " + " | ".join(gm(k, m) for m in ("ode", "fd") for k in ("sdekit default", *autos))
                     + " |")
    lo = min(budgets)
    if 2 * lo in budgets:
        for kind in autos:
            lines += ["", f"Does {kind} at {lo} NFE beat every peer at {2 * lo} NFE?", ""]
            for p in problems:
                rows, verdict = means[p.name], []
                for metric in ("ode", "fd"):
                    a, peer = best(rows, kinds[kind], lo, metric), best(rows, kinds["best peer"], 2 * lo, metric)
                    if a is not None and peer is not None:
                        verdict.append(f"{METRICS[metric].split(' (')[0]} {a[metric]:.3g} vs {peer[metric]:.3g} "
                                       f"({'yes' if a[metric] < peer[metric] else 'no'})")
                lines.append(f"- {p.name}: " + "; ".join(verdict))
    return "\n".join(lines)


def overhead_table(records: list[dict]) -> str:
    lines = ["| library | method | setting | NFE | wall (s) | in model (s) | overhead (ms / NFE) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in sorted(records, key=lambda r: (r["library"], r["overhead_ms_per_nfe"])):
        lines.append(f"| {r['library']} | {r['method']} | {r['setting']} | {r['nfe']} | {r['wall_s']:.3f} | "
                     f"{r['model_s']:.3f} | {r['overhead_ms_per_nfe']:.3f} |")
    cheapest = {}
    for r in records:
        if r["error"] is None:
            lib = r["library"]
            cheapest[lib] = min(cheapest.get(lib, float("inf")), r["overhead_ms_per_nfe"])
    lines += ["", "Cheapest per library (ms / NFE): " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                                   sorted(cheapest.items(), key=lambda kv: kv[1]))]
    return "\n".join(lines)


def plot(records: list[dict], problem: Problem, budgets: list[int], path: str, metric: str = "fd") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    rows = [r for r in seed_means([r for r in records if r["problem"] == problem.name])
            if math.isfinite(r.get(metric, float("nan"))) and r[metric] > 0]
    for lib in dict.fromkeys(r["library"] for r in rows):
        mine = [r for r in rows if r["library"] == lib]
        pts = ax.scatter([r["nfe"] for r in mine], [r[metric] for r in mine], s=6, alpha=0.25)
        env = []
        for b in sorted(budgets):
            c = [r[metric] for r in mine if r["bucket"] == b]
            if c:
                env.append((b, min(c)))
        if env:
            ax.plot(*zip(*env), "-o", ms=4, color=pts.get_facecolor()[0][:3], label=lib,
                    lw=2.5 if lib == "sdekit" else 1.2)
    floor = floor_of(problem, metric)
    ax.axhline(floor, ls="--", color="k", lw=1, label="exact samples")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE (counted)")
    ax.set_ylabel(f"{METRICS[metric]} to the exact distribution")
    ax.set_title(f"{problem.name}, {problem.samples} samples (lines: best per NFE bucket)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", default=None,
                    help="comma list of {dim}d-{vp|ve}[:samples], e.g. 2d-vp,3072d-ve:1000 "
                         "(default 2d-vp,2d-ve,64d-vp,64d-ve)")
    ap.add_argument("--nfe", default=None, help="NFE budgets (comma list; default 10,20,50,100,200,500,1000)")
    ap.add_argument("--samples", type=int, default=None,
                    help="samples per problem unless given per problem (default 10000)")
    ap.add_argument("--tolerances", default=",".join(map(str, DEFAULT_TOLS)), help="rtol=atol of adaptive runs")
    ap.add_argument("--libraries", default=",".join(MODULES), help="subset of " + ",".join(MODULES))
    ap.add_argument("--solvers", default=None, help="restrict sdekit to these solver names (comma list)")
    ap.add_argument("--overhead", action=argparse.BooleanOptionalAction, default=True,
                    help="measure solver overhead per NFE on a 10,000x64 float32 state")
    ap.add_argument("--overhead-samples", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="tiny smoke-test run (2-D, 400 samples, NFE 10,20)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids OpenMP thrash on a shared box)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=("tuning", "heldout"), default=None,
                    help="draw the problems from this split of sdekit.testing.mixture_family (problem item k is "
                         "family index k of --indices, at the item's dimension); default: the fixed "
                         "GaussianMixture.random(dim) problems")
    ap.add_argument("--indices", default=None, help="family indices of the --problems items (default 0,1,2,...)")
    ap.add_argument("--sdekit", choices=("grids", "defaults"), default="grids",
                    help="sdekit configurations: every solver on its default and the --schedules grids, or only "
                         "each solver's defaults (what sample(score, sde, solver) does)")
    ap.add_argument("--sdekit-config", action="append", default=[], metavar="SOLVER[:SCHEDULE]",
                    help="add an sdekit configuration (repeatable), e.g. unipc:logsnr")
    ap.add_argument("--auto", default=None, metavar="SOLVERS",
                    help="add schedule='auto' configurations of these fixed-step solvers (comma list, e.g. "
                         "unipc,dpmpp_3m): the grid is tuned by sdekit.grids.tune on a separate pilot batch (256 "
                         "prior samples, seed ours.AUTO_PILOT_SEED, not the evaluated x_T); the pilot's NFE is "
                         "shown apart ('pilot N'), never in the run's NFE")
    ap.add_argument("--auto-shift", default=None, metavar="SOLVERS",
                    help="as --auto, with the model's evaluation times tuned too (sdekit.grids.tune(shift=True))")
    ap.add_argument("--auto-pilot-batch", type=int, default=ours.AUTO_PILOT_BATCH, metavar="N",
                    help="pilot samples of the --auto and --auto-shift configurations (default: tune's 256)")
    ap.add_argument("--auto-free-end", action=argparse.BooleanOptionalAction, default=None,
                    help="let the --auto and --auto-shift grids stop short of eps (sdekit.grids.tune(free_end=...); "
                         "default: tune's default); their setting reads 'auto+end' / 'auto+shift+end' when they may")
    ap.add_argument("--auto-nfe", default=None, metavar="NFES",
                    help="budgets of the --auto configurations (default: every --nfe budget)")
    ap.add_argument("--seeds", type=int, default=None,
                    help="run every configuration from this many x_T draws (and noise seeds); tables average FD "
                         "over them, so that a ranking is not one draw's luck (default 3; 1 with --quick)")
    ap.add_argument("--match", default=None,
                    help="run (or, with --render, show) only the configurations whose 'library:method:setting' matches "
                         "this regular expression")
    ap.add_argument("--sw2", action=argparse.BooleanOptionalAction, default=True,
                    help="also compute sliced W2 to an exact sample set (a sort per projection; slow at 5000+ samples)")
    ap.add_argument("--schedules", default=None,
                    help="sdekit time grids besides each solver's default (comma list, default logsnr,karras,uniform;"
                         " 'default' for none)")
    ap.add_argument("--tag", default="", help="suffix of the output file names")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--render", nargs="+", default=None, metavar="JSON",
                    help="only rebuild the tables and plots from saved peers*.json files: runs of later files "
                         "replace those of earlier ones with the same problem, library, method, setting and seed "
                         "(re-running one library after a change); written next to the first, or to --tag")
    args = ap.parse_args(argv)
    if args.render:
        saved = merge_results(args.render)
        if args.match:  # render only the matching configurations
            keep = re.compile(args.match)
            saved["runs"] = [r for r in saved["runs"] if keep.search(f"{r['library']}:{r['method']}:{r['setting']}")]
        stem = (os.path.join(args.out, "peers-" + args.tag) if args.tag
                else args.render[0].removesuffix(".json"))
        if args.tag:
            os.makedirs(args.out, exist_ok=True)
            with open(stem + ".json", "w") as fh:
                json.dump(saved, fh, indent=1)
        report(saved, stem, overhead_samples=args.overhead_samples if saved.get("overhead") else None)
        return saved

    if args.quick:  # tiny defaults; anything given explicitly still wins
        args.problems, args.samples = args.problems or "2d-vp,2d-ve", args.samples or 400
        args.nfe, args.tolerances = args.nfe or "10,20", "1e-2"
        args.overhead_samples, args.tag = 400, args.tag or "quick"
    args.seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    args.problems = args.problems or "2d-vp,2d-ve,64d-vp,64d-ve"
    args.samples = args.samples or 10_000
    args.nfe = args.nfe or ",".join(map(str, DEFAULT_NFE))
    torch.set_num_threads(args.threads)
    budgets = sorted({int(b) for b in args.nfe.split(",") if b.strip()})
    if not budgets or min(budgets) < 1:
        raise ValueError(f"--nfe must list positive budgets, got {args.nfe!r}")
    tols = [float(t) for t in args.tolerances.split(",") if t.strip()]
    wanted = [s.strip() for s in args.libraries.split(",") if s.strip()]
    bad = [w for w in wanted if w not in MODULES]
    if bad:
        raise ValueError(f"unknown libraries {bad}; valid: {', '.join(MODULES)}")
    libs = [lib for lib in wanted if MODULES[lib].available()]
    skipped = [lib for lib in wanted if lib not in libs]
    if skipped:
        print(f"[peers] not installed, skipped: {', '.join(skipped)}", file=sys.stderr)
    solvers = args.solvers.split(",") if args.solvers else None
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    match = re.compile(args.match) if args.match else None
    schedules = None
    if args.schedules is not None:
        schedules = tuple(s.strip() for s in args.schedules.split(",") if s.strip() and s.strip() != "default")
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "peers" + (f"-{args.tag}" if args.tag else ""))

    records: list[dict] = []
    problems: list[Problem] = []
    t_start = time.perf_counter()
    items = parse_problems(args.problems, args.samples)
    indices = [int(i) for i in args.indices.split(",")] if args.indices else list(range(len(items)))
    if len(indices) != len(items):
        raise ValueError(f"--indices must give one family index per --problems item, got {len(indices)} for "
                         f"{len(items)}")
    for c in args.sdekit_config:
        solver, _, sched = c.partition(":")
        ours.EXTRA_CONFIGS.append(ours.Config(solver, sched or None))
    configs = ours.default_configs(solvers) if args.sdekit == "defaults" else None
    auto_budgets = None
    if args.auto or args.auto_shift:  # added to this run's configurations (not to ours.EXTRA_CONFIGS)
        if configs is None:
            configs = ours.grid_configs(solvers, ours.SCHEDULES if schedules is None else schedules)
        for names, shift in ((args.auto, False), (args.auto_shift, True)):
            configs = configs + ours.auto_configs([s.strip() for s in (names or "").split(",") if s.strip()],
                                                  shift=shift, pilot_batch=args.auto_pilot_batch,
                                                  free_end=args.auto_free_end)
        if args.auto_nfe:
            auto_budgets = {int(b) for b in args.auto_nfe.split(",") if b.strip()}
            if not auto_budgets <= set(budgets):
                raise ValueError(f"--auto-nfe must be a subset of --nfe, got {args.auto_nfe!r}")
    for (dim, sde_name, n), index in zip(items, indices):
        p = make_problem(dim, sde_name, n, seed=args.seed, split=args.split, index=index)
        problems.append(p)
        print(f"[peers] {p.name}: {n} samples, floor FD {p.floor_fd:.4g}", file=sys.stderr)
        for k in range(args.seeds):
            seed = p.seed + 1000 * k
            x_T = p.x_T(seed)
            for lib in libs:
                mod = MODULES[lib]
                kw: dict[str, Any] = {"tolerances": tols}
                if lib == "sdekit":
                    kw["solvers"] = solvers
                    kw["configs"] = configs
                    if schedules is not None:
                        kw["schedules"] = schedules
                for spec in mod.specs(p, budgets, **kw):
                    if match is not None and not match.search(f"{spec.library}:{spec.method}:{spec.setting}"):
                        continue
                    if (auto_budgets is not None and callable(spec.extra.get("config", ours.Config("")).schedule)
                            and spec.budget not in auto_budgets):
                        continue
                    rec = execute(spec, p, x_T, budgets, seed=seed, sw2=args.sw2)
                    records.append(rec)
                    print(f"[peers] {p.name} s{k} {lib:<12} {spec.method:<22} {spec.setting:<40} "
                          f"nfe={rec['nfe']:<5} fd={rec['fd']:.4g} ode={rec['ode']:.3g} wall={rec['wall_s']:.2f}s"
                          f"{'  ' + rec['error'] if rec['error'] else ''}", file=sys.stderr, flush=True)

    overhead: list[dict] = []
    if args.overhead:
        p = make_problem(64, "vp", args.overhead_samples, seed=args.seed)
        x_T = p.x_T()
        for lib in libs:
            for spec in MODULES[lib].overhead_specs(p, 100 if not args.quick else 10):
                runs = [execute(spec, p, x_T, budgets, metrics=False) for _ in range(2)]
                best = min(runs, key=lambda r: r["overhead_ms_per_nfe"])
                overhead.append(best)
                print(f"[peers] overhead {lib:<12} {spec.method:<20} {best['overhead_ms_per_nfe']:.3f} ms/NFE",
                      file=sys.stderr, flush=True)

    meta = {"argv": sys.argv[1:] if argv is None else argv, "budgets": budgets, "tolerances": tols,
            "seeds": args.seeds, "split": args.split or "fixed",
            "libraries": libs, "skipped": skipped, "threads": args.threads, "torch": torch.__version__,
            "elapsed_s": time.perf_counter() - t_start,
            "problems": [{"name": p.name, "dim": p.dim, "sde": repr(p.sde), "samples": p.samples, "split": p.split,
                          "floor_fd": p.floor_fd, "floor_sw2": p.floor_sw, "floor_fd_proj": p.floor_fd_proj}
                         for p in problems]}
    result = {"meta": meta, "runs": records, "overhead": overhead}
    with open(stem + ".json", "w") as fh:
        json.dump(result, fh, indent=1)
    report(result, stem, overhead_samples=args.overhead_samples)
    return result


def merge_results(paths: list[str]) -> dict:
    """Load saved results; a run in a later file replaces the same configuration and seed of an earlier one."""
    merged: dict | None = None
    runs: dict[tuple, dict] = {}
    for path in paths:
        with open(path) as fh:
            res = json.load(fh)
        if merged is None:
            merged = res
        else:
            known = {q["name"] for q in merged["meta"]["problems"]}
            merged["meta"]["problems"] += [q for q in res["meta"]["problems"] if q["name"] not in known]
            merged["meta"]["libraries"] += [lib for lib in res["meta"]["libraries"]
                                            if lib not in merged["meta"]["libraries"]]
            merged["meta"]["budgets"] = sorted(set(merged["meta"]["budgets"]) | set(res["meta"]["budgets"]))
            merged["meta"].setdefault("merged_from", [paths[0]]).append(path)
            merged["overhead"] = merged.get("overhead", []) + res.get("overhead", [])
        for r in res["runs"]:
            runs[(r["problem"], r["library"], r["method"], r["setting"], r.get("seed"))] = r
    assert merged is not None
    merged["runs"] = list(runs.values())
    return merged


def report(result: dict, stem: str, *, overhead_samples: int | None = None) -> str:
    """Write ``{stem}.md`` (tables) and ``{stem}_{problem}.png`` (plots) from a run's result; return the markdown."""
    meta, records, overhead = result["meta"], result["runs"], result.get("overhead", [])
    budgets, libs = meta["budgets"], meta["libraries"]
    problems = [SimpleNamespace(**{"floor_fd_proj": float("nan"), "split": "fixed", **q}) for q in meta["problems"]]
    for q in problems:
        q.floor_sw = q.floor_sw2
    splits = sorted({q.get("split", "fixed") for q in meta["problems"]})
    md = ["# sdekit vs peers: best Fréchet distance per library per NFE bucket", "",
          "Problems from: " + ", ".join("the fixed `GaussianMixture.random(dim)` problems (seed 0, which the "
                                        "pre-issue-12 defaults were tuned on)" if s == "fixed" else
                                        f"the **{s}** split of `sdekit.testing.mixture_family`"
                                        + (" (never used to choose defaults)" if s == "heldout" else "")
                                        for s in splits) + ".", "",
          "Cell: best value (method, setting, counted NFE) among configurations with counted NFE ≤ the bucket and > "
          "the previous bucket; each configuration's value is its mean over the seeds, ± the standard error of "
          "that mean when there are several (every run of a problem and seed starts from the same x_T). "
          "Wall-clock numbers come from a 2-core CPU box, one torch thread.", ""]
    for p in problems:
        md += [best_table(records, p, budgets, libs), ""]
        for metric in ("ode", "fd_proj", "sw2"):  # the extra tables, where that metric was computed
            if any(r["problem"] == p.name and math.isfinite(r.get(metric, float("nan"))) for r in records):
                md += [best_table(records, p, budgets, libs, metric), ""]
        # in high dimension the full FD of a few thousand samples misranks samplers: plot the projected FD
        projected = any(r["problem"] == p.name and math.isfinite(r.get("fd_proj", float("nan"))) for r in records)
        plot(records, p, budgets, f"{stem}_{p.name}.png", "fd_proj" if projected else "fd")
    if len(problems) > 1:
        md += ["## Summary over problems", ""]
        for metric, det in (("ode", True), ("fd", True), ("fd", False), ("sw2", False)):
            if any(math.isfinite(r.get(metric, math.nan)) for r in records):
                md += [summary_table(records, problems, budgets, metric, det), ""]
    if any(r.get("pilot_nfe") is not None for r in records):
        md += ["## sdekit with schedule=\"auto\"", "", auto_table(records, problems, budgets), ""]
    if overhead:
        md += [f"## Solver overhead per NFE (wall minus time in the model), {overhead_samples or ''}x64 float32, "
               "VP, ~100 NFE", "", overhead_table(overhead), ""]
    with open(stem + ".md", "w") as fh:
        fh.write("\n".join(md))
    print("\n".join(md))
    return "\n".join(md)


if __name__ == "__main__":
    main()
