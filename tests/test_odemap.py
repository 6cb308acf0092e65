"""The ODE-map error, mode flips, the float64 PF-ODE reference and the held-out problem families (issue 12)."""

from __future__ import annotations

import math

import pytest
import torch

import sdekit
from sdekit.metrics import mode_flips, ode_map_error
from sdekit.testing import SPLITS, GaussianMixture, mixture_family, random_problem, split_of


@pytest.mark.parametrize("sde", [sdekit.VPSDE(), sdekit.VESDE()], ids=["vp", "ve"])
def test_ode_rk4_converges_to_the_reference_at_order_4(sde):
    mix = mixture_family("tuning", 3, dim=4)
    x_T = sde.prior_sample((16, 4), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref = mix.ode_reference(sde, x_T)
    steps = [100, 200, 400]
    errs = [ode_map_error(sdekit.sample(mix.score_fn(sde), sde, "ode_rk4", x_T=x_T, steps=n, schedule="logsnr"),
                          ref, mix.data_std()) for n in steps]
    slope = -(math.log(errs[-1]) - math.log(errs[0])) / (math.log(steps[-1]) - math.log(steps[0]))
    assert abs(slope - 4) <= 0.3, (errs, slope)
    # the reference includes the denoising jump: without it the end points differ by far more
    assert ode_map_error(mix.ode_reference(sde, x_T, denoise=False), ref, mix.data_std()) > 100 * errs[0]


def test_reference_is_float64_and_refuses_bad_input():
    mix = GaussianMixture([1.0, 2.0], torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), 0.1)
    sde = sdekit.VPSDE()
    x_T = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    out = mix.ode_reference(sde, x_T)
    assert out.dtype == torch.float64 and out.shape == (5, 2)
    with pytest.raises(ValueError, match="x_T"):
        mix.ode_reference(sde, torch.zeros(5, 3))
    with pytest.raises(TypeError, match="sde"):
        mix.ode_reference("vp", x_T)
    with pytest.raises(ValueError, match="rtol"):
        mix.ode_reference(sde, x_T, rtol=0.0)


def test_ode_map_error_is_rms_distance_over_data_std():
    x_ref = torch.zeros(4, 3)
    x = torch.full((4, 3), 0.5)
    assert ode_map_error(x, x_ref, 2.0) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="same shape"):
        ode_map_error(x[:3], x_ref, 1.0)
    with pytest.raises(ValueError, match="data_std"):
        ode_map_error(x, x_ref, 0.0)
    with pytest.raises(TypeError, match="data_std"):
        ode_map_error(x, x_ref, torch.tensor(1.0))


def test_a_flip_is_counted_when_a_sample_crosses_a_component_boundary():
    mix = GaussianMixture([1.0, 1.0, 3.0], torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 3.0]]), 0.2)
    x_ref, labels = mix.sample(300, generator=torch.Generator().manual_seed(1), dtype=torch.float64,
                               return_labels=True)
    # small moves inside a component: no flip, though the ODE-map error is not zero
    jitter = x_ref + 0.05 * torch.randn(x_ref.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert mode_flips(mix, jitter, x_ref) == 0
    assert ode_map_error(jitter, x_ref, mix.data_std()) > 0
    # move 7 samples of component 0 onto component 1's mean: exactly 7 flips
    moved = x_ref.clone()
    idx = torch.nonzero(labels == 0).flatten()[:7]
    moved[idx] = mix.means[1] + (x_ref[idx] - mix.means[0])
    assert mode_flips(mix, moved, x_ref) == 7
    assert mode_flips(mix, x_ref, moved) == 7
    with pytest.raises(TypeError, match="mixture"):
        mode_flips("mix", moved, x_ref)


def test_problem_family_is_deterministic_per_seed():
    a, b = random_problem(17), random_problem(17)
    assert torch.equal(a.means, b.means) and torch.equal(a.stds, b.stds) and torch.equal(a.weights, b.weights)
    c = random_problem(18)
    assert a.dim != c.dim or not torch.equal(a.weights, c.weights)
    # fixing the dimension keeps the seed's other draws (components, weights)
    fixed = random_problem(17, dim=8)
    assert fixed.dim == 8 and torch.equal(fixed.weights, a.weights)


def test_problem_family_ranges():
    dims, comps, ratios = [], [], []
    for seed in range(60):
        m = random_problem(seed)
        k = m.means.shape[0]
        dims.append(m.dim)
        comps.append(k)
        ratios.append(float(m.weights.max() / m.weights.min()))
        assert 2 <= m.dim <= 3072 and 2 <= k <= 50
        mu = m.means.reshape(k, -1)
        spread = float((mu - m.mean()).pow(2).mean().sqrt())
        s = m.stds.reshape(k, -1)
        assert float(s.min()) >= 0.01 * spread * (1 - 1e-9)
        if m.dim >= 16:  # anisotropic: per-dimension stds differ within a component
            assert float((s.max(1).values / s.min(1).values).min()) > 1.5
    assert min(dims) < 10 and max(dims) > 1000          # the family covers the range
    assert min(comps) <= 3 and max(comps) >= 30
    assert max(ratios) > 20                             # some weights strongly imbalanced


def test_splits_are_disjoint_and_explicit():
    tuning = {2 * i for i in range(50)}
    heldout = {2 * i + 1 for i in range(50)}
    assert not tuning & heldout
    assert SPLITS == ("tuning", "heldout")
    for i in range(5):
        t, h = mixture_family("tuning", i), mixture_family("heldout", i)
        assert torch.equal(t.means, random_problem(2 * i).means)
        assert torch.equal(h.means, random_problem(2 * i + 1).means)
        assert split_of(2 * i) == "tuning" and split_of(2 * i + 1) == "heldout"
    with pytest.raises(ValueError, match="split"):
        mixture_family("test", 0)
    with pytest.raises(ValueError, match="index"):
        mixture_family("heldout", -1)


@pytest.mark.slow
@pytest.mark.parametrize("index", [4, 5])
def test_new_defaults_beat_the_old_ones_on_heldout_problems(index):
    """Issue 12's defaults, chosen on the tuning split, at 10 NFE on two held-out problems (VP and VE)."""
    from benchmarks.tune_defaults import BEFORE
    from sdekit.metrics import frechet_to_moments

    sde = sdekit.VPSDE() if index % 2 == 0 else sdekit.VESDE()
    mix = mixture_family("heldout", index, dim=16)
    x_T = sde.prior_sample((200, 16), generator=torch.Generator().manual_seed(0))
    ref = mix.ode_reference(sde, x_T.double(), rtol=1e-7)
    score = mix.score_fn(sde)
    for name in ("dpmpp_2m", "dpmpp_3m", "unipc"):
        old = ode_map_error(sdekit.sample(score, sde, name, x_T=x_T, nfe=10, schedule=BEFORE[name]), ref,
                            mix.data_std())
        new = ode_map_error(sdekit.sample(score, sde, name, x_T=x_T, nfe=10), ref, mix.data_std())
        assert new < 0.9 * old, (name, old, new)
    # sample()'s default solver against the paper's predictor-corrector sampler (the old default)
    fd_default = frechet_to_moments(sdekit.sample(score, sde, x_T=x_T, nfe=10), mix.mean(), mix.cov())
    fd_pc = frechet_to_moments(sdekit.sample(score, sde, "pc", x_T=x_T, nfe=10,
                                             generator=torch.Generator().manual_seed(1)), mix.mean(), mix.cov())
    assert fd_default < fd_pc / 10, (fd_default, fd_pc)
