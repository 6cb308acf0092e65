"""torchdiffeq's ``odeint`` on the probability-flow ODE, through sdekit's API.

``solver="torchdiffeq", method="dopri5", rtol=..., atol=...`` integrates each grid interval
(by default one interval, ``T`` to ``eps``) with :func:`torchdiffeq.odeint` (Chen et al. 2018,
https://github.com/rtqichen/torchdiffeq). Adaptive methods (``dopri5``, ``bosh3``,
``adaptive_heun``, ``dopri8``, ...) choose their own steps inside that call; fixed-grid ones
(``rk4``, ``midpoint``, ``euler``, ``heun2``, ``heun3``) take ``odeint_options={"step_size": ...}`` or,
without one, take one step per grid interval (then ``steps`` defaults to 100, as for sdekit's own
fixed-step solvers); the Adams methods need a ``step_size``. ``odeint_options`` that the method does
not take are refused (torchdiffeq only warns). Order and NFE per step
are torchdiffeq's; every drift evaluation goes through the process, so ``Solution.nfe`` counts
them the same way as for sdekit's own solvers. The driver takes one step per grid interval
(the steps inside are torchdiffeq's, so ``adaptive = True`` and an ``nfe=`` budget is refused);
``max_steps`` bounds torchdiffeq's step attempts per interval (:class:`~sdekit.integrate.MaxStepsError`)
and a step-size underflow inside torchdiffeq (NaN from the score, say) becomes
:class:`~sdekit.integrate.StepSizeUnderflowError`, both with the last state torchdiffeq tried.
For the adaptive Runge–Kutta methods the first step is 1% of the interval
(``odeint_options={"first_step": ...}`` overrides it) and the end time is passed as
``step_t``, so the last step
stops exactly there: torchdiffeq otherwise steps past the end and interpolates back, which
evaluates the score beyond ``eps`` (at ``t < 0`` for a VP SDE, where ``sigma`` is NaN).
Samples share one time (torchdiffeq integrates the whole batch as one state and pools the
error over it).
"""

from __future__ import annotations

from typing import Any

import torch

from .._utils import check_int, check_real
from ..errors import MaxStepsError, StepSizeUnderflowError
from .base import Solver, register


