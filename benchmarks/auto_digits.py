"""schedule="auto" on a learned model: the digits score network, not a Gaussian mixture (issue 12, item 4).

The tuner's settings (``free_end``, ``shift``) were chosen on exact mixture scores; this checks them on a
model they never saw: the MLP score network of ``examples/digits.py`` trained on scikit-learn's
``load_digits`` (8x8 images in [-1, 1], VP SDE), in float32. For each solver and budget:

- ``default (eps)``: the solver's default grid ending at eps (``grids.default_grid(..., stop_short=False)``);
- ``default``: the grid of a run with no ``schedule=`` (at low NFE it may stop short: ``grids.default_stop``);
- ``auto (eps)``: ``tune(free_end=False)``, the grid ending at eps (the tuner before ``free_end``);
- ``auto``: ``tune()``'s defaults (ODE solvers: the grid may stop short of eps);
- ``auto+shift``: ``tune(shift=True)``.

Beside them, with ``--peers`` (diffusers installed): diffusers' ``UniPCMultistepScheduler`` and
``DPMSolverMultistepScheduler`` with their default settings, ``n = NFE`` steps on the 1000-step discrete chain
built from the same SDE (as ``benchmarks/_peers/hf_diffusers.py`` does), the model's noise prediction
``-sigma(t) score(x, t)`` at each timestep; and the FID of the reference ODE solution itself.

Pilots: 256 prior samples (seed 0), float32. Metrics on ``--samples`` fresh prior draws per seed (seeds
``1000 + k``): the ODE-map error (RMS distance, over the data's std, to the same model's probability-flow
ODE solved by ``ode_adaptive`` at rtol = atol = 1e-6 from the same x_T, denoising included) and the FID
in the digits-classifier features against the training digits (floor: the held-out real digits); mean ±
standard error over ``--seeds``. Writes ``benchmarks/results/auto_digits.{json,md}``::

    PYTHONPATH=. python benchmarks/auto_digits.py --solvers unipc,dpmpp_3m,dpmpp_2m --nfe 5,10 --seeds 3 --peers
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
from examples.digits import make_fid, setup  # noqa: E402
from sdekit import grids  # noqa: E402
from sdekit.metrics import ode_map_error  # noqa: E402

VARIANTS = {"auto (eps)": {"free_end": False}, "auto": {}, "auto+shift": {"shift": True}}


def _mean_se(v: list[float]) -> tuple[float, float]:
    m = sum(v) / len(v)
    return m, (math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1) / len(v)) if len(v) > 1 else 0.0)


PEERS = (("UniPCMultistepScheduler", "diffusers UniPC (default)"),
         ("DPMSolverMultistepScheduler", "diffusers DPM-Solver++ (default)"))


def _diffusers_run(cls_name: str, n: int, score, sde, x_T: torch.Tensor) -> torch.Tensor:
    """diffusers' scheduler ``cls_name`` (defaults, ``n`` steps) on the model ``score`` (its noise prediction
    ``-sigma(t) score(x, t)`` at the continuous time of each discrete timestep)."""
    import diffusers

    from benchmarks._peers.hf_diffusers import N_TRAIN, trained_betas

    class _Problem:  # what trained_betas reads
        pass

    p = _Problem()
    p.sde = sde
    sch = getattr(diffusers, cls_name)(num_train_timesteps=N_TRAIN, trained_betas=trained_betas(p))
    sch.set_timesteps(n)
    times = torch.linspace(sde.eps, sde.T, N_TRAIN, dtype=torch.float64)
    x = x_T.clone()
    for ts in sch.timesteps:
        t = times[int(ts)].to(x.dtype).expand(x.shape[0])
        eps = -sde.sigma(t).reshape(-1, *([1] * (x.ndim - 1))) * score(x, t)
        x = sch.step(eps, ts, x).prev_sample
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--solvers", default="unipc,dpmpp_3m")
    ap.add_argument("--nfe", default="5,10")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=4000)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="the tuned grids to run (default: all; '' none)")
    ap.add_argument("--peers", action="store_true", help="also run diffusers' UniPC and DPM-Solver++ defaults")
    ap.add_argument("--workdir", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                     "runs", "digits"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "auto_digits"))
    args = ap.parse_args()
    names = [x.strip() for x in args.variants.split(",") if x.strip()]
    if any(v not in VARIANTS for v in names):
        ap.error(f"--variants: each of {sorted(VARIANTS)}, got {names}")
    variants = {v: VARIANTS[v] for v in names}
    torch.set_num_threads(1)
    score, sde, x_tr, x_ho, features, _ = setup(args.workdir, steps=args.train_steps, progress=False)
    fid = make_fid(features)
    fid.update(x_tr, real=True)
    fid.update(x_ho[: args.samples], real=False)
    floor = float(fid.compute())
    std = float(x_tr.reshape(x_tr.shape[0], -1).std(0).pow(2).mean().sqrt())
    shape = (args.samples, *x_tr.shape[1:])
    starts = [sde.prior_sample(shape, generator=torch.Generator().manual_seed(1000 + k)) for k in range(args.seeds)]
    with torch.no_grad():
        refs = [sdekit.sample(score, sde, "ode_adaptive", x_T=x, rtol=1e-6, atol=1e-6) for x in starts]
    def fid_of(x: torch.Tensor) -> float:
        fid.reset()
        fid.update(x.clamp(-1, 1), real=False)
        return float(fid.compute())

    ref_fid = _mean_se([fid_of(r) for r in refs])
    peers = []
    for cls_name, label in PEERS if args.peers else ():
        for nfe in (int(b) for b in args.nfe.split(",")):
            odes, fids = [], []
            for x_T, ref in zip(starts, refs):
                with torch.no_grad():
                    x = _diffusers_run(cls_name, nfe, score, sde, x_T)
                odes.append(ode_map_error(x, ref, std))
                fids.append(fid_of(x))
            peers.append({"peer": label, "nfe": nfe, "ode": _mean_se(odes), "fid": _mean_se(fids)})
            print(json.dumps(peers[-1]), flush=True)
    rows = []
    for solver in args.solvers.split(","):
        for nfe in (int(b) for b in args.nfe.split(",")):
            row: dict = {"solver": solver, "nfe": nfe}
            steps = sdekit.steps_for_nfe(sdekit.solvers.resolve(solver), nfe, denoise=True)
            resolved = sdekit.solvers.resolve(solver)
            schedules: dict = {"default (eps)": (grids.default_grid(resolved, sde, steps, stop_short=False), None),
                               "default": (grids.default_grid(resolved, sde, steps), None)}
            for label, opts in variants.items():
                info: dict = {}
                with torch.no_grad():
                    g = grids.tune(score, sde, solver, steps=steps, shape=shape, dtype=torch.float32, cache=False,
                                   info=info, **opts)
                schedules[label] = (g, info["pilot_nfe"])
            for label, (g, pilot) in schedules.items():
                odes, fids = [], []
                for k, (x_T, ref) in enumerate(zip(starts, refs)):
                    with torch.no_grad():  # (a stochastic solver's noise: seed 2000 + k)
                        x = sdekit.sample(score, sde, solver, x_T=x_T, schedule=g,
                                          generator=torch.Generator().manual_seed(2000 + k))
                    odes.append(ode_map_error(x, ref, std))
                    fids.append(fid_of(x))
                t_end = float((g.times if isinstance(g, grids.TunedGrid) else g)[-1])
                row[label] = {"ode": _mean_se(odes), "fid": _mean_se(fids), "pilot_nfe": pilot, "t_end": t_end}
            rows.append(row)
            print(json.dumps(row), flush=True)
    with open(args.out + ".json", "w") as f:
        json.dump({"argv": sys.argv[1:], "floor_fid": floor, "reference_fid": ref_fid, "rows": rows, "peers": peers},
                  f, indent=1)
    labels = ["default (eps)", "default", *variants]
    lines = ["# schedule=\"auto\" on the learned digits model (not a mixture: no setting was chosen on it)", "",
             f"`python benchmarks/auto_digits.py {' '.join(sys.argv[1:])}`. Cell: ODE-map error ± s.e. / FID ± s.e. "
             f"over {args.seeds} seeds x {args.samples} fresh samples (pilot NFE; t of the grid's last time). "
             f"FID floor (held-out real digits): {floor:.3f}; FID of the reference ODE solution: {ref_fid[0]:.3g} ± "
             f"{ref_fid[1]:.2g}. (A stochastic solver's ODE-map error is only its distance to the ODE's solution: "
             "judge it by FID.)", "",
             "| solver | NFE | " + " | ".join(labels) + " |", "|---|---:|" + "---|" * len(labels)]
    for r in rows:
        cells = []
        for lab in labels:
            c = r[lab]
            extra = f" (pilot {c['pilot_nfe']}; t_end {c['t_end']:.3g})" if c["pilot_nfe"] else ""
            cells.append(f"{c['ode'][0]:.3g} ± {c['ode'][1]:.2g} / {c['fid'][0]:.3g} ± {c['fid'][1]:.2g}{extra}")
        lines.append(f"| {r['solver']} | {r['nfe']} | " + " | ".join(cells) + " |")
    if peers:
        lines += ["", "diffusers' defaults on the same model, x_T and metrics (ODE-map error ± s.e. / FID ± s.e.):", "",
                  "| scheduler | NFE | ODE-map / FID |", "|---|---:|---|"]
        lines += [f"| {r['peer']} | {r['nfe']} | {r['ode'][0]:.3g} ± {r['ode'][1]:.2g} / {r['fid'][0]:.3g} ± "
                  f"{r['fid'][1]:.2g} |" for r in peers]
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}.md", file=sys.stderr)


if __name__ == "__main__":
    main()
