"""``sdekit.sample`` and ``sdekit.solve``: validate, build the grid, the prior and the process, integrate."""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ._utils import check_int, check_not_meta, check_real
from .capture import check_compile, step_function
from .grids import (
    Schedule,
    apply_tuned,
    check_grid_memory,
    check_run_grid,
    check_save_memory,
    check_tunable,
    default_grid,
    get_grid,
    is_auto,
    resolve_auto,
)
from .integrate import NonFiniteError, Solution, StepInfo, integrate
from .kernels import use_backend
from .noise import GaussianNoise, NoiseSource, PerSampleNoise, PhiloxNoise
from .process import ReverseProcess, ScoreFn
from .sde import SDE, check_start
from .seeding import check_indices, check_seed, generator_list
from .solvers.adaptive import check_tolerances
from .solvers.base import Solver, resolve
from .solvers.conditioned import Conditioned

__all__ = ["sample", "solve", "steps_for_nfe", "DEFAULT_SOLVER"]

#: the solver of :func:`sample`, :func:`solve` and :func:`sdekit.distributed.sample` when none is named
#: (chosen on the tuning split of :func:`sdekit.testing.mixture_family`; see ``docs/choosing.md``)
DEFAULT_SOLVER = "unipc"


def steps_for_nfe(solver: Solver, nfe: int, *, denoise: bool) -> int:
    """Largest number of steps whose total score evaluations (denoising included) fit in ``nfe``."""
    if not isinstance(solver, Solver):
        raise TypeError(f"solver must be a Solver instance (see sdekit.solvers.resolve), got {type(solver).__name__}")
    nfe = check_int("nfe", nfe, minimum=1)
    extra = 1 if denoise else 0
    if solver.nfe_for(1) + extra > nfe:
        raise ValueError(f"nfe={nfe} is too small for solver {solver.name!r}: one step costs "
                         f"{solver.nfe_for(1) + extra} score evaluations{' (denoising included)' if denoise else ''}")
    lo, hi = 1, 1
    while solver.nfe_for(hi * 2) + extra <= nfe:
        hi *= 2
    hi *= 2
    while hi - lo > 1:  # invariant: lo fits, hi does not
        mid = (lo + hi) // 2
        if solver.nfe_for(mid) + extra <= nfe:
            lo = mid
        else:
            hi = mid
    return lo


_HALF = (torch.float16, torch.bfloat16)
_HALF_MSG = ("half-precision states are not supported: a step's update (relative size ~1/steps) is rounded away "
             "in a 8- or 11-bit mantissa. Keep the state in float32 and run the model in half precision inside "
             "score_fn (e.g. lambda x, t: model(x.half(), t.half()).float(), or torch.autocast)")


def _check_start_options(shape, x_T, device, dtype, generator, seed, indices, noise):
    """Validate the options that decide the starting state and the noise; returns (device, seed, indices)."""
    if device is not None:
        if not isinstance(device, (str, torch.device)):
            raise TypeError(f"device must be a str, a torch.device or None, got {type(device).__name__}")
        try:
            device = torch.device(device)
        except RuntimeError as e:
            raise ValueError(f"device={device!r} is not a valid torch device: {e}") from None
    check_not_meta("x_T", x_T.device if isinstance(x_T, Tensor) else None)
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if dtype in _HALF:
        raise TypeError(f"dtype={dtype} is refused: {_HALF_MSG}")
    if isinstance(x_T, Tensor) and x_T.dtype in _HALF:
        raise TypeError(f"x_T has dtype {x_T.dtype}, which is refused: {_HALF_MSG}")
    if isinstance(x_T, Tensor) and x_T.requires_grad:
        raise ValueError("x_T requires grad: sampling does not backpropagate through the solver (it would keep "
                         "the graph of every step alive); pass x_T.detach()")
    if seed is not None:
        seed = check_seed(seed)
        if generator is not None:
            raise ValueError("give seed= (per-sample streams) or generator= (one stream for the batch), not both")
        if noise is not None:
            raise ValueError("give seed= or noise=, not both (seed= builds a PerSampleNoise)")
    elif indices is not None:
        raise ValueError("indices= needs seed= (the per-sample streams are keyed by (seed, index))")
    if indices is not None:
        indices = check_indices(indices)
    return device, seed, indices


