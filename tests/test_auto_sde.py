"""``schedule="auto"`` / :func:`sdekit.grids.tune` for stochastic solvers (issue 12, item 5): the grid is tuned
on one fixed Brownian path per pilot sample against the same solver's fine-grid solution on that path, by
the sliced W2 distance between the two sets of end points."""

from __future__ import annotations

import math

import pytest
import torch

import sdekit
from sdekit.grids import _directions, _projected, _sliced_w2, tune
from sdekit.testing import mixture_family

SDE = sdekit.VPSDE()


def _heldout(dim: int = 8):
    return mixture_family("heldout", 2, dim=dim), SDE


def test_sliced_w2_known_answers():
    """Identical sets: 0. A set shifted by ``c``: ``sqrt(mean_u (c . u)^2)`` over the directions ``u``."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 5, generator=g, dtype=torch.float64)
    proj = _directions(5, 0, a, 128)
    assert _sliced_w2(_projected(a, proj), _projected(a[torch.randperm(300, generator=g)], proj)) == 0.0
    c = torch.tensor([0.3, -1.0, 0.5, 0.0, 2.0], dtype=torch.float64)
    expect = math.sqrt(float(((c @ proj) ** 2).mean()))
    assert abs(_sliced_w2(_projected(a + c, proj), _projected(a, proj)) - expect) < 1e-12


def test_stochastic_auto_grid_lowers_the_pilot_distance_and_is_deterministic():
    """dpmpp_2m_sde at 5 NFE on a held-out mixture: the tuned grid has the asked steps, is strictly decreasing
    from T to eps, is the same for the same pilot seed, and has a strictly lower pilot sliced W2 than the
    solver's default grid."""
    mix, sde = _heldout()
    info: dict = {}
    kw = dict(shape=(1, 8), pilot_batch=128, seed=3, refine_nfe=300, ref_steps=200, cache=False)
    g1 = tune(mix.score_fn(sde), sde, "dpmpp_2m_sde", 5, info=info, **kw)
    g2 = tune(mix.score_fn(sde), sde, "dpmpp_2m_sde", 5, **kw)
    steps = sdekit.steps_for_nfe(sdekit.solvers.resolve("dpmpp_2m_sde"), 5, denoise=True)
    assert g1.shape == (steps + 1,) and bool((torch.diff(g1) < 0).all())
    assert float(g1[0]) == pytest.approx(sde.T) and float(g1[-1]) == pytest.approx(sde.eps)
    assert torch.equal(g1, g2)
    assert info["pilot_error"] < info["default_error"], info
    assert info["pilot_nfe"] > 200  # the reference solve and the search are counted


def test_schedule_auto_runs_a_stochastic_solver_and_reports_the_pilot():
    mix, sde = _heldout(4)
    sol = sdekit.solve(mix.score_fn(sde), sde, "ancestral", shape=(16, 4), nfe=6, schedule="auto",
                       generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert sol.nfe <= 6 and sol.stats["pilot_nfe"] > 0 and torch.isfinite(sol.x).all()


def test_what_cannot_be_tuned_is_refused_before_any_score_call():
    calls = []

    def score(x, t):
        calls.append(1)
        return -x

    with pytest.raises(ValueError, match="fixed-step ODE or SDE solver"):
        tune(score, SDE, "sde_adaptive", 10, shape=(1, 3))
    with pytest.raises(ValueError, match="fixed-step ODE or SDE solver"):
        sdekit.sample(score, SDE, "ode_adaptive", shape=(2, 3), schedule="auto")
    with pytest.raises(ValueError, match="ref_steps"):
        tune(score, SDE, "dpmpp_2m_sde", 10, shape=(1, 3), ref_steps=0)
    # each kind of reference has its own setting; the other one is refused, not ignored
    with pytest.raises(ValueError, match="rtol applies to an ODE solver"):
        tune(score, SDE, "dpmpp_2m_sde", 10, shape=(1, 3), rtol=1e-6)
    with pytest.raises(ValueError, match="ref_steps applies to a stochastic solver"):
        tune(score, SDE, "unipc", 10, shape=(1, 3), ref_steps=100)
    assert not calls
