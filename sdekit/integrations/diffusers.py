"""A diffusers scheduler that runs sdekit's solvers inside an unmodified ``DiffusionPipeline``.

::

    from sdekit.integrations.diffusers import SdekitScheduler
    pipe.scheduler = SdekitScheduler.from_config(pipe.scheduler.config, solver="dpmpp_3m")
    images = pipe(num_inference_steps=20).images

How it maps. A pipeline calls the model once per entry of ``scheduler.timesteps`` and hands the
output to ``scheduler.step(model_output, t, sample)``. ``set_timesteps(n)`` lays out the solver's
grid for ``n`` model calls: ``n - 1`` solver steps and sdekit's final denoising step (the last
``step`` returns ``E[x_0 | x]``), so ``num_inference_steps`` is the NFE. Each ``step`` is one step of
the sdekit solver, through the same score adapter as :func:`sdekit.score.from_diffusers` with the
model's output in place of the model: the result is :func:`sdekit.sample` on the same model,
timesteps and noise, to float32 round-off.

Solvers: those that evaluate the model once per step at the step's start — the multistep family
(``ddim``, ``dpmpp_2m``, ``dpmpp_3m``, ``unipc``, ``dpmpp_2m_sde``, ``dpmpp_3m_sde``) and the one-stage
ones (``ode_euler``, ``euler_maruyama``, ``ancestral``, ``reverse_diffusion``...). Multi-stage solvers
(``ode_heun``, ``dpmpp_2s``, Runge–Kutta) would need each stage exposed as a timestep, and adaptive
ones a data-dependent number of calls: they are refused at construction. Stochastic solvers draw
their noise from the ``generator`` the pipeline passes to ``step`` (the same draws, in the same order,
as ``sdekit.sample(..., generator=g)``; a list of generators, one per sample, as
``sdekit.sample(..., generator=[g0, g1, ...])``).

Configs: DDPM-type configs (``betas`` → :class:`~sdekit.sde.DiscreteVPSDE`; ``prediction_type``
``epsilon``/``v_prediction``/``sample``; ``clip_sample`` clips the data prediction) and flow-matching
configs (``FlowMatchEulerDiscreteScheduler``, ``use_flow_sigmas``: :class:`~sdekit.sde.FlowSDE`).
Options that change the sampler and have no sdekit meaning (``thresholding``, zero-terminal-SNR
rescaling, dynamic shifting, ``stochastic_sampling``...) are refused, never ignored. diffusers' own
timestep spacing is replaced by the solver's grid (``schedule=``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from torch import Tensor

from .._utils import bcast, check_int
from ..grids import default_schedule, get_grid
from ..noise import GaussianNoise, GeneratorListNoise, StepNoise
from ..process import ReverseProcess
from ..sampling import steps_for_nfe
from ..score import from_diffusers
from ..sde import FlowSDE
from ..solvers.base import resolve

__all__ = ["SdekitScheduler", "SdekitSchedulerOutput"]

# config keys that would change the sampler; each must have the value given here
_REFUSED = {"thresholding": False, "rescale_betas_zero_snr": False, "use_dynamic_shifting": False,
            "stochastic_sampling": False, "invert_sigmas": False, "use_karras_sigmas": False,
            "use_exponential_sigmas": False, "use_beta_sigmas": False, "shift_terminal": None}
_FLOW_CLASSES = ("FlowMatchEulerDiscreteScheduler",)


@dataclass
class SdekitSchedulerOutput(BaseOutput):
    """``prev_sample``: the state at the next timestep; ``pred_original_sample``: ``E[x_0 | x]`` on the
    final (denoising) step, ``None`` on the others (it is not computed separately)."""

    prev_sample: Tensor
    pred_original_sample: Tensor | None = None


class _Pending:
    """The model output of the current step, served to the score adapter as if it were the model."""

    def __init__(self) -> None:
        self.x: Tensor | None = None
        self.output: Tensor | None = None

    def __call__(self, x: Tensor, label: Tensor) -> Tensor:
        if self.output is None or x is not self.x:
            raise RuntimeError("SdekitScheduler: the solver asked for a second model evaluation within one "
                               "step; only single-evaluation solvers can run inside a pipeline")
        out, self.output = self.output, None
        return out


class SdekitScheduler(SchedulerMixin, ConfigMixin):
    """A diffusers scheduler running the sdekit solver ``solver`` (see the module docstring).

    Args:
        num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas: the DDPM training
            schedule (as diffusers' ``DDPMScheduler``), ignored with ``flow=True``.
        prediction_type: ``"epsilon"``, ``"v_prediction"``, ``"sample"`` or ``"flow_prediction"``.
        clip_sample, clip_sample_range: clip the data prediction to ``[-range, range]`` (DDPM configs).
        variance_type: a DDPM config's; ``"learned"``/``"learned_range"`` are refused (by
            :func:`sdekit.score.from_diffusers`: the model then also predicts its variance).
        flow: a flow-matching model (velocity output, ``timestep = sigma * num_train_timesteps``).
        shift: SD3's time shift of a flow config: the grid is laid out on ``FlowSDE(shift)`` time.
        solver: an sdekit solver name that evaluates the model once per step (e.g. ``"dpmpp_3m"``).
        schedule: the sdekit grid (default: the solver's ``default_schedule``).
        solver_options: keyword options of the solver (e.g. ``{"lower_order_final": False}``).
    """

    order = 1
    _compatibles: list = []

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas: Any = None, prediction_type: str = "epsilon",
                 clip_sample: bool = False, clip_sample_range: float = 1.0, flow: bool = False,
                 shift: float = 1.0, solver: str = "dpmpp_2m", schedule: str | None = None,
                 solver_options: dict | None = None, variance_type: str = "fixed_small") -> None:
        if solver_options is not None and not isinstance(solver_options, dict):
            raise TypeError(f"solver_options must be a dict or None, got {type(solver_options).__name__}")
        self.solver = resolve(solver, **dict(solver_options or {}))
        if self.solver.adaptive or self.solver.nfe_per_step != 1 or self.solver.kind == "corrector":
            calls = "a varying number of" if self.solver.adaptive or self.solver.nfe_per_step is None \
                else self.solver.nfe_per_step
            raise ValueError(
                f"solver {self.solver.name!r} cannot run inside a diffusers pipeline: it takes "
                f"{calls} model calls "
                "per step, and a pipeline makes exactly one per timestep. Use a multistep or one-stage solver "
                "(ddim, dpmpp_2m, dpmpp_3m, unipc, dpmpp_2m_sde, ode_euler, ancestral, ...)")
        if not isinstance(clip_sample, bool) or not isinstance(flow, bool):
            raise TypeError("clip_sample and flow must be bools")
        self._pending = _Pending()
        if flow:
            from diffusers import FlowMatchEulerDiscreteScheduler

            if prediction_type not in ("epsilon", "flow_prediction"):  # "epsilon": a FlowMatch config has none
                raise ValueError(f"a flow-matching config predicts velocities, got prediction_type={prediction_type!r}")
            ref = FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps)
            if clip_sample:
                raise ValueError("clip_sample is not supported with a flow-matching config")
        else:
            from diffusers import DDPMScheduler

            ref = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
                                beta_schedule=beta_schedule, trained_betas=trained_betas,
                                prediction_type=prediction_type, clip_sample=clip_sample,
                                clip_sample_range=clip_sample_range, variance_type=variance_type)
        # from_diffusers honours clip_sample (a clamp of the data prediction), as for any DDPM-type scheduler
        self._score, self.sde = from_diffusers(self._pending, ref)
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.timesteps = torch.zeros(0)
        self._grid: Tensor | None = None
        self._i = 0
        self._run: dict | None = None

    # -- construction from another scheduler's config ----------------------------------------
    @classmethod
    def from_config(cls, config: Any = None, return_unused_kwargs: bool = False, **kwargs: Any):
        """Build from any diffusers scheduler's ``config`` (DDPM-type or flow-matching), refusing the
        options sdekit cannot honour; ``kwargs`` (``solver=``, ``schedule=``, ``solver_options=``...)
        override it."""
        cfg = dict(config or {})
        for key, ok in _REFUSED.items():
            if key in cfg and cfg[key] != ok and cfg[key] is not None:
                raise ValueError(f"SdekitScheduler: the config has {key}={cfg[key]!r}, which sdekit does not "
                                 f"support (it changes the sampler); set it to {ok!r} first")
        flow = cfg.get("_class_name") in _FLOW_CLASSES or "shift" in cfg or bool(cfg.get("use_flow_sigmas", False)) \
            or cfg.get("prediction_type") == "flow_prediction" or bool(cfg.get("flow", False))
        init = {k: cfg[k] for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                                    "trained_betas", "prediction_type", "clip_sample", "clip_sample_range",
                                    "solver", "schedule", "solver_options", "variance_type") if k in cfg}
        if flow:
            init["prediction_type"] = "flow_prediction"
            init["shift"] = float(cfg.get("shift", cfg.get("flow_shift", 1.0)) or 1.0)
        init["flow"] = flow
        init.update(kwargs)
        sched = cls(**init)
        return (sched, {}) if return_unused_kwargs else sched

    # -- the diffusers scheduler interface ------------------------------------------------------
    def set_timesteps(self, num_inference_steps: int | None = None, device: torch.device | str | None = None,
                      timesteps: Any = None, sigmas: Any = None, **kwargs: Any) -> None:
        """Lay out the grid for ``num_inference_steps`` model calls (the last one is the denoising step)."""
        if timesteps is not None or sigmas is not None or kwargs:
            raise ValueError("SdekitScheduler.set_timesteps takes num_inference_steps (and device) only; custom "
                             "timesteps/sigmas are not supported (give schedule= to the scheduler instead)")
        nfe = check_int("num_inference_steps", num_inference_steps, minimum=2)
        steps = steps_for_nfe(self.solver, nfe, denoise=True)
        schedule = self.config.schedule or default_schedule(self.solver, self.sde)
        if isinstance(self.sde, FlowSDE) and self.config.shift != 1.0:
            # SD3 spacing: laid out on FlowSDE(shift) time down to FlowMatchEuler's own end point (its
            # training sigma_min = shift(1/N), shifted once more), so ode_euler here is that scheduler
            shifted = FlowSDE(shift=self.config.shift)
            end = float(shifted.sigma(torch.tensor(1.0 / self.config.num_train_timesteps, dtype=torch.float64)))
            self._grid = self.sde.times(shifted.sigma(get_grid(schedule, shifted, steps, eps=end)))
        else:
            self._grid = get_grid(schedule, self.sde, steps)
        self.num_inference_steps = nfe
        ts = self._grid.to(torch.float32)
        if isinstance(self.sde, FlowSDE):
            labels = self.sde.sigma(ts.double()) * self.config.num_train_timesteps
        else:
            labels = self.sde.timestep(ts)
        self.timesteps = labels.to(device=device, dtype=torch.float32)
        self._i, self._run = 0, None

    def scale_model_input(self, sample: Tensor, timestep: Any = None) -> Tensor:
        """The identity: the model sees the sdekit state itself."""
        return sample

    def step(self, model_output: Tensor, timestep: Any, sample: Tensor, generator: torch.Generator | None = None,
             return_dict: bool = True, **kwargs: Any):
        """Advance ``sample`` by one sdekit step using ``model_output`` (the model at ``(sample, timestep)``)."""
        if self._grid is None:
            raise RuntimeError("call set_timesteps before step")
        if kwargs.get("eta") not in (None, 0.0) or set(kwargs) - {"eta"}:
            raise ValueError(f"SdekitScheduler.step got unsupported options {sorted(kwargs)}")
        n = self._grid.numel() - 1
        if self._i > n:
            raise RuntimeError(f"step called more than num_inference_steps={self.num_inference_steps} times; "
                               "call set_timesteps again")
        if model_output.shape != sample.shape:
            raise ValueError(f"model_output has shape {tuple(model_output.shape)} but sample has "
                             f"{tuple(sample.shape)} (split learned-variance channels off before step)")
        # the state in float32 at least (a half-precision pipeline's sample is upcast, a float64 one kept);
        # a copy: the solver may recycle it as a buffer
        x = sample.to(dtype=torch.promote_types(sample.dtype, torch.float32), copy=True)
        b = x.shape[0]
        if self._run is None or self._run["batch"] != b:
            if self._i != 0:
                raise RuntimeError("the batch size changed between steps")
            process = ReverseProcess(self.sde, self._score, lam=self.solver.lam)
            ts = self._grid.to(device=x.device, dtype=x.dtype)
            state = self.solver.init(process, x, ts[0].expand(b))
            state.setdefault("grid", ts)
            self._run = {"batch": b, "process": process, "ts": ts, "state": state}
        run = self._run
        self._pending.x, self._pending.output = x, model_output.to(x.dtype)
        ts, i = run["ts"], self._i
        if i < n:
            t0, t1 = ts[i].expand(b), ts[i + 1].expand(b)
            out, run["state"], _ = self.solver.step(run["process"], t0, t1, x, run["state"],
                                                    StepNoise(_noise_source(generator), t0, t1, x))
            pred = None
        else:
            out = pred = run["process"].data_prediction(x, ts[n].expand(b))
        self._pending.output = None
        self._i += 1
        prev = out.to(sample.dtype, copy=True)  # never hand the pipeline a buffer the solver will reuse
        pred = None if pred is None else prev
        if not return_dict:
            return (prev,) if pred is None else (prev, pred)
        return SdekitSchedulerOutput(prev_sample=prev, pred_original_sample=pred)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """``alpha x_0 + sigma noise`` at the given timesteps (the forward marginal, for img2img)."""
        k = torch.as_tensor(timesteps).reshape(-1).to(torch.float64)
        t = k / self.config.num_train_timesteps if isinstance(self.sde, FlowSDE) else self.sde.times(k)
        t = t.to(original_samples.device).expand(original_samples.shape[0])
        a = self.sde.alpha(t).to(original_samples.dtype)
        s = self.sde.sigma(t).to(original_samples.dtype)
        return bcast(a, original_samples) * original_samples + bcast(s, original_samples) * noise

    def __len__(self) -> int:
        return self.config.num_train_timesteps


def _noise_source(generator: Any) -> GaussianNoise:
    """The step's noise: from the pipeline's generator, or row by row from its list of generators."""
    if isinstance(generator, (list, tuple)):
        return GeneratorListNoise(generator)
    return GaussianNoise(generator)