def _resolve_start(sde: SDE, shape, x_T, device, dtype, generator, seed=None,
                   indices=None) -> tuple[Tensor, NoiseSource | None]:
    """The starting state, and the per-sample noise source when ``seed`` is given (else ``None``)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if x_T is not None:
        if not isinstance(x_T, Tensor):
            raise TypeError(f"x_T must be a tensor, got {type(x_T).__name__}")
        if not x_T.dtype.is_floating_point:
            raise TypeError(f"x_T must have a floating dtype, got {x_T.dtype}")
        if x_T.ndim < 1 or x_T.shape[0] < 1:
            raise ValueError(f"x_T must have a non-empty batch dimension, got shape {tuple(x_T.shape)}")
        if shape is not None and tuple(shape) != tuple(x_T.shape):
            raise ValueError(f"shape={tuple(shape)} does not match x_T.shape={tuple(x_T.shape)}")
        same = x_T.device == device or (device is not None and device.index is None
                                        and x_T.device.type == device.type)
        if device is not None and not same:
            raise ValueError(f"device={device} does not match x_T.device={x_T.device}; move x_T or drop device=")
        if dtype is not None and x_T.dtype != dtype:
            raise ValueError(f"dtype={dtype} does not match x_T.dtype={x_T.dtype}; cast x_T or drop dtype=")
        if not bool(torch.isfinite(x_T).all()):
            raise ValueError("x_T contains NaN or Inf")
        if indices is not None and len(indices) != x_T.shape[0]:
            raise ValueError(f"indices has {len(indices)} entries but x_T has a batch of {x_T.shape[0]}")
        if seed is None:
            return x_T, None
        return x_T, PerSampleNoise(seed, range(x_T.shape[0]) if indices is None else indices, device=x_T.device)
    if shape is None:
        raise ValueError("give either shape= (to draw x_T from the prior) or x_T=")
    if isinstance(shape, int) or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape) \
            or len(shape) < 1 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive ints (batch first), got {shape!r}")
    if indices is not None and len(indices) != shape[0]:
        raise ValueError(f"indices has {len(indices)} entries but shape={tuple(shape)} has a batch of {shape[0]}")
    if seed is not None:
        check_not_meta("device", device)
        noise = PerSampleNoise(seed, range(shape[0]) if indices is None else indices, device=device)
        return noise.prior(sde, shape, dtype=dtype or torch.get_default_dtype()), noise
    if generator is not None:
        gdev = generator.device
        if device is None:
            device = gdev
        elif gdev.type != device.type:
            raise ValueError(f"generator is on {gdev} but device={device}; use a generator on the sampling device")
    check_not_meta("device", device)
    x = sde.prior_sample(tuple(shape), generator=generator, device=device, dtype=dtype or torch.get_default_dtype())
    return x, None


def _check_save_at(save_at: Any) -> None:
    if save_at is None or isinstance(save_at, str):
        return  # the string itself is checked by integrate
    if isinstance(save_at, Tensor):
        save_at = save_at.reshape(-1).tolist()
    if not isinstance(save_at, Sequence):
        raise TypeError(f"save_at must be 'grid', a sequence of times or None, got {type(save_at).__name__}")
    for t in save_at:
        check_real("save_at entries", t)


def _with_backend(fn: Callable) -> Callable:
    """Run ``fn`` under ``use_backend(backend)`` when its ``backend=`` keyword is given (validated before any work)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("backend") is None:
            return fn(*args, **kwargs)
        with use_backend(kwargs["backend"]):
            return fn(*args, **kwargs)
    return wrapper


