"""Should the default grids stop short of eps at low NFE? The study that chose ``grids.default_stop`` (issue 12).

``schedule="auto"`` with ``free_end`` stops its tuned grids short of ``eps`` (the denoising step then evaluates
the model there), and on the learned digits model the fixed default grids fail at 5 NFE where diffusers'
grids, which stop at ``t_{999/n}``, do not (``benchmarks/results/auto_digits.md``). This measures what
stopping short does to each ODE solver's *default* grid: the grid of ``grids.default_schedule`` compressed
in log-SNR towards ``T`` (its knots keeping their relative places) to stop a fraction ``f`` of the log-SNR
range short of ``eps``, against the same grid ending at ``eps``; ODE-map error (500 samples, float32, against
the float64 reference) and FD (against 20,000 exact samples), one draw of x_T per problem.

Variants (``--variants``): ``f=0.1`` ... (a fixed fraction), ``c=2`` (``f = min(0.4, c / steps)`` at 10
steps or fewer, else 0), or ``t=0.3:20`` (a taper: ``f = F0 * clip((N1 - n) / (N1 - 4), 0, 1)`` where ``n`` is
the grid's score evaluations without the denoising step: ``F0`` at 4 of them, 0 from ``N1`` on), or ``default``
(the library's rule, :func:`sdekit.grids.default_stop`, which was chosen from the ``taper`` run below).
Output: ``benchmarks/results/default_stop[-TAG].{jsonl,md}``, the md with the
geometric means over problems of the ratios to the grid ending at ``eps`` per solver, budget and variant::

    PYTHONPATH=. python benchmarks/default_stop.py --split tuning --items 0::vp,1::ve,2::vp,3::ve,4::vp,5::ve \\
        --solvers unipc,dpmpp_2m,dpmpp_3m --nfe 5,6,8,10,20 --variants f=0.1,f=0.2,f=0.3,f=0.4 --tag fractions
    PYTHONPATH=. python benchmarks/default_stop.py --split tuning --items 0::vp,1::ve,2::vp,3::ve,4::vp,5::ve \\
        --variants c=1,c=2 --tag rule
    PYTHONPATH=. python benchmarks/default_stop.py --split heldout --items 0:2:vp,1:64:ve,2:256:vp \\
        --variants c=1,c=2 --tag rule-heldout
    PYTHONPATH=. python benchmarks/default_stop.py --split tuning --nfe 5,6,8,10,15,20,30 \
        --variants t=0.2:20,t=0.3:20,t=0.4:20,t=0.2:30,t=0.3:30,t=0.4:30 --tag taper
    PYTHONPATH=. python benchmarks/default_stop.py --split heldout --items 0:2:vp,1:64:ve,2:256:vp \
        --nfe 5,6,8,10,15,20 --variants default --tag default-heldout

(``--items``: ``index:dim:sde``; an empty dim is the family's own, capped at 128.)
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import sys
from collections import defaultdict

import torch

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sdekit  # noqa: E402
from benchmarks._peers.common import geometric_mean as gm  # noqa: E402
from sdekit import grids  # noqa: E402
from sdekit.metrics import frechet_distance, ode_map_error, sliced_wasserstein  # noqa: E402
from sdekit.testing import mixture_family  # noqa: E402


def fraction(variant: str, steps: int, nfe: int = 4, solver=None, sde=None) -> float:
    """The fraction of the log-SNR range that ``variant`` stops short at ``steps`` steps costing ``nfe`` score
    evaluations (denoising not included); ``default``: the library's rule for ``solver`` on ``sde``."""
    if variant == "default":
        return grids.default_stop(solver, sde, steps) if solver is not None else 0.0
    kind, _, value = variant.partition("=")
    if kind == "f":
        return float(value)
    if kind == "c":
        return min(0.4, float(value) / steps) if steps <= 10 else 0.0
    if kind == "t":
        f0, _, n1 = value.partition(":")
        f0, n1 = float(f0), float(n1)
        if not n1 > 4:
            raise ValueError(f"a taper t=F0:N1 needs N1 > 4, got {variant!r}")
        return grids._taper(f0, nfe, n1)  # the library's taper, to another end
    raise ValueError(f"a variant is default, f=FRACTION, c=COEFFICIENT or t=F0:N1, got {variant!r}")


