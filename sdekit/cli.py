"""Command line: ``sdekit demo`` and ``sdekit solvers`` (also ``python -m sdekit ...``).

Every argument is checked before any work: a bad one ends the run with exit status 2 and one
line on stderr, ``sdekit demo: error: argument --samples: ...`` (argparse's format, without the
usage block; ``--help`` shows the usage and every default).
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn, Sequence


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every default in ``--help`` except ``None`` (whose meaning the help text gives)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None:
            return action.help or ""
        return super()._get_help_string(action)


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _parser() -> tuple[_Parser, _Parser]:
    """The top-level parser and the ``demo`` subcommand's."""
    from . import __version__

    fmt = _Formatter
    parser = _Parser(prog="sdekit", description="Score-based generative model samplers.", formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"sdekit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,solvers}", parser_class=_Parser)
    demo = sub.add_parser("demo", formatter_class=fmt,
                          help="sample built-in Gaussian-mixture problems with every solver",
                          description="Sample exact Gaussian-mixture problems (2-D and 64-D, VP SDE) with every "
                                      "solver at each NFE budget and write a table, JSON and an FD-vs-NFE plot "
                                      "(the plot needs matplotlib: pip install \".[bench]\").")
    demo.add_argument("--out", default="sdekit-demo", help="folder for the table, JSON and plot")
    demo.add_argument("--nfe", type=_int_at_least(1), nargs="+", default=[10, 30, 100], metavar="N",
                      help="NFE budgets (score evaluations per sample, denoising included); adaptive solvers "
                           "run once at their default tolerances instead")
    demo.add_argument("--samples", type=_int_at_least(2), default=5000, help="samples per run")
    demo.add_argument("--solvers", nargs="+", default=None, metavar="NAME",
                      help="solver names (see 'sdekit solvers'; correctors run inside 'pc') (default: every "
                           "solver)")
    sub.add_parser("solvers", formatter_class=fmt, help="list the registered solvers and correctors")
    return parser, demo


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser, demo_parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from . import demo

        try:
            solvers = demo.check_options(args.out, args.nfe, args.samples, args.solvers)
        except demo.OptionError as e:
            demo_parser.error(f"argument --{e.option}: {e.detail}")
        if not demo.can_plot():
            print("sdekit demo: matplotlib is not installed: the plot (demo.png) will be skipped; "
                  "install it with: pip install \".[bench]\"", file=sys.stderr)
        demo.main(args.out, args.nfe, args.samples, solvers)
    else:
        from .solvers import available

        for info in available():
            print(info)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
