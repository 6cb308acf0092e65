"""Time-stepping policies (issue 15): a new policy or controller plugs in without editing the loop."""

from __future__ import annotations

import torch

import sdekit
from sdekit.controller import PIController
from sdekit.integrate import integrate
from sdekit.noise import GaussianNoise
from sdekit.process import ReverseProcess
from sdekit.solvers.ode_adaptive import ODEAdaptive
from sdekit.stepping import Adaptive, FixedGrid, StepPolicy
from sdekit.testing import GaussianMixture

F64 = torch.float64
SDE = sdekit.VPSDE()
GAUSS = GaussianMixture(torch.ones(1), torch.tensor([[0.5, -1.0, 2.0]], dtype=F64),
                        torch.tensor([[0.3, 0.8, 1.2]], dtype=F64))


def _x_T(b: int = 16) -> torch.Tensor:
    return SDE.prior_sample((b, 3), generator=torch.Generator().manual_seed(0), dtype=F64)


def _process(lam: float = 0.0) -> ReverseProcess:
    return ReverseProcess(SDE, GAUSS.score_fn(SDE), lam=lam)


class StepTo(StepPolicy):
    """A step-to-times policy written outside sdekit: halves of every interval of ``grid``, each half one step;
    only the grid points are checkpoints."""

    def __init__(self, grid):
        self.grid = grid.detach().cpu()
        self.total = 2 * (self.grid.numel() - 1)

    def init(self, solver, process, x, state, noise, *, check_finite=True, finite_check_every=1):
        mids = 0.5 * (self.grid[1:] + self.grid[:-1])
        self.times = torch.stack([self.grid[:-1], mids], 1).reshape(-1).tolist() + [float(self.grid[-1])]
        self.k, self.b, self.dtype = 0, x.shape[0], x.dtype
        return noise

    def done(self):
        return self.k == len(self.times) - 1

    def propose(self, x):
        t0, t1 = self.times[self.k], self.times[self.k + 1]
        return (torch.full((self.b,), t0, dtype=self.dtype), torch.full((self.b,), t1, dtype=self.dtype))

    def update(self, solver, x, x_new, err, state):
        self.k += 1
        return x_new, state

    def reached(self):
        return [(self.k // 2, None)] if self.k % 2 == 0 else []

    def t_now(self):
        return self.times[self.k]

    def stats(self):
        return {"accepted": self.k, "rejected": 0, "policy": "step-to"}


def test_a_custom_policy_plugs_in_and_matches_the_fixed_grid_it_describes():
    coarse = sdekit.grids.uniform(SDE, 6).to(F64)
    fine = torch.stack([coarse[:-1], 0.5 * (coarse[1:] + coarse[:-1])], 1).reshape(-1)
    fine = torch.cat([fine, coarse[-1:]])
    seen = []
    a = integrate(_process(), sdekit.solvers.resolve("ode_heun"), coarse, _x_T(), GaussianNoise(),
                  policy=StepTo(coarse), save_at="grid", callback=lambda info: seen.append(info.step))
    b = integrate(_process(), sdekit.solvers.resolve("ode_heun"), fine, _x_T(), GaussianNoise(), save_at="grid")
    assert torch.equal(a.x, b.x) and a.nfe == b.nfe == 24
    assert a.stats["policy"] == "step-to" and a.steps == 12 and seen == list(range(1, 13))
    assert torch.equal(a.ts, coarse) and torch.equal(a.xs, b.xs[::2])  # saved at the checkpoints only


class CountingPI(PIController):
    """A step-size controller written outside sdekit: an I-controller (no memory of the last error)
    that counts its calls."""

    calls = 0

    def factor(self, e, e_prev, accepted):
        CountingPI.calls += 1
        return super().factor(e, torch.ones_like(e_prev), accepted)


def test_a_custom_controller_plugs_in_through_the_adaptive_policy():
    exact = GAUSS.pf_ode_flow(_x_T(), SDE.T, SDE.eps, SDE)
    solver = sdekit.solvers.resolve("ode_adaptive", rtol=1e-7, atol=1e-7)
    grid = torch.tensor([SDE.T, SDE.eps], dtype=F64)
    CountingPI.calls = 0
    ctrl = CountingPI(rtol=1e-7, atol=1e-7, err_order=4, beta=0.0)
    sol = integrate(_process(), solver, grid, _x_T(), GaussianNoise(), policy=Adaptive(grid, ctrl))
    assert CountingPI.calls == sol.stats["attempts"] > 5
    assert float((sol.x - exact).abs().max()) < 1e-5


def test_a_custom_controller_plugs_in_through_a_solver_subclass():
    class IControlled(ODEAdaptive):
        def controller(self):
            return CountingPI(rtol=self.rtol, atol=self.atol, err_order=self.err_order, beta=0.0)

    CountingPI.calls = 0
    exact = GAUSS.pf_ode_flow(_x_T(), SDE.T, SDE.eps, SDE)
    sol = sdekit.solve(GAUSS.score_fn(SDE), SDE, IControlled(rtol=1e-7, atol=1e-7), x_T=_x_T(), denoise=False)
    assert CountingPI.calls == sol.stats["attempts"] and float((sol.x - exact).abs().max()) < 1e-5


def test_the_first_step_comes_from_the_solver_hook_not_a_state_key():
    class OtherKey(ODEAdaptive):
        """ode_adaptive keeping its FSAL derivative under another key, exposed through the hook."""

        def init(self, process, x, t0):
            return {"deriv": process.drift(x, t0)}

        def initial_derivative(self, state):
            return state["deriv"]

        def step(self, process, t0, t1, x, state, noise):
            state["k"] = state.pop("deriv")
            x1, state, err = super().step(process, t0, t1, x, state, noise)
            return x1, state, err

        def accept(self, state, accepted):
            state = super().accept(state, accepted)
            state["deriv"] = state.pop("k")
            return state

    grid = torch.tensor([SDE.T, SDE.eps], dtype=F64)
    a = integrate(_process(), OtherKey(), grid, _x_T(), GaussianNoise())
    b = integrate(_process(), sdekit.solvers.resolve("ode_adaptive"), grid, _x_T(), GaussianNoise())
    assert torch.equal(a.x, b.x) and a.nfe == b.nfe and a.stats["attempts"] == b.stats["attempts"]


def test_stepping_is_a_declared_capability():
    class OneShot(sdekit.solvers.Solver):
        """Adaptive inside one driver step (like the torchdiffeq bridge) and with a controller method."""

        name, kind, stochastic, lam, adaptive, stepping = "one_shot", "ode", False, 0.0, True, "fixed"

        def controller(self):
            raise AssertionError("a fixed-stepping solver's controller is not used")

        def step(self, process, t0, t1, x, state, noise):
            return x + (t1 - t0).view(-1, 1) * process.drift(x, t0), state, None

    sol = integrate(_process(), OneShot(), sdekit.grids.uniform(SDE, 4).to(F64), _x_T(), GaussianNoise())
    assert sol.steps == 4 and sol.stats == {"accepted": 4, "rejected": 0, "attempts": 4}


def test_saved_states_and_callbacks_are_kept_one_way_for_both_policies():
    grid = sdekit.grids.uniform(SDE, 4).to(F64)
    for solver in ("ode_rk4", "ode_adaptive"):
        seen: list = []
        sol = integrate(_process(), sdekit.solvers.resolve(solver), grid, _x_T(), GaussianNoise(), save_at="grid",
                        callback=seen.append)
        seen = [(info.step, info.t) for info in seen]
        assert torch.equal(sol.ts, grid) and sol.xs.shape == (5, 16, 3) and bool(torch.isfinite(sol.xs).all())
        assert [s for s, _ in seen] == list(range(1, sol.steps + 1)) and seen[-1][1] == float(grid[-1])
    fixed = FixedGrid(grid)
    assert fixed.total == 4 and fixed.grid.device.type == "cpu"
