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

Models people already have:

- :func:`from_diffusers` turns a diffusers UNet and its scheduler into ``(score_fn, sde)``
  with a :class:`~sdekit.sde.DiscreteVPSDE` built from the scheduler's ``alphas_cumprod``
  (or, with ``parametrization="sigma"``, the same model in the noise-level view
  ``x / alpha`` under an :class:`~sdekit.sde.EDMSDE`, where Euler/Heun are diffusers'
  ``EulerDiscreteScheduler``/``HeunDiscreteScheduler``).
- :func:`from_kdiffusion` turns a k-diffusion denoiser ``D(x, sigma)`` into ``(score_fn, EDMSDE)``
  in which ``ode_euler``/``ode_heun`` are k-diffusion's ``sample_euler``/``sample_heun``.
"""

from __future__ import annotations

from typing import Any, Callable, Union

import torch
from torch import Tensor

from ._utils import bcast, check_int
from .process import ScoreFn
from .sde import EDMSDE, SDE, DiscreteVPSDE, FlowSDE

__all__ = ["from_eps", "from_x0", "from_denoiser", "from_v", "from_flow", "FlowScore", "time_label", "from_diffusers",
           "from_kdiffusion"]

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


class FlowScore:
    """The score of a flow-matching velocity model ``u = eps - x_0`` (see :func:`from_flow`).

    Calling it gives the score ``s = -(x + alpha u) / sigma``; :meth:`data_prediction` gives
    ``D = x - sigma u`` directly, which sdekit's process uses for the drift and for ``D`` (so
    sampling can start at ``alpha = 0``, where ``D`` cannot be recovered from the score).
    """

    def __init__(self, model: Model, sde: SDE, label: Callable[[Tensor], Tensor]) -> None:
        self.model, self.sde, self.label = model, sde, label

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        """The model's velocity ``u(x, t) = eps - x_0`` (in the flow's noise level ``sigma``)."""
        return self.model(x, self.label(t))

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        u = self.velocity(x, t)
        return (x + bcast(self.sde.alpha(t), x) * u) * bcast(-1.0 / self.sde.sigma(t), x)

    def data_prediction(self, x: Tensor, t: Tensor) -> Tensor:
        """``D = x - sigma u``."""
        return x - bcast(self.sde.sigma(t), x) * self.velocity(x, t)


def from_flow(model: Model, sde: SDE, *, time: TimeConvention = "sigma", num_steps: int = 1000) -> FlowScore:
    """Score from a flow-matching (rectified-flow) velocity model ``u_hat = model(x, label) ~ eps - x_0``.

    For ``x = (1 - sigma) x_0 + sigma eps`` (a :class:`~sdekit.sde.FlowSDE`, or any SDE with
    ``alpha + sigma = 1``): ``x_0 = x - sigma u``, ``eps = x + (1 - sigma) u`` and
    ``s = -(x + (1 - sigma) u) / sigma``. This velocity is *not* Salimans' ``v = alpha eps - sigma x_0``
    (:func:`from_v`). The returned :class:`FlowScore` also predicts ``D`` directly, so every ODE
    solver can start at ``t = 1`` (pure noise, ``alpha = 0``).

    Args:
        model: the velocity network, called as ``model(x, label)``.
        sde: the forward process (``alpha(t) + sigma(t) = 1``).
        time: the label the model was trained with: ``"sigma"`` (default): the flow's noise level
            ``sigma(t)`` in ``[0, 1]``; ``"discrete"``: ``sigma(t) * num_steps`` (diffusers' flow
            models: ``timestep = sigma * num_train_timesteps``); ``"continuous"``: ``t``; or a callable.
        num_steps: the training-step count for ``time="discrete"``.
    """
    _check(model, sde)
    probe = torch.linspace(sde.eps, sde.T, 17, dtype=torch.float64)
    if not bool(torch.allclose(sde.alpha(probe) + sde.sigma(probe), torch.ones_like(probe), atol=1e-9)):
        raise ValueError(f"from_flow needs a flow interpolant with alpha(t) + sigma(t) = 1 (sdekit.FlowSDE), "
                         f"got {sde!r}")
    if time == "sigma":
        label = sde.sigma
    elif time == "discrete":
        n = check_int("num_steps", num_steps, minimum=1)
        label = lambda t: sde.sigma(t) * n  # noqa: E731
    else:
        label = time_label(sde, time, num_steps)
    return FlowScore(model, sde, label)


_PREDICTIONS = {"epsilon": from_eps, "v_prediction": from_v, "sample": from_x0}
_FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler",)
_FLOW_REFUSED = {"stochastic_sampling": False, "invert_sigmas": False}


def _is_flow_scheduler(scheduler: Any) -> bool:
    """A diffusers flow-matching scheduler (FlowMatchEuler, or a multistep one with ``use_flow_sigmas``)."""
    config = getattr(scheduler, "config", None)
    return type(scheduler).__name__ in _FLOW_SCHEDULERS or bool(getattr(config, "use_flow_sigmas", False)) \
        or getattr(config, "prediction_type", None) == "flow_prediction"


def _from_diffusers_flow(unet: Callable[..., Any], scheduler: Any, parametrization: str, prediction_type: str | None,
                         model_kwargs: dict[str, Any] | None) -> tuple[FlowScore, FlowSDE]:
    """:func:`from_diffusers` for flow-matching schedulers: ``(FlowScore, FlowSDE())``.

    The SDE is ``FlowSDE(shift=1)``, whose time is the noise level ``sigma``, and the scheduler's
    ``sigmas`` (shift, dynamic shift and Karras/exponential/beta spacing already applied) are its grid:
    ``sde.times(scheduler.sigmas)``. The model is called with ``timestep = sigma * num_train_timesteps``
    (truncated to an integer for the multistep schedulers, which cast their timesteps to int64).
    """
    if not callable(unet):
        raise TypeError(f"unet must be callable (x, timestep) -> output, got {type(unet).__name__}")
    config = scheduler.config
    if parametrization != "vp":
        raise ValueError(f"parametrization={parametrization!r} does not apply to a flow-matching scheduler "
                         f"({type(scheduler).__name__}): its state is the model's x; leave the default")
    if prediction_type not in (None, "flow_prediction"):
        raise ValueError(f"a flow-matching scheduler predicts velocities; prediction_type must be None or "
                         f"'flow_prediction', got {prediction_type!r}")
    for key, ok in _FLOW_REFUSED.items():
        if getattr(config, key, ok) != ok:
            raise ValueError(f"{type(scheduler).__name__} with {key}={getattr(config, key)!r} is not supported "
                             f"by from_diffusers (it changes the sampler, not the model)")
    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        raise TypeError(f"model_kwargs must be a dict or None, got {type(model_kwargs).__name__}")
    kwargs = dict(model_kwargs or {})
    n = int(config.num_train_timesteps)
    sde = FlowSDE()
    # DPMSolverMultistep/UniPC in flow mode cast their timesteps to int64: the model sees floor(sigma * N)
    integer = type(scheduler).__name__ not in _FLOW_SCHEDULERS

    def label(t: Tensor) -> Tensor:
        lab = sde.sigma(t.to(torch.float64)) * n
        return (torch.floor(lab + 1e-4) if integer else lab).to(t.dtype)

    def model(x: Tensor, lab: Tensor) -> Tensor:
        return _unwrap(unet(x, lab, **kwargs))

    return from_flow(model, sde, time=label), sde


def _unwrap(out: Any) -> Tensor:
    """A diffusers model returns an output object with ``.sample`` (or a tuple); take the tensor."""
    if isinstance(out, Tensor):
        return out
    sample = getattr(out, "sample", None)
    if isinstance(sample, Tensor):
        return sample
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise TypeError(f"the model returned {type(out).__name__}; expected a tensor, a tuple or an object with .sample")


# Schedulers whose update sees the model only through its (clipped or thresholded) data prediction
# x0_hat: there diffusers' clip_sample / thresholding is a transform of the model, which
# from_diffusers applies to the score. DDIM clips x0_hat but keeps the unclipped noise prediction.
_X0_CONSISTENT = frozenset({"DDPMScheduler", "DDPMParallelScheduler", "DPMSolverMultistepScheduler",
                            "DPMSolverSinglestepScheduler", "DEISMultistepScheduler", "UniPCMultistepScheduler",
                            "HeunDiscreteScheduler", "EDMDPMSolverMultistepScheduler"})


def _diffusers_options(scheduler: Any, config: Any, alphas_cumprod: Any) -> Callable[[Tensor], Tensor] | None:
    """Check the scheduler options that change the sampled result: honour them (the returned
    transform of the data prediction, or ``None``) or refuse them with a ``ValueError``."""
    name = type(scheduler).__name__

    def opt(key: str, default: Any = None) -> Any:
        return getattr(config, key, default) if config is not None else default

    ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    if bool((ac <= 0).any()):
        raise ValueError(f"{name} has a zero terminal SNR (alphas_cumprod reaches 0, e.g. rescale_betas_zero_snr="
                         "True): the prior at the last training step then has alpha = 0, which sdekit's "
                         "DiscreteVPSDE cannot start from; build the scheduler with rescale_betas_zero_snr=False")
    if opt("variance_type") in ("learned", "learned_range"):
        raise ValueError(f"{name}(variance_type={opt('variance_type')!r}): the model also predicts its variance "
                         "(twice the channels), which sdekit's adapters do not read; use a fixed-variance model")
    if opt("set_alpha_to_one") is False:
        raise ValueError(f"{name}(set_alpha_to_one=False) ends its last step at alphas_cumprod[0] instead of at "
                         "alpha = 1 (which sdekit's final denoising step plays): build the adapter from "
                         f"{name}.from_config(scheduler.config, set_alpha_to_one=True) (the SDE is the same) and "
                         "sample with denoise=False on sde.times(scheduler.timesteps) to reproduce it")
    clip, thresh = bool(opt("clip_sample", False)), bool(opt("thresholding", False))
    if not (clip or thresh):
        return None
    which = "thresholding=True" if thresh else "clip_sample=True"
    if name not in _X0_CONSISTENT:
        raise ValueError(f"{name}({which}) limits its x0 prediction inside its own update (DDIM keeps the unlimited "
                         "noise prediction beside it), which no score function expresses; build it with "
                         f"{name}.from_config(scheduler.config, clip_sample=False, thresholding=False), or "
                         "clamp in your model")
    if thresh:
        ratio, top = float(opt("dynamic_thresholding_ratio", 0.995)), float(opt("sample_max_value", 1.0))
        return lambda x0: _dynamic_threshold(x0, ratio, top)
    bound = float(opt("clip_sample_range", 1.0))
    return lambda x0: x0.clamp(-bound, bound)


def _dynamic_threshold(x0: Tensor, ratio: float, top: float) -> Tensor:
    """Imagen's dynamic thresholding (Saharia et al. 2022): per sample, the ``ratio`` quantile
    ``q`` of ``|x0|``, raised to at least 1 and capped at ``top``; ``x0`` is clamped to ``±q`` and
    divided by ``q``."""
    flat = x0.reshape(x0.shape[0], -1)
    work = flat.float() if flat.dtype in (torch.float16, torch.bfloat16) else flat
    q = torch.quantile(work.abs(), ratio, dim=1).clamp(min=1.0, max=top).unsqueeze(1)
    return (torch.maximum(torch.minimum(work, q), -q) / q).to(x0.dtype).reshape(x0.shape)


def _transform_x0(score_fn: ScoreFn, sde: SDE, transform: Callable[[Tensor], Tensor]) -> ScoreFn:
    """The score of the model whose data prediction ``x0 = (x + sigma^2 s)/alpha`` passes through ``transform``."""

    def limited(x: Tensor, t: Tensor) -> Tensor:
        a, s = bcast(sde.alpha(t), x), bcast(sde.sigma(t), x)
        x0 = transform((x + s * s * score_fn(x, t)) / a)
        return (a * x0 - x) / (s * s)

    return limited


def from_diffusers(unet: Callable[..., Any], scheduler: Any, *, parametrization: str = "vp",
                   prediction_type: str | None = None,
                   model_kwargs: dict[str, Any] | None = None) -> tuple[ScoreFn, SDE]:
    """Turn a diffusers model and its discrete scheduler into ``(score_fn, sde)``.

    The model is called as ``unet(x_in, timestep, **model_kwargs)`` and may return a tensor, a tuple
    or an object with ``.sample`` (``UNet2DModel``, ``UNet2DConditionModel``). Training step ``k``
    sits at SDE time ``(k + 1) / N``; ``sde.times(scheduler.timesteps)`` is the scheduler's own
    grid, and sdekit's final denoising step plays the scheduler's last step to ``alpha = 1``.

    Args:
        unet: the noise/velocity/sample-prediction network.
        scheduler: any diffusers scheduler with ``alphas_cumprod`` (DDPM, DDIM, Euler, Heun, DPM-Solver...),
            or a flow-matching one (``FlowMatchEulerDiscreteScheduler``, ``use_flow_sigmas=True``): then
            ``(FlowScore, FlowSDE())`` with the grid ``sde.times(scheduler.sigmas)`` (see :func:`from_flow`).
        parametrization: ``"vp"``: the state is the model's ``x`` and ``sde`` a
            :class:`~sdekit.sde.DiscreteVPSDE`; ``"sigma"``: the state is ``x / alpha`` and ``sde`` an
            :class:`~sdekit.sde.EDMSDE` whose time is the noise level ``sigma / alpha`` (diffusers'
            ``EulerDiscreteScheduler`` convention; start from ``x_T * sqrt(1 + sigma_max^2)``-scaled noise).
        prediction_type: ``"epsilon"``, ``"v_prediction"`` or ``"sample"`` (default: the scheduler's config).
        model_kwargs: extra keyword arguments for every model call (e.g. ``encoder_hidden_states``).

    Scheduler options that change the result are honoured or refused, never ignored:
    ``clip_sample`` and ``thresholding`` limit the data prediction of the returned score where the
    scheduler's own update sees the model only through it (DDPM, DPM-Solver, DEIS, UniPC, Heun),
    and are refused elsewhere (DDIM, whose update keeps the unclipped noise prediction); a zero
    terminal SNR (``alphas_cumprod`` reaching 0), ``set_alpha_to_one=False`` and learned variances
    are refused with the setting that works. The grid and spacing options (``timestep_spacing``,
    ``use_karras_sigmas``, ...) shape ``scheduler.timesteps``/``sigmas``, which you pass as ``schedule=``.

    Returns:
        ``(score_fn, sde)``.

    Raises:
        ValueError: for a scheduler option sdekit cannot reproduce (the message says what to set).

    Example:
        >>> score_fn, sde = sdekit.score.from_diffusers(unet, scheduler)  # doctest: +SKIP
        >>> scheduler.set_timesteps(50)  # doctest: +SKIP
        >>> grid = sde.times(scheduler.timesteps)  # doctest: +SKIP
        >>> x = sdekit.sample(score_fn, sde, "ancestral", schedule=grid, x_T=noise)  # doctest: +SKIP
    """
    if _is_flow_scheduler(scheduler):  # FlowMatchEuler, use_flow_sigmas: (FlowScore, FlowSDE)
        return _from_diffusers_flow(unet, scheduler, parametrization, prediction_type, model_kwargs)
    if not callable(unet):
        raise TypeError(f"unet must be callable (x, timestep) -> output, got {type(unet).__name__}")
    # dispatch on the scheduler's class: schedulers without alphas_cumprod get their own branch here
    ac = getattr(scheduler, "alphas_cumprod", None)
    if ac is None:
        name = type(scheduler).__name__
        hint = ("; for the EDM schedulers wrap the preconditioned model as a denoiser and use from_kdiffusion "
                "(docs: Coming from diffusers)") if "EDM" in name else ""
        raise TypeError(f"scheduler must have alphas_cumprod (a diffusers scheduler), got {name}{hint}")
    config = getattr(scheduler, "config", None)
    x0_transform = _diffusers_options(scheduler, config, ac)
    if prediction_type is None:
        prediction_type = getattr(config, "prediction_type", None) or "epsilon"
    if prediction_type not in _PREDICTIONS:
        raise ValueError(f"prediction_type must be one of {sorted(_PREDICTIONS)}, got {prediction_type!r}")
    if parametrization not in ("vp", "sigma"):
        raise ValueError(f"parametrization must be 'vp' or 'sigma', got {parametrization!r}")
    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        raise TypeError(f"model_kwargs must be a dict or None, got {type(model_kwargs).__name__}")
    kwargs = dict(model_kwargs or {})
    vp = DiscreteVPSDE(ac)

    def model(x: Tensor, label: Tensor) -> Tensor:
        return _unwrap(unet(x, label, **kwargs))

    vp_score = _PREDICTIONS[prediction_type](model, vp, time=vp.timestep)
    if x0_transform is not None:
        vp_score = _transform_x0(vp_score, vp, x0_transform)
    if parametrization == "vp":
        return vp_score, vp

    ends = torch.exp(-vp.log_snr(torch.tensor([vp.eps, vp.T], dtype=torch.float64)))
    edm = EDMSDE(sigma_min=float(ends[0]), sigma_max=float(ends[1]))

    def score_fn(x: Tensor, sigma: Tensor) -> Tensor:
        # x is the noise-level view x / alpha at sigma = sigma_vp / alpha_vp.
        t = vp.t_from_log_snr(-torch.log(sigma.to(torch.float64))).to(x.dtype)
        a = bcast(vp.alpha(t), x)
        return vp_score(x * a, t) * a

    return score_fn, edm


def from_kdiffusion(denoiser: Callable[..., Tensor], *, sigma_min: float, sigma_max: float,
                    model_kwargs: dict[str, Any] | None = None) -> tuple[ScoreFn, EDMSDE]:
    """Turn a k-diffusion-style denoiser ``D(x, sigma) ~ E[x_0 | x]`` into ``(score_fn, EDMSDE)``.

    ``x = x_0 + sigma z`` and ``score = (D(x, sigma) - x) / sigma^2``. In the returned
    :class:`~sdekit.sde.EDMSDE` time equals the noise level, so k-diffusion's ``sigmas`` are an
    sdekit grid as they are (pass them as ``schedule=``, dropping a trailing 0: sdekit's final
    denoising step is that step), and ``ode_euler``/``ode_heun`` are ``sample_euler``/``sample_heun``.
    For any other sdekit SDE use :func:`from_denoiser`.

    Args:
        denoiser: ``denoiser(x, sigma, **model_kwargs)`` with ``sigma`` of shape ``(batch,)``.
        sigma_min: the smallest noise level of the model (the SDE's ``eps``).
        sigma_max: the largest noise level of the model (the SDE's ``T``).
        model_kwargs: extra keyword arguments for every call (k-diffusion's ``extra_args``).
    """
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable (x, sigma) -> tensor, got {type(denoiser).__name__}")
    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        raise TypeError(f"model_kwargs must be a dict or None, got {type(model_kwargs).__name__}")
    kwargs = dict(model_kwargs or {})
    sde = EDMSDE(sigma_min=sigma_min, sigma_max=sigma_max)
    return from_denoiser(lambda x, s: denoiser(x, s, **kwargs), sde, time="sigma"), sde