def _resolve(spec: str):
    """A solver from ``name`` or ``name:option=value[;option=value...]`` (e.g. ``unipc:predictor_order=3``)."""
    name, _, opts = spec.partition(":")
    options = {}
    for item in filter(None, opts.split(";")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"a solver option is option=value, got {item!r} in {spec!r}")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return sdekit.solvers.resolve(name, **options)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=("tuning", "heldout"), default="tuning")
    ap.add_argument("--items", default="0::vp,1::ve,2::vp,3::ve,4::vp,5::ve")
    ap.add_argument("--solvers", default=None,
                    help="default: every fixed-step ODE solver (or name SDE ones; name:opt=v;opt=v for options)")
    ap.add_argument("--nfe", default="5,6,8,10")
    ap.add_argument("--variants", default="c=1,c=2")
    ap.add_argument("--schedule", default=None, help="the grid to stop short (default: each solver's default_schedule)")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=3, help="noise draws per stochastic solver's run (FD, SW2 averaged)")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    solvers = args.solvers.split(",") if args.solvers else [
        i.name for i in sdekit.solvers.available() if i.kind == "ode" and not i.adaptive and i.name != "torchdiffeq"]
    for spec in solvers:
        _resolve(spec)  # an unknown solver or option is refused before any work
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        fraction(v, 1)  # a malformed variant is refused before any work
    stem = os.path.join(args.out, "default_stop" + (f"-{args.tag}" if args.tag else ""))
    rows = []
    with open(stem + ".jsonl", "w") as out:
        for item in args.items.split(","):
            index, dim, sde_name = item.split(":")
            mix = mixture_family(args.split, int(index), **({"dim": int(dim)} if dim else {}))
            if mix.dim > 128 and not dim:
                mix = mixture_family(args.split, int(index), dim=128)
            sde = sdekit.VPSDE() if sde_name == "vp" else sdekit.VESDE()
            score, std = mix.score_fn(sde, matmul=True), mix.data_std()
            x_T = sde.prior_sample((args.samples, mix.dim), generator=torch.Generator().manual_seed(777 + int(index)),
                                   dtype=torch.float32)
            ref = mix.ode_reference(sde, x_T.double(), rtol=1e-8)
            exact = mix.sample(20000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
            lam_ends = grids._log_snr_ends(sde, sde.T, sde.eps)
            for solver in solvers:
                s = _resolve(solver)
                for nfe in (int(b) for b in args.nfe.split(",")):
                    try:
                        steps = sdekit.steps_for_nfe(s, nfe, denoise=True)
                    except ValueError:
                        continue
                    g0 = grids.get_grid(args.schedule or grids.default_schedule(s, sde), sde, steps)
                    row = {"problem": f"{args.split}{index}-{mix.dim}d-{sde_name}", "solver": solver, "nfe": nfe}
                    for label in ["eps", *variants]:
                        f = 0.0 if label == "eps" else fraction(label, steps, s.nfe_for(steps), s, sde)
                        g = g0 if f == 0.0 else grids._stop_short(sde, g0, f, lam_ends, sde.T)
                        if s.stochastic:  # FD and sliced W2, averaged over --seeds noise draws
                            fds, sw2s = [], []
                            for k in range(args.seeds):
                                x = sdekit.sample(score, sde, s, x_T=x_T, schedule=g,
                                                  generator=torch.Generator().manual_seed(k)).double()
                                ok = bool(torch.isfinite(x).all())
                                fds.append(frechet_distance(x, exact) if ok else math.inf)
                                sw2s.append(sliced_wasserstein(x, exact[: x.shape[0]],
                                                               generator=torch.Generator().manual_seed(11))
                                            if ok else math.inf)
                            row[label] = {"f": f, "sw2": sum(sw2s) / len(sw2s), "fd": sum(fds) / len(fds)}
                            continue
                        x = sdekit.sample(score, sde, s, x_T=x_T, schedule=g).double()
                        ok = bool(torch.isfinite(x).all())
                        row[label] = {"f": f, "ode": ode_map_error(x, ref, std) if ok else math.inf,
                                      "fd": frechet_distance(x, exact) if ok else math.inf}
                    rows.append(row)
                    out.write(json.dumps(row) + "\n")
                    out.flush()
    ratios: dict = defaultdict(list)
    for r in rows:
        for v in variants:
            first = "ode" if "ode" in r["eps"] else "sw2"  # a stochastic solver's first metric is sliced W2
            ratios[(r["solver"], r["nfe"], v)].append((r[v][first] / r["eps"][first], r[v]["fd"] / r["eps"]["fd"]))

    nfes = sorted({r["nfe"] for r in rows})
    lines = [f"# Default grids stopping short of eps (**{args.split}** split)", "",
             f"`python benchmarks/default_stop.py {' '.join(sys.argv[1:])}`. Cell: ODE-map error ratio / FD ratio to "
             "the solver's default grid ending at eps (a stochastic solver: sliced W2 ratio / FD ratio, each the "
             f"mean over {args.seeds} noise draws), geometric mean over the problems "
             f"({', '.join(sorted({r['problem'] for r in rows}))}; {args.samples} samples, one x_T draw each).", "",
             "| solver | variant | " + " | ".join(f"{n} NFE" for n in nfes) + " | all |",
             "|---|---|" + "---:|" * (len(nfes) + 1)]
    for solver in solvers:
        for v in variants:
            cells, every = [], []
            for n in nfes:
                c = ratios.get((solver, n, v), [])
                every += c
                cells.append(f"{gm([a for a, _ in c]):.3g} / {gm([b for _, b in c]):.3g}" if c else "—")
            if every:
                lines.append(f"| {solver} | {v} | " + " | ".join(cells)
                             + f" | {gm([a for a, _ in every]):.3g} / {gm([b for _, b in every]):.3g} |")
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {stem}.md", file=sys.stderr)


if __name__ == "__main__":
    main()