@register
class TorchdiffeqODE(Solver):
    """torchdiffeq.odeint (dopri5 by default, its own adaptive steps) on the probability-flow ODE."""

    name = "torchdiffeq"
    kind = "ode"
    stochastic = False
    lam = 0.0
    order = weak_order = 5.0
    nfe_per_step = 0  # unknown in advance: counted by the process
    default_steps = 1
    adaptive = True  # inside torchdiffeq: no nfe= budget, no compile=
    stepping = "fixed"  # the driver takes one step per grid interval

    def __init__(self, method: str = "dopri5", *, rtol: float = 1e-5, atol: float = 1e-5,
                 odeint_options: dict[str, Any] | None = None, max_steps: int = 10_000) -> None:
        import torchdiffeq  # noqa: F401  (fail early if it is missing)
        from torchdiffeq._impl.odeint import SOLVERS
        from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver
        from torchdiffeq._impl.solvers import FixedGridODESolver

        if method not in SOLVERS:
            raise ValueError(f"method must be a torchdiffeq method ({', '.join(sorted(SOLVERS))}), got {method!r}")
        if odeint_options is not None and not isinstance(odeint_options, dict):
            raise TypeError(f"odeint_options must be a dict or None, got {type(odeint_options).__name__}")
        self.method = method
        self._rk_adaptive = issubclass(SOLVERS[method], RKAdaptiveStepsizeODESolver)
        opts = dict(odeint_options or {})
        valid = _option_names(SOLVERS[method])
        bad = sorted(k for k in opts if k not in valid)
        if bad:  # torchdiffeq itself only warns, and ignores them
            raise ValueError(f"odeint_options {', '.join(map(repr, bad))} are not options of torchdiffeq's "
                             f"method {method!r}; valid options: {', '.join(sorted(valid))}")
        if issubclass(SOLVERS[method], FixedGridODESolver) and "step_size" not in opts \
                and "grid_constructor" not in opts:
            if method in _MULTISTEP:
                raise ValueError(f"torchdiffeq's method {method!r} is a fixed-step multistep method: without "
                                 "odeint_options={'step_size': h} it would restart at every grid interval "
                                 "(first order); give a step_size")
            # without a step size torchdiffeq takes ONE step per call: one step per grid interval, so the
            # grid is the step size (default 100 steps, like sdekit's own fixed-step solvers)
            self.default_steps = 100
        self.rtol = check_real("rtol", rtol, positive=True)
        self.atol = check_real("atol", atol, nonneg=True)
        self.odeint_options = None if odeint_options is None else dict(odeint_options)
        self.max_steps = check_int("max_steps", max_steps, minimum=1)

    def nfe_for(self, steps: int) -> int:
        raise ValueError("solver 'torchdiffeq' chooses its own steps: an nfe= budget has no meaning; give rtol=/atol= "
                         "and read Solution.nfe")

    def step(self, process, t0, t1, x, state, noise):
        import torchdiffeq

        a, b = float(t0[0]), float(t1[0])
        if not (bool((t0 == t0[0]).all()) and bool((t1 == t1[0]).all())):
            raise ValueError("solver 'torchdiffeq' needs one time shared by the whole batch")
        f = _Drift(process, x.shape[0], self.max_steps)
        opts = None if self.odeint_options is None else dict(self.odeint_options)
        if self._rk_adaptive:
            opts = dict(opts or {})
            opts.setdefault("step_t", torch.tensor([b], dtype=torch.float64))
            opts.setdefault("first_step", 0.01 * abs(b - a))
        ts = torch.tensor([a, b], dtype=torch.float64 if x.dtype == torch.float64 else torch.float32, device=x.device)
        try:
            with torch.no_grad():
                ys = torchdiffeq.odeint(f, x, ts, method=self.method, rtol=self.rtol, atol=self.atol, options=opts)
        except _TooManySteps:
            raise MaxStepsError(f"solver 'torchdiffeq' reached max_steps={self.max_steps} at t={f.t_last:.6g} before "
                                f"t={b:.6g}; raise max_steps or loosen rtol/atol. The last state is .x_last",
                                f.steps, f.t_last, f.x_last) from None
        except AssertionError as e:
            if "underflow" not in str(e):
                raise
            raise StepSizeUnderflowError(f"torchdiffeq's step size underflowed at t={f.t_last:.6g} ({e}); check "
                                         "score_fn there (NaN?) or loosen rtol/atol. The last state is .x_last",
                                         f.steps, f.t_last, None if f.x_last is None else f.x_last.clone()) from None
        return ys[-1], state, None


_MULTISTEP = ("explicit_adams", "implicit_adams", "fixed_adams")


def _option_names(cls: type) -> set[str]:
    """The ``odeint_options`` names torchdiffeq's solver class ``cls`` accepts (its and its bases' constructors)."""
    import inspect

    from torchdiffeq._impl.solvers import FixedGridODESolver

    names = {"norm"}  # read by odeint itself
    classes = [c for c in cls.__mro__ if "__init__" in vars(c) and c is not object]
    if cls.__name__.startswith("AdamsBashforth"):  # they pass **kwargs on to the fixed-grid base
        classes.append(FixedGridODESolver)
    for c in classes:
        for p in inspect.signature(c.__init__).parameters.values():
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                names.add(p.name)
    return names - {"self", "func", "y0", "rtol", "atol", "dtype", "device"}


class _TooManySteps(Exception):
    pass


class _Drift:
    """The ODE right-hand side for torchdiffeq, counting step attempts through its ``callback_step`` hook."""

    def __init__(self, process, batch: int, max_steps: int) -> None:
        self.process, self.batch, self.max_steps = process, batch, max_steps
        self.steps, self.t_last, self.x_last = 0, float("nan"), None

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.process.drift(y, t.to(y.dtype).expand(self.batch))

    def callback_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.t_last, self.x_last = float(t0), y0
        if self.steps >= self.max_steps:
            self.x_last = y0.clone()
            raise _TooManySteps
        self.steps += 1
