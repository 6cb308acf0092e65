"""The default grids stop short of eps at low NFE (grids.default_stop, issue 12 item 3): a run with no
schedule= ends its grid a solver-chosen fraction of the log-SNR range before eps at 4 score evaluations or
fewer, tapering to the grid ending at eps at DEFAULT_STOP_UNTIL evaluations, and denoises there."""

import pytest
import torch

import sdekit
from sdekit import grids
from sdekit.metrics import frechet_distance, ode_map_error
from sdekit.solvers import resolve
from sdekit.testing import mixture_family

# held out: no default was chosen on this split (2-D, 30 components)
MIX = mixture_family("heldout", 0)


def _default_stop(name: str) -> float:
    try:
        return resolve(name).default_stop
    except (TypeError, ValueError, ImportError):  # a solver whose constructor needs arguments
        return 0.0


STOPPING = [i.name for i in sdekit.solvers.available() if _default_stop(i.name) > 0]


def test_which_solvers_stop_short():
    assert {"unipc", "dpmpp_3m", "deis", "lms", "ddim", "dpmpp_2m_sde", "dpmpp_3m_sde", "srk"} <= set(STOPPING)
    for name in ("dpmpp_2m", "dpmpp_2s", "ode_euler", "euler_maruyama", "pc", "reverse_diffusion"):
        assert grids.default_stop(resolve(name), sdekit.VPSDE(), 4) == 0.0, name
    # chosen with the default options: options that change whether the solver is stochastic end at eps
    assert grids.default_stop(resolve("ddim", eta=1.0), sdekit.VPSDE(), 4) == 0.0
    assert grids.default_stop(resolve("dpmpp_2m_sde", eta=0.0), sdekit.VPSDE(), 4) == 0.0
    assert grids.default_stop(resolve("dpmpp_2m_sde"), sdekit.VPSDE(), 4) == 0.4


@pytest.mark.parametrize("name", STOPPING)
def test_the_stop_tapers_to_the_grid_ending_at_eps(name):
    solver, sde = resolve(name), sdekit.VPSDE()
    f0 = solver.default_stop
    fracs = [grids.default_stop(solver, sde, n) for n in range(1, 60)]
    nfes = [solver.nfe_for(n) for n in range(1, 60)]
    for f, n in zip(fracs, nfes):
        if n <= 4:
            assert f == f0
        if n >= grids.DEFAULT_STOP_UNTIL:
            assert f == 0.0
            assert torch.equal(grids.default_grid(solver, sde, nfes.index(n) + 1),
                               grids.get_grid(grids.default_schedule(solver, sde), sde, nfes.index(n) + 1))
    assert all(a >= b for a, b in zip(fracs, fracs[1:]))  # more steps never stop further short
    step = f0 / (grids.DEFAULT_STOP_UNTIL - 4) * max(solver.nfe_for(2) - solver.nfe_for(1), 1)
    assert all(a - b <= step + 1e-12 for a, b in zip(fracs, fracs[1:]))  # no jump back to eps


