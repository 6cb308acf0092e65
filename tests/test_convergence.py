"""Measured convergence orders on problems with known answers (slope within ±0.3 of theory)."""

import pytest
import torch

import sdekit
from sdekit.grids import uniform
from sdekit.integrate import integrate
from sdekit.metrics import frechet_to_moments
from sdekit.noise import BrownianNoise, GaussianNoise
from sdekit.process import DriftDiffusion, ReverseProcess
from sdekit.solvers import resolve
from sdekit.testing import GaussianMixture

from ._orders import slope

GAUSS = GaussianMixture(torch.ones(1), torch.tensor([[0.5, -1.0, 2.0]]), torch.tensor([[0.3, 0.8, 1.2]]))
ODE_CASES = [("ode_euler", 1, [50, 100, 200, 400]), ("ode_heun", 2, [25, 50, 100, 200]),
             ("ode_rk4", 4, [32, 64, 128, 256])]
# sub-VP's sigma ~ t near 0 makes the PF-ODE stiff there: eps=1e-2 keeps the test in the asymptotic regime
SDES = {"vp": sdekit.VPSDE(), "ve": sdekit.VESDE(eps=1e-3), "subvp": sdekit.SubVPSDE(eps=1e-2),
        "cosine": sdekit.CosineSDE()}


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("name, order, steps", ODE_CASES)
def test_pf_ode_solver_order_on_exact_gaussian_flow(sde_name, name, order, steps):
    """For Gaussian data the PF-ODE flow map is known in closed form."""
    sde = SDES[sde_name]
    x_T = sde.prior_sample((32, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = GAUSS.pf_ode_flow(x_T, sde.T, sde.eps, sde)
    errors = []
    for n in steps:
        process = ReverseProcess(sde, GAUSS.score_fn(sde), lam=0.0)
        sol = integrate(process, resolve(name), uniform(sde, n), x_T, GaussianNoise())
        assert sol.nfe == resolve(name).nfe_for(n)
        errors.append(float((sol.x - exact).abs().max()))
    measured = slope(steps, errors)
    assert abs(measured - order) <= 0.3, f"{name} on {sde_name}: slope {measured:.2f}, errors {errors}"


def test_euler_maruyama_strong_order_on_ornstein_uhlenbeck():
    """dx = -theta x dt + s dW: EM's strong order is 1 for additive noise (one Brownian path per sample)."""
    theta, s, batch = 2.0, 0.8, 1000
    x0 = torch.ones(batch, 1, dtype=torch.float64)
    bm = BrownianNoise(0.0, 1.0, (batch, 1), seed=3, dtype=torch.float64)

    def run(n):
        ou = DriftDiffusion(lambda x, t: -theta * x, lambda t: s * torch.ones_like(t))
        return integrate(ou, resolve("euler_maruyama"), torch.linspace(0, 1, n + 1, dtype=torch.float64), x0, bm).x

    ref = run(2048)
    # sanity: the fine solution has the exact OU mean and variance
    mean, var = torch.exp(torch.tensor(-theta)), s * s * (1 - torch.exp(torch.tensor(-2 * theta))) / (2 * theta)
    assert abs(float(ref.mean()) - float(mean)) < 4 * float(var.sqrt()) / batch ** 0.5
    steps = [8, 16, 32, 64]
    errors = [float((run(n) - ref).abs().mean()) for n in steps]
    assert abs(slope(steps, errors) - 1.0) <= 0.3, errors


@pytest.mark.parametrize("sde, name", [(sdekit.VPSDE(), "euler_maruyama"), (sdekit.VPSDE(), "reverse_diffusion"),
                                       (sdekit.VESDE(eps=1e-2), "euler_maruyama"),
                                       (sdekit.VESDE(eps=1e-2), "reverse_diffusion"),
                                       (sdekit.VESDE(eps=1e-2), "ancestral"),
                                       # ancestral's noise scale sigma(t1)/sigma(t0) is O(h/t) from 1 near t = 0
                                       # for VP, so the asymptotic regime needs h << eps
                                       (sdekit.VPSDE(eps=0.1), "ancestral")])
def test_reverse_sde_strong_order_against_fine_solution_on_same_path(sde, name):
    g = GaussianMixture(torch.ones(1), torch.tensor([[0.5, -1.0]]), torch.tensor([[0.3, 0.8]]))
    batch = 400
    x_T = sde.prior_sample((batch, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    bm = BrownianNoise(sde.eps, sde.T, (batch, 2), seed=5, dtype=torch.float64)

    def run(n, solver):
        return integrate(ReverseProcess(sde, g.score_fn(sde)), resolve(solver), uniform(sde, n), x_T, bm).x

    ref = run(2048, "euler_maruyama")
    steps = [16, 32, 64, 128]
    errors = [float((run(n, name) - ref).abs().mean()) for n in steps]
    assert abs(slope(steps, errors) - resolve(name).order) <= 0.3, errors


@pytest.mark.parametrize("sde", [sdekit.VPSDE(), sdekit.VESDE()], ids=["vp", "ve"])
@pytest.mark.parametrize("name", ["euler_maruyama", "reverse_diffusion", "ancestral", "pc"])
def test_reverse_sde_weak_error_falls_to_sampling_floor(sde, name):
    """FD to the exact mixture: visibly biased at 5 steps, at the finite-sample floor at 300.

    A single FD draw at n=4000 scatters by a factor ~10 around its mean, so both the floor
    and the solver's FD are averaged over several seeds.
    """
    mix = GaussianMixture.random(2, 4, generator=torch.Generator().manual_seed(1))
    mean, cov = mix.mean(), mix.cov()
    n, seeds = 4000, range(3)
    floor = sum(frechet_to_moments(mix.sample(n, generator=torch.Generator().manual_seed(100 + s)), mean, cov)
                for s in range(10)) / 10

    def fd(steps):
        return sum(frechet_to_moments(sdekit.sample(mix.score_fn(sde), sde, name, shape=(n, 2), steps=steps,
                                                    generator=torch.Generator().manual_seed(s)), mean, cov)
                   for s in seeds) / len(seeds)

    coarse, fine = fd(5), fd(300)
    assert coarse > 5 * floor, f"a 5-step solve should be visibly biased: FD {coarse:.4g}, floor {floor:.4g}"
    assert fine < 3 * floor, f"{name}: FD {fine:.4g} vs floor {floor:.4g}"
