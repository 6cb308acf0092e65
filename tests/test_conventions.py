"""Conventions users bring from diffusers / k-diffusion (issue 13 item 4): noise=, generator lists,
inference_mode, memory format, batched CFG, meta-device errors."""

from __future__ import annotations

import inspect

import pytest
import torch

import sdekit
from sdekit.testing import GaussianMixture

from ._helpers import Counting

SDE = sdekit.VPSDE()
MIX = GaussianMixture.random(dim=2, components=2, generator=torch.Generator().manual_seed(0))


def test_sample_takes_noise():
    assert "noise" in inspect.signature(sdekit.sample).parameters
    score = MIX.score_fn(SDE)
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    noise = sdekit.noise.BrownianNoise(SDE.eps, SDE.T, (8, 2), seed=3)  # k-diffusion-style replayable path
    a = sdekit.sample(score, SDE, "euler_maruyama", x_T=x_T, steps=8, noise=noise)
    b = sdekit.solve(score, SDE, "euler_maruyama", x_T=x_T, steps=8, noise=noise).x
    assert torch.equal(a, b)


def test_generator_list_gives_each_sample_its_own_stream():
    score = MIX.score_fn(SDE)
    gens = lambda: [torch.Generator().manual_seed(10 + i) for i in range(3)]  # noqa: E731
    batch = sdekit.sample(score, SDE, "euler_maruyama", shape=(3, 2), steps=6, generator=gens())
    for i in range(3):
        alone = sdekit.sample(score, SDE, "euler_maruyama", shape=(1, 2), steps=6,
                              generator=[torch.Generator().manual_seed(10 + i)])
        assert torch.equal(batch[i:i + 1], alone)
    # the prior of sample i is diffusers' randn_tensor with generator[i]
    g = torch.Generator().manual_seed(11)
    x_T = sdekit.solve(score, SDE, "ode_euler", shape=(3, 2), steps=1, generator=gens(), save_at=[SDE.T]).xs[0]
    assert torch.equal(x_T[1], torch.randn((1, 2), generator=g)[0])


def test_generator_list_refusals_before_any_work():
    score = Counting(MIX.score_fn(SDE))
    with pytest.raises(ValueError, match="list of 2 generators but the batch has 3"):
        sdekit.sample(score, SDE, "euler_maruyama", shape=(3, 2), steps=4, generator=[torch.Generator()] * 2)
    with pytest.raises(ValueError, match="noise"):
        sdekit.sample(score, SDE, "euler_maruyama", shape=(1, 2), steps=4, generator=[torch.Generator()],
                      noise=sdekit.noise.GaussianNoise())
    with pytest.raises(TypeError, match="list of them"):
        sdekit.sample(score, SDE, "euler_maruyama", shape=(1, 2), steps=4, generator=[0])
    assert score.calls == 0


def test_inference_mode_with_autograd_derivatives():
    sde = sdekit.AlphaSigmaSDE(lambda t: torch.exp(-t), lambda t: torch.sqrt(-torch.expm1(-2 * t)))
    score = MIX.score_fn(sde)
    x_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    ref = sdekit.sample(score, sde, "ode_heun", x_T=x_T, steps=5)
    with torch.inference_mode():
        out = sdekit.sample(score, sde, "ode_heun", x_T=x_T, steps=5)
        out2 = sdekit.sample(score, sde, "dpmpp_2m_sde", shape=(4, 2), steps=5,
                             generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, ref) and out2.shape == (4, 2)


@pytest.mark.parametrize("solver", ["dpmpp_2m", "unipc", "ode_heun", "euler_maruyama", "pc", "dpmpp_3m_sde"])
def test_channels_last_is_preserved(solver):
    seen = []

    def score(x, t):
        seen.append(x.is_contiguous(memory_format=torch.channels_last))
        return -x

    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)).to(memory_format=torch.channels_last)
    out = sdekit.sample(score, SDE, solver, x_T=x_T, steps=4, generator=torch.Generator().manual_seed(1))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert seen and all(seen), seen


def test_cfg_batched_one_forward_pass_labels_per_call():
    calls = []

    def net(x, t, y):  # an eps-like model of (x, t, label): the label shifts the output
        calls.append(x.shape[0])
        return 0.5 * x + y.to(x.dtype)[:, None] * t[:, None]

    cfg = sdekit.guidance.cfg_batched(net, 3.0, null_label=0)
    for labels in (torch.tensor([1, 2, 3]), torch.tensor([4, 5])):   # two sampling calls, two batch sizes
        b = labels.shape[0]
        score = sdekit.score.from_eps(cfg(labels), SDE)
        before = cfg.model_calls
        sol = sdekit.solve(score, SDE, "dpmpp_2m", shape=(b, 2), steps=5, generator=torch.Generator().manual_seed(0))
        assert cfg.model_calls - before == sol.nfe and calls[-1] == 2 * b
        two = sdekit.guidance.classifier_free(
            sdekit.score.from_eps(lambda x, t, y=labels: net(x, t, y), SDE),
            sdekit.score.from_eps(lambda x, t, y=labels: net(x, t, torch.zeros_like(y)), SDE), 3.0)
        ref = sdekit.sample(two, SDE, "dpmpp_2m", shape=(b, 2), steps=5, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(sol.x, ref, rtol=1e-5, atol=1e-6)
    assert cfg.rows == 2 * 3 * 6 + 2 * 2 * 6
    with pytest.raises(ValueError, match="labels were given for a batch of 2"):
        sdekit.sample(sdekit.score.from_eps(cfg(torch.tensor([1, 2])), SDE), SDE, "ddim", shape=(3, 2), steps=2)


def test_meta_device_is_refused_with_context():
    score = Counting(MIX.score_fn(SDE))
    with pytest.raises(ValueError, match="meta device"):
        sdekit.sample(score, SDE, "ode_euler", shape=(2, 2), steps=2, device="meta")
    with pytest.raises(ValueError, match="x_T is on the meta device"):
        sdekit.sample(score, SDE, "ode_euler", x_T=torch.zeros(2, 2, device="meta"), steps=2)
    with pytest.raises(ValueError, match="meta device"):
        sdekit.likelihood(score, SDE, torch.zeros(2, 2, device="meta"))
    assert score.calls == 0
    with pytest.raises(sdekit.ScoreError, match="weights are not loaded"):
        sdekit.sample(lambda x, t: torch.zeros_like(x, device="meta"), SDE, "ode_euler", shape=(2, 2), steps=2)
