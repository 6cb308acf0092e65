"""Denoising score matching for any sdekit SDE, EMA of weights, and a training loop.

Loss (Song et al. 2021, Eq. 7) in noise-prediction form, continuous time ``t ~ U(eps, T)``::

    x_t = alpha(t) x_0 + sigma(t) z,   score target = -z / sigma(t)
    L = E_t E_z [ w(t) / sigma(t)^2 * |eps_hat(x_t, t) - z|^2 ]

with the paper's weightings ``w = sigma^2`` (``"sigma2"``: plain noise regression) and the
likelihood weighting ``w = g(t)^2`` (``"likelihood"``; Song et al. 2021b, whose minimiser bounds the
negative log-likelihood), or any callable ``t -> w``.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Callable, Iterator, Union

import torch
from torch import Tensor, nn

Weighting = Union[str, Callable[[Tensor], Tensor]]


def dsm_loss(model: nn.Module, sde, x0: Tensor, *, weighting: Weighting = "sigma2",
             generator: torch.Generator | None = None) -> Tensor:
    """Denoising score-matching loss of a noise-prediction ``model(x_t, t)`` for ``sde``, averaged over the batch."""
    b = x0.shape[0]
    t = sde.eps + (sde.T - sde.eps) * torch.rand(b, generator=generator, dtype=x0.dtype)
    z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    shape = (b,) + (1,) * (x0.ndim - 1)
    a, s = sde.alpha(t).view(shape), sde.sigma(t).view(shape)
    err = (model(a * x0 + s * z, t) - z).pow(2).reshape(b, -1).sum(1)
    if weighting == "sigma2":
        w = torch.ones_like(t)
    elif weighting == "likelihood":
        # divided by a constant (its mean over [eps, T]) to keep the gradient scale; the minimiser is unchanged
        grid = torch.linspace(sde.eps, sde.T, 257, dtype=torch.float64)
        norm = float((sde.g2(grid) / sde.sigma(grid) ** 2).mean())
        w = sde.g2(t) / sde.sigma(t) ** 2 / norm
    elif callable(weighting):
        w = weighting(t) / sde.sigma(t) ** 2
    else:
        raise ValueError(f"weighting must be 'sigma2', 'likelihood' or a callable, got {weighting!r}")
    return (w * err).mean()


class EMA:
    """Exponential moving average of a model's parameters.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so a short run is
    not dominated by the initial weights (``0.999^1500`` would still give them 22%).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        for pe, p in zip(self.model.parameters(), model.parameters()):
            pe.lerp_(p.detach(), 1 - d)
        for be, b in zip(self.model.buffers(), model.buffers()):
            be.copy_(b)


def batches(data: Tensor, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless shuffled minibatches of ``data``."""
    while True:
        perm = torch.randperm(data.shape[0], generator=generator)
        for i in range(0, data.shape[0] - batch_size + 1, batch_size):
            yield data[perm[i:i + batch_size]]


def train(model: nn.Module, sde, data: Tensor, *, steps: int = 2000, batch_size: int = 128, lr: float = 2e-3,
          weighting: Weighting = "sigma2", ema_decay: float = 0.999, seed: int = 0,
          checkpoint: str | Path | None = None, progress: bool = True) -> nn.Module:
    """Train ``model`` by denoising score matching; return the EMA model (eval mode).

    If ``checkpoint`` exists it is loaded and training is skipped; otherwise the EMA weights are
    saved there at the end.
    """
    if checkpoint is not None and Path(checkpoint).exists():
        ema = EMA(model, ema_decay)
        ema.model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        return ema.model
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / 100) * (1 - 0.9 * i / steps))
    ema = EMA(model, ema_decay)
    it = batches(data, batch_size, g)
    from tqdm.auto import trange

    bar = trange(steps, desc="train", disable=not progress)
    t0 = time.perf_counter()
    for i in bar:
        loss = dsm_loss(model, sde, next(it), weighting=weighting, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.update(model)
        if i % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    if progress:
        print(f"trained {steps} steps in {time.perf_counter() - t0:.1f}s, last loss {loss.item():.4f}")
    if checkpoint is not None:
        Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
        torch.save(ema.model.state_dict(), checkpoint)
    return ema.model
