"""Low-NFE stochastic sampling (issue 12, item 5): candidate defaults of sdekit's stochastic
multistep solvers against k-diffusion's and diffusers' stochastic samplers.

A thin layer over ``benchmarks/peers.py`` (same problems, x_T draws, NFE counting and metrics):
it adds the sdekit configurations of :data:`CANDIDATES` (``dpmpp_2m_sde`` in its two
second-order forms, with and without the final denoising step counted as the last step, and
``dpmpp_3m_sde`` in its two third-order forms, each on every grid) to the peers' run; every other
argument is ``peers.py``'s. Choose on ``--split tuning``, check on ``--split heldout``.

Example (the runs behind ``benchmarks/results/stoch-{tuning,heldout}.md``)::

    PYTHONPATH=. python benchmarks/stoch_defaults.py --split tuning --problems 2d-vp,64d-ve,256d-vp \\
        --samples 500 --nfe 5,6,8,10 --seeds 3 --tolerances '' --no-overhead --sdekit defaults \\
        --libraries sdekit,k-diffusion,diffusers --solvers dpmpp_2m_sde,dpmpp_3m_sde \\
        --match "$(python benchmarks/stoch_defaults.py --peer-regex)" --tag stoch-tuning

``--eta`` runs :func:`eta_candidates` instead (``benchmarks/results/stoch-eta-tuning.md``).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import math
import os
import re
import sys
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import peers  # noqa: E402
from benchmarks._peers import ours  # noqa: E402

GRIDS = ("karras", "logsnr", "uniform", "snr_power")
#: the stochastic samplers of the peers (k-diffusion's and diffusers' SDE/ancestral methods) and every sdekit run
PEER_REGEX = (r"^(sdekit:|k-diffusion:(dpmpp_2m_sde|dpmpp_3m_sde|dpmpp_sde|euler_ancestral|dpmpp_2s_ancestral):"
              r"|diffusers:sde-dpmsolver)")


def candidates() -> list[ours.Config]:
    """Every form and grid of ``dpmpp_2m_sde`` and ``dpmpp_3m_sde`` (the solvers' defaults excluded:
    ``--sdekit defaults`` runs those)."""
    out = []
    for grid, st, cd in itertools.product(GRIDS, ("heun", "midpoint"), (False, True)):
        out.append(ours.Config("dpmpp_2m_sde", grid, {"solver_type": st, "count_denoise": cd}))
    for grid, form in itertools.product(GRIDS, ("exact", "dpm-solver")):
        out.append(ours.Config("dpmpp_3m_sde", grid, {"third_order": form}))
    return out


def eta_candidates() -> list[ours.Config]:
    """``dpmpp_2m_sde`` with ``eta`` 0.25, 0.5, 0.75 in its default form (``logsnr``, midpoint, counting the
    denoising step) and its old one (``karras``, heun, not counting it): with an exact score the noise
    has nothing to correct, so these exact-mixture problems favour small ``eta`` -- a study, not a default."""
    out = []
    for eta in (0.25, 0.5, 0.75):
        out.append(ours.Config("dpmpp_2m_sde", "logsnr", {"eta": eta}))
        out.append(ours.Config("dpmpp_2m_sde", "karras", {"eta": eta, "solver_type": "heun", "count_denoise": False}))
    return out


#: (label, configuration key ``library:method:setting`` without the step count) of the summary's sdekit rows;
#: the new default is the explicit candidate in runs made before it became the default
AFTER_ALIASES = {"sdekit:dpmpp_2m_sde:logsnr": "sdekit:dpmpp_2m_sde:logsnr solver_type=midpoint count_denoise=True"}
BEFORE_AFTER = [("dpmpp_2m_sde default (after)", "sdekit:dpmpp_2m_sde:logsnr"),
                ("dpmpp_2m_sde before (karras, heun, count_denoise=False)",
                 "sdekit:dpmpp_2m_sde:karras solver_type=heun count_denoise=False"),
                ("dpmpp_3m_sde default (snr_power, unchanged)", "sdekit:dpmpp_3m_sde:snr_power")]


def _cells(runs: list[dict], metric: str) -> dict[tuple[str, str, int], list[float]]:
    """``(config key, problem, budget) -> [metric per seed]`` of the stochastic fixed-budget runs
    (FD in 32 projected dimensions where the problem has one)."""
    out: dict[tuple[str, str, int], list[float]] = collections.defaultdict(list)
    for r in runs:
        if r["deterministic"] or r["budget"] is None or not r["finite"]:
            continue
        v = r["sw2"] if metric == "sw2" else (r["fd_proj"] if r["fd_proj"] == r["fd_proj"] else r["fd"])
        key = f"{r['library']}:{r['method']}:" + re.sub(r" (n|steps)=\d+", "", r["setting"])
        out[(key, r["problem"], r["budget"])].append(v)
    for short, long in AFTER_ALIASES.items():
        for (key, p, b), v in list(out.items()):
            if key == long and (short, p, b) not in out:
                out[(short, p, b)] = v
    return out


def summary(path: str, split: str) -> str:
    """Markdown tables of a run: per problem and NFE, mean ± s.e. over seeds of the before/after sdekit
    defaults, sdekit's best default, and each peer's best configuration; then per NFE, geometric means
    over the problems against the single peer configuration with the lowest geometric mean."""
    with open(path) as fh:
        runs = json.load(fh)["runs"]
    lines = [f"Split: **{split}** (`{os.path.basename(path)}`). FD: Fréchet distance to the exact mixture "
             "(32 projected dimensions for d > 256); mean ± s.e. over the seeds; SW2: sliced W2 (mean).", ""]
    for metric in ("fd", "sw2"):
        cells = _cells(runs, metric)
        mean = {k: sum(v) / len(v) for k, v in cells.items()}
        se = {k: (math.sqrt(sum((x - mean[k]) ** 2 for x in v) / (len(v) - 1) / len(v)) if len(v) > 1 else 0.0)
              for k, v in cells.items()}
        problems = sorted({k[1] for k in mean})
        budgets = sorted({k[2] for k in mean})
        configs = sorted({k[0] for k in mean})
        defaults = [key for _, key in BEFORE_AFTER if key != BEFORE_AFTER[1][1]]
        lines += [f"### {metric.upper()} per problem", "",
                  "| problem | NFE | " + " | ".join(lbl for lbl, _ in BEFORE_AFTER)
                  + " | best k-diffusion | best diffusers | sdekit best default / best peer |",
                  "|---|---:|" + "---|" * (len(BEFORE_AFTER) + 2) + "---:|"]
        for p in problems:
            for b in budgets:
                row = [p, str(b)]
                for _, key in BEFORE_AFTER:
                    k = (key, p, b)
                    row.append(f"{mean[k]:.4g} ± {se[k]:.2g}" if k in mean else "-")
                best_peer = math.inf
                for lib in ("k-diffusion", "diffusers"):
                    cand = [(mean[(c, p, b)], c) for c in configs if c.startswith(lib + ":") and (c, p, b) in mean]
                    if cand:
                        v, c = min(cand)
                        best_peer = min(best_peer, v)
                        row.append(f"{v:.4g} ± {se[(c, p, b)]:.2g} ({c.split(':', 1)[1]})")
                    else:
                        row.append("-")
                ours_best = min((mean[(d, p, b)] for d in defaults if (d, p, b) in mean), default=math.nan)
                row.append(f"{ours_best / best_peer:.2f}")
                lines.append("| " + " | ".join(row) + " |")
        lines += ["", f"### {metric.upper()}: geometric mean over the {len(problems)} problems", "",
                  "| NFE | " + " | ".join(lbl for lbl, _ in BEFORE_AFTER)
                  + " | best peer configuration | sdekit best default / best peer |",
                  "|---:|" + "---|" * (len(BEFORE_AFTER) + 1) + "---:|"]

        def gm(c: str, b: int, mean: dict = mean, problems: list = problems) -> float:
            vals = [mean.get((c, p, b)) for p in problems]
            return math.exp(sum(map(math.log, vals)) / len(vals)) if None not in vals else math.nan

        for b in budgets:
            peer = min(((gm(c, b), c) for c in configs if not c.startswith("sdekit:") and gm(c, b) == gm(c, b)),
                       default=(math.nan, "-"))
            ours_gm = [gm(key, b) for _, key in BEFORE_AFTER]
            best = min(gm(d, b) for d in defaults)
            lines.append(f"| {b} | " + " | ".join(f"{v:.4g}" for v in ours_gm)
                         + f" | {peer[0]:.4g} ({peer[1]}) | {best / peer[0]:.2f} |")
        lines.append("")
    return "\n".join(lines)


def rank(paths: list[str], budgets: list[int], top: int = 8, only: str | None = None) -> str:
    """Markdown: sdekit's configurations ranked by the geometric mean, over the problems of ``paths`` and then
    over ``budgets``, of FD (and SW2) divided by the best sdekit configuration's on the same problem and
    budget (1 = best everywhere); ``max`` is the worst such ratio (the configuration's worst problem).
    ``only``: list just this solver's configurations (still against the best of all)."""
    runs: list[dict] = []
    for path in paths:
        with open(path) as fh:
            runs += [r for r in json.load(fh)["runs"] if r["library"] == "sdekit"]
    fd, sw = _cells(runs, "fd"), _cells(runs, "sw2")
    mean = {k: (sum(v) / len(v), sum(sw[k]) / len(sw[k])) for k, v in fd.items()}
    problems = sorted({k[1] for k in mean})
    best = {(p, b, i): min(v[i] for k, v in mean.items() if k[1] == p and k[2] == b)
            for p in problems for b in budgets for i in (0, 1)}

    def gm(xs: list[float]) -> float:
        return math.exp(sum(map(math.log, xs)) / len(xs))

    rows = []
    for c in sorted({k[0] for k in mean} - {long for long in AFTER_ALIASES.values()}):
        if any((c, p, b) not in mean for p in problems for b in budgets) or (
                only is not None and not c.startswith(f"sdekit:{only}:")):
            continue
        per = {b: [[mean[(c, p, b)][i] / best[(p, b, i)] for p in problems] for i in (0, 1)] for b in budgets}
        rows.append((gm([gm(per[b][0]) for b in budgets]), gm([gm(per[b][1]) for b in budgets]), c, per))
    rows.sort()
    marked = {key for _, key in BEFORE_AFTER}
    lines = [f"{len(problems)} problems: {', '.join(problems)}; NFE {', '.join(map(str, budgets))}.", "",
             "| configuration | FD score | SW2 score | " + " | ".join(f"FD NFE {b} (max)" for b in budgets) + " |",
             "|---|---:|---:|" + "---:|" * len(budgets)]
    for i, (f, w, c, per) in enumerate(rows):
        if i < top or c in marked or only is not None:
            name = f"**{c}**" if c in marked else c
            lines.append(f"| {name} | {f:.3f} | {w:.3f} | "
                         + " | ".join(f"{gm(per[b][0]):.2f} ({max(per[b][0]):.0f})" for b in budgets) + " |")
    return "\n".join(lines + [""])


def diffusers_grid(p: Any, budget: int, solver: Any) -> tuple[torch.Tensor, int]:
    """A :class:`~benchmarks._peers.ours.Config` schedule: the times of diffusers' ``budget`` timesteps
    (``timestep_spacing="linspace"``: ``round(999 (n - k) / n)`` on the benchmark's 1000-step chain, whose
    step ``i`` is ``t = eps + (T - eps) i / 999``), so the final denoising starts from ``t ~ T / n``;
    no pilot (0 extra NFE)."""
    k = torch.arange(budget, dtype=torch.float64)
    steps = torch.round(999 * (budget - k) / budget) / 999
    return p.sde.eps + (p.sde.T - p.sde.eps) * steps, 0


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--peer-regex"]:
        print(PEER_REGEX)
        return {}
    if argv and argv[0] == "--rank":  # --rank NFES [--only SOLVER] JSON [JSON ...]: rank sdekit's saved configurations
        only = argv[3] if len(argv) > 3 and argv[2] == "--only" else None
        print(rank(argv[4:] if only else argv[2:], [int(b) for b in argv[1].split(",")], only=only))
        return {}
    if argv and argv[0] == "--summary":  # --summary JSON SPLIT: print the markdown tables of a saved run
        ap = argparse.ArgumentParser(prog="stoch_defaults.py --summary")
        ap.add_argument("json")
        ap.add_argument("split", choices=("tuning", "heldout"))
        args = ap.parse_args(argv[1:])
        print(summary(args.json, args.split))
        return {}
    if "--diffusers-grid" in argv:  # only dpmpp_2m_sde (midpoint, count_denoise) on diffusers' grid
        argv = [a for a in argv if a != "--diffusers-grid"]
        ours.EXTRA_CONFIGS.append(ours.Config("dpmpp_2m_sde", diffusers_grid,
                                              {"solver_type": "midpoint", "count_denoise": True},
                                              label="diffusers-grid midpoint count_denoise"))
    elif "--eta" in argv:  # only dpmpp_2m_sde at lower noise rates (new and old forms), to study eta
        argv = [a for a in argv if a != "--eta"]
        ours.EXTRA_CONFIGS.extend(eta_candidates())
    else:
        ours.EXTRA_CONFIGS.extend(candidates())
    return peers.main(argv)


if __name__ == "__main__":
    main()
