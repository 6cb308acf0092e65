"""The solver contract and the registry.

A solver performs ONE step; the driver (:func:`sdekit.integrate.integrate`) owns the loop.

Rules for writing a solver:

1. Subclass :class:`Solver` (or :class:`Corrector`), set the capability attributes
   (``name``, ``order``, ``weak_order``, ``stochastic``, ``nfe_per_step``, ``lam``,
   ``needs_sde``) and decorate the class with :func:`register`. Capabilities are class
   attributes giving the class's default configuration (what :func:`available` lists); a
   constructor option that changes one sets the instance attribute of the same name (``ddim``
   with ``eta > 0`` is stochastic; ``pc`` copies its predictor's order and ``lam``). Only
   ``default_steps`` and ``default_schedule`` never vary per instance (``ClassVar``).
2. Implement ``step(process, t0, t1, x, state, noise) -> (x1, state, err)``. ``t0`` and
   ``t1`` are tensors of shape ``(batch,)`` (``t1 < t0`` when sampling); ``noise`` is a
   :class:`~sdekit.noise.StepNoise`; ``err`` is an error estimate for adaptive solvers,
   else ``None``. Never draw random numbers and never store per-run data on ``self``:
   history (multistep, FSAL) goes in ``state``, created by ``init``.
3. Form the update with :func:`sdekit.kernels.lincomb`, writing into a buffer from
   :func:`spare` so the step allocates nothing but the score.
4. Only diffusion-specific solvers (``needs_sde = True``) may read ``process.sde``;
   general solvers use ``process.drift`` (or ``process.drift_terms``, which lets ``lincomb``
   fuse the drift into the update) and ``process.diffusion`` alone.
5. Every score evaluation goes through the process, which counts NFE.
6. The driver checks the solver against the process and the noise once, before any work
   (:func:`check_solver`): ``needs_sde``, ``lam``, stochastic vs deterministic, and
   ``needs_levy_area`` (the noise must provide space-time Lévy area).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from .._utils import check_buffer
from ..errors import IncompatibleSolverError, NoiseCapabilityError
from ..noise import NoiseSource, StepNoise
from ..process import Process

__all__ = ["Solver", "Corrector", "buffer", "drift_terms", "register", "resolve", "resolve_corrector", "available",
           "SolverInfo", "spare", "one_step", "check_solver", "share_grid"]

_REGISTRY: dict[str, type] = {}


def spare(state: dict, x: Tensor) -> Tensor:
    """Return a buffer like ``x`` to write the next state into, recycling the one before.

    Ping-pong buffering: the state written in the previous step becomes the output of
    the next-but-one, so a fixed-step run allocates two state buffers in all.
    """
    buf = state.get("spare")
    if buf is x or not check_buffer(buf, x):
        buf = torch.empty_like(x)  # keeps x's memory format (channels_last stays channels_last)
    state["spare"] = x
    return buf


def drift_terms(process: Any, x: Tensor, t: Tensor) -> list:
    """The drift of ``process`` at ``(x, t)`` as ``[(coef, tensor), ...]`` for :func:`sdekit.kernels.lincomb`.

    Uses ``process.drift_terms`` when the process has it (the reverse process: no drift tensor is
    materialised), else ``[(1.0, process.drift(x, t))]``.
    """
    fn = getattr(process, "drift_terms", None)
    return fn(x, t) if fn is not None else [(1.0, process.drift(x, t))]


def buffer(state: dict, key: str, x: Tensor) -> Tensor:
    """A scratch tensor like ``x`` kept in ``state[key]`` and reused by later steps."""
    buf = state.get(key)
    if not check_buffer(buf, x):
        buf = state[key] = torch.empty_like(x)  # keeps x's memory format (channels_last stays channels_last)
    return buf


class Solver:
    """Base class of all solvers (predictors, ODE and SDE methods)."""

    #: the registry name (wrappers such as ``Conditioned`` report the solver they wrap).
    name: str = ""
    #: "sde" (stochastic), "ode" (deterministic) or "corrector".
    kind: str = "sde"
    #: strong order for SDE solvers (additive noise), classical order for ODE solvers.
    order: float = 1.0
    #: weak order (equal to ``order`` for ODE solvers).
    weak_order: float = 1.0
    #: whether a step draws Brownian increments (``noise.dW`` / ``noise.z``).
    stochastic: bool = True
    nfe_per_step: int = 1
    #: member of the reverse family this solver integrates (1 = reverse SDE, 0 = PF-ODE); the
    #: process must integrate the same one (:func:`check_solver`).
    lam: float = 1.0
    #: True if the solver reads ``alpha(t), sigma(t)`` from ``process.sde`` (or calls ``process.score``).
    needs_sde: bool = False
    #: True if the solver draws space-time Lévy area (``noise.H``).
    needs_levy_area: bool = False
    #: True if the steps are chosen by error control (no ``nfe=`` budget, no ``compile=``).
    adaptive: bool = False
    #: how the driver steps it: ``"fixed"`` (one step per grid interval; also solvers that are
    #: adaptive inside that one step, like the torchdiffeq bridge) or ``"adaptive"`` (steps under
    #: ``self.controller()``, see :class:`sdekit.stepping.Adaptive`).
    stepping: str = "fixed"
    #: default number of steps when neither ``steps`` nor ``nfe`` is given.
    default_steps: ClassVar[int] = 1000
    #: default time grid.
    default_schedule: ClassVar[str] = "uniform"
    #: the fraction of the log-SNR range by which the default grid stops short of ``eps`` at 4 score evaluations
    #: or fewer, tapering to 0 at ``sdekit.grids.DEFAULT_STOP_UNTIL`` (:func:`sdekit.grids.default_stop`); it
    #: was measured with the default options, and applies only to an instance as stochastic as that.
    default_stop: ClassVar[float] = 0.0

    def init(self, process: Process, x: Tensor, t0: Tensor) -> dict:
        """Create the solver state for a run starting at ``(x, t0)``."""
        return {}

    def step(self, process: Process, t0: Tensor, t1: Tensor, x: Tensor, state: dict,
             noise: StepNoise) -> tuple[Tensor, dict, Tensor | None]:
        raise NotImplementedError

    def refresh(self, process: Process, t: Tensor, x: Tensor, state: dict) -> dict:
        """Called when something outside the solver (a condition) changed the state ``x`` that the last
        step reached at ``t``: recompute what the state caches about it (an FSAL derivative). Default:
        nothing is cached."""
        return state

    def finalize(self, x: Tensor) -> Tensor:
        """Applied to the result after the final denoising step (a condition's clean measurement)."""
        return x

    def nfe_for(self, steps: int) -> int:
        """Score evaluations used by ``steps`` steps (excluding the final denoising step)."""
        return steps * self.nfe_per_step

    def options(self) -> dict[str, Any]:
        """The constructor options of this instance (for repr and reports)."""
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self" and hasattr(self, k)}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


def share_grid(state: dict, inner: dict) -> None:
    """Hand the driver's grid (``state["grid"]``, see :func:`sdekit.integrate.integrate`) on to the state of
    a wrapped solver (``pc``'s predictor, a condition's solver)."""
    grid = state.get("grid")
    if grid is not None and "grid" not in inner:
        inner["grid"] = grid


def one_step(solver: Any, process: Any, t0: Tensor, t1: Tensor, x: Tensor, state: dict,
             noise: NoiseSource) -> tuple[Tensor, dict, Tensor | None]:
    """One step of ``solver`` from ``(x, t0)`` to ``t1`` with the step's noise (what the driver calls;
    :mod:`sdekit.capture` compiles copies of it)."""
    return solver.step(process, t0, t1, x, state, StepNoise(noise, t0, t1, x))


def check_solver(solver: Solver, process: Any, noise: NoiseSource | None = None) -> None:
    """The one check of a solver against its process and noise source, before any work.

    Raises :class:`~sdekit.errors.IncompatibleSolverError` (a ``ValueError``) naming the solver when

    - it reads the forward SDE (``needs_sde``) and the process has no ``.sde`` and ``.score``
      (e.g. a :class:`~sdekit.process.DriftDiffusion` problem);
    - the process integrates another member of the reverse family (``process.lam != solver.lam``):
      ``lam`` has one source of truth, the process, which :func:`sdekit.solve` builds from the solver;
    - it is deterministic and the process has noise (it would drop the diffusion term);

    and :class:`~sdekit.errors.NoiseCapabilityError` when it draws space-time Lévy area that the
    noise source does not provide.
    """
    from ..sde import SDE  # noqa: PLC0415  (sde imports nothing of solvers; kept local to keep base light)

    name = getattr(solver, "name", "") or type(solver).__name__
    if solver.needs_sde and not (isinstance(getattr(process, "sde", None), SDE)
                                 and callable(getattr(process, "score", None))):
        raise IncompatibleSolverError(
            f"solver {name!r} reads the forward SDE (alpha(t), sigma(t)) and the score (needs_sde=True), but the "
            f"process {type(process).__name__} has no .sde/.score: use it with sdekit.ReverseProcess (sdekit.sample), "
            "or use a general solver (euler_maruyama, srk, ode_euler, ode_heun, ode_rk4, ode_adaptive, sde_adaptive)")
    lam = getattr(process, "lam", None)
    if isinstance(lam, (int, float)) and float(lam) != float(solver.lam):
        raise IncompatibleSolverError(
            f"solver {name!r} integrates the reverse family at lam={solver.lam:g}, but the process has lam={lam:g}; "
            f"build the process with lam=solver.lam (sdekit.ReverseProcess(sde, score_fn, lam={solver.lam:g}))")
    if not solver.stochastic and getattr(process, "stochastic", False):
        raise IncompatibleSolverError(
            f"solver {name!r} is deterministic, but the process {type(process).__name__} has a diffusion term it "
            "would drop; use a stochastic solver (euler_maruyama, srk, sde_adaptive)")
    if solver.needs_levy_area and noise is not None and \
            type(noise).space_time_levy is NoiseSource.space_time_levy:
        raise NoiseCapabilityError(f"solver {name!r} draws space-time Lévy area, which {type(noise).__name__} does "
                                   "not provide; use GaussianNoise, BrownianNoise(levy_area='space-time') or "
                                   "PhiloxNoise")


class Corrector(Solver):
    """A corrector moves ``x`` towards ``p_t`` at fixed ``t`` (an MCMC step); one NFE per call."""

    kind: str = "corrector"

    def correct(self, process: Process, t: Tensor, t_next: Tensor, x: Tensor, state: dict,
                noise: StepNoise) -> Tensor:
        """Return the corrected state; ``t_next`` is where the following predictor step goes."""
        raise NotImplementedError


def register(cls: type) -> type:
    """Class decorator: add a solver or corrector to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a solver named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def _names(kind: str | None = None) -> list[str]:
    return sorted(n for n, c in _REGISTRY.items() if kind is None or (c.kind == "corrector") == (kind == "corrector"))


def _construct(cls: type, options: dict[str, Any], what: str) -> Any:
    if cls.__init__ is object.__init__:  # no constructor: its (*args, **kwargs) signature takes nothing
        params, accepts_kwargs = [], False
    else:
        sig = inspect.signature(cls.__init__)
        params = [p for p in sig.parameters if p != "self"]
        accepts_kwargs = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    bad = [k for k in options if k not in params]
    if bad and not accepts_kwargs:
        valid = ", ".join(params) if params else "none"
        raise TypeError(f"{what} {cls.name!r} got unexpected option(s) {', '.join(map(repr, bad))}; "
                        f"valid options: {valid}")
    return cls(**options)


def resolve(solver: str | type | Solver, **options: Any) -> Solver:
    """Turn a name, a class or an instance into a solver instance (``options`` go to the constructor)."""
    if isinstance(solver, Solver) and not isinstance(solver, Corrector):
        if options:
            raise TypeError(f"options {sorted(options)} cannot be applied to a solver instance; "
                            "pass the name or the class, or configure the instance")
        return solver
    if isinstance(solver, type) and issubclass(solver, Solver) and not issubclass(solver, Corrector):
        return _construct(solver, options, "solver")
    if isinstance(solver, str):
        cls = _REGISTRY.get(solver)
        if cls is not None and cls.kind == "corrector":
            raise ValueError(f"{solver!r} is a corrector, not a solver: it runs inside the predictor-corrector "
                             f"solver, as solver=\"pc\", corrector=\"{solver}\" (predictor= any solver, default "
                             f"\"reverse_diffusion\"); valid solvers: {', '.join(_names('solver'))}")
        if cls is None:
            raise ValueError(f"unknown solver {solver!r}; valid solvers: {', '.join(_names('solver'))}")
        return _construct(cls, options, "solver")
    raise TypeError(f"solver must be a name, a Solver class or a Solver instance, got {type(solver).__name__}")


def resolve_corrector(corrector: str | type | Corrector | None, **options: Any) -> Corrector | None:
    """Like :func:`resolve` for correctors; ``None`` or ``"none"`` gives ``None``."""
    if corrector is None or corrector == "none":
        return None
    if isinstance(corrector, Corrector):
        if options:
            raise TypeError(f"options {sorted(options)} cannot be applied to a corrector instance")
        return corrector
    if isinstance(corrector, type) and issubclass(corrector, Corrector):
        return _construct(corrector, options, "corrector")
    if isinstance(corrector, str):
        cls = _REGISTRY.get(corrector)
        if cls is None or cls.kind != "corrector":
            raise ValueError(f"unknown corrector {corrector!r}; valid correctors: none, "
                             f"{', '.join(_names('corrector'))}")
        return _construct(cls, options, "corrector")
    raise TypeError(f"corrector must be a name, a Corrector class or instance, or None; "
                    f"got {type(corrector).__name__}")


@dataclass(frozen=True)
class SolverInfo:
    """One row of :func:`available`."""

    name: str
    kind: str
    order: float
    weak_order: float
    stochastic: bool
    #: NFE per step of the default configuration; ``None`` where it varies (torchdiffeq picks its own steps).
    nfe_per_step: int | None
    adaptive: bool
    summary: str

    def __str__(self) -> str:
        nfe = "var" if self.nfe_per_step is None else self.nfe_per_step
        return (f"{self.name:<20} {self.kind:<9} order={self.order:<4g} weak={self.weak_order:<4g} "
                f"nfe/step={nfe:<3} {'stochastic' if self.stochastic else 'deterministic'}"
                f"{' adaptive' if self.adaptive else ''}  {self.summary}")


def available() -> list[SolverInfo]:
    """List every registered solver and corrector with its order, stochasticity and NFE per step."""
    out = []
    for name in sorted(_REGISTRY):
        c = _REGISTRY[name]
        doc = (inspect.getdoc(c) or "").strip().splitlines()
        try:  # the default instance: pc's NFE is its predictor's plus its corrector's, set in __init__
            nfe = c().nfe_per_step
        except (TypeError, ValueError, ImportError):  # its constructor needs arguments: the class attribute
            nfe = c.nfe_per_step
        out.append(SolverInfo(name, c.kind, c.order, c.weak_order, c.stochastic, nfe or None, c.adaptive,
                              doc[0] if doc else ""))
    return out
