"""A small derivative-free minimiser (Nelder–Mead) for :func:`sdekit.grids.tune` (numpy only)."""

from __future__ import annotations

from typing import Callable

import numpy as np


def nelder_mead(f: Callable[[np.ndarray], float], x0: np.ndarray, *, step: float, max_evals: int,
                xtol: float = 1e-3) -> tuple[np.ndarray, float, int]:
    """Minimise ``f`` from ``x0`` by the Nelder–Mead simplex method (standard coefficients).

    The start simplex is ``x0`` and ``x0 + step * e_i``. Stops after ``max_evals`` evaluations of
    ``f`` or when the simplex is narrower than ``xtol`` in every coordinate. A non-finite value of
    ``f`` is treated as ``+inf`` (the point is never kept).

    Returns:
        ``(x, f(x), evaluations)`` for the best point seen.
    """
    n = x0.size
    evals = 0

    def value(x: np.ndarray) -> float:
        nonlocal evals
        evals += 1
        v = float(f(x))
        return v if np.isfinite(v) else float("inf")

    pts = [x0.astype(np.float64)] + [x0 + step * np.eye(n)[i] for i in range(n)]
    vals = [value(p) for p in pts[: max(1, min(n + 1, max_evals))]]
    pts = pts[: len(vals)]
    while evals < max_evals and len(pts) == n + 1:
        order = np.argsort(vals)
        pts, vals = [pts[i] for i in order], [vals[i] for i in order]
        if max(np.abs(p - pts[0]).max() for p in pts[1:]) < xtol:
            break
        centre = np.mean(pts[:-1], axis=0)
        refl = centre + (centre - pts[-1])
        fr = value(refl)
        if evals >= max_evals:  # no budget left for an expansion or a contraction
            if fr < vals[-1]:
                pts[-1], vals[-1] = refl, fr
            break
        if fr < vals[0]:
            exp = centre + 2.0 * (centre - pts[-1])
            fe = value(exp)
            pts[-1], vals[-1] = (exp, fe) if fe < fr else (refl, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = refl, fr
        else:
            # contract: outside (towards the reflection) or inside (towards the worst point)
            con = centre + 0.5 * ((refl if fr < vals[-1] else pts[-1]) - centre)
            fc = value(con)
            if fc < min(fr, vals[-1]):
                pts[-1], vals[-1] = con, fc
            else:  # shrink towards the best point
                for i in range(1, n + 1):
                    if evals >= max_evals:
                        break
                    pts[i] = pts[0] + 0.5 * (pts[i] - pts[0])
                    vals[i] = value(pts[i])
    best = int(np.argmin(vals))
    return pts[best], vals[best], evals
