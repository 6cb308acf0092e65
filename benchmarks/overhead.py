"""Solver overhead: wall time of ``sample`` / (NFE x time of one ``score_fn`` call), per solver.

1.00 means the solver's own work (updates, noise, bookkeeping) costs nothing next to the
score; the target for a realistic network is <= 1.10. The score's time is measured twice: alone
(best of repeated calls on one input, the definition above) and inside the run (the time the
sampler spent in ``score_fn``); the second ratio, ``sample / time in score``, isolates the
solver's own cost from the network running slower on changing inputs inside a loop. Two score
functions:

- cheap: the exact Gaussian-mixture oracle (``sdekit.testing.GaussianMixture``), where the
  solver's cost is exposed;
- realistic: a small convolutional score network (random weights, same cost as trained ones).

Usage::

    PYTHONPATH=. python benchmarks/overhead.py [--device cuda] [--steps 20] [--repeats 3] [--out FILE]

Timings are the minimum over ``--repeats`` runs after one warm-up run (robust to contention). On CUDA every timed
region ends with ``torch.cuda.synchronize()``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch import nn

import sdekit
from sdekit.testing import GaussianMixture

SOLVERS = ["euler_maruyama", "reverse_diffusion", "ancestral", "pc", "ode_euler", "ode_heun", "ode_rk4"]


class SmallConvScore(nn.Module):
    """A small conv net with a time embedding: the 'realistic' score function."""

    def __init__(self, channels: int = 3, width: int = 64) -> None:
        super().__init__()
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.blocks = nn.ModuleList([nn.Conv2d(width, width, 3, padding=1) for _ in range(3)])
        self.temb = nn.Linear(1, width)
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.inp(x) + self.temb(t.view(-1, 1).to(x.dtype))[:, :, None, None]
        for blk in self.blocks:
            h = h + torch.nn.functional.silu(blk(h))
        return self.out(h)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_once(fn, device) -> float:
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _best_time(fn, device, repeats: int) -> float:
    _timed_once(fn, device)  # warm-up
    return min(_timed_once(fn, device) for _ in range(repeats))  # contention only adds time: the least noisy


def run(device: torch.device, steps: int, repeats: int, backend: str) -> list[dict]:
    sde = sdekit.VPSDE()
    mix = GaussianMixture.random(dim=64, generator=torch.Generator().manual_seed(0))
    gmm_score = mix.score_fn(sde)
    gmm_score_f32 = lambda x, t: gmm_score(x.double(), t.double()).to(x.dtype)  # oracle works in float64
    net = SmallConvScore().to(device).eval()
    cases = {
        "cheap (GMM oracle, 256x64)": (gmm_score_f32, (256, 64)),
        "realistic (conv net, 16x3x16x16)": (net, (16, 3, 16, 16)),
    }
    rows = []
    for label, (score_fn, shape) in cases.items():
        x = torch.randn(shape, device=device)
        t = torch.full((shape[0],), 0.5, device=device)
        def score_time(f=score_fn, x=x, t=t):
            with torch.no_grad():
                return _best_time(lambda: f(x, t), device, max(5, 3 * repeats))

        inside = {"s": 0.0}

        def timed(x, t, f=score_fn, inside=inside):
            _sync(device)
            t0 = time.perf_counter()
            out = f(x, t)
            _sync(device)
            inside["s"] += time.perf_counter() - t0
            return out

        for name in SOLVERS:

            def once(name=name, shape=shape, timed=timed):
                g = torch.Generator(device=device).manual_seed(0)
                with torch.no_grad():
                    return sdekit.solve(timed, sde, name, shape=shape, steps=steps, generator=g, device=device,
                                        backend=backend)

            nfe = once().nfe
            # score timed right before and after the solver (the machine's load drifts): the best of both
            t_before = score_time()
            best = (float("inf"), 0.0)
            for _ in range(repeats):  # the fastest run (after the warm-up above), with its time inside score_fn
                inside["s"] = 0.0
                t_run = _timed_once(once, device)
                best = min(best, (t_run, inside["s"]))
            t_sample, t_in = best
            t_score = min(t_before, score_time())
            rows.append({"score": label, "solver": name, "steps": steps, "nfe": nfe,
                         "score_ms": 1e3 * t_score, "score_in_loop_ms": 1e3 * t_in / nfe, "sample_ms": 1e3 * t_sample,
                         "overhead": t_sample / (nfe * t_score), "overhead_in_loop": t_sample / t_in})
            print(f"{label:<34} {name:<18} nfe={nfe:<4} score={1e3 * t_score:8.3f} ms (in loop "
                  f"{1e3 * t_in / nfe:8.3f}) sample={1e3 * t_sample:9.2f} ms  ratio={rows[-1]['overhead']:.3f} "
                  f"in-loop ratio={rows[-1]['overhead_in_loop']:.3f}", flush=True)
    return rows


def add_common_args(p: argparse.ArgumentParser, results: str) -> None:
    """The options every timing script here shares (``--out`` defaults to results/<results>_<device>)."""
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--out", default=None, help=f"write JSON + markdown here (default benchmarks/results/{results}_"
                                               "<device>)")


def start(args: argparse.Namespace) -> torch.device | None:
    """The device to time on, with the thread count set; ``None`` (and a message) when CUDA is asked for but absent."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device available; run with --device cpu")
        return None
    torch.set_num_threads(args.threads)
    return device


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def write(args: argparse.Namespace, results: str, device: torch.device, meta: dict, rows: list[dict],
          lines: list[str]) -> None:
    """``rows`` (with ``meta``) as JSON and ``lines`` as markdown, at ``--out`` or results/<results>_<device>."""
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"{results}_{device.type}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p, "overhead")
    p.add_argument("--backend", default="auto", choices=sdekit.kernels.BACKENDS)
    args = p.parse_args()
    device = start(args)
    if device is None:
        return
    rows = run(device, args.steps, args.repeats, args.backend)
    meta = {"device": device_name(device), "torch": torch.__version__, "threads": args.threads, "backend": args.backend,
            "kernel_backend_used": sdekit.kernels.backend_for(torch.empty(1, device=device))
            if args.backend == "auto" else args.backend}
    lines = [f"device: {meta['device']}, torch {meta['torch']}, threads {meta['threads']}, "
             f"kernel backend {meta['kernel_backend_used']}", "",
             "| score | solver | NFE | score ms (alone) | score ms (in the run) | sample ms | "
             "sample / (NFE x score alone) | sample / time in score |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['score']} | {r['solver']} | {r['nfe']} | {r['score_ms']:.3f} | {r['score_in_loop_ms']:.3f} | "
              f"{r['sample_ms']:.2f} | {r['overhead']:.3f} | {r['overhead_in_loop']:.3f} |" for r in rows]
    write(args, "overhead", device, meta, rows, lines)


if __name__ == "__main__":
    main()
