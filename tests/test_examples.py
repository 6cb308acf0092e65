"""Tests of the examples layer: DSM loss minimiser, EMA, training/checkpointing, FID backends, scripts."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

import sdekit
from examples.nets import MLPScore, SmallUNet
from examples.training import EMA, dsm_loss, train

ROOT = Path(__file__).resolve().parents[1]


class _Scaled(torch.nn.Module):
    """eps_hat = c * sigma(t) * x: the exact noise predictor for N(0, I) data under a VP SDE when c = 1."""

    def __init__(self, sde, c: float) -> None:
        super().__init__()
        self.sde, self.c = sde, c

    def forward(self, x, t):
        return self.c * self.sde.sigma(t)[:, None] * x


@pytest.mark.parametrize("weighting", ["sigma2", "likelihood"])
@pytest.mark.parametrize("sde", [sdekit.VPSDE(), sdekit.CosineSDE()], ids=["vp", "cosine"])
def test_dsm_loss_is_minimised_by_the_true_score(sde, weighting):
    # For x0 ~ N(0, I) and alpha^2 + sigma^2 = 1, E[z | x_t] = sigma x_t, so over eps_hat = c sigma x the
    # loss is a quadratic in c whose minimiser is c = 1 for every weighting. Same samples for each c
    # (same seed), so three evaluations determine the quadratic exactly.
    x0 = torch.randn(40000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    loss = [float(dsm_loss(_Scaled(sde, c), sde, x0, weighting=weighting,
                           generator=torch.Generator().manual_seed(1))) for c in (0.0, 1.0, 2.0)]
    a = (loss[2] - 2 * loss[1] + loss[0]) / 2
    b = loss[1] - loss[0] - a
    c_star = -b / (2 * a)
    assert abs(c_star - 1.0) < 0.03, c_star


def test_dsm_loss_rejects_unknown_weighting():
    sde = sdekit.VPSDE()
    with pytest.raises(ValueError, match="weighting"):
        dsm_loss(_Scaled(sde, 1.0), sde, torch.randn(4, 2), weighting="uniform")


def test_ema_warmup_and_decay():
    m = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(m.weight)
    ema = EMA(m, decay=0.9)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.update(m)  # warm-up decay min(0.9, 1/10) = 0.1 -> 0.9 of the new weight
    assert float(ema.model.weight) == pytest.approx(0.9)
    for _ in range(200):
        ema.update(m)
    assert float(ema.model.weight) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="decay"):
        EMA(m, decay=1.0)


def test_networks_shapes_and_train_checkpoint(tmp_path):
    sde = sdekit.VPSDE()
    t = torch.full((5,), 0.3)
    assert SmallUNet(sde, channels=1, width=8)(torch.randn(5, 1, 8, 8), t).shape == (5, 1, 8, 8)
    data = torch.randn(512, 2) * 0.5 + 1.0
    ck = tmp_path / "m.pt"
    torch.manual_seed(0)
    m1 = train(MLPScore(sde, dim=2, hidden=32, depth=1), sde, data, steps=300, batch_size=128, checkpoint=ck,
               progress=False)
    assert ck.exists()
    m2 = train(MLPScore(sde, dim=2, hidden=32, depth=1), sde, data, steps=60, checkpoint=ck, progress=False)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    # 300 steps: the samples have moved from the N(0, I) prior to near the data N((1, 1), 0.25 I)
    x = sdekit.sample(sdekit.score.from_eps(m1, sde), sde, "ode_heun", shape=(256, 2), nfe=20,
                      generator=torch.Generator().manual_seed(0))
    assert float(x.mean()) > 0.5 and float(x.std(0).max()) < 0.75


def test_fid_backends_agree():
    pytest.importorskip("torchmetrics", reason="torchmetrics is not installed")
    from examples.digits import _FallbackFID, make_fid

    feat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16))
    feat.num_features = 16
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(300, 1, 8, 8, generator=g), 0.8 * torch.randn(300, 1, 8, 8, generator=g) + 0.2
    vals = []
    for fid in (make_fid(feat), _FallbackFID(feat)):
        with torch.no_grad():
            fid.update(real, real=True)
            fid.update(fake, real=False)
            vals.append(float(fid.compute()))
    assert vals[0] == pytest.approx(vals[1], rel=1e-4)
    assert vals[0] > 0.1


def test_toy2d_script_runs():
    from examples import toy2d

    res = toy2d.main(["--steps", "40", "--nfe", "10", "--samples", "200", "--out", "", "--no-progress",
                      "--solvers", "ancestral", "ode_euler"])
    assert set(res) == {"ancestral", "ode_euler", "data (floor)"}
    assert all(v == v and v < float("inf") for v in res.values())  # 40 steps train nothing useful; it runs


def test_library_never_imports_examples():
    for path in (ROOT / "sdekit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n == "examples" or n.startswith("examples.") for n in names), path


def _tiny_digits_model():
    pytest.importorskip("sklearn", reason="scikit-learn is not installed")
    from examples.digits import _FlatMLP, load_digits_split

    sde = sdekit.VPSDE()
    x_tr, _, x_ho, _ = load_digits_split()
    torch.manual_seed(0)
    model = train(_FlatMLP(sde), sde, x_tr, steps=30, batch_size=64, progress=False)
    return sdekit.score.from_eps(model, sde), sde, x_ho


def test_digits_inpainting_keeps_known_pixels_exact():
    from examples.digits import inpaint, upper_half_mask

    score_fn, sde, x_ho = _tiny_digits_model()
    truth = x_ho[:6]
    filled, nfe = inpaint(score_fn, sde, truth, steps=4, corrector_steps=1)
    mask = upper_half_mask().expand_as(truth)
    assert filled.shape == truth.shape and bool(torch.isfinite(filled).all())
    assert torch.equal(filled[mask], truth[mask])  # known pixels: exact
    assert not torch.equal(filled[~mask], truth[~mask])  # the lower half is generated, not copied
    assert nfe == 4 * 2 + 1  # one reverse-diffusion + one corrector evaluation per step, plus the denoising step
    with pytest.raises(ValueError, match="rows"):
        upper_half_mask(8)


def test_digits_bits_per_dim_17_level_and_8_bit():
    from examples.digits import heldout_bits_per_dim, to_8bit

    score_fn, sde, x_ho = _tiny_digits_model()
    x = x_ho[:12]
    x8 = to_8bit(x)
    assert float((x8 - x).abs().max()) <= 1 / 255 + 1e-6
    k8 = (x8.double() + 1) * 127.5
    assert torch.allclose(k8, k8.round(), atol=1e-4)
    with pytest.raises(ValueError, match="17-level"):
        to_8bit(x + 0.01)
    b = heldout_bits_per_dim(score_fn, sde, x, steps=4, probes=2)
    for key in ("bpd17", "bpd8"):
        mean, se = b[key]
        assert math.isfinite(mean) and mean > 0 and math.isfinite(se), (key, b)
    # a barely trained model is smooth at the 1/8 scale, so the two differ by the ratio of the cell widths:
    # log2((1/8) / (2/256)) = 4 bits (an offset or dequantisation bug would break this)
    assert abs(b["bpd8"][0] - b["bpd17"][0] - 4.0) < 0.15, b
