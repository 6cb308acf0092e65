"""Small score networks: an MLP with a time embedding (low-dimensional data) and a small U-Net (images).

Both predict the noise ``eps`` of ``x_t = alpha(t) x_0 + sigma(t) eps`` from ``(x_t, t)``; wrap them with
:func:`sdekit.score.from_eps` to get a score function. Time enters through a Gaussian Fourier
embedding of ``log(sigma/alpha)`` (the log noise level), which works for every sdekit SDE.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class FourierEmbedding(nn.Module):
    """Random Fourier features of a scalar (Tancik et al. 2020), followed by a 2-layer MLP."""

    def __init__(self, dim: int, scale: float = 4.0, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(dim // 2, generator=g) * scale)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c: Tensor) -> Tensor:
        ang = 2 * math.pi * c[:, None] * self.freqs[None, :]
        return self.mlp(torch.cat([ang.sin(), ang.cos()], dim=1))


def noise_label(sde, t: Tensor) -> Tensor:
    """The conditioning scalar: ``log(sigma/alpha) / 4`` (about unit range for the usual SDEs)."""
    return -sde.log_snr(t) / 4


class MLPScore(nn.Module):
    """Noise-prediction MLP for vectors: ``eps_hat = net(x, t)``.

    Args:
        sde: the sdekit SDE the model is trained for (gives the time embedding its noise level).
        dim: data dimension.
        hidden: width of the hidden layers.
        depth: number of residual blocks.
    """

    def __init__(self, sde, dim: int = 2, hidden: int = 128, depth: int = 3, emb: int = 64) -> None:
        super().__init__()
        self.sde = sde
        self.emb = FourierEmbedding(emb)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"film": nn.Linear(emb, 2 * hidden), "lin1": nn.Linear(hidden, hidden),
                           "lin2": nn.Linear(hidden, hidden)}) for _ in range(depth))
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        e = self.emb(noise_label(self.sde, t).to(x.dtype))
        h = self.inp(x)
        for blk in self.blocks:
            scale, shift = blk["film"](e).chunk(2, dim=1)
            r = blk["lin1"](nn.functional.silu(h)) * (1 + scale) + shift
            h = h + blk["lin2"](nn.functional.silu(r))
        return self.out(nn.functional.silu(h))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv residual block with a FiLM time embedding."""

    def __init__(self, cin: int, cout: int, emb: int) -> None:
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(min(8, cin), cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb, 2 * cout)
        self.n2, self.c2 = nn.GroupNorm(min(8, cout), cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.c1(nn.functional.silu(self.n1(x)))
        scale, shift = self.film(e)[:, :, None, None].chunk(2, dim=1)
        h = self.n2(h) * (1 + scale) + shift
        return self.skip(x) + self.c2(nn.functional.silu(h))


class SmallUNet(nn.Module):
    """A two-level U-Net for small images (8x8 digits, 28x28, 32x32): ``eps_hat = net(x, t)``.

    Args:
        sde: the sdekit SDE the model is trained for.
        channels: image channels.
        width: channels at full resolution (doubled at half resolution).
    """

    def __init__(self, sde, channels: int = 1, width: int = 32, emb: int = 64) -> None:
        super().__init__()
        self.sde = sde
        self.emb = FourierEmbedding(emb)
        w = width
        self.inp = nn.Conv2d(channels, w, 3, padding=1)
        self.d1 = ResBlock(w, w, emb)
        self.down = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1)
        self.d2 = ResBlock(2 * w, 2 * w, emb)
        self.mid = ResBlock(2 * w, 2 * w, emb)
        self.up = nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1)
        self.u1 = ResBlock(2 * w, w, emb)
        self.out = nn.Sequential(nn.GroupNorm(8, w), nn.SiLU(), nn.Conv2d(w, channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        e = self.emb(noise_label(self.sde, t).to(x.dtype))
        h1 = self.d1(self.inp(x), e)
        h2 = self.mid(self.d2(self.down(h1), e), e)
        return self.out(self.u1(torch.cat([self.up(h2), h1], dim=1), e))
