"""A package's public names loaded on first use (PEP 562), so that importing the package stays cheap.

``rdarts`` exports the engine (torch) beside the settings, and ``rdarts.reduce`` its pipeline (torch, through the
retraining) beside the pure selection rule; the sweep file's checks and the CLI's parser import those packages and
must not load torch by doing so.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` that load ``exports`` (name -> module) on first use."""
    namespace = vars(sys.modules[package])

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted([*namespace, *exports])

    return __getattr__, __dir__
