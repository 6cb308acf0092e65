"""Issue 14: solvers must not keep references the next score call overwrites; torchdiffeq's fixed-step methods."""

from __future__ import annotations

import pytest
import torch

import sdekit
from sdekit.solvers.base import _names
from sdekit.testing import GaussianMixture

SDE = sdekit.VPSDE()
MIX = GaussianMixture.random(dim=3, generator=torch.Generator().manual_seed(1))
SOLVERS = _names("solver")


def _static_output(score_fn):
    """A model with a static output buffer (as under CUDA-graph replay): every call overwrites one tensor."""
    out: dict[str, torch.Tensor] = {}

    def score(x, t):
        s = score_fn(x, t)
        buf = out.get("buf")
        if buf is None or buf.shape != s.shape:
            buf = out["buf"] = torch.empty_like(s)
        return buf.copy_(s)

    return score


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_solver_is_unaffected_by_a_reused_score_buffer(solver):
    sf = MIX.score_fn(SDE)
    kw = dict(shape=(4, 3), steps=6, seed=5, denoise=False)
    try:
        ref = sdekit.sample(sf, SDE, solver, **kw)
    except (ValueError, TypeError) as e:  # a solver that needs other options than these
        pytest.skip(f"{solver}: {e}")
    got = sdekit.sample(_static_output(sf), SDE, solver, **kw)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- item 8: torchdiffeq

pytest.importorskip("torchdiffeq")


def test_torchdiffeq_fixed_step_method_without_step_size_uses_the_grid():
    sf = MIX.score_fn(SDE)
    x_T = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = sdekit.sample(sf, SDE, "ode_rk4", x_T=x_T, denoise=False)  # default steps, default schedule
    theirs = sdekit.sample(sf, SDE, "torchdiffeq", method="rk4", x_T=x_T, denoise=False)
    assert (theirs - ours).abs().max() < 1e-6  # one rk4 step over [T, eps] was 0.74 off
    ten = sdekit.solve(sf, SDE, "torchdiffeq", method="midpoint", x_T=x_T, steps=10, denoise=False)
    assert ten.steps == 10 and ten.nfe == 20


def test_torchdiffeq_refuses_unknown_options_and_adams_without_step_size():
    with pytest.raises(ValueError, match="valid options: .*first_step"):
        sdekit.solvers.resolve("torchdiffeq", method="dopri5", odeint_options={"frist_step": 0.1})
    with pytest.raises(ValueError, match="valid options: .*step_size"):
        sdekit.solvers.resolve("torchdiffeq", method="rk4", odeint_options={"first_step": 0.1})
    with pytest.raises(ValueError, match="step_size"):
        sdekit.solvers.resolve("torchdiffeq", method="explicit_adams")
    sdekit.solvers.resolve("torchdiffeq", method="explicit_adams", odeint_options={"step_size": 0.01})
