"""Issue 14: an explicit schedule, save_at and the noise source must agree with the run's other options."""

from __future__ import annotations

import pytest
import torch

import sdekit
from sdekit.grids import uniform
from sdekit.noise import BrownianNoise
from sdekit.seeding import PerSampleNoise
from sdekit.testing import GaussianMixture

SDE = sdekit.VPSDE()
MIX = GaussianMixture.random(dim=2, generator=torch.Generator().manual_seed(1))


class _Counting:
    def __init__(self):
        self.calls, self.sf = 0, MIX.score_fn(SDE)

    def __call__(self, x, t):
        self.calls += 1
        return self.sf(x, t)


def _run(score, solver="ode_heun", **kw):
    return sdekit.solve(score, SDE, solver, **{"shape": (3, 2), "generator": torch.Generator().manual_seed(0), **kw})


GRID = uniform(SDE, 10)


def _fixed_ten(sde, steps, *, eps=None, T=None):  # a callable that ignores what it is asked for
    return uniform(sde, 10)


@pytest.mark.parametrize("kw,match", [
    (dict(schedule=GRID, nfe=3), "nfe=3"),                       # budget 3 used to spend 21 NFE
    (dict(schedule=torch.tensor([1.0, 1e-3]), steps=2), "1 steps"),  # 2 points, steps=2: took 1 step
    (dict(schedule=GRID, steps=4), "steps=4"),
    (dict(schedule=GRID, eps=0.01), "eps=0.01"),
    (dict(schedule=_fixed_ten, nfe=4), "nfe=4"),                # budget 4 used to spend 21 NFE
    (dict(schedule=_fixed_ten, steps=3), "steps"),
    (dict(schedule=torch.tensor([0.5, 0.1, 1e-3])), "below sde.T"),  # prior drawn at T, used at 0.5
    (dict(steps=4, save_at=[2.0]), "save_at"),                   # snapped to T
    (dict(steps=4, save_at=[1e-5]), "save_at"),                  # snapped to eps
    (dict(steps=4, noise=BrownianNoise(0.5, 1.0, (3, 2), seed=0), solver="euler_maruyama"), "t_min"),
    (dict(steps=4, noise=BrownianNoise(1e-3, 1.0, (4, 2), seed=0), solver="euler_maruyama"), "shape"),
    (dict(steps=4, noise=PerSampleNoise(0, [0, 1]), solver="euler_maruyama"), "2 samples"),
], ids=["tensor+nfe", "2pt+steps2", "tensor+steps", "tensor+eps", "callable+nfe", "callable+steps",
        "below-T+shape", "save_at>T", "save_at<eps", "brownian-span", "brownian-batch", "persample-batch"])
def test_conflicting_options_are_refused_before_any_score_call(kw, match):
    score = _Counting()
    with pytest.raises(ValueError, match=match):
        _run(score, **kw)
    assert score.calls == 0


def test_agreeing_options_still_run():
    score = _Counting()
    assert _run(score, schedule=GRID, steps=10).steps == 10
    assert _run(score, schedule=GRID, eps=SDE.eps).steps == 10
    assert _run(score, schedule=_fixed_ten).steps == 10  # nothing asked: the callable decides
    x_half = torch.randn(3, 2, generator=torch.Generator().manual_seed(1))
    sol = sdekit.solve(score, SDE, "ode_heun", x_T=x_half, schedule=torch.tensor([0.5, 0.1, 1e-3]))
    assert sol.steps == 2
    sol = _run(score, steps=4, save_at=[SDE.T, SDE.eps])
    assert sol.xs.shape[0] == 2
    sol = _run(score, steps=4, solver="euler_maruyama", noise=BrownianNoise(SDE.eps, SDE.T, (3, 2), seed=0))
    assert sol.steps == 4
