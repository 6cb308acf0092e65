"""Fixed-step sampling reads nothing back to the host per step (the sync-free path of the kernels issue).

A tensor on PyTorch's ``meta`` device has a shape and a dtype but no data: every host read of
one (``float(t)``, ``bool(mask.any())``, ``.item()``, ``.tolist()``) raises. Driving the one
loop (:func:`sdekit.integrate.integrate`) with a meta state therefore fails at the first
per-step synchronisation that a CUDA run would make, on a machine without a GPU.
(The entry checks of ``sample``/``solve`` read the inputs once, before any work; they are not
per step and are not exercised here.)
"""

from __future__ import annotations

import pytest
import torch

import sdekit
from sdekit.grids import get_grid
from sdekit.integrate import integrate
from sdekit.noise import GaussianNoise

FIXED = [i.name for i in sdekit.solvers.available() if i.kind != "corrector" and not i.adaptive
         and i.name != "torchdiffeq"]  # torchdiffeq steps with its own (host-side) controller
OPTIONS = [("edm_heun", {"s_churn": 10.0}), ("ddim", {"eta": 0.5}), ("unipc", {"variant": "bh1"}),
           ("unipc", {"predictor_order": 3}), ("srk", {"method": "sra3"}), ("dpmpp_3m", {"lower_order_final": True})]
SDES = [sdekit.VPSDE(), sdekit.VESDE(), sdekit.SubVPSDE(), sdekit.CosineSDE()]


def _run_on_meta(solver, sde, steps, score_fn=lambda x, t: -x):
    x = torch.empty(5, 3, 2, device="meta")
    process = sdekit.ReverseProcess(sde, score_fn, lam=solver.lam)
    grid = get_grid(solver.default_schedule, sde, steps)
    return integrate(process, solver, grid, x, GaussianNoise(None), check_finite=False)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("name", FIXED)
@pytest.mark.parametrize("steps", [3, 20])  # short grids take the lower-order final steps (2M, UniPC)
def test_fixed_step_solvers_make_no_host_read_per_step(name, sde, steps):
    sol = _run_on_meta(sdekit.solvers.resolve(name), sde, steps)
    assert sol.x.device.type == "meta" and sol.x.shape == (5, 3, 2) and sol.steps == steps


@pytest.mark.parametrize("name,options", OPTIONS, ids=[f"{n}-{next(iter(o))}" for n, o in OPTIONS])
def test_solver_options_make_no_host_read_per_step(name, options):
    sol = _run_on_meta(sdekit.solvers.resolve(name, **options), sdekit.VPSDE(), 12)
    assert sol.steps == 12


def test_meta_run_detects_a_host_read():
    """The probe can fail: a score that reads its time on the host is caught."""
    with pytest.raises((RuntimeError, NotImplementedError)):
        _run_on_meta(sdekit.solvers.resolve("ode_euler"), sdekit.VPSDE(), 4, score_fn=lambda x, t: x * float(t[0]))
