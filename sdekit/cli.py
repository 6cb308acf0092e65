"""Command line: ``sdekit demo`` and ``sdekit solvers`` (also ``python -m sdekit ...``)."""

from __future__ import annotations

import argparse
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sdekit", description="Score-based generative model samplers.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="sample built-in Gaussian-mixture problems with every solver")
    demo.add_argument("--out", default="sdekit-demo", help="folder for the table and plot (default: sdekit-demo)")
    demo.add_argument("--nfe", type=int, nargs="+", default=[10, 30, 100], help="NFE budgets")
    demo.add_argument("--samples", type=int, default=5000, help="samples per run")
    demo.add_argument("--solvers", nargs="+", default=None, help="solver names (default: all)")
    sub.add_parser("solvers", help="list the registered solvers")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo_main

        demo_main(args.out, args.nfe, args.samples, args.solvers)
    else:
        from .solvers import available

        for info in available():
            print(info)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
