"""Forward linear SDEs ``dx = f(t) x dt + g(t) dw`` with marginals ``x_t = alpha(t) x_0 + sigma(t) z``.

Every SDE here is described by its marginal coefficients ``alpha(t)`` and ``sigma(t)``;
the drift and diffusion follow from them (see ``docs/concepts.md``)::

    f(t)   = d ln alpha / dt
    g(t)^2 = d sigma^2 / dt - 2 f(t) sigma(t)^2

Subclasses override the closed forms where they exist. All methods take ``t`` as a
tensor (any shape, usually ``(batch,)``) and return a tensor of the same shape.
SDEs know nothing about grids, step counts or solvers.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ._utils import bcast, check_real

__all__ = ["SDE", "VPSDE", "SubVPSDE", "VESDE", "AlphaSigmaSDE", "CosineSDE", "EDMSDE", "DiscreteVPSDE", "FlowSDE"]


def _time_derivative(fn: Callable[[Tensor], Tensor], t: Tensor) -> Tensor:
    """``d fn / dt`` elementwise by autograd, on a fresh tensor outside any ``torch.inference_mode`` /
    ``no_grad`` of the caller (an inference tensor cannot enter autograd)."""
    with torch.inference_mode(False), torch.enable_grad():
        tt = t.detach().clone().requires_grad_(True)
        (d,) = torch.autograd.grad(fn(tt).sum(), tt)
    return d.detach()


class SDE:
    """Base class of linear forward SDEs defined by ``alpha(t)`` and ``sigma(t)``.

    Subclasses implement :meth:`alpha` and :meth:`sigma`; :meth:`f` and :meth:`g2`
    default to autograd derivatives of those, and :meth:`t_from_log_snr` to bisection.

    Args:
        T: final time of the forward process (where the prior lives).
        eps: default smallest time reached by samplers (must satisfy ``0 < eps < T``).
    """

    name = "sde"
    #: solver default grids this process replaces when no ``schedule=`` is given (see
    #: :func:`sdekit.grids.default_schedule`): the defaults were chosen on VP/VE problems.
    schedule_defaults: dict = {}
    #: whether the solvers' default grids may stop short of ``eps`` at low NFE on this process
    #: (:func:`sdekit.grids.default_stop`; the rule was chosen on VP/VE problems).
    default_stops_short: bool = True

    def __init__(self, *, T: float = 1.0, eps: float = 1e-3) -> None:
        self.T = check_real("T", T, positive=True)
        self.eps = check_real("eps", eps, positive=True)
        if not self.eps < self.T:
            raise ValueError(f"eps must be < T, got eps={self.eps} and T={self.T}")

    # -- marginal --------------------------------------------------------------------------
    def alpha(self, t: Tensor) -> Tensor:
        """Mean coefficient of the marginal: ``x_t = alpha(t) x_0 + sigma(t) z``."""
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        """Standard deviation of the marginal noise."""
        raise NotImplementedError

    def log_snr(self, t: Tensor) -> Tensor:
        """Half log signal-to-noise ratio ``lambda(t) = ln(alpha(t) / sigma(t))`` (decreasing in t)."""
        return torch.log(self.alpha(t)) - torch.log(self.sigma(t))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        """Inverse of :meth:`log_snr` (bisection on ``[0, T]`` unless a subclass has a closed form)."""
        lam64 = lam.detach().to(torch.float64)
        lo = torch.zeros_like(lam64)
        hi = torch.full_like(lam64, self.T)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            above = self.log_snr(mid) > lam64  # log-SNR decreases with t: the root is later
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return (0.5 * (lo + hi)).to(lam.dtype)

    # -- dynamics --------------------------------------------------------------------------
    def f(self, t: Tensor) -> Tensor:
        """Drift coefficient ``f(t) = d ln alpha / dt`` (the drift is ``f(t) x``)."""
        return _time_derivative(lambda tt: torch.log(self.alpha(tt)), t)

    def g2(self, t: Tensor) -> Tensor:
        """Squared diffusion ``g(t)^2 = d sigma^2/dt - 2 f sigma^2``."""
        d = _time_derivative(lambda tt: self.sigma(tt) ** 2, t)
        return (d - 2 * self.f(t) * self.sigma(t) ** 2).detach()

    def reverse_drift_coefficients(self, t: Tensor, lam: float) -> tuple[Tensor, Tensor]:
        """``(c_x, c_D)`` with the reverse drift ``f x - 1/2 (1 + lam^2) g^2 s = c_x x + c_D D`` in terms of the
        data prediction ``D = (x + sigma^2 s)/alpha``: ``c_x = f + q``, ``c_D = -q alpha``,
        ``q = 1/2 (1 + lam^2) g^2 / sigma^2``. Subclasses give closed forms that stay finite where
        ``alpha = 0`` (:class:`FlowSDE` at ``t = 1``)."""
        a, s = self.alpha(t), self.sigma(t)
        q = 0.5 * (1.0 + lam * lam) * self.g2(t) / (s * s)
        return self.f(t) + q, -q * a

    def g(self, t: Tensor) -> Tensor:
        """Diffusion coefficient ``g(t)``."""
        return torch.sqrt(self.g2(t))

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """Forward drift ``f(t) x`` for a batch ``x`` and times ``t`` of shape ``(batch,)``."""
        return bcast(self.f(t), x) * x

    def diffusion(self, t: Tensor) -> Tensor:
        """Forward diffusion ``g(t)`` (state independent)."""
        return self.g(t)

    def transition(self, t_from: Tensor, t_to: Tensor) -> tuple[Tensor, Tensor]:
        """Exact forward transition ``x_{t_to} = a x_{t_from} + s z`` for ``t_from <= t_to``.

        Returns ``(a, s)`` with ``a = alpha(t_to)/alpha(t_from)`` and
        ``s^2 = sigma(t_to)^2 - a^2 sigma(t_from)^2``.
        """
        a = self.alpha(t_to) / self.alpha(t_from)
        s2 = self.sigma(t_to) ** 2 - (a * self.sigma(t_from)) ** 2
        return a, torch.sqrt(torch.clamp(s2, min=0.0))

    # -- prior -----------------------------------------------------------------------------
    @property
    def prior_std(self) -> float:
        """Std of the Gaussian prior at ``T``: ``sqrt(alpha(T)^2 + sigma(T)^2)`` (unit-variance data)."""
        t = torch.tensor([self.T], dtype=torch.float64)
        return float(torch.sqrt(self.alpha(t) ** 2 + self.sigma(t) ** 2))

    def prior_sample(self, shape: tuple[int, ...] | torch.Size, *, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Tensor:
        """Draw ``x_T`` from the prior ``N(0, prior_std^2 I)``."""
        shape = tuple(shape)
        if len(shape) < 1 or any((not isinstance(s, int)) or s < 1 for s in shape):
            raise ValueError(f"shape must be a non-empty tuple of positive ints, got {shape!r}")
        if device is None and generator is not None:
            device = generator.device
        z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return z * self.prior_std

    def prior_logp(self, z: Tensor) -> Tensor:
        """Log-density of the prior at ``z``, summed over all but the batch dimension."""
        s = self.prior_std
        d = z[0].numel()
        sq = z.reshape(z.shape[0], -1).pow(2).sum(1)
        return -0.5 * d * math.log(2 * math.pi * s * s) - 0.5 * sq / (s * s)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(T={self.T}, eps={self.eps})"


def _vp_log_alpha(t: Tensor, b0: float, b1: float) -> Tensor:
    return -0.25 * t * t * (b1 - b0) - 0.5 * t * b0


def _vp_t_from_log_alpha(log_alpha: Tensor, b0: float, b1: float) -> Tensor:
    c = -log_alpha  # = 1/4 t^2 (b1-b0) + 1/2 t b0
    if b1 == b0:
        return 2 * c / b0
    d = b1 - b0
    return (torch.sqrt(0.25 * b0 * b0 + d * c) - 0.5 * b0) / (0.5 * d)


def _warn_alpha_underflow(sde: SDE, log_alpha_T: float) -> None:
    """Warn when ``alpha(T)`` is 0 in float32 (``ln alpha(T) < -103``): solvers that divide by
    ``alpha`` or use the log-SNR (DDIM, DPM-Solver++, UniPC, ...) then produce NaN/Inf; the run
    refuses them (see :func:`sdekit.grids.check_run_grid`)."""
    if log_alpha_T < -103.0:
        import warnings

        warnings.warn(f"{type(sde).__name__} with T={sde.T}: alpha(T) = exp({log_alpha_T:.4g}) is 0 in float32"
                      f"{' and float64' if log_alpha_T < -745 else ''}; solvers that use alpha or the log-SNR "
                      "(ddim, dpmpp_*, unipc, ...) are refused on such a grid; use a smaller T (T=1 is the "
                      "usual choice)", stacklevel=3)


class VPSDE(SDE):
    """Variance-preserving SDE (DDPM's continuous limit): ``dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw``.

    ``beta(t) = beta_min + t (beta_max - beta_min)``, ``alpha = exp(-1/4 t^2 (b1-b0) - 1/2 t b0)``,
    ``sigma^2 = 1 - alpha^2``.
    """

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, *, T: float = 1.0,
                 eps: float = 1e-3) -> None:
        super().__init__(T=T, eps=eps)
        self.beta_min = check_real("beta_min", beta_min, positive=True)
        self.beta_max = check_real("beta_max", beta_max, positive=True)
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max must be >= beta_min, got beta_min={beta_min}, beta_max={beta_max}")
        _warn_alpha_underflow(self, float(_vp_log_alpha(torch.tensor(self.T, dtype=torch.float64),
                                                        self.beta_min, self.beta_max)))

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha(self, t: Tensor) -> Tensor:
        return _vp_log_alpha(t, self.beta_min, self.beta_max)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(2 * self.log_alpha(t)))

    def log_snr(self, t: Tensor) -> Tensor:
        la = self.log_alpha(t)
        return la - 0.5 * torch.log(-torch.expm1(2 * la))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        log_alpha = -0.5 * torch.nn.functional.softplus(-2 * lam)
        return _vp_t_from_log_alpha(log_alpha, self.beta_min, self.beta_max)

    def f(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def g2(self, t: Tensor) -> Tensor:
        return self.beta(t)

    @property
    def prior_std(self) -> float:
        return 1.0

    def __repr__(self) -> str:
        return f"VPSDE(beta_min={self.beta_min}, beta_max={self.beta_max}, T={self.T}, eps={self.eps})"


class SubVPSDE(VPSDE):
    """Sub-VP SDE: the VP drift with ``g^2 = beta(t) (1 - exp(-2 int_0^t beta))``; ``sigma = 1 - alpha^2``."""

    name = "subvp"

    def sigma(self, t: Tensor) -> Tensor:
        return -torch.expm1(2 * self.log_alpha(t))

    def log_snr(self, t: Tensor) -> Tensor:
        la = self.log_alpha(t)
        return la - torch.log(-torch.expm1(2 * la))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        # alpha / (1 - alpha^2) = e^lam  =>  alpha = (sqrt(1 + 4 e^{2 lam}) - 1) / (2 e^lam)
        e = torch.exp(lam)
        alpha = 2 * e / (torch.sqrt(1 + 4 * e * e) + 1)
        return _vp_t_from_log_alpha(torch.log(alpha), self.beta_min, self.beta_max)

    def g2(self, t: Tensor) -> Tensor:
        return self.beta(t) * (-torch.expm1(4 * self.log_alpha(t)))

    def __repr__(self) -> str:
        return f"SubVPSDE(beta_min={self.beta_min}, beta_max={self.beta_max}, T={self.T}, eps={self.eps})"


class VESDE(SDE):
    """Variance-exploding SDE (SMLD/NCSN's continuous limit): ``dx = sqrt(d sigma^2/dt) dw``.

    ``alpha = 1``, ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``.
    """

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, *, T: float = 1.0,
                 eps: float = 1e-5) -> None:
        super().__init__(T=T, eps=eps)
        self.sigma_min = check_real("sigma_min", sigma_min, positive=True)
        self.sigma_max = check_real("sigma_max", sigma_max, positive=True)
        if not self.sigma_max > self.sigma_min:
            raise ValueError(f"sigma_max must be > sigma_min, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def log_snr(self, t: Tensor) -> Tensor:
        return -(math.log(self.sigma_min) + t * self._log_ratio)

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        return (-lam - math.log(self.sigma_min)) / self._log_ratio

    def f(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def g2(self, t: Tensor) -> Tensor:
        return 2 * self._log_ratio * self.sigma(t) ** 2

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.zeros_like(x)

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, T={self.T}, eps={self.eps})"


def check_start(sde: SDE, t_start: float, solver: object) -> None:
    """Refuse, before any work, a start the solver cannot take: the reverse SDE (``solver.lam > 0``)
    where ``g(t)^2`` is infinite, or a solver whose stages need a finite log-SNR
    (``solver.needs_finite_log_snr``) where ``alpha = 0`` (a :class:`FlowSDE` at ``t = 1``)."""
    t = torch.tensor([float(t_start)], dtype=torch.float64)
    lam = float(getattr(solver, "lam", 0.0))
    name = getattr(solver, "name", type(solver).__name__)
    if lam != 0.0 and not bool(torch.isfinite(sde.g2(t)).all()):
        raise ValueError(f"the reverse SDE (lam={lam}) diverges at t={float(t_start)} (g(t)^2 is infinite for "
                         f"{sde!r}); start below it (e.g. T=0.999 or a grid starting under 1) or use an ODE solver")
    if getattr(solver, "needs_finite_log_snr", False) and bool((sde.alpha(t) == 0).all()):
        raise ValueError(f"solver {name!r} needs a finite log-SNR at its start, but alpha(t)=0 at t={float(t_start)} "
                         f"({sde!r}: pure noise); start below it (e.g. T=0.999) or use ode_euler/ode_heun/dpmpp_2m/"
                         f"dpmpp_3m/unipc, which start there exactly")


TimeFn = Callable[[Tensor], Tensor]


class AlphaSigmaSDE(SDE):
    """A linear SDE defined by any pair of marginal coefficients ``alpha(t)``, ``sigma(t)``.

    ``f`` and ``g^2`` are derived from the derivatives of ``alpha`` and ``sigma``: given
    as ``dalpha``/``dsigma`` callables, or taken by autograd otherwise. ``alpha`` and ``sigma``
    must be positive and ``alpha/sigma`` strictly decreasing on ``[eps, T]``: checked at
    construction on a fine grid by :func:`check_alpha_sigma` (which says what it guarantees).

    Example:
        >>> sde = AlphaSigmaSDE(lambda t: 1 - t, lambda t: t, T=0.999, eps=1e-3)  # rectified flow
    """

    name = "alpha_sigma"

    def __init__(self, alpha: TimeFn, sigma: TimeFn, *, T: float = 1.0, eps: float = 1e-3,
                 dalpha: TimeFn | None = None, dsigma: TimeFn | None = None) -> None:
        super().__init__(T=T, eps=eps)
        for name, fn in (("alpha", alpha), ("sigma", sigma), ("dalpha", dalpha), ("dsigma", dsigma)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable t -> tensor, got {type(fn).__name__}")
        self._alpha, self._sigma, self._dalpha, self._dsigma = alpha, sigma, dalpha, dsigma
        check_alpha_sigma(self)

    def alpha(self, t: Tensor) -> Tensor:
        return self._alpha(t)

    def sigma(self, t: Tensor) -> Tensor:
        return self._sigma(t)

    def f(self, t: Tensor) -> Tensor:
        if self._dalpha is None:
            return super().f(t)
        return self._dalpha(t) / self._alpha(t)

    def g2(self, t: Tensor) -> Tensor:
        if self._dsigma is None:
            return super().g2(t)
        s = self._sigma(t)
        return 2 * s * self._dsigma(t) - 2 * self.f(t) * s * s


#: probe intervals of :func:`check_alpha_sigma` on ``[eps, T]`` (uniform in t and in log t).
ALPHA_SIGMA_PROBES = 4096


def _first(mask: Tensor, t: Tensor) -> str:
    return f"{float(t[mask.nonzero()[0, 0]]):.6g}"


def check_alpha_sigma(sde: SDE, probes: int | None = None) -> None:
    """Validate the schedule of an :class:`AlphaSigmaSDE` on a fine grid of ``[eps, T]``.

    Probes ``alpha``, ``sigma`` and the derived ``f``, ``g^2`` (autograd, or the given ``dalpha``,
    ``dsigma``) in float64 at ``probes + 1`` times uniform in ``t`` and as many uniform in ``ln t``
    (the log grid resolves schedules that change fastest near ``eps``). Refuses, with the first
    offending time: a non-tensor or wrongly shaped output; non-finite values; ``alpha <= 0`` or
    ``sigma <= 0``; a log-SNR ``ln(alpha/sigma)`` that fails to decrease strictly between
    neighbouring probes; ``g^2 = -2 sigma^2 d lambda/dt <= 0`` (the derivative's sign: a rising
    log-SNR at a probe); and, when ``dalpha``/``dsigma`` are given, derivatives that disagree with
    the finite differences of ``ln alpha``/``sigma^2`` between neighbouring probes (beyond 0.1%).

    Guarantee: with the default 4096 intervals every subinterval of ``[eps, T]`` longer than
    ``2 (T - eps)/4096 < 1e-3 (T - eps)`` holds at least two probes, so a violation (a rising
    log-SNR, or ``alpha``/``sigma`` not positive) that lasts over a relative width above ``1e-3``
    cannot be missed. Narrower features can (a finite check never proves a property of a function).
    """
    n = ALPHA_SIGMA_PROBES if probes is None else probes
    lin = torch.linspace(sde.eps, sde.T, n + 1, dtype=torch.float64)
    log = torch.exp(torch.linspace(math.log(sde.eps), math.log(sde.T), n + 1, dtype=torch.float64))
    t = torch.sort(torch.cat([lin, log[1:-1]])).values
    t = t[torch.cat([torch.ones(1, dtype=torch.bool), torch.diff(t) > 1e-9 * t[1:]])]  # no near-duplicates
    a, s = sde._alpha(t), sde._sigma(t)
    if not (isinstance(a, Tensor) and a.shape == t.shape and isinstance(s, Tensor) and s.shape == t.shape):
        raise ValueError("alpha and sigma must map a tensor t to a tensor of the same shape")
    a, s = a.detach().to(torch.float64), s.detach().to(torch.float64)
    for name, v in (("alpha", a), ("sigma", s)):
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{name}(t) must be finite on [eps, T]; it is not at t={_first(~torch.isfinite(v), t)}")
        if not bool((v > 0).all()):
            raise ValueError(f"{name}(t) must be > 0 on [eps, T]; {name}(t)={float(v[v <= 0][0]):.6g} "
                             f"at t={_first(v <= 0, t)}")
    lam = torch.log(a) - torch.log(s)
    rise = torch.diff(lam) >= 0
    if bool(rise.any()):
        raise ValueError(f"alpha(t)/sigma(t) must be strictly decreasing on [eps, T]; it does not decrease "
                         f"after t={_first(rise, t[:-1])}")
    f, g2 = sde.f(t).to(torch.float64), sde.g2(t).to(torch.float64)
    for name, v in (("f", f), ("g^2", g2)):
        if not (isinstance(v, Tensor) and v.shape == t.shape and bool(torch.isfinite(v).all())):
            bad = _first(~torch.isfinite(v), t) if isinstance(v, Tensor) and v.shape == t.shape else "?"
            raise ValueError(f"the derived {name}(t) (from the derivatives of alpha and sigma) must be finite on "
                             f"[eps, T]; it is not at t={bad}")
    if not bool((g2 > 0).all()):
        raise ValueError(f"g(t)^2 = -2 sigma^2 d/dt ln(alpha/sigma) must be > 0 on [eps, T] (the log-SNR must "
                         f"decrease); g^2={float(g2[g2 <= 0][0]):.6g} at t={_first(g2 <= 0, t)}")
    if sde._dalpha is not None:
        _check_derivative("dalpha", "ln alpha", torch.log(a), f, t)
    if sde._dsigma is not None:
        _check_derivative("dsigma", "sigma^2", s * s, g2 + 2 * f * s * s, t)


def _check_derivative(arg: str, what: str, v: Tensor, dv: Tensor, t: Tensor) -> None:
    """The secant of ``v`` over each probe interval must lie between ``dv`` at its ends (mean value
    theorem; exact for a derivative monotone over the interval), up to 0.1% and rounding."""
    sec = torch.diff(v) / torch.diff(t)
    lo, hi = torch.minimum(dv[1:], dv[:-1]), torch.maximum(dv[1:], dv[:-1])
    tol = 1e-3 * (dv[1:].abs() + dv[:-1].abs()) + 1e-6 * (1 + float(dv.abs().max()))
    bad = (sec < lo - tol) | (sec > hi + tol)
    if bool(bad.any()):
        j = int(bad.nonzero()[0, 0])
        raise ValueError(f"{arg} does not match its function: d/dt {what} is {float(dv[j]):.6g} at t={float(t[j]):.6g} "
                         f"by {arg} but {float(sec[j]):.6g} by finite differences of {what} there")


class CosineSDE(AlphaSigmaSDE):
    """The cosine schedule of Nichol & Dhariwal (2021) as a VP-type SDE.

    ``alpha(t) = cos(pi/2 (t+s)/(1+s)) / cos(pi/2 s/(1+s))``, ``sigma = sqrt(1 - alpha^2)``.
    ``T`` defaults to 0.9946 (alpha vanishes at t=1, where the drift is infinite).
    """

    name = "cosine"

    def __init__(self, s: float = 0.008, *, T: float = 0.9946, eps: float = 1e-3) -> None:
        self.s = check_real("s", s, nonneg=True)
        T = check_real("T", T, positive=True)
        if T >= 1.0:
            raise ValueError(f"T must be < 1 for the cosine schedule (alpha(1) = 0), got {T}")
        k = math.pi / 2 / (1 + self.s)
        c0 = math.cos(k * self.s)

        def alpha(t: Tensor) -> Tensor:
            return torch.cos(k * (t + self.s)) / c0

        def dalpha(t: Tensor) -> Tensor:
            return -k * torch.sin(k * (t + self.s)) / c0

        def sigma(t: Tensor) -> Tensor:
            return torch.sqrt(torch.clamp(1 - alpha(t) ** 2, min=0.0))

        def dsigma(t: Tensor) -> Tensor:
            return -alpha(t) * dalpha(t) / sigma(t)

        super().__init__(alpha, sigma, T=T, eps=eps, dalpha=dalpha, dsigma=dsigma)

    @property
    def prior_std(self) -> float:
        return 1.0

    def __repr__(self) -> str:
        return f"CosineSDE(s={self.s}, T={self.T}, eps={self.eps})"


class EDMSDE(SDE):
    """The variance-exploding SDE of Karras et al. (2022) with time equal to noise level: ``sigma(t) = t``.

    ``alpha = 1``, ``f = 0``, ``g(t)^2 = 2 t``. Because ``t`` *is* the noise level, Euler and Heun on
    this SDE's probability-flow ODE are exactly k-diffusion's ``sample_euler`` / ``sample_heun``
    (Karras et al. 2022, Algorithms 1-2) on the same sigmas. ``T = sigma_max``, ``eps = sigma_min``.

    Args:
        sigma_min: smallest noise level (the default last time of a grid).
        sigma_max: largest noise level (where the prior lives).
    """

    name = "edm"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0) -> None:
        sigma_min = check_real("sigma_min", sigma_min, positive=True)
        sigma_max = check_real("sigma_max", sigma_max, positive=True)
        if not sigma_min < sigma_max:
            raise ValueError(f"sigma_min must be < sigma_max (EDMSDE's times are its noise levels: eps must be < T "
                             f"with eps = sigma_min and T = sigma_max), got sigma_min={sigma_min} and "
                             f"sigma_max={sigma_max}")
        super().__init__(T=sigma_max, eps=sigma_min)
        self.sigma_min, self.sigma_max = self.eps, self.T

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return t.clone()

    def log_snr(self, t: Tensor) -> Tensor:
        return -torch.log(t)

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        return torch.exp(-lam)

    def f(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def g2(self, t: Tensor) -> Tensor:
        return 2 * t

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.zeros_like(x)

    def __repr__(self) -> str:
        return f"EDMSDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"


class DiscreteVPSDE(SDE):
    """The VP SDE behind a discrete DDPM schedule ``alphas_cumprod`` (diffusers, score_sde's DDPM).

    Training step ``k`` (0-based, ``k = 0 .. N-1``) sits at time ``t_k = (k + 1) / N``, and
    ``ln alpha(t)^2`` is the piecewise-linear interpolant of ``ln alphas_cumprod`` with
    ``ln alpha(0)^2 = 0``. That is the exact continuous-time counterpart of the chain: ``beta(t) =
    -d ln alpha^2/dt`` is piecewise constant, ``f = -beta/2``, ``g^2 = beta``, and
    ``alpha(t_k)^2 = alphas_cumprod[k]`` to float precision, so every solver that only reads
    ``alpha, sigma`` at grid times reproduces the discrete sampler on the scheduler's own timesteps.

    Args:
        alphas_cumprod: 1-D sequence of ``N >= 2`` strictly decreasing values in ``(0, 1)``.
        eps: default last time of a grid (default ``1 / N``, the time of training step 0).
    """

    name = "discrete_vp"

    def __init__(self, alphas_cumprod, *, eps: float | None = None) -> None:
        ac = torch.as_tensor(alphas_cumprod).detach().to(device="cpu", dtype=torch.float64)
        if ac.ndim != 1 or ac.numel() < 2:
            raise ValueError(f"alphas_cumprod must be 1-D with at least 2 entries, got shape {tuple(ac.shape)}")
        if not bool(((ac > 0) & (ac < 1)).all()):
            raise ValueError("alphas_cumprod must lie in (0, 1)")
        if not bool((torch.diff(ac) < 0).all()):
            raise ValueError("alphas_cumprod must be strictly decreasing")
        self.num_steps = int(ac.numel())
        super().__init__(T=1.0, eps=1.0 / self.num_steps if eps is None else eps)
        self.alphas_cumprod = ac
        self._table = {torch.device("cpu"): torch.cat([ac.new_zeros(1), torch.log(ac)])}

    def _log_ac_table(self, device: torch.device) -> Tensor:
        tab = self._table.get(device)
        if tab is None:
            tab = self._table[device] = self._table[torch.device("cpu")].to(device)
        return tab

    def _interp(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``ln alpha(t)^2`` and its slope (float64)."""
        tab = self._log_ac_table(t.device)
        u = t.to(torch.float64) * self.num_steps
        j = torch.clamp(torch.floor(u), 0, self.num_steps - 1).long()
        lo, hi = tab[j], tab[j + 1]
        w = u - j
        return lo + w * (hi - lo), (hi - lo) * self.num_steps

    def log_alpha2(self, t: Tensor) -> Tensor:
        """``ln alpha(t)^2`` (the interpolated ``ln alphas_cumprod``)."""
        return self._interp(t)[0].to(t.dtype)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(0.5 * self._interp(t)[0]).to(t.dtype)

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(self._interp(t)[0])).to(t.dtype)

    def log_snr(self, t: Tensor) -> Tensor:
        la2 = self._interp(t)[0]
        return (0.5 * la2 - 0.5 * torch.log(-torch.expm1(la2))).to(t.dtype)

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        neg = -self._log_ac_table(lam.device)  # strictly increasing, neg[0] = 0
        v = torch.nn.functional.softplus(-2 * lam.to(torch.float64))  # -ln alpha^2
        k = torch.clamp(torch.searchsorted(neg, v), 1, self.num_steps)
        w = (v - neg[k - 1]) / (neg[k] - neg[k - 1])
        return ((k - 1 + w) / self.num_steps).to(lam.dtype)

    def f(self, t: Tensor) -> Tensor:
        return (0.5 * self._interp(t)[1]).to(t.dtype)

    def g2(self, t: Tensor) -> Tensor:
        return (-self._interp(t)[1]).to(t.dtype)

    @property
    def prior_std(self) -> float:
        return 1.0

    def timestep(self, t: Tensor) -> Tensor:
        """The (fractional) training-step label ``t N - 1`` a discrete model expects at time ``t``."""
        return t * self.num_steps - 1

    def times(self, timesteps) -> Tensor:
        """SDE times ``(k + 1) / N`` (float64) of training steps ``k``: a scheduler's timesteps as an sdekit grid."""
        k = torch.as_tensor(timesteps).detach().to(device="cpu", dtype=torch.float64).reshape(-1)
        if bool(((k < 0) | (k > self.num_steps - 1)).any()):
            raise ValueError(f"timesteps must lie in [0, {self.num_steps - 1}]")
        return (k + 1) / self.num_steps

    def __repr__(self) -> str:
        return f"DiscreteVPSDE(num_steps={self.num_steps}, eps={self.eps})"


class FlowSDE(SDE):
    """The rectified-flow / flow-matching interpolant ``x_t = (1 - sigma) x_0 + sigma eps`` (Liu et al. 2023;
    Lipman et al. 2023), with SD3's shifted time ``sigma(t) = shift t / (1 + (shift - 1) t)`` (Esser et al. 2024).

    ``alpha = 1 - sigma``, ``sigma = shift t / (1 + (shift - 1) t)``; with ``k = 1 + (shift - 1) t``::

        f      = -shift / (k (1 - t))                 (d ln alpha / dt)
        g^2    = 2 shift^2 t / (k^2 (1 - t))          (diverges as t -> 1)
        lambda = ln((1 - t) / t) - ln(shift),   t = 1 / (1 + shift e^lambda)

    With ``shift = 1`` time *is* the flow's noise level ``sigma``, so Euler on this SDE's PF-ODE over
    the sigmas of diffusers' ``FlowMatchEulerDiscreteScheduler`` (any shift: the shift is then in the
    grid, see :meth:`times`) is that scheduler. A velocity model ``u = eps - x_0`` (see
    :func:`sdekit.score.from_flow`) has the PF-ODE drift ``d sigma/dt u``, finite on all of ``(0, 1]``.

    Endpoints. At ``t = 1`` (the default ``T``) ``alpha = 0``: the prior is exactly ``N(0, I)`` and
    ``lambda = -inf``. The ODE solvers step from there with the data-prediction form of the drift
    (:meth:`reverse_drift_coefficients`), and the exponential integrators' first step is their exact
    limit from pure noise (``x_1 = sigma_1 x + alpha_1 D``); both need a score function that predicts
    ``D`` directly (``from_flow``; a plain score carries no information about ``D`` at ``alpha = 0``).
    The reverse SDE (``lam > 0``) diverges at ``t = 1`` (``g^2 -> inf``): start it below, e.g.
    ``FlowSDE(T=0.999)``. At ``t = 0`` ``sigma = 0``: sampling ends at ``eps > 0`` and the final
    denoising step jumps to ``t = 0`` exactly (it is diffusers' last Euler step to ``sigma = 0``).
    The log-SNR grids (``logsnr``, ``snr_power``, ``karras``) are laid out from ``-|lambda(eps)|`` when
    ``lambda(T) = -inf`` and their first time pinned to ``T``, so no step is wasted near pure noise.

    Args:
        shift: SD3's time shift (``> 0``; 1 is the plain rectified flow; SD3 uses 3).
        T: start time, ``<= 1`` (default 1, pure noise).
        eps: default last time of a grid.
    """

    name = "flow"
    #: Karras grids, chosen on VP/VE problems, are poor on flows (a Gaussian-mixture flow, 8 and 32
    #: steps from t=1, error vs the float64 PF-ODE: dpmpp_2m karras 0.60 / 0.027, logsnr 0.24 / 0.012;
    #: dpmpp_3m 1.27 / 0.017 vs 0.21 / 0.008); the solvers whose default is karras use logsnr here
    schedule_defaults = {"karras": "logsnr"}
    default_stops_short = False  # the default grids end at eps (the stop-short rule was not chosen on flows)

    def __init__(self, shift: float = 1.0, *, T: float = 1.0, eps: float = 1e-3) -> None:
        super().__init__(T=T, eps=eps)
        self.shift = check_real("shift", shift, positive=True)
        if self.T > 1.0:
            raise ValueError(f"T must be <= 1 for a flow (alpha = 1 - sigma reaches 0 at t = 1), got {self.T}")

    def _k(self, t: Tensor) -> Tensor:
        return 1.0 + (self.shift - 1.0) * t

    def sigma(self, t: Tensor) -> Tensor:
        return self.shift * t / self._k(t)

    def alpha(self, t: Tensor) -> Tensor:
        return (1.0 - t) / self._k(t)

    def dsigma(self, t: Tensor) -> Tensor:
        """``d sigma / dt = shift / (1 + (shift - 1) t)^2``."""
        return self.shift / self._k(t) ** 2

    def log_snr(self, t: Tensor) -> Tensor:
        return torch.log1p(-t) - torch.log(t) - math.log(self.shift)

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        return torch.sigmoid(-lam - math.log(self.shift))

    def f(self, t: Tensor) -> Tensor:
        return -self.shift / (self._k(t) * (1.0 - t))

    def g2(self, t: Tensor) -> Tensor:
        return 2.0 * self.shift ** 2 * t / (self._k(t) ** 2 * (1.0 - t))

    def reverse_drift_coefficients(self, t: Tensor, lam: float) -> tuple[Tensor, Tensor]:
        # c_x = sigma'/sigma + lam^2 sigma'/(sigma alpha), c_D = -(1 + lam^2) sigma'/sigma, sigma'/sigma = 1/(t k)
        r = 1.0 / (t * self._k(t))
        if lam == 0.0:  # the PF-ODE: finite at t = 1
            return r, -r
        return r + lam * lam / (t * (1.0 - t)), -(1.0 + lam * lam) * r

    def times(self, sigmas) -> Tensor:
        """SDE times (float64) of flow noise levels ``sigmas`` (e.g. a diffusers flow scheduler's
        ``scheduler.sigmas``), a trailing 0 dropped (sdekit's final denoising step is that jump):
        ``t = sigma / (shift - (shift - 1) sigma)``."""
        s = torch.as_tensor(sigmas).detach().to(device="cpu", dtype=torch.float64).reshape(-1)
        if s.numel() > 1 and float(s[-1]) == 0.0:
            s = s[:-1]
        if s.numel() < 1 or not bool(((s > 0) & (s <= 1)).all()):
            raise ValueError("sigmas must lie in (0, 1] (a trailing 0 is dropped)")
        return s / (self.shift - (self.shift - 1.0) * s)

    def __repr__(self) -> str:
        return f"FlowSDE(shift={self.shift}, T={self.T}, eps={self.eps})"