@_with_backend
def solve(score_fn: ScoreFn, sde: SDE, solver: str | type | Solver = DEFAULT_SOLVER, *,
          shape: Sequence[int] | None = None, x_T: Tensor | None = None, steps: int | None = None,
          nfe: int | None = None, schedule: Schedule | None = None, eps: float | None = None,
          generator: torch.Generator | None = None, device: torch.device | str | None = None,
          dtype: torch.dtype | None = None, denoise: bool = True, progress: bool = False,
          callback: Callable[[StepInfo], Any] | None = None,
          noise: NoiseSource | None = None, save_at: Sequence[float] | str | None = None,
          check_finite: bool = True, seed: int | None = None, indices: Sequence[int] | Tensor | None = None,
          condition: Any = None, backend: str | None = None, compile: bool | dict = False,
          **solver_options: Any) -> Solution:
    """Like :func:`sample` but returns the whole :class:`~sdekit.integrate.Solution`.

    Extra arguments beyond :func:`sample`'s:
        noise: a :class:`~sdekit.noise.NoiseSource` (default: Gaussian increments from ``generator``).
        save_at: ``"grid"`` or a sequence of times whose (nearest grid) states to keep.
        check_finite: stop with :class:`~sdekit.integrate.NonFiniteError` at the first NaN/Inf.
        backend: kernel backend for this call (``"auto"``, ``"triton"``, ``"torch"``; see
            :func:`sdekit.kernels.set_backend`); ``None`` keeps the global setting.
        condition, compile: see :func:`sample`.
    """
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sdekit.SDE (VPSDE, VESDE, ...), got {type(sde).__name__}")
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable (x, t) -> tensor, got {type(score_fn).__name__}")
    solver = resolve(solver, **solver_options)
    score_fn, schedule = apply_tuned(score_fn, sde, solver, schedule)  # a TunedGrid: its times, shifted score
    compile_options = check_compile(compile)
    step_function(compile_options, solver)  # refuses adaptive solvers; torch.compile checks backend, mode here
    for name, flag in (("denoise", denoise), ("progress", progress), ("check_finite", check_finite)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    _check_save_at(save_at)
    device, seed, indices = _check_start_options(shape, x_T, device, dtype, generator, seed, indices, noise)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    if noise is not None and not isinstance(noise, NoiseSource):
        raise TypeError(f"noise must be an sdekit.noise.NoiseSource or None, got {type(noise).__name__}")
    if condition is not None and not callable(getattr(condition, "apply", None)):
        raise TypeError(f"condition must have an apply(process, x, t0, t1, noise) method (see sdekit.guidance), "
                        f"got {type(condition).__name__}")
    if eps is not None:
        eps = check_real("eps", eps, positive=True)
        if eps >= sde.T:
            raise ValueError(f"eps must be < sde.T={sde.T}, got eps={eps}")
    if steps is not None and nfe is not None:
        raise ValueError("give steps= or nfe=, not both")
    if nfe is not None:
        steps = steps_for_nfe(solver, check_int("nfe", nfe, minimum=1), denoise=denoise)
    asked = steps
    if steps is None:
        steps = solver.default_steps
    steps = check_int("steps", steps, minimum=1)
    check_grid_memory(steps, "nfe" if nfe is not None else "steps")
    auto = is_auto(schedule)
    if auto:
        check_tunable(solver)
    # schedule="auto": every check runs on the solver's default grid (same steps and ends), and the pilot
    # that tunes the grid only after all of them, so a refused run spends no score evaluation
    # a grid may stop short of eps (a default or tuned one) only for a run that ends with its denoising step and
    # saves no states (see grids.default_grid)
    stop_short = denoise and save_at is None
    grid = default_grid(solver, sde, steps, eps=eps, stop_short=schedule is None and stop_short) \
        if schedule is None or auto else get_grid(schedule, sde, steps, eps=eps)
    state_dtype = x_T.dtype if isinstance(x_T, Tensor) else dtype or torch.get_default_dtype()

    def check_grid(g: Tensor) -> None:
        check_run_grid(None if auto else schedule, g, sde, steps=asked, nfe=nfe, eps=eps, x_T_given=x_T is not None,
                       save_at=save_at, dtype=state_dtype, needs_sde=solver.needs_sde)
        check_start(sde, float(g[0]), solver)

    check_grid(grid)
    if compile_options and compile_options.get("fullgraph") and solver.stochastic \
            and not isinstance(noise, PhiloxNoise):
        raise ValueError(f"compile with fullgraph=True and the stochastic solver {solver.name!r} needs noise "
                         "drawn inside the graph: pass noise=sdekit.kernels.philox.PhiloxNoise(seed) to "
                         "sdekit.solve (generator= and seed= draw outside it, which splits the step's graph)")
    x_T, generator, noise = generator_list(sde, generator, shape=shape, x_T=x_T, noise=noise, device=device,
                                           dtype=dtype)  # generator=[g0, g1, ...]: one stream per sample
    x, seeded = _resolve_start(sde, shape, x_T, device, dtype, generator, seed, indices)
    if seeded is not None:
        noise = seeded
    process = ReverseProcess(sde, score_fn, lam=solver.lam)
    if noise is not None:
        noise.check_run(grid, x)  # the noise must cover the grid and the state, before any score call
    check_save_memory(save_at, grid, x)
    check_tolerances(solver, grid, x.dtype)
    auto_stats: dict = {}
    if auto:
        grid, auto_stats = resolve_auto(score_fn, sde, solver, steps, x, eps=eps, stop_short=stop_short,
                                        progress=progress)
        check_grid(grid)
    if condition is not None:
        solver = Conditioned(solver, condition)  # the condition wraps the solver; finalize below
    sol = integrate(process, solver, grid, x, GaussianNoise(generator) if noise is None else noise,
                    save_at=save_at, callback=callback, progress=progress, check_finite=check_finite,
                    compile=compile_options)
    sol.stats.update(auto_stats)  # schedule="auto": the pilot's NFE, reported apart from sol.nfe
    if denoise:
        t_end = torch.full((sol.x.shape[0],), float(grid[-1]), device=sol.x.device, dtype=sol.x.dtype)
        x_last = sol.x
        sol.x = process.data_prediction(sol.x, t_end)
        sol.nfe = process.nfe
        sol.x = solver.finalize(sol.x)
        if check_finite and not bool(torch.isfinite(sol.x).all()):
            # a numerical fault like any other step: the (finite) state before denoising is kept
            raise NonFiniteError(sol.steps + 1, float(grid[-1]), x_last.clone(), "final denoising step")
    return sol


def sample(score_fn: ScoreFn, sde: SDE, solver: str | type | Solver = DEFAULT_SOLVER, *,
           shape: Sequence[int] | None = None, x_T: Tensor | None = None, steps: int | None = None,
           nfe: int | None = None, schedule: Schedule | None = None, eps: float | None = None,
           generator: torch.Generator | None = None, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None, denoise: bool = True, progress: bool = False,
           callback: Callable[[StepInfo], Any] | None = None,
           seed: int | None = None, indices: Sequence[int] | Tensor | None = None,
           condition: Any = None, backend: str | None = None, compile: bool | dict = False,
           noise: NoiseSource | None = None, **solver_options: Any) -> Tensor:
    """Draw samples by integrating the reverse-time SDE or probability-flow ODE of ``sde``.

    Args:
        score_fn: ``score_fn(x, t) -> tensor like x``, ``t`` of shape ``(batch,)``
            (see :mod:`sdekit.score` for eps-, x0- and v-prediction adapters).
        sde: the forward SDE (:class:`~sdekit.VPSDE`, :class:`~sdekit.VESDE`, ...).
        solver: a registered name (see ``sdekit.solvers.available()``), a solver class or instance.
            Default ``"unipc"`` (on its ``logsnr`` grid): the best general default by ODE-map error and FD
            at 5-50 NFE on the tuning split (``benchmarks/tune_defaults.py``); the paper's
            predictor-corrector sampler is ``"pc"``.
        shape: shape of the batch to draw from the prior (batch first). Or give ``x_T``.
        x_T: the starting state at ``T`` (not modified).
        steps: number of solver steps (default: the solver's ``default_steps``).
        nfe: a budget of score evaluations; the largest number of steps that fits it is used
            (the denoising step included). Give ``steps`` or ``nfe``, not both.
        schedule: time grid: ``"uniform"``, ``"quadratic"``, ``"logsnr"``, ``"karras"``, a callable
            or a tensor of times (default: the solver's ``default_schedule``, see
            :func:`sdekit.grids.default_grid`: with the denoising step, no ``save_at=`` and no ``eps=``,
            below 20 score evaluations most solvers' default grids stop short of ``eps``,
            :func:`sdekit.grids.default_stop`); ``"auto"`` tunes one
            to ``score_fn`` with :func:`sdekit.grids.tune` (its pilot's NFE in ``Solution.stats``; for an ODE
            solver, with the denoising step, no ``save_at=`` and no ``eps=``, the tuned grid may stop short of
            ``eps`` and denoise there: ``tune``'s ``free_end``); a :class:`~sdekit.grids.TunedGrid`
            (``tune(..., shift=True)``) also moves the model's evaluation times.
        eps: the last time of the grid (default ``sde.eps``).
        generator: ``torch.Generator`` for the prior and all noise; the same seed gives the same samples.
            Or a list of generators, one per sample (as diffusers allows): each sample's prior and
            noise come from its own generator.
        device, dtype: where and in what precision to sample when ``x_T`` is not given
            (they must agree with ``x_T`` when it is).
        denoise: finish with Tweedie's denoising step ``(x + sigma^2 s)/alpha`` at the grid's last time
            (``eps``, or where a default or tuned grid stops short of it; 1 NFE).
        progress: show a tqdm progress bar.
        callback: called after each step with a :class:`~sdekit.integrate.StepInfo`.
        seed: per-sample seeding (instead of ``generator``): sample ``i``'s prior and noise depend
            only on ``(seed, i)``, so the samples are the same for any batching, order or number of
            ranks (with a solver whose arithmetic is per-sample; see ``docs/distributed.md``).
            Costs one generator call per sample at every noise draw; ``generator=`` is the fast path.
        indices: the global index of each sample in the batch (default ``range(batch)``); needs ``seed``.
        backend: kernel backend for the solver updates during this call: ``"auto"`` (Triton for
            CUDA tensors when installed), ``"triton"`` or ``"torch"``; ``None`` keeps the global
            setting (:func:`sdekit.kernels.set_backend`).
        condition: a projection applied after every step, e.g. :class:`sdekit.guidance.Inpainting`
            or :func:`sdekit.guidance.colorization`; it wraps the solver
            (:class:`~sdekit.solvers.conditioned.Conditioned`), so it works with every solver.
        compile: capture each fixed step (the score evaluations and the update together) with
            ``torch.compile``: ``True`` for its defaults, or a dict of its options (e.g.
            ``{"mode": "max-autotune"}``). A step compiles once per shape of the solver state, not
            once per step, and later calls reuse it; noise from ``generator``/``seed`` is drawn
            outside the graph, so the samples match the eager run's to rounding. Adaptive solvers
            refuse it. See :mod:`sdekit.capture` and ``docs/kernels.md``.
        noise: a :class:`~sdekit.noise.NoiseSource` for the solver's noise (e.g. a
            :class:`~sdekit.noise.BrownianNoise` to replay a path); default: Gaussian increments from ``generator``.
        **solver_options: passed to the solver's constructor (e.g. ``snr=0.16`` for ``pc``).

    Returns:
        The samples, a tensor of ``shape`` (or ``x_T.shape``) on the same device and dtype.

    Raises:
        ValueError, TypeError: for bad input, before any work is done (half-precision states
            are refused: keep the state in float32 and cast inside ``score_fn``).
        ScoreError: if ``score_fn`` returns something other than a tensor like ``x``.
        NonFiniteError: if the state becomes NaN/Inf (with the step, t and the last finite state).
    """
    return solve(score_fn, sde, solver, shape=shape, x_T=x_T, steps=steps, nfe=nfe, schedule=schedule, eps=eps,
                 generator=generator, device=device, dtype=dtype, denoise=denoise, progress=progress,
                 callback=callback, seed=seed, indices=indices, condition=condition, backend=backend,
                 compile=compile, noise=noise, **solver_options).x
