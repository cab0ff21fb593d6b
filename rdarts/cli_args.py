"""What every ``rdarts`` command line shares: a parser whose errors are one line, argument types, exit codes, and
``dispatch``, which runs a parsed command and turns bad input into ``rdarts: error: ...`` and exit code 2.

The main CLI (``rdarts.cli``) and the sub-CLIs run as modules (``python -m rdarts.sweep.cli``) both dispatch
through here, so no sub-CLI imports the main one back.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from rdarts.errors import DivergedError, UserError

# Exit codes of every rdarts command.
EXIT_OK = 0
EXIT_FAILED = 1
"""Some trial failed or diverged (``rdarts search``: the search diverged; ``sweep logs``: the job did not succeed)."""
EXIT_USAGE = 2
"""Bad input: nothing was started."""
EXIT_TRACKING = 3
"""Everything computed is kept, but the MLflow server could not be reached (log it later: ``rdarts reduce``)."""
EXIT_INTERRUPTED = 130
EXIT_CODES_HELP = ("exit codes: 0 all finished; 1 some trials failed or diverged; 2 bad input (nothing started); "
                   "3 results kept but the MLflow server unreachable; 130 interrupted")


class Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line too (no usage dump), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"rdarts: error: {message} (see '{self.prog} --help')\n")


def boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def dispatch(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command's handler (``func``), map bad input and divergence to exit codes."""
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UserError as e:
        print(f"rdarts: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except DivergedError as e:
        print(f"rdarts: {e}", file=sys.stderr)
        return EXIT_FAILED
