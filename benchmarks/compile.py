"""``sample(..., compile=...)`` against eager sampling: compile cost, steady-state time, agreement.

For each score function and solver: the eager run, the eager loop around a network the user
compiled (``torch.compile(net)``: what ``compile=`` must beat to be worth having), the first
compiled run (it compiles), the compiled run again (the cost a user pays from then on) and the
largest difference between the compiled and the eager samples (same prior, same noise). Two score functions, both from
``benchmarks/overhead.py``'s families:

- cheap: a 2-layer MLP on 1024x64 states, where the solver's own per-step cost shows;
- realistic: the small conv net of ``overhead.py`` on 16x3x16x16.

Stochastic solvers run twice: with ``generator=`` (the noise draw is a graph break) and with
in-graph Philox noise (``noise=PhiloxNoise(seed)``: one graph per step).

Usage::

    PYTHONPATH=. python benchmarks/compile.py [--device cuda] [--mode reduce-overhead] [--steps 20] [--out FILE]

Times are the best of ``--repeats`` runs; on CUDA every timed region ends with a synchronisation.
"""

from __future__ import annotations

import argparse

import torch
from overhead import SmallConvScore, _best_time, _timed_once, add_common_args, device_name, start, write
from torch import nn

import sdekit
from sdekit.kernels.philox import PhiloxNoise

SOLVERS = ["ode_euler", "ode_heun", "dpmpp_2m", "unipc", "euler_maruyama", "dpmpp_2m_sde", "pc"]


class MLPScore(nn.Module):
    """A small time-conditioned MLP: the 'cheap' score function."""

    def __init__(self, dim: int = 64, width: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, width), nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, t[:, None].to(x.dtype)], 1))


def run(device: torch.device, steps: int, repeats: int, options: dict) -> list[dict]:
    sde = sdekit.VPSDE()
    cases = {"cheap (MLP, 1024x64)": (MLPScore().to(device).eval(), (1024, 64)),
             "realistic (conv net, 16x3x16x16)": (SmallConvScore().to(device).eval(), (16, 3, 16, 16))}
    rows = []
    for label, (net, shape) in cases.items():
        x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
        user_compiled = torch.compile(net)
        for name in SOLVERS:
            stochastic = sdekit.solvers.resolve(name).stochastic
            for noise_kind in (["generator", "philox"] if stochastic else ["none"]):
                def once(compile, score=net, noise_kind=noise_kind, name=name, x_T=x_T):
                    kw = ({"noise": PhiloxNoise(1)} if noise_kind == "philox" else
                          {"generator": torch.Generator(device=device).manual_seed(1)})
                    with torch.no_grad():
                        return sdekit.solve(score, sde, name, x_T=x_T, steps=steps, compile=compile, **kw).x

                eager_x = once(False)
                t_eager = _best_time(lambda: once(False), device, repeats)
                t_user = _best_time(lambda uc=user_compiled: once(False, score=uc), device, repeats)
                first = _timed_once(lambda: once(options), device)
                comp_x = once(options)
                t_comp = min(_timed_once(lambda: once(options), device) for _ in range(repeats))
                diff = float((comp_x - eager_x).abs().max() / eager_x.abs().max())
                rows.append({"score": label, "solver": name, "noise": noise_kind, "steps": steps,
                             "eager_ms": 1e3 * t_eager, "net_compiled_ms": 1e3 * t_user, "first_compiled_s": first,
                             "compiled_ms": 1e3 * t_comp,
                             "speedup": t_eager / t_comp, "rel_diff": diff})
                print(f"{label:<34} {name:<15} {noise_kind:<9} eager {1e3 * t_eager:9.2f} ms  compiled net "
                      f"{1e3 * t_user:9.2f} ms  first compiled "
                      f"{first:6.2f} s  compiled {1e3 * t_comp:9.2f} ms  speed-up {t_eager / t_comp:5.2f}  "
                      f"max|diff|/max|x| {diff:.1e}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p, "compile")
    p.add_argument("--mode", default=None, help="torch.compile mode (e.g. reduce-overhead, max-autotune)")
    args = p.parse_args()
    device = start(args)
    if device is None:
        return
    options = {} if args.mode is None else {"mode": args.mode}
    rows = run(device, args.steps, args.repeats, options)
    meta = {"device": device_name(device), "torch": torch.__version__, "threads": args.threads, "compile": options}
    lines = [f"device: {meta['device']}, torch {meta['torch']}, threads {meta['threads']}, "
             f"torch.compile options {options or 'default'}, {args.steps} steps", "",
             "| score | solver | noise | eager ms | eager loop, torch.compile(net) ms | first compile=True run s | "
             "compile=True ms | speed-up over eager | over compiled net | max abs diff / max abs x |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['score']} | {r['solver']} | {r['noise']} | {r['eager_ms']:.2f} | {r['net_compiled_ms']:.2f} | "
              f"{r['first_compiled_s']:.2f} | {r['compiled_ms']:.2f} | {r['speedup']:.2f} | "
              f"{r['net_compiled_ms'] / r['compiled_ms']:.2f} | {r['rel_diff']:.1e} |" for r in rows]
    write(args, "compile", device, meta, rows, lines)


if __name__ == "__main__":
    main()
