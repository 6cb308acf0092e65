"""Score model on scikit-learn's bundled 8x8 digits (1,797 images, no download): train, sample, FID, inpaint, bits/dim.

    python -m examples.digits                      # train (cached under runs/digits), sample, FID, inpaint, bits/dim
    python -m examples.digits --arch unet --steps 3000

FID here is the Fréchet distance between Gaussians fitted to the penultimate-layer features of a
small digits classifier that this script trains once (it plays Inception's role). The distance is
computed by ``torchmetrics``' ``FrechetInceptionDistance`` with that classifier as its custom
feature extractor when torchmetrics is installed, else by :func:`sdekit.metrics.frechet_distance`.
The same :func:`make_fid` takes an InceptionV3 (``feature=2048``, needs ``torch-fidelity``) for
real images. The floor is the FID of held-out real digits against the training digits.

Inpainting (:func:`inpaint`): the lower half of held-out digits is generated given their upper
half with :class:`sdekit.guidance.Inpainting` (replacement plus Langevin corrector moves). Reported:
the largest error on the known pixels (zero: they are set exactly), the RMSE of the generated lower
half against the truth next to two baselines (the training mean's lower half; unconditional samples),
and the digits classifier's accuracy on the inpainted images.

Bits/dim (:func:`heldout_bits_per_dim`), by :func:`sdekit.likelihood` (PF-ODE, Hutchinson trace).
The digits are 17-level integers ``k = 0..16`` scaled to ``x = k / 8 - 1``, NOT 8-bit data, so
two clearly different numbers are printed:

* **17-level bits/dim** (the digits as they are): each level owns the cell ``x ± 1/16``;
  ``x`` is dequantised uniformly within it and ``bpd = -log p / (D ln 2) + log2(8)``, i.e.
  ``-log2`` of the model's mass of the cell per pixel (>= 0 in expectation; at most
  ``log2(17) = 4.09`` for a uniform model over the levels).
* **8-bit bits/dim**: the same images re-quantised to 8 bits consistently with the scaling,
  ``k8 = round(255 k / 16)`` and ``x8 = -1 + 2 k8 / 255`` (within 1/255 of ``x``), evaluated with
  ``dequantize="uniform", data_range=(-1, 1)``. This is the convention of 8-bit image benchmarks
  (cells 16x narrower: 2/256 against 1/8, so it is larger by ``log2(16) = 4`` bits for a model that is
  smooth at the 17-level scale); it is not comparable to published CIFAR-10 numbers.
"""

from __future__ import annotations

import argparse
import math
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
#: the digits' levels: load_digits holds integers 0..16, scaled by load_digits_split to k / 8 - 1.
LEVELS = 17


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
    torch.manual_seed(seed)  # before construction: the initial weights come from the global RNG
    net = DigitFeatures()
    if checkpoint is not None and Path(checkpoint).exists():
        net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        return net.eval().requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
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


def upper_half_mask(rows: int = 4) -> Tensor:
    """Boolean ``(1, 8, 8)`` mask, ``True`` on the top ``rows`` rows (the known pixels)."""
    if not isinstance(rows, int) or not 0 < rows < 8:
        raise ValueError(f"rows must be an int in 1..7, got {rows!r}")
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, :rows] = True
    return mask


def inpaint(score_fn, sde, x: Tensor, *, rows: int = 4, solver: str = "reverse_diffusion", steps: int = 100,
            corrector_steps: int = 5, seed: int = 0) -> tuple[Tensor, int]:
    """Generate the lower ``8 - rows`` rows of the digits ``x`` ``(n, 1, 8, 8)`` given their top ``rows`` rows.

    Uses :class:`sdekit.guidance.Inpainting` (replacement after every step, ``corrector_steps``
    Langevin moves per step; the known pixels are set exactly at the end). Returns
    ``(images clamped to [-1, 1], NFE)``.
    """
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
        raise ValueError(f"x must have shape (n, 1, 8, 8), got {tuple(x.shape)}")
    mask = upper_half_mask(rows)
    cond = sdekit.guidance.Inpainting(x, mask, corrector_steps=corrector_steps)
    sol = sdekit.solve(score_fn, sde, solver, shape=tuple(x.shape), steps=steps, condition=cond,
                       generator=torch.Generator().manual_seed(seed))
    # the known pixels are exact (finalize); clamping only touches generated ones since x is in [-1, 1]
    return sol.x.clamp(-1, 1), sol.nfe


