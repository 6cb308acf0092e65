"""Sharded sampling over ``torch.distributed``: many samples, many ranks, resumable.

Run the same script on every rank with ``torchrun`` (which starts the processes and sets
``RANK``/``WORLD_SIZE``); call ``torch.distributed.init_process_group`` yourself, then::

    sdekit.distributed.sample(score_fn, sde, n=50_000, sample_shape=(3, 32, 32), seed=0,
                              batch_size=500, out_dir="samples/", solver="ode_heun", steps=50)
    x = sdekit.distributed.load("samples/")          # (50000, 3, 32, 32), in index order

Without an initialised process group it runs as a single process.

How it works:

- The sample indices ``0..n-1`` are cut into shards of ``batch_size`` consecutive indices
  (the last may be shorter). Shard ``k`` belongs to rank ``k % world_size``. The shards
  depend only on ``(n, batch_size)``, never on the number of ranks.
- Each shard is one call of :func:`sdekit.sample` with ``seed=seed`` and
  ``indices=<the shard's indices>`` (per-sample seeding), so sample ``i`` depends only on
  ``(seed, i)`` and the settings: any number of ranks, and any resume, gives the same
  tensor bit for bit on the same hardware and software.
- A shard is written to a temporary file, flushed to disk, then renamed (atomic on POSIX),
  so a shard file exists only when it is complete. A resumed run skips shards whose
  file exists; a process killed mid-write leaves only a temporary file, which is ignored.
- ``manifest.json`` records the settings (``n``, shape, seed, batch size, dtype, the SDE
  and the sampling options); resuming into a directory written with other settings is
  refused (the score function itself cannot be checked: keep it the same).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ._utils import check_int
from .process import ScoreFn
from .sampling import sample as _sample
from .sde import SDE
from .seeding import check_seed

__all__ = ["sample", "load", "ShardRun", "shard_ranges"]

MANIFEST = "manifest.json"
_FORMAT = 1
_FORBIDDEN = ("shape", "x_T", "generator", "seed", "indices", "noise")
_NOT_COMPARED = ("progress", "callback")  # options that do not change the samples


@dataclass
class ShardRun:
    """What one rank did in :func:`sample`.

    Attributes:
        rank, world_size: this process's place in the process group (0 and 1 without one).
        computed: shard numbers this rank sampled and wrote in this call.
        skipped: shard numbers of this rank that were already complete (resume).
        out_dir: the output directory.
    """

    rank: int
    world_size: int
    out_dir: Path
    computed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)


def shard_ranges(n: int, batch_size: int) -> list[tuple[int, int]]:
    """The ``[start, stop)`` index range of every shard: ``batch_size`` consecutive indices each."""
    n = check_int("n", n, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    return [(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]


def _shard_path(out_dir: Path, k: int) -> Path:
    return out_dir / f"shard_{k:06d}.pt"


def _atomic_write(path: Path, write) -> None:
    """Write via ``write(fileobj)`` to a temporary file in the same directory, fsync, then rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; shards are ordinary output files
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _rank_world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _default_device(rank: int) -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", rank % torch.cuda.device_count()))
        return torch.device("cuda", local)
    return torch.device("cpu")