def test_the_default_grid_stops_short_and_the_run_denoises_there():
    sde = sdekit.VPSDE()
    solver = resolve("unipc")
    steps = 4
    g = grids.default_grid(solver, sde, steps)
    at_eps = grids.default_grid(solver, sde, steps, stop_short=False)
    assert g.numel() == steps + 1 and float(g[0]) == sde.T and bool((torch.diff(g) < 0).all())
    assert float(at_eps[-1]) == sde.eps and float(g[-1]) > 10 * sde.eps
    lam = sde.log_snr(torch.stack([g[-1], at_eps[0], at_eps[-1]]))
    f = grids.default_stop(solver, sde, steps)
    assert float((lam[2] - lam[0]) / (lam[2] - lam[1])) == pytest.approx(f, rel=1e-6)
    score = MIX.score_fn(sde, matmul=True)
    x_T = sde.prior_sample((8, MIX.dim), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sol = sdekit.solve(score, sde, "unipc", x_T=x_T, nfe=5)
    assert sol.nfe == 5
    assert torch.equal(sol.x, sdekit.sample(score, sde, "unipc", x_T=x_T, schedule=g))
    assert not torch.allclose(sol.x, sdekit.sample(score, sde, "unipc", x_T=x_T, schedule=at_eps))


@pytest.mark.parametrize("options", [{"eps": 1e-3}, {"denoise": False}, {"save_at": [1.0, 1e-3]}],
                         ids=["eps", "no-denoise", "save_at"])
def test_the_grid_ends_at_eps_when_the_run_says_so(options):
    """eps= says where the run ends; without the denoising step the run would return the noisy state at the
    grid's end; save_at= times may name eps."""
    sde = sdekit.VPSDE()
    score = MIX.score_fn(sde, matmul=True)
    x_T = sde.prior_sample((8, MIX.dim), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ends = []
    sdekit.solve(score, sde, "unipc", x_T=x_T, nfe=5, callback=lambda s: ends.append(float(s.t)), **options)
    assert ends[-1] == pytest.approx(sde.eps, rel=1e-9)
    assert float(grids.default_grid(resolve("unipc"), sde, 4)[-1]) > 10 * sde.eps  # (without them: it stops short)


def test_default_grid_refuses_a_non_bool_stop_short():
    with pytest.raises(TypeError, match="stop_short must be a bool"):
        grids.default_grid(resolve("unipc"), sdekit.VPSDE(), 4, stop_short="no")


def test_flows_keep_the_grid_ending_at_eps():
    sde = sdekit.FlowSDE()
    assert grids.default_stop(resolve("unipc"), sde, 4) == 0.0
    assert float(grids.default_grid(resolve("unipc"), sde, 4)[-1]) == sde.eps


_REFS: dict = {}


def _reference(sde_name: str):
    """256 prior draws (float32, as users run) and their float64 ODE-map reference, once per process."""
    if sde_name not in _REFS:
        sde = sdekit.VPSDE() if sde_name == "vp" else sdekit.VESDE()
        x_T = sde.prior_sample((256, MIX.dim), generator=torch.Generator().manual_seed(3), dtype=torch.float32)
        _REFS[sde_name] = sde, x_T, MIX.ode_reference(sde, x_T.double(), rtol=1e-6)
    return _REFS[sde_name]


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize("name", ["unipc", "dpmpp_3m"])
def test_stopping_short_lowers_the_ode_map_error_at_5_nfe_on_a_held_out_mixture(sde_name, name):
    """Measured (256 samples; ODE-map error on the grid ending at eps -> the default grid): unipc VP 0.462 ->
    0.294, VE 0.371 -> 0.269; dpmpp_3m VP 0.974 -> 0.202, VE 0.735 -> 0.244."""
    sde, x_T, ref = _reference(sde_name)
    score = MIX.score_fn(sde, matmul=True)
    s = resolve(name)
    steps = sdekit.steps_for_nfe(s, 5, denoise=True)
    errs = {label: ode_map_error(sdekit.sample(score, sde, name, x_T=x_T, schedule=g).double(), ref, MIX.data_std())
            for label, g in (("eps", grids.default_grid(s, sde, steps, stop_short=False)),
                             ("default", grids.default_grid(s, sde, steps)))}
    assert errs["default"] < 0.9 * errs["eps"], errs


@pytest.mark.parametrize("name", ["dpmpp_2m_sde", "dpmpp_3m_sde"])
def test_stopping_short_lowers_a_stochastic_solvers_fd_at_5_nfe_on_a_held_out_mixture(name):
    """Measured (VP, 1024 samples, 3 noise seeds; FD to 20000 exact samples, grid ending at eps -> default grid):
    dpmpp_2m_sde 35.6 -> 9.53, dpmpp_3m_sde 39.0 -> 11.0."""
    sde = sdekit.VPSDE()
    score = MIX.score_fn(sde, matmul=True)
    exact = MIX.sample(20000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    s = resolve(name)
    steps = sdekit.steps_for_nfe(s, 5, denoise=True)
    fds = {}
    for label, g in (("eps", grids.default_grid(s, sde, steps, stop_short=False)),
                     ("default", grids.default_grid(s, sde, steps))):
        fds[label] = sum(frechet_distance(sdekit.sample(score, sde, name, shape=(1024, MIX.dim), schedule=g,
                                                        generator=torch.Generator().manual_seed(k)).double(), exact)
                         for k in range(3)) / 3
    assert fds["default"] < 0.8 * fds["eps"], fds
