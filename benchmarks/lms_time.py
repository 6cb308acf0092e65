"""lms in the SDE's own time vs in the noise level (the rule of sdekit/solvers/lms.py), per split.

    PYTHONPATH=. python benchmarks/lms_time.py tuning
    PYTHONPATH=. python benchmarks/lms_time.py heldout

Problems: ``mixture_family(split, i)``, i = 0..5 (dims capped at 128; VP for even i, VE for odd i),
500 float32 samples from seed i, lms's default karras grid, ``nfe=`` sizing with the denoising step.
``old``: the own-time form everywhere (what lms did before the rule); ``new``: the current rule (the
noise level on VE, the own time elsewhere: on VP old and new are the same code). Prints ODE-map error
(FD) old -> new per problem and NFE, then the geometric mean of new/old per NFE and SDE family.
"""

from __future__ import annotations

import math
import os
import sys

import torch

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sdekit  # noqa: E402
import sdekit.solvers.lms as lms  # noqa: E402
from sdekit.metrics import frechet_to_moments, ode_map_error  # noqa: E402
from sdekit.testing import mixture_family  # noqa: E402


def main(split: str) -> None:
    torch.set_num_threads(1)
    rule = lms._scaled
    logs: dict[tuple, list[float]] = {}
    try:
        for index in range(6):
            mix = mixture_family(split, index)
            if mix.dim > 128:
                mix = mixture_family(split, index, dim=128)
            sde = sdekit.VPSDE() if index % 2 == 0 else sdekit.VESDE()
            score, std = mix.score_fn(sde, matmul=True), mix.data_std()
            x_T = sde.prior_sample((500, mix.dim), generator=torch.Generator().manual_seed(index), dtype=torch.float32)
            ref = mix.ode_reference(sde, x_T.double(), rtol=1e-8)
            cells = []
            for nfe in (5, 10, 20, 50):
                res = {}
                for mode in ("old", "new"):
                    lms._scaled = (lambda process: False) if mode == "old" else rule
                    x = sdekit.sample(score, sde, "lms", x_T=x_T, nfe=nfe).double()
                    ok = bool(torch.isfinite(x).all())
                    res[mode] = ((ode_map_error(x, ref, std), frechet_to_moments(x, mix.mean(), mix.cov()))
                                 if ok else (math.inf, math.inf))
                logs.setdefault((nfe, type(sde).__name__), []).append(math.log(res["new"][0] / res["old"][0]))
                cells.append(f"{nfe}: {res['old'][0]:.3g} -> {res['new'][0]:.3g} "
                             f"(FD {res['old'][1]:.3g} -> {res['new'][1]:.3g})")
            print(f"{split}{index} {mix.dim}d {type(sde).__name__} | " + " | ".join(cells), flush=True)
    finally:
        lms._scaled = rule
    for (nfe, name), v in sorted(logs.items()):
        print(f"{name} {nfe} NFE: geometric mean of new/old ODE-map error {math.exp(sum(v) / len(v)):.3g}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tuning")
