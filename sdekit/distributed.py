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
  and the sampling options), each by its content: numbers and tensors by value (large ones by
  a SHA-256), SDEs by their parameters and ``alpha``/``sigma`` at 65 times, functions (a
  callable ``schedule``) by their code and closure, objects (``condition=``) by their
  attributes; an option with no such description is refused up front. The manifest is
  created exclusively, so of two runs started in one directory one writes it and the other
  is compared with it; resuming into a directory written with other settings is refused
  (the score function itself cannot be checked: keep it the same). Every shard carries the
  settings' hash, checked on resume and by :func:`load`.
- On resume, a shard file that does not load (truncated, corrupt) is recomputed, and the
  temporary files of killed writers of this rank's shards are removed; :func:`load` names a
  shard it cannot read.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ._utils import check_int
from .process import ScoreFn
from .sampling import DEFAULT_SOLVER
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


def _exclusive_write(path: Path, data: bytes) -> bool:
    """Create ``path`` with ``data`` unless it exists (atomically: nobody reads it half-written).

    Returns whether this call created it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


def _remove_stale_temporaries(out: Path, shards: list[int]) -> None:
    """Delete the temporary files that killed writers of this rank's ``shards`` left behind."""
    mine = {_shard_path(out, k).name for k in shards}
    for p in out.glob(".shard_*.pt.*.tmp"):
        if p.name[1:].split(".pt.")[0] + ".pt" in mine:
            p.unlink(missing_ok=True)


def _readable_shard(path: Path, settings_id: str) -> bool:
    """Whether the shard at ``path`` loads (else it is recomputed); refuses one written with other settings."""
    try:
        p = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    sid = p.get("settings_sha256") if isinstance(p, dict) else None
    if sid is not None and sid != settings_id:
        raise ValueError(f"{str(path)!r} was written by a run with other settings than this out_dir's manifest; "
                         "use a new out_dir")
    return True


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


class _Unidentifiable(ValueError):
    pass


def _tensor_id(v: Tensor) -> dict:
    t = v.detach().cpu()
    if t.numel() <= 64:
        return {"tensor": t.tolist(), "dtype": str(t.dtype)}
    raw = t.contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool \
        else t.to(torch.uint8).numpy().tobytes()
    return {"tensor_sha256": hashlib.sha256(raw).hexdigest(), "shape": list(t.shape), "dtype": str(t.dtype)}


def _describe(v: Any, depth: int = 0) -> Any:
    """A JSON-able description of an option value by its content, stable across processes and runs.

    Numbers, strings, dtypes and tensors (values, or a SHA-256 of their bytes when large) as
    themselves; functions by their code, defaults and closure values; other objects by their type
    and attributes. Raises ``_Unidentifiable`` for what has no such description (a ``repr`` with a
    memory address would differ in every process and make every multi-rank run and resume fail).
    """
    if depth > 12:
        raise _Unidentifiable("nested too deeply")
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (torch.dtype, torch.device)):
        return str(v)
    if isinstance(v, Tensor):
        return _tensor_id(v)
    if isinstance(v, (list, tuple)):
        return [_describe(u, depth + 1) for u in v]
    if isinstance(v, dict):
        return {str(k): _describe(u, depth + 1) for k, u in sorted(v.items(), key=lambda kv: str(kv[0]))}
    if isinstance(v, type):
        return f"{v.__module__}.{v.__qualname__}"
    if isinstance(v, types.MethodType):
        return {"method": v.__func__.__qualname__, "self": _describe(v.__self__, depth + 1),
                "function": _describe(v.__func__, depth + 1)}
    if isinstance(v, functools.partial):
        return {"partial": _describe(v.func, depth + 1), "args": _describe(list(v.args), depth + 1),
                "keywords": _describe(dict(v.keywords), depth + 1)}
    if isinstance(v, types.FunctionType):
        code = v.__code__
        consts = [c for c in code.co_consts if not isinstance(c, types.CodeType)]
        nested = [c.co_code.hex() for c in code.co_consts if isinstance(c, types.CodeType)]
        body = hashlib.sha256((code.co_code.hex() + repr(consts) + repr(code.co_names) + repr(nested)).encode())
        return {"function": f"{v.__module__}.{v.__qualname__}", "code_sha256": body.hexdigest(),
                "defaults": _describe(list(v.__defaults__ or ()), depth + 1),
                "kwdefaults": _describe(dict(v.__kwdefaults__ or {}), depth + 1),
                "closure": [_describe(c.cell_contents, depth + 1) for c in (v.__closure__ or ())]}
    if isinstance(v, (types.BuiltinFunctionType, types.ModuleType)) or type(v).__module__ == "builtins" \
            and callable(v) and hasattr(v, "__qualname__"):
        return f"{getattr(v, '__module__', None)}.{getattr(v, '__qualname__', getattr(v, '__name__', '?'))}"
    state = getattr(v, "__dict__", None)
    if isinstance(state, dict):
        if isinstance(v, SDE):  # public parameters and the schedule's values (private attributes are caches
            # or the schedule's functions, which the probes identify by value)
            return {"type": f"{type(v).__module__}.{type(v).__qualname__}", "probes": _sde_probes(v),
                    "state": _describe({k: u for k, u in state.items() if not k.startswith("_")}, depth + 1)}
        return {"type": f"{type(v).__module__}.{type(v).__qualname__}", "state": _describe(state, depth + 1)}
    r = repr(v)
    if " at 0x" in r:
        raise _Unidentifiable(f"a {type(v).__name__} whose only description is {r!r}")
    return {"type": f"{type(v).__module__}.{type(v).__qualname__}", "repr": r}


