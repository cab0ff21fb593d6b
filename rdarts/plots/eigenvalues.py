"""The eigenvalue curve of a search: λ_max of the α Hessian per evaluated epoch, for DARTS-ES and DARTS-ADA.

One colour per DARTS-ADA round; its local average; the DARTS-ES ratio where the rule looks at it; the ES / ADA events
at the epoch where the rule fired; a star on the architecture the search returns (ES: the kept epoch; otherwise the
last epoch of the last round) and a cross on each epoch an ADA rollback went back to.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from rdarts.plots.common import DPI, as_int, num, save_atomic, text_of
from rdarts.stopping import REFERENCE_CODE

# The tab10 cycle for ADA rounds.
ROUND_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
ROUND_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
EVENT_STYLES: dict[str, tuple[str, str, str]] = {
    # event -> (colour, linestyle, legend text)
    "es_stop": ("#c92a2a", "-", "ES stop detected (epoch {e})"),
    "ada_rollback": ("#862e9c", "--", "ADA rollback detected (epoch {e})"),
    "ada_ignored": ("#868e96", ":", "ES trigger ignored at max wd (epoch {e})"),
}

def _as_mapping(record: Mapping[str, Any] | Any) -> Mapping[str, Any]:
    if isinstance(record, Mapping):
        return record
    if hasattr(record, "to_dict"):  # an EpochRecord
        return record.to_dict()
    raise TypeError(f"a record must be a mapping, got {type(record).__name__}")


def _finite_xy(xs: Sequence[int], ys: Sequence[float]) -> tuple[list[int], list[float]]:
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_eigenvalues(records: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *, title: str | None = None,
                     factor: float | None = REFERENCE_CODE.factor) -> Path:
    """Plot the dominant eigenvalue curve of a search to a PNG.

    The left axis shows λ_max per evaluated epoch (markers and line, epochs without an eigenvalue skipped) and its
    local average (dashed); the right axis shows the DARTS-ES ratio (dotted) with the ES factor as a dashed horizontal
    line. Each DARTS-ADA round (``ada_round``) has its own colour and marker; ES and ADA events are vertical lines at
    the epoch where the rule fired; a star marks the architecture the search returns and a cross each epoch an
    ADA rollback went back to.

    Args:
        records: Epoch records (``EpochRecord.to_dict()`` or rows read back from a CSV / MLflow), in run order.
            Used fields: ``epoch``, ``ada_round``, ``dominant_eigenvalue``, ``eigenvalue_local_avg``,
            ``eigenvalue_ratio``, ``weight_decay``, ``event``, ``target_epoch``; missing ones count as NaN / empty.
        path: Target PNG; parent folders are created and the file is replaced atomically.
        title: Figure title; a default one when None.
        factor: The ES factor drawn on the ratio axis; None draws no line.

    Returns:
        The path written.
    """
    return save_atomic(_eigen_figure(records, title=title, factor=factor), path)


def _eigen_figure(records: Sequence[Mapping[str, Any]], *, title: str | None = None,
                  factor: float | None = REFERENCE_CODE.factor) -> Figure:
    """The figure of :func:`plot_eigenvalues` (see there for the arguments)."""
    rows = [_as_mapping(r) for r in records]
    fig = Figure(figsize=(13.0, 5.6), dpi=DPI)
    ax = fig.add_axes((0.065, 0.11, 0.6, 0.79))
    ax.set_title(title or "Dominant eigenvalue of the architecture Hessian", fontsize=13, loc="left")
    ax.set_xlabel("epoch", fontsize=11)
    ax.set_ylabel(r"$\lambda_{max}$ of $\nabla^2_{\alpha}\,\mathcal{L}_{valid}$", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))

    if not any(math.isfinite(num(r.get("dominant_eigenvalue"))) for r in rows):
        ax.set_position((0.065, 0.11, 0.87, 0.79))
        ax.set_xticks([])
        ax.set_yticks([])
        n = len(rows)
        ax.text(0.5, 0.5, f"no eigenvalues yet\n({n} epoch record{'s' if n != 1 else ''})", transform=ax.transAxes,
                ha="center", va="center", fontsize=16, color="#555555")
        return fig

    ax2 = ax.twinx()
    ax2.set_ylabel("ratio of local averages (ES statistic)", fontsize=11)
    rounds: dict[int, list[Mapping[str, Any]]] = {}
    for r in rows:
        rounds.setdefault(as_int(r.get("ada_round"), 0), []).append(r)
    multi = len(rounds) > 1
    lam_at: dict[tuple[int, int], float] = {}  # (round, epoch) -> eigenvalue
    for k, rs in rounds.items():
        for i, r in enumerate(rs):
            v = num(r.get("dominant_eigenvalue"))
            if math.isfinite(v):
                lam_at[(k, as_int(r.get("epoch"), i))] = v
    # Where each ADA round branches off: the stop epoch of the rollback that ended the round before.
    branch: dict[int, tuple[int, float]] = {}
    for r in rows:
        k, stop = as_int(r.get("ada_round"), 0), as_int(r.get("target_epoch"), -1)
        if text_of(r.get("event")) == "ada_rollback" and (k, stop) in lam_at:
            branch[k + 1] = (stop, lam_at[(k, stop)])

    round_handles: list[Line2D] = []
    any_ratio = any_se = False
    for idx, (k, rs) in enumerate(sorted(rounds.items())):
        color, marker = ROUND_COLORS[idx % len(ROUND_COLORS)], ROUND_MARKERS[idx % len(ROUND_MARKERS)]
        epochs = [as_int(r.get("epoch"), i) for i, r in enumerate(rs)]
        x, y = _finite_xy(epochs, [num(r.get("dominant_eigenvalue")) for r in rs])
        ax.plot(x, y, color=color, marker=marker, markersize=5, linewidth=1.8, zorder=3, gid=f"eigenvalue_round_{k}")
        bars = [(e, num(r.get("dominant_eigenvalue")), num(r.get("eigenvalue_se"))) for e, r in zip(epochs, rs,
                                                                                                    strict=True)]
        bars = [b for b in bars if math.isfinite(b[1]) and math.isfinite(b[2])]
        if bars:  # hessian_batches > 1: λ_max is a mean over batches, drawn with ± one standard error
            any_se = True
            ax.errorbar([b[0] for b in bars], [b[1] for b in bars], yerr=[b[2] for b in bars], fmt="none",
                        ecolor=color, elinewidth=1.1, capsize=3, zorder=3, gid=f"eigenvalue_se_round_{k}")
        if k in branch and x:
            bx, by = branch[k]
            ax.plot([bx, x[0]], [by, y[0]], color=color, linewidth=1.8, zorder=3)
        x, y = _finite_xy(epochs, [num(r.get("eigenvalue_local_avg")) for r in rs])
        ax.plot(x, y, color=color, linestyle="--", linewidth=1.4, alpha=0.9, zorder=2, gid=f"local_avg_round_{k}")
        x, y = _finite_xy(epochs, [num(r.get("eigenvalue_ratio")) for r in rs])
        any_ratio = any_ratio or bool(x)
        ax2.plot(x, y, color=color, linestyle=":", linewidth=1.4, alpha=0.8, zorder=1, gid=f"ratio_round_{k}")
        wd = num(rs[0].get("weight_decay"))
        wd_text = f"wd={wd:.1e}" if math.isfinite(wd) else "wd=?"
        label = f"ADA round {k} ({wd_text})" if multi else rf"$\lambda_{{max}}$ ({wd_text})"
        round_handles.append(Line2D([], [], color=color, marker=marker, linewidth=1.8, label=label))

    any_avg = any(math.isfinite(num(r.get("eigenvalue_local_avg"))) for r in rows)
    style_handles: list[Line2D] = [
        Line2D([], [], color="black", marker="o", markersize=4, linewidth=1.8,
               label=r"$\lambda_{max}$ (evaluated epochs)"),
    ]
    if any_se:
        style_handles.append(Line2D([], [], color="black", marker="|", markersize=9, linestyle="none",
                                    label="± standard error over the batches"))
    if any_avg:
        style_handles.append(Line2D([], [], color="black", linestyle="--", linewidth=1.4, label="local average"))
    if any_ratio:  # the records hold the ratio only where DARTS-ES compares it with the factor
        style_handles.append(Line2D([], [], color="black", linestyle=":", linewidth=1.4,
                                    label="ES ratio (right axis; where the rule checks)"))
    if factor is not None:
        ax2.axhline(factor, color="#495057", linestyle=(0, (6, 3)), linewidth=1.1, zorder=0)
        style_handles.append(Line2D([], [], color="#495057", linestyle=(0, (6, 3)), linewidth=1.1,
                                    label=f"ES factor {factor:g}"))
        lo, hi = ax2.get_ylim()
        ax2.set_ylim(min(lo, factor * 0.9), max(hi, factor * 1.1))
    elif not any_ratio:
        ax2.set_yticks([])

    y_floor = ax.get_ylim()[0]

    def lam(epoch: int, k: int) -> float:
        """λ at ``epoch`` from round ``k``, else from the round it was measured in (before a rollback); an epoch
        without an eigenvalue of its own gets its marker on the x axis."""
        return next((lam_at[(kk, epoch)] for kk in range(k, -1, -1) if (kk, epoch) in lam_at), y_floor)

    event_handles: list[Line2D] = []
    kept: tuple[int, int] | None = None  # (epoch, round) of the ES stop's kept architecture
    for r in rows:
        event = text_of(r.get("event"))
        if event not in EVENT_STYLES:
            continue
        epoch, k = as_int(r.get("epoch"), -1), as_int(r.get("ada_round"), 0)
        color, ls, text = EVENT_STYLES[event]
        ax.axvline(epoch, color=color, linestyle=ls, linewidth=1.5, alpha=0.85, zorder=1)
        event_handles.append(Line2D([], [], color=color, linestyle=ls, linewidth=1.5, label=text.format(e=epoch)))
        target = as_int(r.get("target_epoch"), -1)
        if event == "es_stop" and target >= 0:
            kept = (target, k)
        elif event == "ada_rollback" and target >= 0:
            ax.plot([target], [lam(target, k)], marker="X", markersize=11, color=color, markeredgecolor="white",
                    linestyle="none", zorder=5, clip_on=False, gid=f"rollback_to_{target}")
            event_handles.append(Line2D([], [], marker="X", markersize=10, color=color, markeredgecolor="white",
                                        linestyle="none", label=f"rolled back to epoch {target}"))
    # The architecture the search returns: ES keeps the target's; ADA and plain DARTS return the last epoch's.
    if kept is None and rows:
        kept = (as_int(rows[-1].get("epoch"), len(rows) - 1), as_int(rows[-1].get("ada_round"), 0))
    if kept is not None:
        ax.plot([kept[0]], [lam(*kept)], marker="*", markersize=17, color="gold", markeredgecolor="black",
                linestyle="none", zorder=6, clip_on=False, gid="returned")
        event_handles.append(Line2D([], [], marker="*", markersize=13, color="gold", markeredgecolor="black",
                                    linestyle="none", label=f"returned architecture (epoch {kept[0]})"))

    fig.legend(handles=round_handles + style_handles + event_handles, loc="upper left", bbox_to_anchor=(0.735, 0.9),
               fontsize=9.5, frameon=False, borderaxespad=0.0)
    return fig
