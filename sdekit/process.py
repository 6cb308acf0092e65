"""The reverse-time dynamics every solver integrates, and the one place where NFE is counted.

For a forward SDE ``dx = f(t) x dt + g(t) dw`` and a score ``s(x, t) ~ grad log p_t(x)``,
the reverse dynamics form a one-parameter family (``lam`` in [0, 1])::

    dx = [f(t) x - 1/2 (1 + lam^2) g(t)^2 s(x, t)] dt + lam g(t) dw_bar

``lam = 1`` is the reverse-time SDE of Anderson (1982) / Song et al. (2021) and ``lam = 0``
the probability-flow ODE; every member has the same marginals ``p_t``. Time runs
backwards (``t1 < t0``); solvers just integrate ``dx = drift dt + diffusion dW``.

General solvers only use :meth:`drift` and :meth:`diffusion`, so they also solve any
SDE with state-independent noise (see :class:`DriftDiffusion`).
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import Tensor

from ._utils import bcast, check_lam
from .errors import ScoreError
from .sde import SDE

__all__ = ["Process", "ReverseProcess", "DriftDiffusion", "ScoreFn", "ScoreError"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]


class Process(Protocol):
    """What a solver may ask of the dynamics: drift, state-independent diffusion, NFE.

    Optional members that :func:`sdekit.solvers.base.check_solver` reads when present: ``lam``
    (the member of the reverse family integrated), ``stochastic`` (whether ``diffusion`` is
    non-zero), and ``sde`` with ``score`` (for the diffusion-specific solvers, ``needs_sde``).
    """

    nfe: int

    def drift(self, x: Tensor, t: Tensor) -> Tensor: ...

    def drift_terms(self, x: Tensor, t: Tensor) -> list: ...

    def diffusion(self, t: Tensor) -> Tensor: ...


class ReverseProcess:
    """Reverse-time dynamics of ``sde`` driven by ``score_fn``, counting score evaluations.

    Args:
        sde: the forward SDE.
        score_fn: ``score_fn(x, t) -> tensor like x`` with ``t`` of shape ``(batch,)``.
        lam: noise level of the reverse family, in [0, 1]: 1 is the reverse SDE, 0 the PF-ODE.
        grad: evaluate the score with autograd enabled (guidance and likelihood need it);
            by default the score runs under ``torch.no_grad()``.

    Attributes:
        nfe: number of score evaluations so far (one per batched call).
    """

    def __init__(self, sde: SDE, score_fn: ScoreFn, lam: float = 1.0, *, grad: bool = False) -> None:
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be an sdekit.SDE, got {type(sde).__name__}")
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable (x, t) -> tensor, got {type(score_fn).__name__}")
        self.sde = sde
        self.score_fn = score_fn
        self.lam = check_lam(lam)
        self.grad = grad
        self.nfe = 0
        #: ``score_fn.data_prediction(x, t)`` when the score function predicts ``D`` directly (e.g.
        #: :func:`sdekit.score.from_flow`): used for ``D`` and the drift, finite where ``alpha = 0``.
        self.predicts_data = callable(getattr(score_fn, "data_prediction", None))

    @property
    def stochastic(self) -> bool:
        """Whether the dynamics have noise (``lam > 0``)."""
        return self.lam > 0

    def score(self, x: Tensor, t: Tensor, *, _fn: ScoreFn | None = None) -> Tensor:
        """Evaluate the score (one NFE) and check that it returns a tensor like ``x``."""
        self.nfe += 1
        try:
            with torch.set_grad_enabled(self.grad and torch.is_grad_enabled()):
                s = (self.score_fn if _fn is None else _fn)(x, t)
        except Exception as e:
            if hasattr(e, "add_note"):  # Python >= 3.11: same exception, with where it happened
                tt = t.reshape(-1)
                where = f"t={float(tt[0]):.6g}" if tt.numel() else "t=()"
                e.add_note(f"raised by score_fn at score evaluation {self.nfe} ({where}, x of shape "
                           f"{tuple(x.shape)}, dtype {x.dtype}, device {x.device})")
            raise
        if not isinstance(s, Tensor):
            raise ScoreError(f"score_fn must return a tensor, got {type(s).__name__}")
        if s.device.type == "meta" and x.device.type != "meta":
            raise ScoreError("score_fn returned a tensor on the meta device: the model's weights are not loaded "
                             "(meta tensors hold no data); materialise the model on a real device")
        if s.shape != x.shape:
            raise ScoreError(f"score_fn returned shape {tuple(s.shape)}, expected the shape of x {tuple(x.shape)}")
        if s.dtype != x.dtype or s.device != x.device:
            raise ScoreError(f"score_fn returned dtype={s.dtype}, device={s.device}; expected dtype={x.dtype}, "
                             f"device={x.device} (those of x)")
        if s.requires_grad and not self.grad:
            s = s.detach()  # a score_fn that enables grad itself must not chain a graph through every step
        return s

    def predict_data(self, x: Tensor, t: Tensor) -> Tensor:
        """The score function's own data prediction ``D(x, t)`` (one NFE; needs :attr:`predicts_data`)."""
        return self.score(x, t, _fn=self.score_fn.data_prediction)

    def _drift_from_data(self, x: Tensor, t: Tensor) -> list[tuple[Tensor, Tensor]]:
        cx, cd = self.sde.reverse_drift_coefficients(t, self.lam)
        return [(cx, x), (cd, self.predict_data(x, t))]

    def drift(self, x: Tensor, t: Tensor, score: Tensor | None = None) -> Tensor:
        """``f(t) x - 1/2 (1 + lam^2) g(t)^2 s(x, t)`` (one NFE unless ``score`` is given)."""
        if score is None and self.predicts_data:
            (cx, _), (cd, d) = self._drift_from_data(x, t)
            return bcast(cx, x) * x + bcast(cd, x) * d
        s = self.score(x, t) if score is None else score
        c = -0.5 * (1.0 + self.lam ** 2) * self.sde.g2(t)
        out = self.sde.drift(x, t)
        return out.addcmul_(s, bcast(c, x)) if not out.requires_grad else out + bcast(c, x) * s

    def drift_terms(self, x: Tensor, t: Tensor, score: Tensor | None = None) -> list[tuple[Tensor, Tensor]]:
        """The drift as coefficient/tensor pairs ``[(f(t), x), (-1/2 (1 + lam^2) g^2, s)]`` (one NFE).

        Solvers pass these to :func:`sdekit.kernels.lincomb` so the drift is never materialised.
        With a data-predicting score function: ``[(c_x, x), (c_D, D)]`` (see ``SDE.reverse_drift_coefficients``).
        """
        if score is None and self.predicts_data:
            return self._drift_from_data(x, t)
        s = self.score(x, t) if score is None else score
        return [(self.sde.f(t), x), (-0.5 * (1.0 + self.lam ** 2) * self.sde.g2(t), s)]

    def diffusion(self, t: Tensor) -> Tensor:
        """``lam g(t)``, of shape ``(batch,)``."""
        return self.lam * self.sde.g(t)

    def data_prediction(self, x: Tensor, t: Tensor, score: Tensor | None = None) -> Tensor:
        """Tweedie's estimate ``E[x_0 | x_t] = (x + sigma^2 s) / alpha`` (one NFE unless ``score`` is given)."""
        if score is None and self.predicts_data:
            return self.predict_data(x, t)
        s = self.score(x, t) if score is None else score
        a, sg = self.sde.alpha(t), self.sde.sigma(t)
        return (x + bcast(sg * sg, x) * s) / bcast(a, x)


class DriftDiffusion:
    """Any SDE ``dx = drift(x, t) dt + diffusion(t) dW`` with state-independent noise.

    Lets the general solvers run on problems with known solutions (Ornstein–Uhlenbeck,
    linear ODEs). ``nfe`` counts drift evaluations.
    """

    def __init__(self, drift: Callable[[Tensor, Tensor], Tensor],
                 diffusion: Callable[[Tensor], Tensor] | None = None) -> None:
        self._drift = drift
        self._diffusion = diffusion
        self.nfe = 0

    @property
    def stochastic(self) -> bool:
        """Whether a diffusion was given (a deterministic solver would drop it)."""
        return self._diffusion is not None

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        return self._drift(x, t)

    def drift_terms(self, x: Tensor, t: Tensor) -> list[tuple[float, Tensor]]:
        """The drift as one coefficient/tensor pair (see :meth:`ReverseProcess.drift_terms`)."""
        return [(1.0, self.drift(x, t))]

    def diffusion(self, t: Tensor) -> Tensor:
        if self._diffusion is None:
            return torch.zeros_like(t)
        return self._diffusion(t)
