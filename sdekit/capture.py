"""Capturing the fixed-step loop with ``torch.compile``: ``sdekit.sample(..., compile=True)``.

This module only wraps a step for the compiler; the plain step is
:func:`sdekit.solvers.base.one_step` (re-exported here). The unit that is compiled is one solver
step together with the score evaluations it makes, so the compiler sees the score network and
the update in one graph and can fuse the update into the network's last kernels. The loop
itself stays in Python: a step is compiled once per distinct shape of the solver state (a
multistep method's history fills up over its first steps), not once per step, and later calls
with the same score function, solver and shapes reuse the compiled code.

What stays outside the graph, by design:

- noise drawn from a ``torch.Generator`` (``generator=``, ``seed=``): the draw is a graph break,
  so a compiled run draws exactly the noise the eager run draws. :class:`~sdekit.kernels.philox.PhiloxNoise`
  draws inside the graph, as one opaque op (``sdekit::philox_normal``) that runs the kernel, so
  with it every solver's step is a single graph (``compile={"fullgraph": True}``);
- the NaN/Inf guard, callbacks, saved states and the denoising step. A ``condition=`` projection
  is part of the step (:class:`~sdekit.solvers.conditioned.Conditioned` wraps the solver), so it is
  compiled with it.

Adaptive solvers decide on the host whether to accept a step, so they are refused.
"""

from __future__ import annotations

import contextlib
import inspect
import types
from typing import Any, Callable

import torch

from .solvers.base import one_step

__all__ = ["one_step", "check_compile", "step_function", "recompile_budget", "RECOMPILE_LIMIT"]

_OPTIONS = tuple(p for p in inspect.signature(torch.compile).parameters if p != "model")
_compiled: dict[tuple, Callable] = {}


def check_compile(compile: bool | dict | None) -> dict | None:
    """Validate ``sample(..., compile=...)``: ``False``/``None`` (eager), ``True`` (torch.compile's
    defaults) or a dict of ``torch.compile`` keyword options. Returns the options, or ``None``."""
    if compile is None or compile is False:
        return None
    if compile is True:
        return {}
    if not isinstance(compile, dict):
        raise TypeError(f"compile must be a bool or a dict of torch.compile options, got {type(compile).__name__}")
    bad = sorted(k for k in compile if k not in _OPTIONS)
    if bad:
        raise ValueError(f"compile has unknown torch.compile option(s) {', '.join(map(repr, bad))}; "
                         f"valid options: {', '.join(_OPTIONS)}")
    return dict(compile)


#: How many times a compiled step may be recompiled (for a new state layout, shape or dtype) during
#: a run before torch falls back to eager; torch's own default (8) is below what a multistep
#: solver's warm-up, its lower-order final steps and a few grid lengths add up to.
RECOMPILE_LIMIT = 64


def recompile_budget(options: dict | None) -> contextlib.AbstractContextManager:
    """A context that raises torch's recompile limit to :data:`RECOMPILE_LIMIT` while a compiled run steps."""
    if options is None:
        return contextlib.nullcontext()
    import torch._dynamo.config as cfg

    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"  # renamed in torch 2.6
    return cfg.patch(**{name: max(RECOMPILE_LIMIT, getattr(cfg, name))})


def step_function(options: dict | None, solver: Any = None) -> Callable:
    """:func:`one_step`, or its ``torch.compile`` with ``options`` for ``solver`` (adaptive solvers raise).

    Compiled code is cached on the function's code object, and torch recompiles a function a
    limited number of times (see :func:`recompile_budget`) before falling back to eager. So each
    solver configuration (class and options) with each option set gets its own copy of
    :func:`one_step`, compiled once and reused from call to call: a process that samples with many
    solvers does not run one solver out of another's budget, nor check its guards.
    """
    if options is None:
        return one_step
    if getattr(solver, "adaptive", False):
        raise ValueError(f"compile= captures fixed-step loops; solver {solver.name!r} is adaptive (it accepts or "
                         "rejects steps on the host): use a fixed-step solver or compile=False")
    key = (type(solver), repr(solver), tuple(sorted((k, repr(v)) for k, v in options.items())))
    fn = _compiled.get(key)
    if fn is None:
        copy = types.FunctionType(one_step.__code__.replace(), one_step.__globals__, one_step.__name__)
        fn = _compiled[key] = torch.compile(copy, **options)
    return fn
