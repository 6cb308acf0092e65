"""Rößler's SRA stochastic Runge–Kutta: tableaux and strong order 1.5 on one shared Brownian path."""

from __future__ import annotations

import math

import pytest
import torch

import sdekit
from sdekit.integrate import integrate
from sdekit.noise import BrownianNoise, GaussianNoise
from sdekit.process import DriftDiffusion
from sdekit.solvers.srk import SRA_TABLEAUX


@pytest.mark.parametrize("name", sorted(SRA_TABLEAUX))
def test_sra_tableau_consistency(name):
    tab = SRA_TABLEAUX[name]
    s = tab.stages
    assert math.isclose(sum(tab.alpha), 1.0, abs_tol=1e-14)
    assert math.isclose(sum(tab.beta1), 1.0, abs_tol=1e-14)
    assert math.isclose(sum(tab.beta2), 0.0, abs_tol=1e-14)
    for i in range(s):
        assert len(tab.A0[i]) == len(tab.B0[i]) == s
        assert math.isclose(sum(tab.A0[i]), tab.c0[i], abs_tol=1e-14)
        assert all(tab.A0[i][j] == 0.0 and tab.B0[i][j] == 0.0 for j in range(i, s))  # explicit
    # order conditions of the drift part (deterministic order 2 for sra1, 3 for sra3)
    a, c, A = tab.alpha, tab.c0, tab.A0
    assert math.isclose(sum(ai * ci for ai, ci in zip(a, c)), 0.5, abs_tol=1e-14)
    if name == "sra3":
        assert math.isclose(sum(ai * ci * ci for ai, ci in zip(a, c)), 1 / 3, abs_tol=1e-14)
        assert math.isclose(sum(a[i] * A[i][j] * c[j] for i in range(s) for j in range(s)), 1 / 6, abs_tol=1e-14)


def _drift(x, t):
    return torch.sin(x) - 0.5 * x


def _diffusion(t):
    return 1.0 + t


@pytest.mark.parametrize("method", ["sra1", "sra3"])
def test_srk_strong_order_one_and_a_half(method):
    """RMS error at t=0 against a 2048-step solve on the same torchsde Brownian path, nested grids."""
    b = 300
    x0 = torch.full((b, 1), 0.5, dtype=torch.float64)
    bm = BrownianNoise(0.0, 1.0, (b, 1), seed=3, dtype=torch.float64)
    solver = sdekit.solvers.resolve("srk", method=method)

    def run(n):
        grid = torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64)  # reverse time, like sampling
        return integrate(DriftDiffusion(_drift, _diffusion), solver, grid, x0, bm).x

    ref = run(2048)
    ns = [8, 16, 32, 64, 128]
    errs = torch.tensor([float(((run(n) - ref) ** 2).mean().sqrt()) for n in ns], dtype=torch.float64)
    logn = torch.log(torch.tensor(ns, dtype=torch.float64))
    design = torch.stack([logn, torch.ones_like(logn)], 1)
    slope = -float(torch.linalg.lstsq(design, torch.log(errs)[:, None]).solution[0])
    assert abs(slope - 1.5) <= 0.3, (method, slope, errs.tolist())
    # and it beats Euler–Maruyama (strong order 1 here) on the same path by a wide margin
    em = integrate(DriftDiffusion(_drift, _diffusion), sdekit.solvers.resolve("euler_maruyama"),
                   torch.linspace(1.0, 0.0, 129, dtype=torch.float64), x0, bm).x
    assert float(((em - ref) ** 2).mean().sqrt()) > 5 * float(errs[-1])


def test_srk_samples_gaussian_mixture():
    sde = sdekit.VPSDE()
    mix = sdekit.testing.GaussianMixture.random(dim=4, components=3)
    x = sdekit.sample(mix.score_fn(sde), sde, "srk", method="sra3", shape=(2000, 4), steps=40,
                      generator=torch.Generator().manual_seed(0))
    fd = sdekit.metrics.frechet_to_moments(x, mix.mean(), mix.cov())
    floor = sdekit.metrics.frechet_to_moments(mix.sample(2000, generator=torch.Generator().manual_seed(1)),
                                             mix.mean(), mix.cov())
    assert fd < 3 * floor + 0.01, (fd, floor)


def test_srk_options_and_noise_requirements():
    with pytest.raises(ValueError, match="method"):
        sdekit.solvers.resolve("srk", method="sra2")
    with pytest.raises(ValueError, match="lam"):
        sdekit.solvers.resolve("srk", lam=2.0)
    assert "srk" in [s.name for s in sdekit.solvers.available()]
    # a noise source without Lévy area fails loudly
    p = DriftDiffusion(_drift, _diffusion)
    with pytest.raises(NotImplementedError, match="Lévy area"):
        integrate(p, sdekit.solvers.resolve("srk"), torch.tensor([1.0, 0.5]), torch.zeros(3, 1),
                  sdekit.noise.BrownianPath(GaussianNoise(torch.Generator().manual_seed(0))))
