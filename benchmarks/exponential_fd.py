"""FD to the exact distribution of the exponential integrators at small NFE budgets.

On ``GaussianMixture.random(64)`` (4 components, exact score), VP and VE, ``--n`` samples
in float32: for every solver x NFE budget the Fréchet distance of the samples to the
exact mixture moments, next to the floor (FD of ``--n`` exact samples, averaged over
``--floor-seeds`` draws). Every solver is run with ``nfe=`` (the denoising step counted).

    PYTHONPATH=. python benchmarks/exponential_fd.py --nfe 10 20 50
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

import sdekit
from sdekit.metrics import frechet_to_moments
from sdekit.testing import GaussianMixture

CONFIGS = {  # name -> (solver, options, schedule (None: the solver's default), denoise)
    "ddim": ("ddim", {}, "logsnr", False),
    "dpmpp_2s": ("dpmpp_2s", {}, "logsnr", False),
    "dpmpp_2m": ("dpmpp_2m", {}, None, False),
    "dpmpp_3m": ("dpmpp_3m", {}, None, False),
    "unipc_bh2": ("unipc", {"variant": "bh2"}, None, False),
    "unipc_bh1": ("unipc", {"variant": "bh1"}, None, False),
    "unipc3_bh2": ("unipc", {"predictor_order": 3}, None, False),
    "edm_heun": ("edm_heun", {}, "karras", False),
    "dpmpp_2m_sde": ("dpmpp_2m_sde", {}, None, False),
    "dpmpp_3m_sde": ("dpmpp_3m_sde", {}, None, False),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sde", nargs="+", default=["vp", "ve"])
    p.add_argument("--nfe", nargs="+", type=int, default=[10, 20, 50])
    p.add_argument("--solvers", nargs="+", default=list(CONFIGS))
    p.add_argument("--schedule", default=None, help="override every solver's schedule")
    p.add_argument("--p", type=float, default=None,
                   help="override the schedule by grids.snr_power with this p (uniform in exp(p*lambda))")
    p.add_argument("--denoise", choices=["yes", "no", "both"], default=None, help="override the denoise setting")
    p.add_argument("--lof", choices=["on", "off", "both"], default=None, help="lower_order_final override")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--floor-seeds", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(2)
    mix = GaussianMixture.random(64, generator=torch.Generator().manual_seed(0))
    mean, cov = mix.mean(), mix.cov()
    floors = [frechet_to_moments(mix.sample(args.n, generator=torch.Generator().manual_seed(100 + s)), mean, cov)
              for s in range(args.floor_seeds)]
    floor = sum(floors) / len(floors)
    print(f"floor (FD of {args.n} exact samples, mean of {len(floors)}): {floor:.4f}  "
          f"[min {min(floors):.4f}, max {max(floors):.4f}]")
    sdes = {"vp": sdekit.VPSDE(), "ve": sdekit.VESDE(), "subvp": sdekit.SubVPSDE(), "cosine": sdekit.CosineSDE()}
    print(f"{'sde':6s} {'config':14s} {'sched':9s} {'den':4s} {'lof':4s} {'NFE':>4s} {'FD':>8s} {'FD/floor':>8s} "
          f"{'s':>6s}")
    for sname in args.sde:
        sde = sdes[sname]
        for cname in args.solvers:
            solver, opts, sched, den = CONFIGS[cname]
            sched = args.schedule or sched or sdekit.solvers.resolve(solver, **opts).default_schedule
            grid = sched
            if args.p is not None:
                sched, grid = f"p{args.p:+.2f}", functools.partial(sdekit.grids.snr_power, p=args.p)
            dens = {"yes": [True], "no": [False], "both": [False, True], None: [den]}[args.denoise]
            lofs = {"on": [True], "off": [False], "both": [True, False], None: [None]}[args.lof]
            for d in dens:
                for lof in lofs:
                    o = dict(opts)
                    if lof is not None and solver not in ("ddim", "dpmpp_2s", "edm_heun"):
                        o["lower_order_final"] = lof
                    for nfe in args.nfe:
                        t = time.perf_counter()
                        try:
                            sol = sdekit.solve(mix.score_fn(sde), sde, solver, shape=(args.n, 64), nfe=nfe,
                                               schedule=grid, denoise=d, generator=torch.Generator().manual_seed(1),
                                               **o)
                            fd = frechet_to_moments(sol.x, mean, cov)
                            used = sol.nfe
                        except sdekit.SamplingError as e:
                            fd, used = float("nan"), -1
                            print("  ", e)
                        dt = time.perf_counter() - t
                        print(f"{sname:6s} {cname:14s} {sched:9s} {'y' if d else 'n':4s} "
                              f"{'-' if lof is None else ('on' if lof else 'off'):4s} {used:4d} {fd:8.4f} "
                              f"{fd / floor:8.2f} {dt:6.1f}", flush=True)


if __name__ == "__main__":
    main()