def _sde_probes(sde: SDE) -> dict:
    """``alpha`` and ``sigma`` of ``sde`` at 65 times on ``[eps, T]`` (float64): its schedule by value."""
    t = torch.linspace(sde.eps, sde.T, 65, dtype=torch.float64)
    with torch.no_grad():
        vals = torch.stack([sde.alpha(t).to(torch.float64), sde.sigma(t).to(torch.float64)])
    return _tensor_id(vals)


def _identify(name: str, v: Any) -> Any:
    try:
        return _describe(v)
    except _Unidentifiable as e:
        raise ValueError(f"sdekit.distributed.sample cannot identify {name} across ranks and resumes ({e}); pass "
                         "a value described by its content (numbers, tensors, sdekit objects, plain functions "
                         "and objects holding only such values)") from None


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
    solver = opts.pop("solver", DEFAULT_SOLVER)
    rank, world = _rank_world()
    if opts.get("device") is None:
        opts["device"] = _default_device(rank)
    dtype = opts.get("dtype") or torch.get_default_dtype()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "format": _FORMAT, "n": n, "sample_shape": list(sample_shape), "seed": seed, "batch_size": batch_size,
        "dtype": str(dtype), "device_type": torch.device(opts["device"]).type, "sde": _identify("sde", sde),
        "solver": _identify("solver", solver),
        "options": {k: _identify(f"the option {k}=", v) for k, v in sorted(opts.items())
                    if k not in _NOT_COMPARED and k != "device"},
    }
    settings_id = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    manifest = out / MANIFEST
    checked = False

    def check_or_write_manifest() -> None:
        # created exclusively (a hard link of a complete temporary file): of two runs started together in
        # one out_dir, exactly one writes it and the other compares against it
        nonlocal checked
        if checked:
            return
        if not manifest.exists():
            data = json.dumps({**settings, "settings_sha256": settings_id}, indent=1, sort_keys=True).encode()
            if _exclusive_write(manifest, data):
                checked = True
                return
        old = json.loads(manifest.read_text())
        diff = [k for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k) and k != "settings_sha256"]
        if diff:
            k = diff[0]
            raise ValueError(f"out_dir={str(out)!r} holds a run made with other settings ({k}: "
                             f"{old.get(k)!r} there, {settings.get(k)!r} now); use a new out_dir or the "
                             "same settings to resume")
        checked = True

    if manifest.exists():
        check_or_write_manifest()  # refuse before any work
    run = ShardRun(rank=rank, world_size=world, out_dir=out)
    ranges = shard_ranges(n, batch_size)
    _remove_stale_temporaries(out, [k for k in range(len(ranges)) if k % world == rank])
    for k, (start, stop) in enumerate(ranges):
        if k % world != rank:
            continue
        path = _shard_path(out, k)
        if path.exists():
            check_or_write_manifest()  # a shard is only written after its run's manifest
            if _readable_shard(path, settings_id):
                run.skipped.append(k)
                continue
        idx = torch.arange(start, stop, dtype=torch.long)
        x = _sample(score_fn, sde, solver, shape=(stop - start, *sample_shape), seed=seed, indices=idx, **opts)
        check_or_write_manifest()  # written once the settings have produced a shard
        payload = {"format": _FORMAT, "shard": k, "indices": idx, "samples": x.detach().cpu(), "rank": rank,
                   "settings_sha256": settings_id}
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
        try:
            p = torch.load(_shard_path(out, k), map_location=map_location, weights_only=True)
        except Exception as e:
            raise ValueError(f"out_dir={str(out)!r}: shard {k} ({_shard_path(out, k).name}) cannot be read (truncated "
                             f"or corrupt: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); delete it "
                             "and rerun sdekit.distributed.sample with the same settings to recompute it") from None
        if not isinstance(p, dict) or "indices" not in p or "samples" not in p:
            raise ValueError(f"out_dir={str(out)!r}: shard {k} is not an sdekit.distributed shard")
        idx = p["indices"]
        if p.get("shard") != k or not torch.equal(idx.cpu(), torch.arange(start, stop)):
            raise ValueError(f"out_dir={str(out)!r}: shard {k} holds indices that do not belong to it")
        if tuple(p["samples"].shape) != (stop - start, *m["sample_shape"]):
            raise ValueError(f"out_dir={str(out)!r}: shard {k} has shape {tuple(p['samples'].shape)}, expected "
                             f"{(stop - start, *m['sample_shape'])}")
        sid = p.get("settings_sha256")
        if sid is not None and "settings_sha256" in m and sid != m["settings_sha256"]:
            raise ValueError(f"out_dir={str(out)!r}: shard {k} was written by a run with other settings than the "
                             "manifest's")
        xs.append(p["samples"])
        ranks.append(torch.full((stop - start,), int(p.get("rank", -1)), dtype=torch.long))
    x = torch.cat(xs)
    return (x, torch.cat(ranks)) if return_ranks else x
