"""Issue 14: runs that cannot fit in memory or meet their tolerances are refused up front, naming the argument."""

from __future__ import annotations

import pytest
import torch

import sdekit
from sdekit.integrate import SamplingError
from sdekit.testing import GaussianMixture

SDE = sdekit.VPSDE()
MIX = GaussianMixture.random(dim=3, generator=torch.Generator().manual_seed(1))


class _Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, x, t):
        self.calls += 1
        return MIX.score(x, t, SDE)


@pytest.mark.parametrize("solver,kw,match", [
    ("ode_euler", dict(steps=10 ** 12), "steps"),                  # raw allocator error in linspace before
    ("ode_euler", dict(nfe=10 ** 15), "nfe"),
    ("ode_euler", dict(steps=10 ** 5, save_at="grid", shape=(2 ** 16, 2 ** 10)), "save_at"),
], ids=["steps", "nfe", "save_at-grid"])
def test_runs_too_large_for_memory_are_refused_naming_the_argument(solver, kw, match):
    score = _Counting()
    with pytest.raises(ValueError, match=match):
        sdekit.solve(score, SDE, solver, **{"shape": (4, 3), **kw})
    assert score.calls == 0


@pytest.mark.parametrize("solver,dtype", [("ode_adaptive", torch.float32), ("sde_adaptive", torch.float32),
                                          ("sde_adaptive", torch.float64)])
def test_tolerances_the_run_cannot_meet_are_refused_up_front(solver, dtype):
    score = _Counting()
    with pytest.raises(ValueError, match="rtol=1e-13") as info:  # ground for 76-98 s (> 300 s) before
        sdekit.solve(score, SDE, solver, shape=(4, 3), dtype=dtype, rtol=1e-13, atol=1e-13)
    assert isinstance(info.value, SamplingError) and score.calls == 0


def test_resolvable_tolerances_still_run():
    x = sdekit.solve(MIX.score_fn(SDE), SDE, "ode_adaptive", shape=(4, 3), dtype=torch.float64, rtol=1e-13,
                     atol=1e-13)
    assert x.nfe > 0
