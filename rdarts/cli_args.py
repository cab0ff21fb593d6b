"""What every ``rdarts`` command line shares: a parser whose errors are one line, argument types, exit codes, and
``dispatch``, which runs a parsed command and turns bad input into ``rdarts: error: ...`` and exit code 2.

The main CLI (``rdarts.cli``) and the sub-CLIs run as modules (``python -m rdarts.sweep.cli``) both dispatch
through here, so no sub-CLI imports the main one back.
"""

from __future__ import annotations

import argparse
import os
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
    """argparse, but its errors are one line too (no usage dump), exit code 2, and no abbreviated flags (``--epoch``
    is an error, not ``--epochs``)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

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
    except BrokenPipeError:  # `rdarts sweep schema | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit's flush cannot fail
        return EXIT_OK
    except KeyboardInterrupt:
        print("rdarts: interrupted; the same command resumes where it stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UserError as e:
        print(f"rdarts: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except DivergedError as e:
        print(f"rdarts: {e}", file=sys.stderr)
        return EXIT_FAILED


def _shown(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_settings(parser: argparse.ArgumentParser, cls: type, names: Sequence[str], *,
                 required: Sequence[str] = ()) -> None:
    """A ``--flag`` per dataclass field in ``names``, its type, choices, help and default taken from the field
    (``rdarts.config.setting``): one home for every setting, shown in ``--help``."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in names:
        f = fields[name]
        rule, text = f.metadata.get("rule"), f.metadata.get("help", "")
        kind = rule.kind if rule is not None else str
        flag = "--" + name.replace("_", "-")
        if name in required:
            parser.add_argument(flag, required=True, dest=name, help=f"{text} (required)")
            continue
        shown = f"{text} (default: {_shown(f.default)})"
        kwargs: dict[str, object] = {"dest": name, "default": f.default, "help": shown}
        if kind is bool:
            kwargs.update(type=boolean, nargs="?", const=True, metavar="BOOL")
        else:
            kwargs["type"] = kind
            if rule is not None and rule.choices:
                kwargs["choices"] = rule.choices
        parser.add_argument(flag, **kwargs)  # type: ignore[arg-type]


def settings_from(args: argparse.Namespace, names: Sequence[str]) -> dict[str, object]:
    return {name: getattr(args, name) for name in names}
