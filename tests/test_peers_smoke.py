"""Smoke tests of ``benchmarks/peers.py``: the exact oracles it feeds each library, and its ``--quick`` path."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

import sdekit
from benchmarks import peers
from benchmarks._peers import MODULES
from benchmarks._peers.common import Oracle, make_problem


def test_oracle_conventions_agree():
    """The Karras denoiser and the DDPM eps are the same exact model as the score."""
    p = make_problem(8, "vp", 20)
    o = Oracle(p)
    t = torch.tensor([0.3], dtype=torch.float64)
    a, s = float(p.sde.alpha(t)), float(p.sde.sigma(t))
    x = torch.randn(20, 8, dtype=torch.float64)
    score = o.score(x, t)
    d = o.denoiser(x / a, torch.full((20,), s / a, dtype=torch.float64))
    assert torch.allclose(d, (x + s * s * score) / a, atol=1e-9)
    eps = o.eps(x, float(p.sde.log_snr(t)))  # VP: x_vp = x
    assert torch.allclose(eps, -s * score, atol=1e-9)
    assert o.nfe == 3 and o.time_in > 0


def test_cached_frechet_matches_metrics():
    p = make_problem(300, "ve", 400, floor_repeats=1)
    x = p.mix.sample(400, generator=torch.Generator().manual_seed(3)) * 1.1
    ref = sdekit.metrics.frechet_to_moments(x, p.mix.mean(), p.mix.cov())
    assert math.isclose(p.fd(x), ref, rel_tol=1e-6)


def test_bucket_is_the_smallest_budget_that_fits():
    assert peers.bucket_of(10, [10, 20, 50]) == 10
    assert peers.bucket_of(11, [10, 20, 50]) == 20
    assert peers.bucket_of(51, [10, 20, 50]) is None
    with pytest.raises(ValueError, match="--problems"):
        peers.parse_problems("64d-xx", 10)


def _check(result, libraries):
    runs = result["runs"]
    assert runs, "no runs recorded"
    for lib in libraries:
        mine = [r for r in runs if r["library"] == lib]
        assert mine, lib
        fixed = [r for r in mine if r["budget"] is not None]
        # a run sized for a budget never spends more score evaluations than the budget
        assert all(r["nfe"] <= r["budget"] for r in fixed), [(r["method"], r["nfe"], r["budget"]) for r in fixed
                                                             if r["nfe"] > r["budget"]]
        assert any(math.isfinite(r["fd"]) for r in mine), lib
    return runs


def test_quick_sdekit(tmp_path):
    result = peers.main(["--quick", "--libraries", "sdekit", "--out", str(tmp_path)])
    runs = _check(result, ["sdekit"])
    names = {r["method"] for r in runs}
    expected = {i.name for i in sdekit.solvers.available() if i.kind != "corrector" and not i.adaptive}
    assert expected <= names, expected - names
    # the exact oracle drives a 2nd-order ODE solver close to the exact distribution at 20 NFE
    heun = min(r["fd"] for r in runs if r["method"] == "ode_heun" and r["bucket"] == 20 and r["problem"] == "2d-vp")
    floor = result["meta"]["problems"][0]["floor_fd"]
    assert heun < 20 * floor, (heun, floor)
    assert all(r["overhead_ms_per_nfe"] >= 0 or r["error"] for r in result["overhead"])
    assert os.path.exists(tmp_path / "peers-quick.json") and os.path.exists(tmp_path / "peers-quick_2d-vp.png")
    md = (tmp_path / "peers-quick.md").read_text()
    assert "| 10 |" in md and "| 20 |" in md and "exact-sample floor" in md
    assert json.loads((tmp_path / "peers-quick.json").read_text())["meta"]["budgets"] == [10, 20]


@pytest.mark.parametrize("library", [lib for lib in MODULES if lib != "sdekit"])
def test_quick_peer(tmp_path, library):
    if not MODULES[library].available():
        pytest.skip(f"{library} is not installed")
    result = peers.main(["--quick", "--libraries", library, "--no-overhead", "--problems", "2d-vp",
                         "--out", str(tmp_path)])
    runs = _check(result, [library])
    assert all(r["error"] is None for r in runs if r["method"] in ("euler", "ddim", "RK45")), \
        [(r["method"], r["error"]) for r in runs if r["error"]]


def test_projected_frechet_sees_a_shift_along_the_modes():
    from benchmarks._peers.common import ProjectedFrechet
    from sdekit.testing import GaussianMixture

    mix = GaussianMixture.random(300, generator=torch.Generator().manual_seed(3))
    pf = ProjectedFrechet(mix)
    x = mix.sample(20000, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    base = pf(x)
    assert base < 0.01  # exact samples: only the 32-D estimation error
    mu = mix.means.reshape(mix.means.shape[0], -1)
    u = (mu[0] - mu.mean(0)) / (mu[0] - mu.mean(0)).norm()  # inside the projected span
    assert abs(pf(x + 0.5 * u) - base - 0.25) < 0.02


def test_seed_means_average_fd_and_drop_failed_configurations():
    rec = {"problem": "p", "library": "lib", "method": "m", "setting": "s", "bucket": 10, "finite": True}
    rows = [dict(rec, seed=0, nfe=10, fd=1.0, sw2=0.1), dict(rec, seed=1, nfe=10, fd=3.0, sw2=0.3),
            dict(rec, setting="t", seed=0, nfe=10, fd=0.5, sw2=0.1),
            dict(rec, setting="t", seed=1, nfe=10, fd=float("nan"), sw2=float("nan"), finite=False)]
    out = {r["setting"]: r for r in peers.seed_means(rows)}
    assert out["s"]["fd"] == 2.0 and out["s"]["seeds"] == 2 and math.isclose(out["s"]["sw2"], 0.2)
    assert math.isnan(out["t"]["fd"]) and not out["t"]["finite"]


def test_merge_results_replaces_reruns(tmp_path):
    def result(fd, lib="sdekit", problem="2d-vp"):
        meta = {"budgets": [10], "libraries": [lib], "problems": [{"name": problem, "samples": 5}]}
        run = {"problem": problem, "library": lib, "method": "m", "setting": "s", "seed": 0, "fd": fd}
        return {"meta": meta, "runs": [run]}
    paths = []
    for i, res in enumerate([result(1.0), result(2.0, lib="k-diffusion"), result(0.5)]):
        paths.append(str(tmp_path / f"r{i}.json"))
        with open(paths[-1], "w") as fh:
            json.dump(res, fh)
    merged = peers.merge_results(paths)
    fds = {r["library"]: r["fd"] for r in merged["runs"]}
    assert fds == {"sdekit": 0.5, "k-diffusion": 2.0} and merged["meta"]["libraries"] == ["sdekit", "k-diffusion"]
