"""torchsde ``sdeint`` on the reverse-time SDE (fixed uniform steps), then Tweedie denoising at ``eps``.

torchsde integrates forwards in time, so the reverse SDE runs in ``u = T - t``::

    dy = -[f(t) y - g(t)^2 s(y, t)] du + g(t) dW_u

with diagonal (state-independent) noise and a seeded ``BrownianInterval`` (space-time Lévy
area where the method needs it). The noise is additive, so the Itô and Stratonovich forms
agree and the Stratonovich methods (midpoint, reversible Heun) are valid too.
"""

from __future__ import annotations

import torch

from .common import Oracle, Problem, RunSpec, steps_for, tweedie

LIBRARY = "torchsde"
# method -> (sde_type, levy area approximation)
METHODS = {
    "euler": ("ito", "none"),
    "srk": ("ito", "space-time"),
    "midpoint": ("stratonovich", "none"),
    "reversible_heun": ("stratonovich", "none"),
}


def available() -> bool:
    try:
        import torchsde  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


class _ReverseSDE(torch.nn.Module):
    noise_type = "diagonal"

    def __init__(self, oracle: Oracle, sde_type: str) -> None:
        super().__init__()
        self.oracle, self.sde_type = oracle, sde_type
        self.sde, self.T = oracle.p.sde, oracle.p.sde.T

    def _t(self, u: torch.Tensor) -> torch.Tensor:
        return (self.T - u.detach().to(torch.float64)).reshape(1)

    def f(self, u, y):
        t = self._t(u)
        return -(float(self.sde.f(t)) * y - float(self.sde.g2(t)) * self.oracle.score(y, t))

    def g(self, u, y):
        return torch.full_like(y, float(self.sde.g(self._t(u))))


def _solve(p: Problem, oracle: Oracle, x_T: torch.Tensor, seed: int, method: str, n: int) -> torch.Tensor:
    import torchsde

    sde_type, levy = METHODS[method]
    span = p.sde.T - p.sde.eps
    y0 = x_T.reshape(x_T.shape[0], -1)
    ts = torch.tensor([0.0, span], dtype=y0.dtype)
    bm = torchsde.BrownianInterval(t0=0.0, t1=float(ts[-1]), size=tuple(y0.shape), dtype=y0.dtype,
                                   levy_area_approximation=levy, entropy=seed + 1)
    dt = float(ts[-1]) / n * (1 + 1e-6)  # exactly n steps despite rounding
    ys = torchsde.sdeint(_ReverseSDE(oracle, sde_type), y0, ts, bm=bm, method=method, dt=dt, adaptive=False)
    return tweedie(oracle, ys[-1].reshape(x_T.shape), p.sde.eps)


def calls(p: Problem, method: str) -> tuple[int, int]:
    """``(fixed, per_step)`` score calls of a torchsde run (its contract check, start-up and our denoising
    included), measured on a 2-sample probe: ``nfe(n) = fixed + per_step * n``."""
    probe = Problem(p.name, p.dim, p.sde_name, p.sde, p.mix, 2, p.seed, p.fd, p.reference[:2], score=p.score)
    counts = []
    for n in (1, 2):
        oracle = Oracle(probe)
        _solve(probe, oracle, probe.x_T(), 0, method, n)
        counts.append(oracle.nfe)
    return counts[0] - (counts[1] - counts[0]), counts[1] - counts[0]


def specs(p: Problem, budgets: list[int], **_) -> list[RunSpec]:
    out = []
    for method in METHODS:
        fixed, per_step = calls(p, method)
        for budget in budgets:
            if fixed + per_step > budget:
                continue
            n = steps_for(budget, per_step, extra=fixed)

            def run(oracle, x_T, seed, method=method, n=n):
                return _solve(p, oracle, x_T, seed, method, n)

            out.append(RunSpec(LIBRARY, method, f"uniform n={n} +denoise", budget, run))
    return out


def overhead_specs(p: Problem, nfe: int) -> list[RunSpec]:
    fixed, per_step = calls(p, "euler")
    n = steps_for(nfe, per_step, extra=fixed)
    return [RunSpec(LIBRARY, "euler", f"uniform n={n} +denoise", nfe,
                    lambda oracle, x_T, seed: _solve(p, oracle, x_T, seed, "euler", n))]