def to_8bit(x: Tensor) -> Tensor:
    """Re-quantise scaled digits ``x = k / 8 - 1`` (k = 0..16) to 8 bits, ``-1 + 2 round(255 k / 16) / 255``."""
    k = torch.round((x.double() + 1.0) * 8.0)
    if not torch.allclose((x.double() + 1.0) * 8.0, k, atol=1e-4) or bool((k < 0).any() | (k > LEVELS - 1).any()):
        raise ValueError("x must hold scaled 17-level digits k / 8 - 1 with integer k in 0..16")
    return (-1.0 + 2.0 * torch.round(k * 255.0 / (LEVELS - 1)) / 255.0).to(x.dtype)


def heldout_bits_per_dim(score_fn, sde, x: Tensor, *, steps: int = 20, probes: int = 4, seed: int = 0) -> dict:
    """Bits/dim of scaled digits ``x = k / 8 - 1`` by :func:`sdekit.likelihood` (ode_rk4, Hutchinson).

    Returns ``{"bpd17": (mean, stderr), "bpd8": (mean, stderr), "nfe": int}``: the 17-level and the
    8-bit bits/dim (see the module docstring); ``stderr`` is the standard error of the mean over
    images (dequantisation and probe noise included, since every image has its own draws).
    """
    level = (x.double() + 1.0) * 8.0
    if not torch.allclose(level, torch.round(level), atol=1e-4):
        raise ValueError("x must hold scaled 17-level digits k / 8 - 1")
    g = torch.Generator().manual_seed(seed)
    # 17 levels: the cell of level x is [x - 1/16, x + 1/16) (width 1/8); dequantise in it, continuous density
    y = x + (torch.rand(x.shape, generator=g) - 0.5) / 8.0
    r17 = sdekit.likelihood(score_fn, sde, y, solver="ode_rk4", steps=steps, probes=probes, generator=g)
    bpd17 = r17.bpd + math.log2(8.0)  # -log2 of the mass of the width-1/8 cell, per pixel
    # 8 bits: the library's dequantisation and offset on the consistently re-quantised images
    r8 = sdekit.likelihood(score_fn, sde, to_8bit(x), solver="ode_rk4", steps=steps, probes=probes,
                           dequantize="uniform", data_range=(-1.0, 1.0), generator=g)
    n = x.shape[0]

    def summary(b: Tensor) -> tuple[float, float]:
        return float(b.mean()), float(b.std() / math.sqrt(n)) if n > 1 else float("nan")

    return {"bpd17": summary(bpd17), "bpd8": summary(r8.bpd), "nfe": r17.nfe + r8.nfe}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="mlp", choices=["mlp", "unet"])
    p.add_argument("--steps", type=int, default=4000, help="training steps")
    p.add_argument("--weighting", default="sigma2", choices=["sigma2", "likelihood"])
    p.add_argument("--workdir", default="runs/digits")
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--nfe", type=int, default=100)
    p.add_argument("--solvers", nargs="*", default=["ancestral", "euler_maruyama", "ode_heun"])
    p.add_argument("--inpaint", type=int, default=200, help="held-out digits to inpaint (0 to skip)")
    p.add_argument("--inpaint-steps", type=int, default=100, help="reverse_diffusion steps for inpainting")
    p.add_argument("--corrector-steps", type=int, default=5, help="Langevin moves per inpainting step")
    p.add_argument("--bpd", type=int, default=200, help="held-out digits for bits/dim (0 to skip)")
    p.add_argument("--bpd-steps", type=int, default=100, help="ode_rk4 steps for the likelihood")
    p.add_argument("--probes", type=int, default=4, help="Hutchinson probes per image")
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
    res = {"fid_floor": float(fid.compute())}
    print(f"{'held-out real digits':<22} FID = {res['fid_floor']:.3f}  (floor)")
    shown, first = {}, None
    for name in args.solvers:
        sol = sdekit.solve(score_fn, sde, name, shape=(args.samples, 1, 8, 8), nfe=args.nfe,
                           generator=torch.Generator().manual_seed(0))
        x = sol.x.clamp(-1, 1)
        fid.reset()
        fid.update(x, real=False)
        res[f"fid_{name}"] = float(fid.compute())
        print(f"{name:<22} FID = {res[f'fid_{name}']:.3f}  nfe={sol.nfe}")
        shown[name] = x[:64]
        first = x if first is None else first
    if args.inpaint:
        t0 = time.perf_counter()
        truth, labels = x_ho[:args.inpaint], load_digits_split()[3][:args.inpaint]
        filled, nfe = inpaint(score_fn, sde, truth, steps=args.inpaint_steps, corrector_steps=args.corrector_steps)
        mask = upper_half_mask().expand_as(truth)
        known_err = float((filled - truth)[mask].abs().max())
        rmse = float((filled - truth)[~mask].pow(2).mean().sqrt())
        mean_img = x_tr.mean(0, keepdim=True).expand_as(truth)
        rmse_mean = float((mean_img - truth)[~mask].pow(2).mean().sqrt())
        acc = float((features.logits(filled).argmax(1) == labels).float().mean())
        # baseline that also draws a plausible lower half: the training digit whose known rows are nearest
        near = torch.cdist(truth[..., :4, :].flatten(1), x_tr[..., :4, :].flatten(1)).argmin(1)
        nn_fill = torch.where(mask, truth, x_tr[near])
        rmse_nn = float((nn_fill - truth)[~mask].pow(2).mean().sqrt())
        acc_nn = float((features.logits(nn_fill).argmax(1) == labels).float().mean())
        res.update(inpaint_known_max_err=known_err, inpaint_rmse=rmse, inpaint_rmse_mean_image=rmse_mean,
                   inpaint_class_acc=acc, inpaint_rmse_nearest_neighbour=rmse_nn,
                   inpaint_class_acc_nearest_neighbour=acc_nn)
        print(f"inpainting lower half of {truth.shape[0]} held-out digits (reverse_diffusion {args.inpaint_steps} "
              f"steps, corrector_steps={args.corrector_steps}, nfe={nfe}, {time.perf_counter() - t0:.0f} s):")
        print(f"  known pixels max |error| = {known_err:.3g}; lower half RMSE = {rmse:.3f} "
              f"(training mean image: {rmse_mean:.3f}", end="")
        if first is not None and first.shape[0] >= truth.shape[0]:
            res["inpaint_rmse_unconditional"] = float((first[:truth.shape[0]] - truth)[~mask].pow(2).mean().sqrt())
            print(f"; unconditional samples: {res['inpaint_rmse_unconditional']:.3f}", end="")
        print(f"; nearest training digit by the top half: {rmse_nn:.3f})")
        print(f"  classifier accuracy on inpainted digits = {acc:.3f} (nearest-neighbour completion: {acc_nn:.3f})")
        shown["inpainted (top 4 rows known)"] = filled[:64]
    if args.bpd:
        t0 = time.perf_counter()
        b = heldout_bits_per_dim(score_fn, sde, x_ho[:args.bpd], steps=args.bpd_steps, probes=args.probes)
        res.update(bpd17=b["bpd17"][0], bpd8=b["bpd8"][0])
        print(f"bits/dim of {min(args.bpd, x_ho.shape[0])} held-out digits (ode_rk4 {args.bpd_steps} steps, "
              f"Hutchinson {args.probes} probes, nfe={b['nfe']}, {time.perf_counter() - t0:.0f} s):")
        print(f"  17-level data as given (cells of width 1/8):   {b['bpd17'][0]:.3f} ± {b['bpd17'][1]:.3f} bits/dim "
              f"(uniform over 17 levels: {math.log2(LEVELS):.3f})")
        print(f"  re-quantised to 8 bits (dequantize='uniform'): {b['bpd8'][0]:.3f} ± {b['bpd8'][1]:.3f} bits/dim")
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = [("held-out data", x_ho[:64])] + [(k, v) for k, v in shown.items() if v.shape[0] == 64]
        fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2))
        for ax, (name, x) in zip(axes, panels):
            grid = x.reshape(8, 8, 8, 8).permute(0, 2, 1, 3).reshape(64, 64)
            ax.imshow(grid.numpy(), cmap="gray_r")
            ax.set_title(name, fontsize=9)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(args.out, dpi=100)
        print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    main()
