"""What both figures share: the PNG writer (Agg canvas, atomic replace) and tolerant readers of record fields.

The figures draw on a bare :class:`matplotlib.figure.Figure` rendered by the Agg canvas, so they never touch pyplot's
global state or the process-wide backend: they are safe in workers, servers and test runs that have their own
matplotlib setup. Files are written atomically (a temporary file in the target folder, then ``os.replace``), so a
reader polling the PNG never sees a half-written image.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 120


def save_atomic(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Render ``fig`` as a PNG to ``path`` through a temporary file in the same folder, then ``os.replace`` it.

    Args:
        fig: The figure (its canvas is set to Agg here).
        path: Target file; parent folders are created.

    Returns:
        The target as a :class:`~pathlib.Path`.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp.png", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=DPI, facecolor="white")
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a PNG is for everyone to read
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target


def num(value: Any) -> float:
    """A record field as a float; NaN for missing, empty or unparsable values (CSV / MLflow round trips)."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def as_int(value: Any, default: int) -> int:
    x = num(value)
    return int(x) if math.isfinite(x) else default


def text_of(value: Any) -> str:
    return value if isinstance(value, str) else ""
