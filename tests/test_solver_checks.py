"""One place checks a solver against its process and noise before any work (issue 15; issue 14 item 5)."""

from __future__ import annotations

import typing

import pytest
import torch

import sdekit
from sdekit import solvers
from sdekit.errors import IncompatibleSolverError
from sdekit.integrate import integrate
from sdekit.noise import BrownianPath, GaussianNoise
from sdekit.process import DriftDiffusion, ReverseProcess
from sdekit.solvers.base import Solver, check_solver
from sdekit.testing import GaussianMixture

F64 = torch.float64
VP = sdekit.VPSDE()
NEEDS_SDE = sorted(i.name for i in solvers.available() if i.kind != "corrector" and solvers.resolve(i.name).needs_sde)


class CountingDrift:
    def __init__(self):
        self.calls = 0

    def __call__(self, x, t):
        self.calls += 1
        return -x


class CountingScore(CountingDrift):
    pass


def test_every_diffusion_specific_solver_is_registered_as_such():
    assert {"dpmpp_2m", "ddim", "reverse_diffusion", "ancestral", "edm_heun", "unipc", "pc"} <= set(NEEDS_SDE)


@pytest.mark.parametrize("name", NEEDS_SDE)
def test_needs_sde_solver_on_a_drift_diffusion_problem_is_refused_before_any_drift_call(name):
    drift = CountingDrift()
    with pytest.raises(ValueError, match=rf"solver '{name}'.*needs_sde=True") as info:
        integrate(DriftDiffusion(drift), solvers.resolve(name), torch.linspace(1.0, 0.1, 5, dtype=F64),
                  torch.ones(3, 2, dtype=F64), GaussianNoise())
    assert isinstance(info.value, IncompatibleSolverError)
    assert drift.calls == 0


@pytest.mark.parametrize("name,process_lam", [("ode_rk4", 1.0), ("ddim", 1.0), ("euler_maruyama", 0.0),
                                               ("dpmpp_2m_sde", 0.0), ("reverse_diffusion", 0.5)])
def test_a_process_of_another_lam_is_refused_before_any_score_call(name, process_lam):
    score = CountingScore()
    with pytest.raises(ValueError, match=rf"solver '{name}' integrates the reverse family at lam="):
        integrate(ReverseProcess(VP, score, lam=process_lam), solvers.resolve(name), sdekit.grids.uniform(VP, 4),
                  torch.ones(3, 2), GaussianNoise())
    assert score.calls == 0


def test_a_deterministic_solver_on_a_noisy_problem_is_refused():
    drift = CountingDrift()
    p = DriftDiffusion(drift, lambda t: 0.5 * torch.ones_like(t))
    with pytest.raises(ValueError, match="solver 'ode_heun' is deterministic"):
        integrate(p, solvers.resolve("ode_heun"), torch.linspace(0.0, 1.0, 5), torch.ones(3, 1), GaussianNoise())
    assert drift.calls == 0
    integrate(p, solvers.resolve("euler_maruyama"), torch.linspace(0.0, 1.0, 5), torch.ones(3, 1), GaussianNoise())


def test_a_noise_source_without_levy_area_is_refused_before_any_drift_call():
    drift = CountingDrift()
    with pytest.raises(ValueError, match="Lévy area") as info:
        integrate(DriftDiffusion(drift, lambda t: torch.ones_like(t)), solvers.resolve("srk"),
                  torch.tensor([1.0, 0.5]), torch.zeros(3, 1), BrownianPath(GaussianNoise()))
    assert isinstance(info.value, NotImplementedError) and drift.calls == 0


def test_check_solver_accepts_the_pairs_sample_builds():
    for info in solvers.available():
        if info.kind == "corrector":
            continue
        s = solvers.resolve(info.name)
        check_solver(s, ReverseProcess(VP, lambda x, t: -x, lam=s.lam), GaussianNoise())


# ----------------------------------------------------------------------------- pc (issue 14, item 5)

@pytest.mark.parametrize("predictor", ["ode_adaptive", "sde_adaptive", "torchdiffeq"])
def test_pc_refuses_an_adaptive_predictor_up_front(predictor):
    with pytest.raises(ValueError, match=rf"predictor '{predictor}' is adaptive"):
        solvers.resolve("pc", predictor=predictor)
    score = CountingScore()
    with pytest.raises(ValueError, match="is adaptive"):
        sdekit.sample(score, VP, "pc", predictor=predictor, shape=(2, 2), steps=5)
    assert score.calls == 0


def test_pc_with_edm_heun_and_churn_runs_and_equals_edm_heun_without_a_corrector():
    mix = GaussianMixture.random(dim=2, generator=torch.Generator().manual_seed(0))
    kw = dict(shape=(6, 2), steps=8, dtype=F64, schedule="karras")
    a = sdekit.sample(mix.score_fn(VP), VP, "pc", predictor="edm_heun", predictor_options={"s_churn": 5.0},
                      corrector=None, generator=torch.Generator().manual_seed(1), **kw)
    b = sdekit.sample(mix.score_fn(VP), VP, "edm_heun", s_churn=5.0, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a, b)
    c = sdekit.sample(mix.score_fn(VP), VP, "pc", predictor="edm_heun", predictor_options={"s_churn": 5.0},
                      generator=torch.Generator().manual_seed(1), **kw)
    assert bool(torch.isfinite(c).all()) and not torch.equal(c, b)


def test_pc_hands_the_grid_to_its_predictor_so_lower_order_final_steps_apply():
    mix = GaussianMixture.random(dim=2, generator=torch.Generator().manual_seed(0))
    kw = dict(shape=(6, 2), steps=5, dtype=F64, generator=torch.Generator().manual_seed(1), schedule="logsnr")
    a = sdekit.sample(mix.score_fn(VP), VP, "pc", predictor="dpmpp_2m", corrector=None, **kw)
    kw["generator"] = torch.Generator().manual_seed(1)
    b = sdekit.sample(mix.score_fn(VP), VP, "dpmpp_2m", **kw)
    assert torch.equal(a, b)


def test_pc_capabilities_follow_its_parts():
    p = solvers.resolve("pc", predictor="euler_maruyama", corrector=None)
    assert not p.needs_sde and p.kind == "sde"
    integrate(DriftDiffusion(lambda x, t: -x, lambda t: torch.ones_like(t)), p, torch.linspace(0.0, 1.0, 3),
              torch.ones(2, 1), GaussianNoise())
    q = solvers.resolve("pc", predictor="ode_heun", corrector=None)
    assert (q.kind, q.stochastic, q.lam, q.order) == ("ode", False, 0.0, 2.0)


def test_capabilities_set_per_instance_are_not_annotated_classvar():
    hints = typing.get_type_hints(Solver, include_extras=True)
    classvars = {k for k, v in hints.items() if typing.get_origin(v) is typing.ClassVar}
    for info in solvers.available():
        if info.kind == "corrector":
            continue
        inst = solvers.resolve(info.name)
        assert not (set(vars(inst)) & classvars), (info.name, set(vars(inst)) & classvars)
    assert not set(vars(solvers.resolve("pc"))) & classvars
