"""The solver contract and the registry.

A solver performs ONE step; the driver (:func:`sdekit.integrate.integrate`) owns the loop.

Rules for writing a solver:

1. Subclass :class:`Solver` (or :class:`Corrector`), set the capability attributes
   (``name``, ``order``, ``weak_order``, ``stochastic``, ``nfe_per_step``, ``lam``,
   ``needs_sde``) and decorate the class with :func:`register`.
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
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..noise import StepNoise

__all__ = ["Solver", "Corrector", "buffer", "drift_terms", "register", "resolve", "resolve_corrector", "available",
           "SolverInfo", "spare"]

_REGISTRY: dict[str, type] = {}


def spare(state: dict, x: Tensor) -> Tensor:
    """Return a buffer like ``x`` to write the next state into, recycling the one before.

    Ping-pong buffering: the state written in the previous step becomes the output of
    the next-but-one, so a fixed-step run allocates two state buffers in all.
    """
    buf = state.get("spare")
    if buf is None or buf is x or buf.shape != x.shape or buf.dtype != x.dtype or buf.device != x.device:
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
    if buf is None or buf.shape != x.shape or buf.dtype != x.dtype or buf.device != x.device:
        buf = state[key] = torch.empty_like(x)  # keeps x's memory format
    return buf


class Solver:
    """Base class of all solvers (predictors, ODE and SDE methods)."""

    name: ClassVar[str] = ""
    #: "sde" (stochastic), "ode" (deterministic) or "corrector".
    kind: ClassVar[str] = "sde"
    #: strong order for SDE solvers (additive noise), classical order for ODE solvers.
    order: ClassVar[float] = 1.0
    #: weak order (equal to ``order`` for ODE solvers).
    weak_order: ClassVar[float] = 1.0
    stochastic: bool = True
    nfe_per_step: int = 1
    #: member of the reverse family this solver integrates (1 = reverse SDE, 0 = PF-ODE).
    lam: float = 1.0
    #: True if the solver reads ``alpha(t), sigma(t)`` from ``process.sde``.
    needs_sde: ClassVar[bool] = False
    adaptive: ClassVar[bool] = False
    #: default number of steps when neither ``steps`` nor ``nfe`` is given.
    default_steps: ClassVar[int] = 1000
    #: default time grid.
    default_schedule: ClassVar[str] = "uniform"

    def init(self, process: Any, x: Tensor, t0: Tensor) -> dict:
        """Create the solver state for a run starting at ``(x, t0)``."""
        return {}

    def step(self, process: Any, t0: Tensor, t1: Tensor, x: Tensor, state: dict,
             noise: StepNoise) -> tuple[Tensor, dict, Tensor | None]:
        raise NotImplementedError

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


class Corrector(Solver):
    """A corrector moves ``x`` towards ``p_t`` at fixed ``t`` (an MCMC step); one NFE per call."""

    kind: ClassVar[str] = "corrector"

    def correct(self, process: Any, t: Tensor, t_next: Tensor, x: Tensor, state: dict,
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
        if cls is None or cls.kind == "corrector":
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
    nfe_per_step: int
    adaptive: bool
    summary: str

    def __str__(self) -> str:
        return (f"{self.name:<20} {self.kind:<9} order={self.order:<4g} weak={self.weak_order:<4g} "
                f"nfe/step={self.nfe_per_step:<2} {'stochastic' if self.stochastic else 'deterministic'}"
                f"{' adaptive' if self.adaptive else ''}  {self.summary}")


def available() -> list[SolverInfo]:
    """List every registered solver and corrector with its order, stochasticity and NFE per step."""
    out = []
    for name in sorted(_REGISTRY):
        c = _REGISTRY[name]
        doc = (inspect.getdoc(c) or "").strip().splitlines()
        out.append(SolverInfo(name, c.kind, c.order, c.weak_order, c.stochastic, c.nfe_per_step, c.adaptive,
                              doc[0] if doc else ""))
    return out
