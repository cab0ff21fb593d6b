"""Errors that mean "the user asked for something that cannot be": the CLI prints them in one line and exits 2."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: the message names the field or cause and the fix."""


class DivergedError(RuntimeError):
    """The loss (or the Hessian) became NaN or infinite; checkpoints of the epochs before it are kept."""
