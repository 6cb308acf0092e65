"""Fused-update kernels on GPU: achieved bandwidth against the device's copy bandwidth, speed-up over eager torch.

For each update a solver performs per step, it times the Triton kernel and the eager torch
reference (in place, into preallocated buffers) with CUDA events and reports::

    GB/s = bytes that must move (each input read once, each output written once) / time

and that as a fraction of the measured ``copy_`` bandwidth of the device (target >= 80%),
plus the speed-up over eager torch (target >= 2x for the multi-term updates) and each kernel's
largest error against the reference. It then checks that fixed-step sampling makes no host
synchronisation per step, with ``torch.cuda.set_sync_debug_mode("warn")`` around the driver
loop of every fixed-step solver.

Without a CUDA device (or without triton) it says so and exits 0.

Usage::

    PYTHONPATH=. python benchmarks/kernels.py [--numel 67108864] [--batch 64] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from pathlib import Path

import torch

import sdekit
from sdekit.kernels import reference as R


def _time_ms(fn, reps: int) -> float:
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def _cases(x: torch.Tensor, buf: torch.Tensor, vs: list[torch.Tensor], b: int):
    """(name, bytes moved in units of the state size, triton fn, torch fn[, fn of the value to agree with])."""
    from sdekit.kernels import triton_kernels as TK
    h = torch.full((b,), -0.01, device=x.device, dtype=x.dtype)
    c = torch.rand(b, device=x.device, dtype=x.dtype)
    rk4 = [1 / 6, 1 / 3, 1 / 3, 1 / 6]
    d5 = [35 / 384, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84]
    d5e = [35 / 384 - 5179 / 57600, 500 / 1113 - 7571 / 16695, 125 / 192 - 393 / 640,
           -2187 / 6784 + 92097 / 339200, 11 / 84 - 187 / 2100, -1 / 40]
    em = [(h, vs[0]), (c, vs[1])]
    rk = [(h * w, v) for w, v in zip(rk4, vs)]
    dp = [(h * w, v) for w, v in zip(d5, vs[:5])]
    dpe = [(h * w, v) for w, v in zip(d5e, vs[:6])]
    return [
        ("copy (reference)", 2, lambda: buf.copy_(x), lambda: buf.copy_(x)),
        ("euler/rd/ancestral: a x + b s + c z", 4,
         lambda: TK.lincomb(x, 0.99, em, out=buf), lambda: R.lincomb(x, 0.99, em, out=buf)),
        ("rk4 final: x + 4 stages", 6, lambda: TK.lincomb(x, 1.0, rk, out=buf), lambda: R.lincomb(x, 1.0, rk, out=buf)),
        ("langevin norms: |s|^2, |z|^2", 2, lambda: TK.sq_norms(vs[:2]), lambda: R.sq_norms(vs[:2])),
        ("langevin update: x + e s + sqrt(2e) z", 4,
         lambda: TK.lincomb(x, 1.0, em, out=buf), lambda: R.lincomb(x, 1.0, em, out=buf)),
        ("dopri5 candidate + error norm (6 stages)", 8,
         lambda: TK.lincomb_error_norm(x, 1.0, dp, dpe, 1e-3, 1e-5, out=buf),
         lambda: R.lincomb_error_norm(x, 1.0, dp, dpe, 1e-3, 1e-5, out=buf)),
        ("error norm alone", 3, lambda: TK.error_norm(vs[0], x, vs[1], 1e-3, 1e-5),
         lambda: R.error_norm(vs[0], x, vs[1], 1e-3, 1e-5)),
        ("philox normals (in-kernel) vs torch.randn", 1,
         lambda: TK.philox_normal(x.shape, 1, 0, device=x.device, dtype=x.dtype),
         lambda: torch.randn(x.shape, device=x.device, dtype=x.dtype),
         lambda: R.philox_normal(x.shape, 1, 0, device=x.device, dtype=x.dtype)),  # the value to agree with
    ]


def check_cases(cases) -> dict[str, float]:
    """Largest error of each Triton update against the torch reference, relative to the largest value."""
    errs = {}
    for name, _, tri, ref, *value in cases:
        want = (value[0] if value else ref)()
        want = [w.clone() for w in want] if isinstance(want, tuple) else [want.clone()]
        got = tri()
        got = list(got) if isinstance(got, tuple) else [got]
        errs[name] = max(float((g.double() - w.double()).abs().max() / w.double().abs().max().clamp(min=1e-30))
                         for g, w in zip(got, want))
    return errs


def _score_net(dim: int, device: torch.device):
    """A small MLP score: no host reads of its own, so every sync counted is the loop's."""
    g = torch.Generator().manual_seed(0)
    w1 = (torch.randn(dim + 1, 64, generator=g) / (dim + 1) ** 0.5).to(device)
    w2 = (torch.randn(64, dim, generator=g) / 8.0).to(device)
    return lambda x, t: torch.tanh(torch.cat([x, t[:, None]], 1) @ w1) @ w2 - x


