"""scipy ``solve_ivp`` (RK45) on the probability-flow ODE, as the original score_sde ODE sampler does.

The whole batch is one flattened float64 state; the score sees float32 tensors. Finishes with
Tweedie's denoising step at ``eps`` (1 NFE). The paper's setting is ``rtol = atol = 1e-5``.
"""

from __future__ import annotations

import numpy as np
import torch

from .common import Oracle, Problem, RunSpec, tweedie

LIBRARY = "scipy"


def available() -> bool:
    try:
        import scipy.integrate  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def _solve(p: Problem, oracle: Oracle, x_T: torch.Tensor, tol: float, method: str = "RK45") -> torch.Tensor:
    from scipy.integrate import solve_ivp

    shape, sde = x_T.shape, p.sde

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(y).reshape(shape).to(torch.float32)
        tt = torch.tensor([t], dtype=torch.float64)
        d = float(sde.f(tt)) * x - 0.5 * float(sde.g2(tt)) * oracle.score(x, tt)
        return d.numpy().reshape(-1).astype(np.float64)

    sol = solve_ivp(fun, (sde.T, sde.eps), x_T.reshape(-1).to(torch.float64).numpy(), method=method,
                    rtol=tol, atol=tol)
    if sol.status != 0:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    x = torch.from_numpy(sol.y[:, -1]).reshape(shape).to(torch.float32)
    return tweedie(oracle, x, sde.eps)


def specs(p: Problem, budgets: list[int], *, tolerances: list[float]) -> list[RunSpec]:
    tols = sorted(set(tolerances) | {1e-5}, reverse=True)
    return [RunSpec(LIBRARY, "RK45", f"rtol=atol={tol:g} +denoise", None,
                    lambda oracle, x_T, seed, tol=tol: _solve(p, oracle, x_T, tol), deterministic=True)
            for tol in tols]


def overhead_specs(p: Problem, nfe: int) -> list[RunSpec]:
    return [RunSpec(LIBRARY, "RK45", "rtol=atol=1e-3 +denoise", None,
                    lambda oracle, x_T, seed: _solve(p, oracle, x_T, 1e-3))]