def _describe(v: Any) -> Any:
    """A JSON-able description of an option value, stable across processes and runs."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, torch.dtype):
        return str(v)
    if isinstance(v, Tensor):
        return {"tensor": v.detach().cpu().tolist(), "dtype": str(v.dtype)}
    if isinstance(v, (list, tuple)):
        return [_describe(u) for u in v]
    if isinstance(v, dict):
        return {str(k): _describe(u) for k, u in sorted(v.items())}
    if isinstance(v, type):
        return f"{v.__module__}.{v.__qualname__}"
    return repr(v)


def sample(score_fn: ScoreFn, sde: SDE, *, n: int, sample_shape: Sequence[int], seed: int, batch_size: int,
           out_dir: str | os.PathLike, **sample_options: Any) -> ShardRun:
    """Draw ``n`` samples, sharded over the ranks of ``torch.distributed``, into ``out_dir``.

    Args:
        score_fn, sde: as for :func:`sdekit.sample`.
        n: number of samples (indices ``0..n-1``).
        sample_shape: shape of one sample (no batch dimension); ``()`` for scalars.
        seed: run seed; sample ``i`` depends only on ``(seed, i)`` (see :mod:`sdekit.seeding`).
        batch_size: samples per shard (and per :func:`sdekit.sample` call).
        out_dir: directory for the shards and the manifest (created if missing). Shared by all ranks.
        **sample_options: passed to :func:`sdekit.sample` (``solver``, ``steps``, ``schedule``,
            ``dtype``, ``device``, solver options...). ``shape``, ``x_T``, ``generator``, ``seed``,
            ``indices`` and ``noise`` are set here and refused. ``device`` defaults to
            ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU.

    Returns:
        A :class:`ShardRun` with the shards this rank computed and skipped. When a process group
        is initialised, every rank returns only after all ranks finished (a barrier), so
        :func:`load` may follow directly.

    Raises:
        TypeError, ValueError: for bad arguments, or when ``out_dir`` holds a run made with
            other settings.
    """
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable (x, t) -> tensor, got {type(score_fn).__name__}")
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sdekit.SDE (VPSDE, VESDE, ...), got {type(sde).__name__}")
    n = check_int("n", n, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    seed = check_seed(seed)
    if isinstance(sample_shape, (int, str)) or not isinstance(sample_shape, (Sequence, torch.Size)) \
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sample_shape):
        raise ValueError(f"sample_shape must be a tuple of positive ints (one sample, no batch), got {sample_shape!r}")
    sample_shape = tuple(int(s) for s in sample_shape)
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a path (str or os.PathLike), got {type(out_dir).__name__}")
    bad = [k for k in _FORBIDDEN if k in sample_options]
    if bad:
        raise TypeError(f"sdekit.distributed.sample sets {', '.join(bad)} itself; do not pass "
                        f"{'it' if len(bad) == 1 else 'them'} in sample_options")
    opts = dict(sample_options)
    solver = opts.pop("solver", "pc")
    rank, world = _rank_world()
    if opts.get("device") is None:
        opts["device"] = _default_device(rank)
    dtype = opts.get("dtype") or torch.get_default_dtype()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "format": _FORMAT, "n": n, "sample_shape": list(sample_shape), "seed": seed, "batch_size": batch_size,
        "dtype": str(dtype), "device_type": torch.device(opts["device"]).type, "sde": repr(sde),
        "solver": _describe(solver),
        "options": {k: _describe(v) for k, v in sorted(opts.items()) if k not in _NOT_COMPARED and k != "device"},
    }
    manifest = out / MANIFEST

    def check_or_write_manifest() -> None:
        if manifest.exists():
            old = json.loads(manifest.read_text())
            diff = [k for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)]
            if diff:
                k = diff[0]
                raise ValueError(f"out_dir={str(out)!r} holds a run made with other settings ({k}: "
                                 f"{old.get(k)!r} there, {settings.get(k)!r} now); use a new out_dir or the "
                                 "same settings to resume")
        else:
            _atomic_write(manifest, lambda f: f.write(json.dumps(settings, indent=1, sort_keys=True).encode()))

    if manifest.exists():
        check_or_write_manifest()  # refuse before any work
    run = ShardRun(rank=rank, world_size=world, out_dir=out)
    for k, (start, stop) in enumerate(shard_ranges(n, batch_size)):
        if k % world != rank:
            continue
        path = _shard_path(out, k)
        if path.exists():
            run.skipped.append(k)
            continue
        idx = torch.arange(start, stop, dtype=torch.long)
        x = _sample(score_fn, sde, solver, shape=(stop - start, *sample_shape), seed=seed, indices=idx, **opts)
        if not run.computed:
            check_or_write_manifest()  # written once the settings have produced a shard
        payload = {"format": _FORMAT, "shard": k, "indices": idx, "samples": x.detach().cpu(), "rank": rank}
        _atomic_write(path, lambda f, p=payload: torch.save(p, f))
        run.computed.append(k)
    check_or_write_manifest()
    dist = torch.distributed
    if world > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()
    return run


def load(out_dir: str | os.PathLike, *, map_location: str | torch.device = "cpu", return_ranks: bool = False):
    """All ``n`` samples of a finished :func:`sample` run, in index order: a tensor ``(n, *sample_shape)``.

    Args:
        out_dir: the directory given to :func:`sample`.
        map_location: where to load the tensors.
        return_ranks: also return a ``(n,)`` tensor of the rank that sampled each index.

    Raises:
        ValueError: if ``out_dir`` holds no run, or a shard is missing or inconsistent (the
            message lists the missing shards; rerun :func:`sample` to complete them).
    """
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a path (str or os.PathLike), got {type(out_dir).__name__}")
    out = Path(out_dir)
    manifest = out / MANIFEST
    if not manifest.exists():
        raise ValueError(f"out_dir={str(out)!r} holds no sdekit.distributed run (no {MANIFEST})")
    m = json.loads(manifest.read_text())
    ranges = shard_ranges(m["n"], m["batch_size"])
    missing = [k for k in range(len(ranges)) if not _shard_path(out, k).exists()]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise ValueError(f"out_dir={str(out)!r} is incomplete: {len(missing)} of {len(ranges)} shards missing "
                         f"({shown}); rerun sdekit.distributed.sample with the same settings to finish it")
    xs, ranks = [], []
    for k, (start, stop) in enumerate(ranges):
        p = torch.load(_shard_path(out, k), map_location=map_location, weights_only=True)
        idx = p["indices"]
        if p.get("shard") != k or not torch.equal(idx.cpu(), torch.arange(start, stop)):
            raise ValueError(f"out_dir={str(out)!r}: shard {k} holds indices that do not belong to it")
        if tuple(p["samples"].shape) != (stop - start, *m["sample_shape"]):
            raise ValueError(f"out_dir={str(out)!r}: shard {k} has shape {tuple(p['samples'].shape)}, expected "
                             f"{(stop - start, *m['sample_shape'])}")
        xs.append(p["samples"])
        ranks.append(torch.full((stop - start,), int(p.get("rank", -1)), dtype=torch.long))
    x = torch.cat(xs)
    return (x, torch.cat(ranks)) if return_ranks else x
