"""Adapters that turn eps-, x0- (denoiser) and v-prediction models into score functions.

All adapters return ``score_fn(x, t)`` with ``t`` of shape ``(batch,)`` in continuous SDE
time, and call the model with the time label its training used:

- ``time="continuous"``: ``t`` itself (score_sde's continuous models);
- ``time="discrete"``: ``t * (num_steps - 1)`` (DDPM-style integer-like labels);
- ``time="sigma"``: the noise level ``sigma(t) / alpha(t)`` (VE / k-diffusion style);
- or any callable ``t -> label``.

The conversions, with ``x = alpha x0 + sigma eps``::

    eps model:  s = -eps_hat / sigma
    x0 model:   s = (alpha x0_hat - x) / sigma^2
    v model:    eps_hat = (sigma x + alpha v_hat) / (alpha^2 + sigma^2),  s = -eps_hat / sigma
"""

from __future__ import annotations

from typing import Callable, Union

from torch import Tensor

from ._utils import bcast, check_int
from .process import ScoreFn
from .sde import SDE

__all__ = ["from_eps", "from_x0", "from_denoiser", "from_v", "time_label"]

Model = Callable[[Tensor, Tensor], Tensor]
TimeConvention = Union[str, Callable[[Tensor], Tensor]]


def time_label(sde: SDE, time: TimeConvention = "continuous", num_steps: int = 1000) -> Callable[[Tensor], Tensor]:
    """Map continuous SDE time ``t`` to the label a model was trained with."""
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sdekit.SDE, got {type(sde).__name__}")
    if callable(time):
        return time
    if time == "continuous":
        return lambda t: t
    if time == "discrete":
        n = check_int("num_steps", num_steps, minimum=2)
        return lambda t: t * (n - 1)
    if time == "sigma":
        return lambda t: sde.sigma(t) / sde.alpha(t)
    raise ValueError(f"time must be 'continuous', 'discrete', 'sigma' or a callable, got {time!r}")


def _check(model: Model, sde: SDE) -> None:
    if not callable(model):
        raise TypeError(f"model must be callable (x, label) -> tensor, got {type(model).__name__}")
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sdekit.SDE, got {type(sde).__name__}")


def from_eps(model: Model, sde: SDE, *, time: TimeConvention = "continuous", num_steps: int = 1000) -> ScoreFn:
    """Score from a noise-prediction model ``eps_hat = model(x, label)``: ``s = -eps_hat / sigma``."""
    _check(model, sde)
    label = time_label(sde, time, num_steps)

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        return model(x, label(t)) * bcast(-1.0 / sde.sigma(t), x)

    return score_fn


def from_x0(model: Model, sde: SDE, *, time: TimeConvention = "continuous", num_steps: int = 1000) -> ScoreFn:
    """Score from a data-prediction model ``x0_hat = model(x, label)``: ``s = (alpha x0_hat - x) / sigma^2``."""
    _check(model, sde)
    label = time_label(sde, time, num_steps)

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        a, s = sde.alpha(t), sde.sigma(t)
        return (bcast(a, x) * model(x, label(t)) - x) / bcast(s * s, x)

    return score_fn


def from_denoiser(model: Model, sde: SDE, *, time: TimeConvention = "sigma", num_steps: int = 1000) -> ScoreFn:
    """Score from a k-diffusion/EDM-style denoiser ``D(x / alpha, sigma/alpha) ~ x0``.

    The denoiser sees the scaled input ``x / alpha`` (unit-signal parametrisation) and,
    by default, the noise level ``sigma/alpha`` as its label.
    """
    _check(model, sde)
    label = time_label(sde, time, num_steps)

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        a, s = sde.alpha(t), sde.sigma(t)
        d = model(x / bcast(a, x), label(t))
        return (bcast(a, x) * d - x) / bcast(s * s, x)

    return score_fn


def from_v(model: Model, sde: SDE, *, time: TimeConvention = "continuous", num_steps: int = 1000) -> ScoreFn:
    """Score from a v-prediction model (Salimans & Ho 2022), ``v = alpha eps - sigma x0``."""
    _check(model, sde)
    label = time_label(sde, time, num_steps)

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        a, s = sde.alpha(t), sde.sigma(t)
        eps = (bcast(s, x) * x + bcast(a, x) * model(x, label(t))) / bcast(a * a + s * s, x)
        return eps * bcast(-1.0 / s, x)

    return score_fn
