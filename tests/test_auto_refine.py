"""tune()'s Nelder–Mead refinement stage and the minimiser behind it (issue 12, item 4)."""

import numpy as np
import pytest
import torch

import sdekit
from sdekit._search import nelder_mead
from sdekit.grids import tune
from sdekit.testing import GaussianMixture

SDE = sdekit.VESDE()
# held out: no default and no tuning setting of sdekit was chosen on this mixture (seed 5151)
MIX = GaussianMixture.random(4, 6, std=(0.03, 0.2), generator=torch.Generator().manual_seed(5151))
SCORE = MIX.score_fn(SDE)


def test_nelder_mead_finds_known_minima():
    rosen = lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2  # noqa: E731
    x, f, n = nelder_mead(rosen, np.array([-1.2, 1.0]), step=0.5, max_evals=2000, xtol=1e-8)
    assert np.allclose(x, [1.0, 1.0], atol=1e-5) and f < 1e-10 and n <= 2000
    bowl = lambda x: float(np.sum((x - np.arange(5.0)) ** 2))  # noqa: E731
    x, f, n = nelder_mead(bowl, np.zeros(5), step=0.5, max_evals=3000, xtol=1e-7)
    assert np.allclose(x, np.arange(5.0), atol=1e-5)


def test_nelder_mead_keeps_to_its_budget_and_never_keeps_a_non_finite_point():
    calls = []

    def f(x):
        calls.append(1)
        return float("nan") if x[0] > 0.5 else float(np.sum(x ** 2))

    x, fx, n = nelder_mead(f, np.array([0.4, 0.3]), step=0.3, max_evals=25)
    assert n == len(calls) <= 25 and np.isfinite(fx) and x[0] <= 0.5


def test_refinement_lowers_the_pilot_error_and_is_counted_in_the_pilot_nfe():
    """On this mixture at 6 NFE: the pilot error after coordinate search alone, then with the simplex stage."""
    plain, refined = {}, {}
    g0 = tune(SCORE, SDE, "unipc", 6, shape=(1, 4), pilot_batch=128, refine_nfe=0, cache=False, info=plain)
    g1 = tune(SCORE, SDE, "unipc", 6, shape=(1, 4), pilot_batch=128, refine_nfe=1500, cache=False, info=refined)
    assert refined["pilot_error"] < 0.97 * plain["pilot_error"], (plain, refined)
    assert refined["pilot_nfe"] > plain["pilot_nfe"]
    assert refined["pilot_nfe"] <= plain["pilot_nfe"] + 1500 + 6  # the budget, plus the check of its end grid
    assert g1.numel() == g0.numel() == 6 and bool((torch.diff(g1) < 0).all())
    assert float(g1[0]) == SDE.T and SDE.eps <= float(g1[-1]) < float(g1[-2])  # free_end: may stop short of eps


def test_refine_nfe_is_checked_before_any_score_call():
    calls = []

    def score(x, t):
        calls.append(1)
        return SCORE(x, t)

    for bad in (-1, 2.5, "many"):
        with pytest.raises((TypeError, ValueError), match="refine_nfe"):
            tune(score, SDE, "unipc", 6, shape=(1, 4), refine_nfe=bad)
    assert not calls
