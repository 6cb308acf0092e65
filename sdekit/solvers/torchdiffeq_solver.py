"""torchdiffeq's ``odeint`` on the probability-flow ODE, through sdekit's API.

``solver="torchdiffeq", method="dopri5", rtol=..., atol=...`` integrates each grid interval
(by default one interval, ``T`` to ``eps``) with :func:`torchdiffeq.odeint` (Chen et al. 2018,
https://github.com/rtqichen/torchdiffeq). Adaptive methods (``dopri5``, ``bosh3``,
``adaptive_heun``, ``dopri8``, ...) choose their own steps inside that call; fixed-grid ones
(``rk4``, ``midpoint``, ``euler``) take ``odeint_options={"step_size": ...}``. Order and NFE per step
are torchdiffeq's; every drift evaluation goes through the process, so ``Solution.nfe`` counts
them the same way as for sdekit's own solvers. For the adaptive Runge–Kutta methods the end
time is passed as ``step_t``, so the last step stops exactly there: torchdiffeq otherwise
steps past the end and interpolates back, which evaluates the score beyond ``eps`` (at
``t < 0`` for a VP SDE, where ``sigma`` is NaN). Samples share one time (torchdiffeq integrates
the whole batch as one state and pools the error over it).
"""

from __future__ import annotations

from typing import Any

import torch

from .._utils import check_real
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

    def __init__(self, method: str = "dopri5", *, rtol: float = 1e-5, atol: float = 1e-5,
                 odeint_options: dict[str, Any] | None = None) -> None:
        import torchdiffeq  # noqa: F401  (fail early if it is missing)
        from torchdiffeq._impl.odeint import SOLVERS
        from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver

        if method not in SOLVERS:
            raise ValueError(f"method must be a torchdiffeq method ({', '.join(sorted(SOLVERS))}), got {method!r}")
        if odeint_options is not None and not isinstance(odeint_options, dict):
            raise TypeError(f"odeint_options must be a dict or None, got {type(odeint_options).__name__}")
        self.method = method
        self._rk_adaptive = issubclass(SOLVERS[method], RKAdaptiveStepsizeODESolver)
        self.rtol = check_real("rtol", rtol, positive=True)
        self.atol = check_real("atol", atol, nonneg=True)
        self.odeint_options = None if odeint_options is None else dict(odeint_options)

    def nfe_for(self, steps: int) -> int:
        raise ValueError("solver 'torchdiffeq' chooses its own steps: an nfe= budget has no meaning; give rtol=/atol= "
                         "and read Solution.nfe")

    def step(self, process, t0, t1, x, state, noise):
        import torchdiffeq

        a, b = float(t0[0]), float(t1[0])
        if not (bool((t0 == t0[0]).all()) and bool((t1 == t1[0]).all())):
            raise ValueError("solver 'torchdiffeq' needs one time shared by the whole batch")
        n = x.shape[0]

        def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return process.drift(y, t.to(y.dtype).expand(n))

        opts = None if self.odeint_options is None else dict(self.odeint_options)
        if self._rk_adaptive and (opts is None or "step_t" not in opts):
            opts = {**(opts or {}), "step_t": torch.tensor([b], dtype=torch.float64)}
        ts = torch.tensor([a, b], dtype=torch.float64 if x.dtype == torch.float64 else torch.float32, device=x.device)
        with torch.no_grad():
            ys = torchdiffeq.odeint(f, x, ts, method=self.method, rtol=self.rtol, atol=self.atol,
                                    options=opts)
        return ys[-1], state, None
