"""Score model on scikit-learn's bundled 8x8 digits (1,797 images, no download): train, sample, FID.

    python -m examples.digits                      # train (cached under runs/digits), sample, report FID
    python -m examples.digits --arch unet --steps 3000

FID here is the Fréchet distance between Gaussians fitted to the penultimate-layer features of a
small digits classifier that this script trains once (it plays Inception's role). The distance is
computed by ``torchmetrics``' ``FrechetInceptionDistance`` with that classifier as its custom
feature extractor when torchmetrics is installed, else by :func:`sdekit.metrics.frechet_distance`.
The same :func:`make_fid` takes an InceptionV3 (``feature=2048``, needs ``torch-fidelity``) for
real images. The floor is the FID of held-out real digits against the training digits.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Union

import torch
from torch import Tensor, nn

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sdekit
from examples.nets import MLPScore, SmallUNet
from examples.training import train

HELD_OUT = 500


def load_digits_split(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_held, y_held)``; images ``(n, 1, 8, 8)`` scaled from 0..16 to [-1, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    tr, ho = perm[HELD_OUT:], perm[:HELD_OUT]
    return x[tr], y[tr], x[ho], y[ho]


class DigitFeatures(nn.Module):
    """A small MLP classifier of 8x8 digits; ``forward`` returns its penultimate features (for FID)."""

    num_features = 64

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.SiLU(), nn.Linear(256, self.num_features),
                                  nn.SiLU())
        self.head = nn.Linear(self.num_features, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x.float())

    def logits(self, x: Tensor) -> Tensor:
        return self.head(self.body(x.float()))


def train_classifier(x: Tensor, y: Tensor, *, steps: int = 600, seed: int = 0,
                     checkpoint: str | Path | None = None) -> DigitFeatures:
    """Train (or load) the feature network; light noise augmentation keeps features smooth off-manifold."""
    net = DigitFeatures()
    if checkpoint is not None and Path(checkpoint).exists():
        net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        return net.eval().requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (128,), generator=g)
        xb = x[idx] + 0.1 * torch.randn(x[idx].shape, generator=g)
        loss = nn.functional.cross_entropy(net.logits(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if checkpoint is not None:
        Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), checkpoint)
    return net.eval().requires_grad_(False)


class _FallbackFID:
    """Same interface as torchmetrics' FID, computed by :func:`sdekit.metrics.frechet_distance`."""

    def __init__(self, feature: nn.Module) -> None:
        self.feature, self.real, self.fake = feature, [], []

    def update(self, imgs: Tensor, real: bool) -> None:
        with torch.no_grad():
            (self.real if real else self.fake).append(self.feature(imgs).double())

    def reset(self) -> None:
        self.fake = []

    def compute(self) -> Tensor:
        return torch.tensor(sdekit.metrics.frechet_distance(torch.cat(self.fake), torch.cat(self.real)))


def make_fid(feature: Union[nn.Module, int]):
    """An FID accumulator: ``update(imgs, real=...)``, ``compute()``, ``reset()`` (keeps the real statistics).

    ``feature`` is a feature network (e.g. :class:`DigitFeatures`) or an int for torchmetrics'
    InceptionV3 features (64, 192, 768 or 2048; needs ``torch-fidelity``).
    """
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        if isinstance(feature, int):
            raise ImportError("InceptionV3 features need torchmetrics and torch-fidelity") from None
        return _FallbackFID(feature)
    return FrechetInceptionDistance(feature=feature, reset_real_features=False)


def fid_backend() -> str:
    try:
        import torchmetrics  # noqa: F401
    except ImportError:
        return "sdekit.metrics.frechet_distance"
    return "torchmetrics.FrechetInceptionDistance"


def build_model(arch: str, sde) -> nn.Module:
    if arch == "mlp":
        return _FlatMLP(sde)
    if arch == "unet":
        return SmallUNet(sde, channels=1, width=16)
    raise ValueError(f"arch must be 'mlp' or 'unet', got {arch!r}")


class _FlatMLP(nn.Module):
    """:class:`MLPScore` on flattened 8x8 images (the fast default on CPU)."""

    def __init__(self, sde) -> None:
        super().__init__()
        self.net = MLPScore(sde, dim=64, hidden=256, depth=3)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(x.reshape(x.shape[0], 64), t).reshape(x.shape)


def setup(workdir: str | Path = "runs/digits", *, arch: str = "mlp", steps: int = 4000, weighting: str = "sigma2",
          progress: bool = True):
    """Train (or load from ``workdir``) the score model and the feature network.

    Returns ``(score_fn, sde, x_train, x_held, features, info)``.
    """
    workdir = Path(workdir)
    x_tr, y_tr, x_ho, y_ho = load_digits_split()
    features = train_classifier(x_tr, y_tr, checkpoint=workdir / "classifier.pt")
    acc = float((features.logits(x_ho).argmax(1) == y_ho).float().mean())
    sde = sdekit.VPSDE()
    t0 = time.perf_counter()
    model = train(build_model(arch, sde), sde, x_tr, steps=steps, batch_size=128, weighting=weighting,
                  checkpoint=workdir / f"score_{arch}_{weighting}_{steps}.pt", progress=progress)
    info = {"arch": arch, "train_steps": steps, "weighting": weighting, "classifier_heldout_acc": acc,
            "setup_s": time.perf_counter() - t0, "n_train": int(x_tr.shape[0]), "n_held_out": int(x_ho.shape[0])}
    return sdekit.score.from_eps(model, sde), sde, x_tr, x_ho, features, info


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="mlp", choices=["mlp", "unet"])
    p.add_argument("--steps", type=int, default=4000, help="training steps")
    p.add_argument("--weighting", default="sigma2", choices=["sigma2", "likelihood"])
    p.add_argument("--workdir", default="runs/digits")
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--nfe", type=int, default=100)
    p.add_argument("--solvers", nargs="*", default=["ancestral", "euler_maruyama", "ode_heun"])
    p.add_argument("--out", default="digits.png", help="PNG grid of samples ('' to skip)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # one thread: far faster than two on a shared 2-core machine

    score_fn, sde, x_tr, x_ho, features, info = setup(args.workdir, arch=args.arch, steps=args.steps,
                                                      weighting=args.weighting, progress=not args.no_progress)
    print(f"classifier held-out accuracy {info['classifier_heldout_acc']:.3f}; FID by {fid_backend()}")
    fid = make_fid(features)
    fid.update(x_tr, real=True)
    fid.update(x_ho, real=False)
    print(f"{'held-out real digits':<22} FID = {float(fid.compute()):.3f}  (floor)")
    shown = {}
    for name in args.solvers:
        sol = sdekit.solve(score_fn, sde, name, shape=(args.samples, 1, 8, 8), nfe=args.nfe,
                           generator=torch.Generator().manual_seed(0))
        x = sol.x.clamp(-1, 1)
        fid.reset()
        fid.update(x, real=False)
        print(f"{name:<22} FID = {float(fid.compute()):.3f}  nfe={sol.nfe}")
        shown[name] = x[:64]
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = [("held-out data", x_ho[:64])] + list(shown.items())
        fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2))
        for ax, (name, x) in zip(axes, panels):
            grid = x.reshape(8, 8, 8, 8).permute(0, 2, 1, 3).reshape(64, 64)
            ax.imshow(grid.numpy(), cmap="gray_r")
            ax.set_title(name, fontsize=9)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(args.out, dpi=100)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
