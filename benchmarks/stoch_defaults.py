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
"""

from __future__ import annotations

import itertools
import os
import sys

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


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--peer-regex"]:
        print(PEER_REGEX)
        return {}
    ours.EXTRA_CONFIGS.extend(candidates())
    return peers.main(argv)


if __name__ == "__main__":
    main()
