"""Sharded sampling over torch.distributed (gloo, 2 CPU processes) and per-sample seeding.

The 2-process tests start real process groups with ``torch.multiprocessing.spawn`` and the
gloo backend; a resumed run is checked after a rank is killed with SIGKILL mid-run.
"""

from __future__ import annotations

import os
import signal

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import sdekit
import sdekit.distributed as sd
from sdekit.seeding import PerSampleNoise, sample_seed
from sdekit.solvers.langevin import Langevin
from sdekit.testing import GaussianMixture

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")

N, BATCH, SHAPE, SEED, STEPS = 20, 3, (2, 3), 11, 6   # 7 shards: 3,3,3,3,3,3,2
OPTS = dict(solver="euler_maruyama", steps=STEPS)


def _problem():
    sde = sdekit.VPSDE()
    mix = GaussianMixture.random(dim=6, components=3, event_shape=SHAPE, generator=torch.Generator().manual_seed(3))
    return sde, mix.score_fn(sde)


class _KillAfter:
    """A score function that SIGKILLs its own process at call ``after`` (a crash mid-shard)."""

    def __init__(self, score_fn, after: int) -> None:
        self.score_fn, self.after, self.calls = score_fn, after, 0

    def __call__(self, x, t):
        self.calls += 1
        if self.calls == self.after:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.score_fn(x, t)


