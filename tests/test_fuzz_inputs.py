"""Issue 14: a hypothesis fuzz of ``sdekit.solve`` over every registered solver, tensor and callable
grids, ``steps``/``nfe``/``eps``, ``save_at``, conditions, noise sources and a score that returns one
reused output buffer.

Every call must either be refused with a ``ValueError``/``TypeError`` (those named in issue 14 before any
score call) or return a finite result that honours what was asked: the steps of a tensor grid or of
``steps=``, an ``nfe=`` budget, ``eps=``, saved times inside the run's span, and the same samples with
a static-output score as with a fresh one.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sdekit
from sdekit.grids import uniform
from sdekit.guidance import Inpainting
from sdekit.noise import BrownianNoise
from sdekit.sampling import steps_for_nfe
from sdekit.solvers.base import _names, resolve
from sdekit.testing import GaussianMixture

SDE = sdekit.VPSDE()
MIX = GaussianMixture.random(dim=2, components=2, generator=torch.Generator().manual_seed(4))
SOLVERS = _names("solver")
ADAPTIVE = {i.name for i in sdekit.solvers.available() if i.adaptive}
SHAPE = (3, 2)


class _Score:
    """The exact mixture score, counting calls; ``static=True`` returns one reused output buffer."""

    def __init__(self, static: bool = False) -> None:
        self.calls, self.static, self.buf = 0, static, None

    def __call__(self, x, t):
        self.calls += 1
        s = MIX.score(x, t, SDE)
        if not self.static:
            return s
        if self.buf is None or self.buf.shape != s.shape or self.buf.dtype != s.dtype:
            self.buf = torch.empty_like(s)
        return self.buf.copy_(s)


def _callable(below: bool):
    def schedule(sde, steps, *, eps=None, T=None):
        return uniform(sde, steps, eps=eps, T=0.8 * sde.T if below else T)
    return schedule


@st.composite
def cases(draw):
    c = dict(sched=draw(st.sampled_from(["default", "name", "tensor",
                                                                                "callable"])),
             points=draw(st.integers(2, 5)), below=draw(st.booleans()),
             steps=draw(st.one_of(st.none(), st.integers(1, 4))), nfe=draw(st.one_of(st.none(), st.integers(1, 24))),
             eps=draw(st.sampled_from([None, SDE.eps, 0.02])),
             save=draw(st.sampled_from([None, "grid", "inside", "outside"])), cond=draw(st.booleans()),
             x_T=draw(st.booleans()), noise=draw(st.sampled_from([None, "brownian", "brownian_short"])))
    return c


def _kwargs(c):
    kw: dict = dict(denoise=False)
    if c["sched"] == "name":
        kw["schedule"] = "quadratic"
    elif c["sched"] == "tensor":
        top = 0.8 * SDE.T if c["below"] else SDE.T
        kw["schedule"] = torch.linspace(top, SDE.eps if c["eps"] is None else c["eps"], c["points"],
                                        dtype=torch.float64)
    elif c["sched"] == "callable":
        kw["schedule"] = _callable(c["below"])
    for k in ("steps", "nfe", "eps"):
        if c[k] is not None:
            kw[k] = c[k]
    if c["sched"] != "tensor" and c["steps"] is None and c["nfe"] is None and c["solver"] not in ADAPTIVE:
        kw["steps"] = 3  # not the solvers' default 100-1000 steps: the fuzz stays fast
    if c["save"] == "grid":
        kw["save_at"] = "grid"
    elif c["save"] == "inside":
        kw["save_at"] = [0.5, 0.05]
    elif c["save"] == "outside":
        kw["save_at"] = [1.5]
    if c["cond"]:
        kw["condition"] = Inpainting(torch.tensor([0.5, 0.0]), torch.tensor([True, False]))
    if c["x_T"]:
        kw["x_T"] = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))
    else:
        kw["shape"] = SHAPE
    if c["noise"] is None:
        kw["seed"] = 3
    elif not c["x_T"]:
        kw["generator"] = torch.Generator().manual_seed(3)  # for the prior; the BrownianNoise gives the rest
    return kw


def _noise(c):
    if c["noise"] is None:
        return {}
    t_min = 0.5 if c["noise"] == "brownian_short" else 1e-4
    return {"noise": BrownianNoise(t_min, SDE.T, SHAPE, seed=5, dtype=torch.float32)}


def _budget_mismatch(c) -> bool:
    """A tensor schedule with nfe=: refused unless the steps that fit the budget are the tensor's own."""
    try:
        steps = steps_for_nfe(resolve(c["solver"]), c["nfe"], denoise=False)  # _kwargs sets denoise=False
    except ValueError:
        return True  # the budget does not fit one step
    return steps != c["points"] - 1


def _must_refuse(c) -> bool:
    explicit = c["sched"] in ("tensor", "callable")
    return ((c["sched"] == "tensor" and c["nfe"] is not None and _budget_mismatch(c))
            or (c["sched"] == "tensor" and c["steps"] is not None and c["steps"] != c["points"] - 1)
            or (explicit and c["below"] and not c["x_T"])
            or c["save"] == "outside"
            or c["noise"] == "brownian_short")


@pytest.mark.parametrize("solver", SOLVERS)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=cases())
def test_fuzz_solve_works_or_refuses_clearly(solver, c):
    c = {**c, "solver": solver}
    kw = _kwargs(c)
    score = _Score()
    try:
        sol = sdekit.solve(score, SDE, c["solver"], **kw, **_noise(c))
    except (ValueError, TypeError) as e:
        assert str(e), "an error must say what is wrong"
        if _must_refuse(c):
            assert score.calls == 0, f"refused only after {score.calls} score calls: {e}"
        return
    assert not _must_refuse(c), f"accepted a case issue 14 requires refusing: {c}"
    assert sol.x.shape == SHAPE and bool(torch.isfinite(sol.x).all())
    fixed = c["solver"] not in ADAPTIVE
    if fixed and c["sched"] == "tensor":
        assert sol.steps == c["points"] - 1
    elif fixed and c["steps"] is not None:
        assert sol.steps == c["steps"]
    if fixed and c["nfe"] is not None:
        assert sol.nfe <= c["nfe"]
    if sol.ts is not None:
        end = SDE.eps if c["eps"] is None else c["eps"]
        assert float(sol.ts.min()) >= end * (1 - 1e-9) and float(sol.ts.max()) <= SDE.T * (1 + 1e-9)
        if c["save"] == "grid" and (c["eps"] is not None or c["sched"] != "tensor"):
            assert float(sol.ts[-1]) == pytest.approx(end)
    if "generator" in kw:
        kw["generator"] = torch.Generator().manual_seed(3)
    again = sdekit.solve(_Score(static=True), SDE, c["solver"], **kw, **_noise(c))
    torch.testing.assert_close(again.x, sol.x, rtol=1e-5, atol=1e-5)