def sync_check(device: torch.device, steps: int = 40) -> dict[str, int]:
    """Host syncs inside the fixed-step driver loop, per fixed-step solver (0 is the goal).

    With ``check_finite=False``; the row ``"ode_euler + NaN guard"`` keeps the guard, which reads its
    device flags every ``sdekit.integrate.FINITE_CHECK_EVERY`` steps and at the end, by design. On a
    CPU it runs every solver once and counts nothing (there is no sync debug mode).
    """
    from sdekit.integrate import FINITE_CHECK_EVERY, integrate
    from sdekit.noise import GaussianNoise
    from sdekit.process import ReverseProcess
    from sdekit.solvers import available, resolve

    sde = sdekit.VPSDE()
    score = _score_net(16, device)
    fixed = [i.name for i in available() if i.kind != "corrector" and not i.adaptive and i.name != "torchdiffeq"]
    out = {}
    for name, guard in [(n, False) for n in fixed] + [("ode_euler", True)]:
        solver = resolve(name)
        grid = sdekit.grids.get_grid(solver.default_schedule, sde, steps)  # on the CPU, as sample() keeps it
        x = torch.randn(128, 16, device=device)
        noise = GaussianNoise(torch.Generator(device=device).manual_seed(0))

        def run(solver=solver, grid=grid, x=x, noise=noise, guard=guard):
            integrate(ReverseProcess(sde, score, lam=solver.lam), solver, grid, x, noise, check_finite=guard)

        run()  # warm-up (kernel compilation)
        key = f"{name} + NaN guard (expects {-(-steps // FINITE_CHECK_EVERY)})" if guard else name
        if device.type != "cuda":
            out[key] = 0
            continue
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                run()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        out[key] = sum("synchroniz" in str(m.message) for m in w)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--numel", type=int, default=64 * 1024 * 1024, help="elements of the state (default 64Mi)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no GPU: torch.cuda.is_available() is False; the kernel benchmark needs a CUDA device. Nothing measured.")
        return 0
    if not sdekit.kernels.triton_available():
        print(f"triton is not importable ({sdekit.kernels._triton_error}); pip install sdekit[triton]. "
              "Nothing measured.")
        return 0
    dev = torch.device("cuda")
    dtype = getattr(torch, args.dtype)
    b = args.batch
    n = args.numel // b
    x = torch.randn(b, n, device=dev, dtype=dtype)
    buf = torch.empty_like(x)
    vs = [torch.randn_like(x) for _ in range(6)]
    state_bytes = x.numel() * x.element_size()
    rows = []
    copy_gbs = None
    print(f"{torch.cuda.get_device_name(dev)}  state {tuple(x.shape)} {args.dtype} ({state_bytes / 2**20:.0f} MiB)")
    cases = _cases(x, buf, vs, b)
    errs = check_cases(cases)
    for name, units, tri, ref, *_ in cases:
        t_tri, t_ref = _time_ms(tri, args.reps), _time_ms(ref, args.reps)
        gbs = units * state_bytes / (t_tri * 1e-3) / 1e9
        copy_gbs = copy_gbs or gbs
        rows.append({"update": name, "bytes_per_state": units, "triton_ms": t_tri, "torch_ms": t_ref,
                     "triton_GBps": gbs, "of_copy_bw": gbs / copy_gbs, "speedup": t_ref / t_tri,
                     "rel_err": errs[name]})
        print(f"{name:<44} triton {t_tri:8.3f} ms {gbs:8.1f} GB/s ({100 * gbs / copy_gbs:5.1f}% of copy)  "
              f"torch {t_ref:8.3f} ms  speed-up {t_ref / t_tri:5.2f}x  max rel err {errs[name]:.1e}", flush=True)
    syncs = sync_check(dev)
    print("host syncs inside the fixed-step loop (sync_debug_mode warnings):", syncs)
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / "kernels_cuda"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": torch.cuda.get_device_name(dev), "dtype": args.dtype, "shape": list(x.shape),
            "torch": torch.__version__, "triton": __import__("triton").__version__}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "syncs": syncs}, indent=1))
    lines = [f"device: {meta['device']}, state {tuple(x.shape)} {args.dtype}", "",
             "| update | triton ms | GB/s | % of copy | torch ms | speed-up | max error vs reference / max value |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['update']} | {r['triton_ms']:.3f} | {r['triton_GBps']:.0f} | {100 * r['of_copy_bw']:.0f}% | "
              f"{r['torch_ms']:.3f} | {r['speedup']:.2f}x | {r['rel_err']:.1e} |" for r in rows]
    lines += ["", f"host syncs inside the fixed-step loop: {syncs}"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
