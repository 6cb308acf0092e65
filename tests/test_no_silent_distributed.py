"""Issue 14 item 9: sdekit.distributed identifies runs by content, refuses mixed runs, survives damage."""

from __future__ import annotations

import pathlib

import pytest
import torch

import sdekit
import sdekit.distributed as sd
from sdekit.guidance import Inpainting
from sdekit.testing import GaussianMixture

SHAPE = (2,)
MIX = GaussianMixture.random(dim=2, components=2, generator=torch.Generator().manual_seed(3))
KW = dict(n=6, sample_shape=SHAPE, batch_size=2, solver="ode_euler", steps=3)


def _score(sde):
    return MIX.score_fn(sde)


def _discrete(scale):
    betas = torch.linspace(1e-4, 0.02 * scale, 50, dtype=torch.float64)
    return sdekit.DiscreteVPSDE(torch.cumprod(1 - betas, 0))


def _alpha_sigma(k):
    return sdekit.AlphaSigmaSDE(lambda t: torch.exp(-k * t), lambda t: torch.sqrt(-torch.expm1(-2 * k * t)))


@pytest.mark.parametrize("make", [_discrete, _alpha_sigma], ids=["discrete_vp", "alpha_sigma"])
def test_sdes_with_one_repr_but_other_parameters_are_not_mixed(tmp_path, make):
    a, b = make(1.0), make(1.5)
    assert repr(a) == repr(b)
    sd.sample(_score(a), a, seed=0, out_dir=tmp_path, **KW)
    with pytest.raises(ValueError, match="sde"):
        sd.sample(_score(b), b, seed=0, out_dir=tmp_path, **KW)
    sd.sample(_score(a), make(1.0), seed=0, out_dir=tmp_path, **KW)  # the same SDE, rebuilt: resumes


def _schedule_factory(power):
    def schedule(sde, steps, *, eps=None, T=None):  # a new function object per call, as in another process
        u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64) ** power
        return (eps or sde.eps) + (sde.T - (eps or sde.eps)) * u
    return schedule


def test_callable_schedule_and_condition_identified_by_content(tmp_path):
    sde = sdekit.VPSDE()
    mask = torch.tensor([True, False])

    def opts(power, y):
        return dict(schedule=_schedule_factory(power), condition=Inpainting(torch.tensor([y, 0.0]), mask))

    run = sd.sample(_score(sde), sde, seed=0, out_dir=tmp_path, **KW, **opts(2.0, 0.5))
    assert run.computed == [0, 1, 2]
    (tmp_path / "shard_000001.pt").unlink()
    run = sd.sample(_score(sde), sde, seed=0, out_dir=tmp_path, **KW, **opts(2.0, 0.5))  # equal content resumes
    assert (run.computed, run.skipped) == ([1], [0, 2])
    with pytest.raises(ValueError, match="schedule"):
        sd.sample(_score(sde), sde, seed=0, out_dir=tmp_path, **KW, **opts(3.0, 0.5))
    with pytest.raises(ValueError, match="condition"):
        sd.sample(_score(sde), sde, seed=0, out_dir=tmp_path, **KW, **opts(2.0, 0.7))


class _Opaque:
    """A valid condition (a no-op) with no attributes to identify it by: only a repr with an address."""

    __slots__ = ()

    def apply(self, process, x, t0, t1, noise):
        return x


def test_unidentifiable_option_is_refused_before_work(tmp_path):
    sde = sdekit.VPSDE()
    calls = []

    def score(x, t):
        calls.append(1)
        return _score(sde)(x, t)

    with pytest.raises(ValueError, match="cannot identify the option condition="):
        sd.sample(score, sde, seed=0, out_dir=tmp_path / "o", condition=_Opaque(), **KW)
    assert not calls and not (tmp_path / "o" / sd.MANIFEST).exists()


def test_two_runs_with_other_seeds_started_together_do_not_mix(tmp_path, monkeypatch):
    """Run B (seed 2) completes between run A's (seed 1) look for the manifest and its write of it."""
    sde = sdekit.VPSDE()
    ref = tmp_path / "ref"
    sd.sample(_score(sde), sde, seed=2, out_dir=ref, **KW)
    out = tmp_path / "o"
    orig = pathlib.Path.exists
    state = {"a_scored": False, "done": False}

    def exists(self):
        r = orig(self)
        if self.name == sd.MANIFEST and state["a_scored"] and not state["done"]:
            state["done"] = True
            sd.sample(_score(sde), sde, seed=2, out_dir=out, **KW)  # run B, start to end
        return r

    def score_a(x, t):
        state["a_scored"] = True
        return _score(sde)(x, t)

    monkeypatch.setattr(pathlib.Path, "exists", exists)
    with pytest.raises(ValueError, match="seed"):
        sd.sample(score_a, sde, seed=1, out_dir=out, **KW)
    monkeypatch.undo()
    assert state["done"]
    torch.testing.assert_close(sd.load(out), sd.load(ref), rtol=0, atol=0)  # only run B's samples


def test_truncated_shard_is_named_by_load_and_recomputed_on_resume(tmp_path):
    sde = sdekit.VPSDE()
    sd.sample(_score(sde), sde, seed=0, out_dir=tmp_path, **KW)
    want = sd.load(tmp_path)
    p = tmp_path / "shard_000001.pt"
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(ValueError, match="shard 1 .*cannot be read"):
        sd.load(tmp_path)
    run = sd.sample(_score(sde), sde, seed=0, out_dir=tmp_path, **KW)
    assert run.computed == [1]
    torch.testing.assert_close(sd.load(tmp_path), want, rtol=0, atol=0)


def test_temporaries_of_killed_writers_are_removed_on_resume(tmp_path):
    sde = sdekit.VPSDE()
    sd.sample(_score(sde), sde, seed=0, out_dir=tmp_path, **KW)
    (tmp_path / "shard_000002.pt").unlink()
    stale = tmp_path / ".shard_000002.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a shard")
    run = sd.sample(_score(sde), sde, seed=0, out_dir=tmp_path, **KW)
    assert run.computed == [2] and not stale.exists()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def _two_rank_worker(rank: int, world: int, store: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        sde = sdekit.VPSDE()
        sd.sample(_score(sde), sde, seed=0, out_dir=out_dir, schedule=_schedule_factory(2.0),
                  condition=Inpainting(torch.tensor([0.5, 0.0]), torch.tensor([True, False])), **KW)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_with_callable_schedule_and_condition(tmp_path):
    """Each rank builds its own (equal) schedule function and condition: every such run used to fail."""
    dist = pytest.importorskip("torch.distributed")
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    import torch.multiprocessing as mp

    sde = sdekit.VPSDE()
    ref = tmp_path / "one"
    sd.sample(_score(sde), sde, seed=0, out_dir=ref, schedule=_schedule_factory(2.0),
              condition=Inpainting(torch.tensor([0.5, 0.0]), torch.tensor([True, False])), **KW)
    out = tmp_path / "two"
    mp.spawn(_two_rank_worker, args=(2, str(tmp_path / "store"), str(out)), nprocs=2, join=True)
    torch.testing.assert_close(sd.load(out), sd.load(ref), rtol=0, atol=0)
