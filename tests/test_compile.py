"""``sample(..., compile=...)``: the fixed-step loop captured by ``torch.compile``.

What is checked: every fixed-step solver gives the eager samples through the compiler (exactly,
with a backend that runs the traced ops; to float32 rounding, with inductor); compilations stop
growing with the number of steps (a step compiles per state layout, not per step) and are reused
by a second call; with in-graph Philox noise every solver's step is ONE graph (``fullgraph``); and
bad options are refused before any work.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.backends.registry import lookup_backend

import sdekit
from sdekit import capture
from sdekit.kernels.philox import PhiloxNoise
from tests.test_sync_free import FIXED

STOCHASTIC = [n for n in FIXED if sdekit.solvers.resolve(n).stochastic]


class CountingBackend:
    """A torch.compile backend that counts the graphs it is given and runs them with aot_eager
    (functionalised aten ops, so in-place buffer writes are checked as the compiler sees them)."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return lookup_backend("aot_eager")(gm, example_inputs)


def _net_score(dim: int = 6, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w1 = (torch.randn(dim + 1, 32, generator=g) / (dim + 1) ** 0.5).to(dtype)
    w2 = (torch.randn(32, dim, generator=g) / 32 ** 0.5).to(dtype)

    def score_fn(x, t):
        h = torch.cat([x, t[:, None].expand(x.shape[0], 1)], 1)
        return torch.tanh(h @ w1) @ w2 - x
    return score_fn


@pytest.mark.parametrize("name", FIXED)
def test_compiled_steps_give_the_eager_samples_and_stop_compiling(name):
    score_fn, sde = _net_score(), sdekit.VPSDE()
    backend = CountingBackend()
    graphs = []
    for steps in (6, 13, 27, 40):
        kw = dict(shape=(16, 6), steps=steps)
        eager = sdekit.solve(score_fn, sde, name, generator=torch.Generator().manual_seed(steps), **kw)
        comp = sdekit.solve(score_fn, sde, name, generator=torch.Generator().manual_seed(steps),
                            compile={"backend": backend}, **kw)
        torch.testing.assert_close(comp.x, eager.x, rtol=1e-6, atol=1e-6)
        assert comp.nfe == eager.nfe  # the score calls inside the graph are still counted
        graphs.append(backend.graphs)
    assert graphs[0] > 0
    # the first runs see every state layout (multistep warm-up; lower-order final steps on grids
    # below 15 steps, none above; a new grid length makes its size dynamic): 40 steps add none
    assert graphs[3] == graphs[2], f"{name}: graphs compiled after 6/13/27/40-step runs: {graphs}"


@pytest.mark.parametrize("name", FIXED)
def test_every_step_is_one_graph_with_philox_noise(name):
    score_fn, sde = _net_score(), sdekit.VPSDE()
    kw = dict(x_T=torch.randn(8, 6, generator=torch.Generator().manual_seed(2)), steps=9)
    eager = sdekit.solve(score_fn, sde, name, noise=PhiloxNoise(7), **kw).x
    comp = sdekit.solve(score_fn, sde, name, noise=PhiloxNoise(7), compile={"backend": "eager", "fullgraph": True},
                        **kw).x
    torch.testing.assert_close(comp, eager, rtol=1e-6, atol=1e-6)


def test_a_second_call_reuses_the_compiled_step():
    score_fn, sde, backend = _net_score(), sdekit.VPSDE(), CountingBackend()
    first = sdekit.sample(score_fn, sde, "dpmpp_2m", shape=(16, 6), steps=10, compile={"backend": backend})
    n = backend.graphs
    again = sdekit.sample(score_fn, sde, "dpmpp_2m", x_T=torch.randn(16, 6), steps=10, compile={"backend": backend})
    assert n > 0 and backend.graphs == n
    assert first.shape == again.shape


def test_solvers_do_not_share_a_compile_budget(monkeypatch):
    """Each solver configuration has its own compiled copy of the step, so sampling with several
    multistep solvers in one process does not push one of them past torch's recompile limit (torch's
    default of 8 here; one copy shared by these three would need about 13 compilations)."""
    monkeypatch.setattr(capture, "RECOMPILE_LIMIT", 8)
    score_fn, sde = _net_score(), sdekit.VPSDE()
    for name in ("dpmpp_2m", "unipc", "dpmpp_3m", "dpmpp_2m"):
        sdekit.solve(score_fn, sde, name, shape=(8, 6), steps=8, noise=PhiloxNoise(1),
                     compile={"backend": "eager", "fullgraph": True})  # fullgraph: a fallback would raise
    opts = {"backend": "eager"}
    a, b = sdekit.solvers.resolve("unipc"), sdekit.solvers.resolve("unipc", variant="bh1")
    assert capture.step_function(opts, a) is capture.step_function(opts, sdekit.solvers.resolve("unipc"))
    assert capture.step_function(opts, a) is not capture.step_function(opts, b)
    code = [capture.step_function(opts, s)._torchdynamo_orig_callable.__code__ for s in (a, b)]
    assert code[0] is not code[1]  # compiled code is cached per code object


@pytest.mark.parametrize("name", ["ode_euler", "dpmpp_2m", "euler_maruyama"])
def test_inductor_matches_float64_as_closely_as_eager_float32(name):
    """With the default compiler the arithmetic is reordered and fused: the compiled float32 samples
    must be as close to a float64 run as the eager float32 samples are."""
    sde = sdekit.VPSDE()
    x_T = torch.randn(64, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref = sdekit.sample(_net_score(dtype=torch.float64), sde, name, x_T=x_T, steps=12, seed=5)
    f32 = _net_score()
    eager = sdekit.sample(f32, sde, name, x_T=x_T.float(), steps=12, seed=5)
    comp = sdekit.sample(f32, sde, name, x_T=x_T.float(), steps=12, seed=5, compile=True)
    err_eager = (eager.double() - ref).abs().max().item()
    err_comp = (comp.double() - ref).abs().max().item()
    assert err_comp <= 4 * err_eager + 1e-5, (err_comp, err_eager)


def _never_called(x, t):
    raise AssertionError("score_fn was called: the input should have been refused first")


@pytest.mark.parametrize("compile,error,match", [
    ("yes", TypeError, "compile must be a bool or a dict"),
    ({"modee": "max-autotune"}, ValueError, "unknown torch.compile option"),
    ({"backend": "no-such-backend"}, Exception, "no-such-backend"),
])
def test_bad_compile_options_are_refused_before_any_work(compile, error, match):
    with pytest.raises(error, match=match):
        sdekit.sample(_never_called, sdekit.VPSDE(), "ode_euler", shape=(4, 6), steps=5, compile=compile)


def test_adaptive_solvers_refuse_compile():
    with pytest.raises(ValueError, match="adaptive"):
        sdekit.sample(_never_called, sdekit.VPSDE(), "ode_adaptive", shape=(4, 6), compile=True)


@pytest.mark.parametrize("name", STOCHASTIC[:2])
def test_fullgraph_with_generator_noise_is_refused(name):
    with pytest.raises(ValueError, match="PhiloxNoise"):
        sdekit.sample(_never_called, sdekit.VPSDE(), name, shape=(4, 6), steps=5,
                      compile={"fullgraph": True}, generator=torch.Generator().manual_seed(0))
