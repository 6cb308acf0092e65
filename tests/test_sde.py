"""Forward SDEs: marginals agree with drift/diffusion, inverses, priors, validation."""

import math

import pytest
import torch

import sdekit
from sdekit.sde import VESDE, VPSDE, AlphaSigmaSDE, CosineSDE, SubVPSDE

SDES = {
    "vp": VPSDE(),
    "subvp": SubVPSDE(),
    "ve": VESDE(),
    "cosine": CosineSDE(),
    # rectified-flow-like schedule with derivatives taken by autograd
    "alpha_sigma": AlphaSigmaSDE(lambda t: 1 - 0.9 * t, lambda t: 0.05 + t, T=1.0, eps=1e-3),
}


@pytest.mark.parametrize("name", list(SDES))
def test_f_and_g_match_marginal_identities(name):
    sde = SDES[name]
    t = torch.linspace(sde.eps + 0.01, sde.T - 0.01, 41, dtype=torch.float64)
    h = 1e-6
    dlog_alpha = (torch.log(sde.alpha(t + h)) - torch.log(sde.alpha(t - h))) / (2 * h)
    dsigma2 = (sde.sigma(t + h) ** 2 - sde.sigma(t - h) ** 2) / (2 * h)
    torch.testing.assert_close(sde.f(t), dlog_alpha, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sde.g2(t), dsigma2 - 2 * dlog_alpha * sde.sigma(t) ** 2, rtol=1e-5, atol=1e-6)


def test_closed_forms_match_cheat_sheet():
    t = torch.linspace(0.01, 1.0, 11, dtype=torch.float64)
    vp = VPSDE(0.1, 20.0)
    beta = 0.1 + t * 19.9
    torch.testing.assert_close(vp.g2(t), beta)
    torch.testing.assert_close(vp.alpha(t), torch.exp(-0.25 * t * t * 19.9 - 0.5 * t * 0.1))
    sub = SubVPSDE(0.1, 20.0)
    torch.testing.assert_close(sub.sigma(t), 1 - vp.alpha(t) ** 2)
    torch.testing.assert_close(sub.g2(t), beta * (1 - torch.exp(-2 * (0.5 * t * t * 19.9 + t * 0.1))))
    ve = VESDE(0.01, 50.0)
    torch.testing.assert_close(ve.g(t), ve.sigma(t) * math.sqrt(2 * math.log(5000.0)))


@pytest.mark.parametrize("name", list(SDES))
def test_t_from_log_snr_inverts_log_snr(name):
    sde = SDES[name]
    t = torch.linspace(sde.eps, sde.T, 23, dtype=torch.float64)
    torch.testing.assert_close(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=1e-7, atol=1e-9)
    # the generic bisection agrees with closed forms
    torch.testing.assert_close(sdekit.SDE.t_from_log_snr(sde, sde.log_snr(t)), t, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "cosine"])
def test_transition_matches_fine_forward_euler_maruyama(name):
    """Simulate the forward SDE finely from t_a to t_b and compare mean/var with the exact transition."""
    sde = SDES[name]
    gen = torch.Generator().manual_seed(0)
    t_a, t_b, n, steps = 0.1, 0.6, 40000, 400
    x0 = 0.7
    x = torch.full((n,), x0, dtype=torch.float64)
    ts = torch.linspace(t_a, t_b, steps + 1, dtype=torch.float64)
    for i in range(steps):
        t = ts[i].expand(n)
        h = float(ts[i + 1] - ts[i])
        x = x + sde.drift(x, t) * h + sde.g(t) * math.sqrt(h) * torch.randn(n, generator=gen, dtype=torch.float64)
    a, s = sde.transition(torch.tensor([t_a], dtype=torch.float64), torch.tensor([t_b], dtype=torch.float64))
    mean, std = float(a) * x0, float(s)
    se_mean = std / math.sqrt(n)
    assert abs(float(x.mean()) - mean) < 5 * se_mean + 2e-3 * abs(mean) + 1e-9
    assert abs(float(x.std()) / std - 1) < 0.02


def test_prior_logp_is_gaussian():
    sde = VESDE()
    z = sde.prior_sample((5, 3, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = torch.distributions.Normal(0.0, sde.prior_std).log_prob(z).reshape(5, -1).sum(1)
    torch.testing.assert_close(sde.prior_logp(z), ref)
    assert VPSDE().prior_std == 1.0


@pytest.mark.parametrize("ctor, msg", [
    (lambda: VPSDE(beta_min=-1), "beta_min"),
    (lambda: VPSDE(beta_min=5, beta_max=1), "beta_max"),
    (lambda: VESDE(sigma_min=2, sigma_max=1), "sigma_max"),
    (lambda: VESDE(sigma_min=0), "sigma_min"),
    (lambda: VPSDE(eps=1.0), "eps"),
    (lambda: VPSDE(T=float("nan")), "T"),
    (lambda: VPSDE(beta_min="0.1"), "beta_min"),
    (lambda: CosineSDE(T=1.0), "T"),
    (lambda: AlphaSigmaSDE(lambda t: 1 + t, lambda t: 1 - t / 2), "decreasing"),
    (lambda: AlphaSigmaSDE("a", lambda t: t), "alpha"),
])
def test_bad_parameters_raise_naming_them(ctor, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        ctor()