def _worker(rank: int, world: int, store: str, out_dir: str, kill_rank: int, kill_after: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        sde, score_fn = _problem()
        if rank == kill_rank:
            score_fn = _KillAfter(score_fn, kill_after)
        sd.sample(score_fn, sde, n=N, sample_shape=SHAPE, seed=SEED, batch_size=BATCH, out_dir=out_dir, **OPTS)
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path, name: str, kill_rank: int = -1, kill_after: int = 0) -> str:
    out_dir = str(tmp_path / name)
    mp.spawn(_worker, args=(2, str(tmp_path / f"{name}.store"), out_dir, kill_rank, kill_after), nprocs=2,
             join=True)
    return out_dir


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The single-process run (no process group) of the same settings."""
    out = tmp_path_factory.mktemp("ref") / "one_rank"
    sde, score_fn = _problem()
    run = sd.sample(score_fn, sde, n=N, sample_shape=SHAPE, seed=SEED, batch_size=BATCH, out_dir=out, **OPTS)
    assert (run.rank, run.world_size, run.computed, run.skipped) == (0, 1, list(range(7)), [])
    return sd.load(out)


def test_single_process_equals_seeded_sample(reference):
    sde, score_fn = _problem()
    direct = sdekit.sample(score_fn, sde, OPTS["solver"], shape=(N, *SHAPE), steps=STEPS, seed=SEED)
    assert reference.shape == (N, *SHAPE)
    assert torch.equal(reference, direct)


def test_two_ranks_equal_one_rank(tmp_path, reference):
    out = _spawn(tmp_path, "two_ranks")
    x, ranks = sd.load(out, return_ranks=True)
    assert torch.equal(x, reference), f"max |diff| = {(x - reference).abs().max()}"
    # shard k was sampled by rank k % 2
    expect = torch.tensor([(i // BATCH) % 2 for i in range(N)])
    assert torch.equal(ranks, expect)


def test_killed_and_resumed(tmp_path, reference):
    # rank 1 owns shards 1, 3, 5; a shard costs STEPS + 1 score calls (the denoising step included).
    # SIGKILL it during its second shard, after shard 1 was written.
    calls_per_shard = STEPS + 1
    with pytest.raises(mp.ProcessExitedException, match="SIGKILL"):
        _spawn(tmp_path, "killed", kill_rank=1, kill_after=calls_per_shard + 3)
    out = tmp_path / "killed"
    done = sorted(int(p.name[6:12]) for p in out.glob("shard_*.pt"))
    assert 1 in done and 3 not in done and 5 not in done
    with pytest.raises(ValueError, match="incomplete"):
        sd.load(out)
    # a write interrupted by a kill leaves only a temporary file: it must be ignored
    (out / ".shard_000003.pt.garbage.tmp").write_bytes(b"partial")
    # resume with ONE process: the shards do not depend on the number of ranks
    sde, score_fn = _problem()
    run = sd.sample(score_fn, sde, n=N, sample_shape=SHAPE, seed=SEED, batch_size=BATCH, out_dir=out, **OPTS)
    assert run.skipped == done
    assert sorted(run.computed + run.skipped) == list(range(7)) and not set(run.computed) & set(run.skipped)
    x, ranks = sd.load(out, return_ranks=True)
    assert x.shape == reference.shape  # every index exactly once, in order (load checks each shard's indices)
    assert torch.equal(x, reference)
    shard_rank = ranks[::BATCH]  # first index of every shard
    assert shard_rank.tolist() == [k % 2 if k in done else 0 for k in range(7)]
    # a second resume does nothing
    again = sd.sample(score_fn, sde, n=N, sample_shape=SHAPE, seed=SEED, batch_size=BATCH, out_dir=out, **OPTS)
    assert again.computed == [] and again.skipped == list(range(7))


def test_resume_with_other_settings_is_refused(tmp_path):
    sde, score_fn = _problem()
    calls = []

    def counting(x, t):
        calls.append(1)
        return score_fn(x, t)

    kw = dict(n=4, sample_shape=SHAPE, seed=SEED, batch_size=2, out_dir=tmp_path / "o", **OPTS)
    sd.sample(counting, sde, **kw)
    n_calls = len(calls)
    for change, name in ((dict(seed=SEED + 1), "seed"), (dict(steps=STEPS + 1), "options"),
                         (dict(batch_size=4), "batch_size"), (dict(dtype=torch.float64), "dtype")):
        with pytest.raises(ValueError, match=name):
            sd.sample(counting, sde, **{**kw, **change})
    with pytest.raises(ValueError, match="sde"):
        sd.sample(counting, sdekit.VPSDE(beta_max=10.0), **kw)
    assert len(calls) == n_calls  # refused before any work


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(n=0), ValueError, "n"),
    (dict(n=2.0), TypeError, "n"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(sample_shape=(2, 0)), ValueError, "sample_shape"),
    (dict(sample_shape=3), ValueError, "sample_shape"),
    (dict(out_dir=3), TypeError, "out_dir"),
    (dict(shape=(2, 3)), TypeError, "shape"),
    (dict(generator=torch.Generator()), TypeError, "generator"),
    (dict(indices=[0]), TypeError, "indices"),
])
def test_distributed_bad_input(tmp_path, kwargs, exc, name):
    sde, score_fn = _problem()
    kw = dict(n=4, sample_shape=SHAPE, seed=SEED, batch_size=2, out_dir=tmp_path / "o", **OPTS)
    with pytest.raises(exc, match=name):
        sd.sample(score_fn, sde, **{**kw, **kwargs})
    assert not (tmp_path / "o" / sd.MANIFEST).exists()


def test_bad_option_writes_nothing(tmp_path):
    sde, score_fn = _problem()
    with pytest.raises(TypeError, match="steps"):
        sd.sample(score_fn, sde, n=4, sample_shape=SHAPE, seed=SEED, batch_size=2, out_dir=tmp_path / "o",
                  solver="euler_maruyama", steps=2.5)
    assert list((tmp_path / "o").iterdir()) == []  # a corrected rerun is not blocked by a manifest


def test_load_bad_input(tmp_path):
    with pytest.raises(ValueError, match="out_dir"):
        sd.load(tmp_path)
    with pytest.raises(TypeError, match="out_dir"):
        sd.load(3)


# -- per-sample seeding ---------------------------------------------------------------------

SOLVERS = [i.name for i in sdekit.solvers.available() if i.kind != "corrector" and not i.adaptive]


@pytest.mark.parametrize("solver", SOLVERS)
def test_seeded_samples_do_not_depend_on_batching(solver):
    sde, score_fn = _problem()
    opts = {"corrector": Langevin(per_sample=True)} if solver == "pc" else {}
    full = sdekit.sample(score_fn, sde, solver, shape=(7, *SHAPE), steps=4, seed=5, **opts)
    parts = torch.cat([sdekit.sample(score_fn, sde, solver, shape=(len(ix), *SHAPE), steps=4, seed=5,
                                     indices=ix, **opts) for ix in ([0, 1, 2], [3], [4, 5, 6])])
    perm = [6, 0, 3, 5, 1, 2, 4]
    permuted = sdekit.sample(score_fn, sde, solver, shape=(7, *SHAPE), steps=4, seed=5, indices=perm, **opts)
    assert torch.equal(full, parts)
    assert torch.equal(full[perm], permuted)
    other = sdekit.sample(score_fn, sde, solver, shape=(7, *SHAPE), steps=4, seed=6, **opts)
    assert not torch.equal(full, other)


def test_seeded_x_T_and_float64():
    sde, score_fn = _problem()
    x_T = torch.randn(4, *SHAPE, dtype=torch.float64)
    a = sdekit.sample(score_fn, sde, "euler_maruyama", x_T=x_T, steps=3, seed=9)
    b = sdekit.sample(score_fn, sde, "euler_maruyama", x_T=x_T[2:], steps=3, seed=9, indices=[2, 3])
    assert a.dtype == torch.float64 and torch.equal(a[2:], b)


def test_per_sample_streams_are_distinct_and_standard_normal():
    # sample_seed is injective in the index for a fixed seed (no two samples share a stream)
    seeds = {sample_seed(123, i) for i in range(100_000)}
    assert len(seeds) == 100_000
    z = PerSampleNoise(0, range(4000)).normal(torch.empty(4000, 8, dtype=torch.float64))
    assert abs(float(z.mean())) < 4 / (32000 ** 0.5)          # 4 standard errors
    assert abs(float(z.var()) - 1.0) < 4 * (2 / 32000) ** 0.5
    # rows are uncorrelated across neighbouring indices
    c = torch.corrcoef(torch.stack([z[:-1].reshape(-1), z[1:].reshape(-1)]))[0, 1]
    assert abs(float(c)) < 4 / (31992 ** 0.5)


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(seed=1, generator=torch.Generator()), ValueError, "seed"),
    (dict(indices=[0, 1]), ValueError, "indices"),
    (dict(seed=1, indices=[0]), ValueError, "indices"),
    (dict(seed=1, indices=[0, -1]), ValueError, "indices"),
    (dict(seed=1, indices=[0, 1.0]), TypeError, "indices"),
    (dict(seed=1, indices=torch.tensor([0.0, 1.0])), TypeError, "indices"),
    (dict(seed=1, indices="ab"), TypeError, "indices"),
    (dict(seed=True), TypeError, "seed"),
    (dict(seed=2 ** 63), ValueError, "seed"),
])
def test_seed_bad_input(kwargs, exc, name):
    calls = []
    with pytest.raises(exc, match=name):
        sdekit.sample(lambda x, t: calls.append(1) or -x, sdekit.VPSDE(), "euler_maruyama", shape=(2, 3),
                      steps=2, **kwargs)
    assert not calls
