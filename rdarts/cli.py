"""The ``rdarts`` command line: a thin layer over the library that only dispatches.

``rdarts search|retrain`` (``rdarts.engine_cli``), ``rdarts sweep ...`` (``rdarts.sweep.cli``), ``rdarts reduce``
(``rdarts.reduce.cli``). Bad input (an unknown space, op or dataset, a value out of range, a missing data folder)
ends with one line ``rdarts: error: ...`` that names the problem and the fix, and exit code 2; a diverged search
exits 3. Ray and MLflow are imported by the handlers that need them, never to build the parser.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rdarts.cli_args import EXIT_CODES_HELP, Parser, dispatch


def build_parser() -> argparse.ArgumentParser:
    import rdarts
    from rdarts import engine_cli
    from rdarts.reduce import cli as reduce_cli
    from rdarts.sweep import cli as sweep_cli

    parser = Parser(prog="rdarts", description="RobustDARTS searches and sweeps.", epilog=EXIT_CODES_HELP)
    parser.add_argument("--version", action="version", version=f"rdarts {rdarts.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    engine_cli.add_parser(sub)
    sweep_cli.add_parser(sub)
    reduce_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
