"""The cell diagram of a genotype: the normal and the reduction cell as arc diagrams.

The nodes sit on a line (``c_{k-2}``, ``c_{k-1}``, the intermediate nodes, ``c_{k}``), one labelled arrow per
``(op, input)`` pair, parameter-free ops in their own colour.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch
from matplotlib.path import Path as MplPath
from matplotlib.text import Text
from matplotlib.textpath import text_to_path

from rdarts.plots.common import DPI, save_atomic
from rdarts.spaces import PARAMETER_FREE_OPS, Genotype

# Colours: a colour-blind-safe pair for the op kinds.
CONV_COLOR = "#1f5fa8"
PARAM_FREE_COLOR = "#d9480f"
CONCAT_COLOR = "#8a8a8a"

# Layout units: neighbouring nodes are 1 apart on the node line (y = 0); the figure maps one unit to `unit_in` inches.
NODE_W, NODE_H = 0.46, 0.34  # node box size
PORT_HALF = 0.17  # arcs touch a node within +-PORT_HALF of its centre
LABEL_MARGIN = 0.035  # free space between a label and the port zones on either side of it
FIRST_LEVEL = 0.26  # height of the lowest arc above the node boxes
CORNER = 0.07  # corner radius of the arcs
EDGE_FONT, NODE_FONT, LABEL_PAD = 9.5, 12.0, 0.22  # LABEL_PAD: label box padding, in units of the font size


@functools.lru_cache(maxsize=256)
def _text_width_in(text: str, fontsize: float) -> float:
    """Width in inches of ``text`` at ``fontsize`` in the default font (no renderer needed)."""
    width, _, _ = text_to_path.get_text_width_height_descent(text, FontProperties(size=fontsize), ismath=False)
    return width / 72.0


def _label_size_in(text: str) -> tuple[float, float]:
    """Width and height in inches of an edge label with its box."""
    pad = 2 * LABEL_PAD * EDGE_FONT / 72.0 + 0.02
    return _text_width_in(text, EDGE_FONT) + pad, 1.15 * EDGE_FONT / 72.0 + pad


def _unit_inches(ops: Sequence[str]) -> float:
    """Inches per layout unit: the widest label must fit between the port zones of two neighbouring nodes."""
    widest = max((_label_size_in(op)[0] for op in ops), default=0.8)
    return max(1.2, widest / (1.0 - 2 * PORT_HALF - 2 * LABEL_MARGIN))


@dataclass
class _Arc:
    """One routed connection: up from ``src``, along at ``height``, down into ``dst`` (mirrored below the line).

    ``op`` is None for the concat bus into ``c_{k}``, whose further inputs ``taps`` join it from below.
    """

    src: int
    dst: int
    side: int  # +1 above the node line, -1 below
    op: str | None
    order: int  # index in the cell's (op, input) list; -1 for the concat bus
    taps: tuple[int, ...] = ()
    xa: float = 0.0
    xb: float = 0.0
    tap_x: dict[int, float] = field(default_factory=dict)
    level: int = 0
    height: float = 0.0
    label_x: float = 0.0

    def points(self) -> np.ndarray:
        """The route as a polyline in data coordinates, from ``src`` to ``dst``."""
        y0, h = NODE_H / 2, self.height
        r = min(CORNER, (self.xb - self.xa) / 2, h - y0)
        q = np.linspace(0.0, np.pi / 2, 8)
        up = np.column_stack([self.xa + r - r * np.cos(q), h - r + r * np.sin(q)])
        down = np.column_stack([self.xb - r + r * np.sin(q), h - r + r * np.cos(q)])
        pts = np.vstack([[self.xa, y0], up, down, [self.xb, y0]])
        return pts * np.array([1.0, self.side])


def _check_cell(cell: Sequence[tuple[str, int]], concat: Sequence[int], name: str) -> int:
    """Validate one cell and return its number of intermediate nodes."""
    if len(cell) < 2 or len(cell) % 2:
        raise ValueError(f"{name} cell: need two (op, input) pairs per node, got {len(cell)} pairs")
    steps = len(cell) // 2
    for k, (op, inp) in enumerate(cell):
        node = k // 2
        if not 0 <= int(inp) < node + 2:
            raise ValueError(f"{name} cell: edge {k} ({op!r}) of node {node} reads input {inp}, valid: 0..{node + 1}")
    for c in concat:
        if not 2 <= int(c) < steps + 2:
            raise ValueError(f"{name} cell: concat index {c} is not an intermediate node (2..{steps + 1})")
    return steps


def _layout_cell(cell: Sequence[tuple[str, int]], concat: Sequence[int], unit_in: float) -> list[_Arc]:
    """Route the arcs of one cell so that no label is crossed by an arc or touches another label.

    Node ``j`` (0 = ``c_{k-2}``, 1 = ``c_{k-1}``, 2.. = intermediate nodes, ``steps + 2`` = ``c_{k}``) sits at
    ``x = j``. Edges from ``c_{k-2}`` run below the node line, all other edges above; the concat bus into ``c_{k}``
    runs on the side with fewer edges. Arcs leave and enter nodes vertically inside the nodes' port zones, ordered so
    that nested arcs do not cross there; each arc gets the lowest level above every arc nested in it that no other
    arc on that level overlaps; its label sits on its horizontal run, centred in a gap between two nodes. A gap holds
    only horizontal runs (one per level) and the unit is wide enough for a label to fit in it, so labels never collide.
    """
    steps = len(cell) // 2
    out = steps + 2
    arcs = [_Arc(int(inp), k // 2 + 2, -1 if int(inp) == 0 else 1, op, k) for k, (op, inp) in enumerate(cell)]
    if concat:
        nodes = sorted({int(c) for c in concat})
        n_below = sum(a.side < 0 for a in arcs)
        side = -1 if n_below <= len(arcs) - n_below else 1
        arcs.append(_Arc(nodes[0], out, side, None, -1, taps=tuple(nodes[1:])))

    # Ports: at each node side, arcs arriving from the left first (inner ones outermost left), then arcs leaving to the
    # right (outer ones first); for arcs between the same pair of nodes, the earlier one is outer.
    ends: dict[tuple[int, int], list[tuple[tuple[bool, int, int], _Arc, int]]] = {}
    for a in arcs:
        ends.setdefault((a.src, a.side), []).append(((True, -a.dst, a.order), a, a.src))
        ends.setdefault((a.dst, a.side), []).append(((False, -a.src, -a.order), a, a.dst))
        for t in a.taps:
            ends.setdefault((t, a.side), []).append(((True, -a.dst, a.order), a, t))
    for (node, _), items in ends.items():
        items.sort(key=lambda it: it[0])
        offsets = np.linspace(-PORT_HALF, PORT_HALF, len(items)) if len(items) > 1 else np.zeros(1)
        for off, (_, a, at) in zip(offsets, items, strict=True):
            x = node + float(off)
            if at == a.dst and at != a.src:
                a.xb = x
            elif at == a.src:
                a.xa = x
            else:
                a.tap_x[at] = x

    label_h = max(_label_size_in(a.op)[1] for a in arcs if a.op) / unit_in
    step = label_h + 0.07
    for side in (1, -1):
        placed: list[_Arc] = []
        gap_use: dict[int, int] = {}
        for a in sorted((a for a in arcs if a.side == side), key=lambda a: (a.xb - a.xa, a.xa)):
            nested = [p.level for p in placed if a.xa <= p.xa and p.xb <= a.xb]
            level = max(nested, default=0) + 1
            while any(p.level == level and p.xa - 0.05 < a.xb and a.xa < p.xb + 0.05 for p in placed):
                level += 1
            a.level, a.height = level, NODE_H / 2 + FIRST_LEVEL + (level - 1) * step
            if a.op:
                mid = (a.src + a.dst) / 2
                j = min(range(a.src, a.dst), key=lambda j: (abs(j + 0.5 - mid), gap_use.get(j, 0), -j))
                gap_use[j] = gap_use.get(j, 0) + 1
                a.label_x = j + 0.5
            placed.append(a)
    return arcs


def _draw_cell(ax: Axes, cell: Sequence[tuple[str, int]], concat: Sequence[int], *, name: str = "normal",
               unit_in: float | None = None) -> list[Text]:
    """Draw one cell as an arc diagram on ``ax``.

    Args:
        ax: The axes to draw on (its limits and equal aspect are set, its frame is switched off).
        cell: The cell's ``(op, input)`` pairs, two per intermediate node.
        concat: The node indices (2 = first intermediate node) concatenated into ``c_{k}``.
        name: Cell name for the subtitle (``normal``, ``reduction``).
        unit_in: Inches between neighbouring nodes; chosen from the op names when None. The layout keeps labels
            apart only when the figure gives the axes ``unit_in`` inches per data unit (as ``plot_genotype`` does).

    Returns:
        The op label artists, one per ``(op, input)`` pair, in the cell's order.
    """
    steps = _check_cell(cell, concat, name)
    unit_in = unit_in or _unit_inches([op for op, _ in cell])
    arcs = _layout_cell(cell, concat, unit_in)
    out = steps + 2

    names = [r"$c_{k-2}$", r"$c_{k-1}$", *[str(i) for i in range(steps)], r"$c_{k}$"]
    fills = ["#d3f9d8", "#d3f9d8", *["#e7f5ff"] * steps, "#fff3bf"]
    for j, (label, fill) in enumerate(zip(names, fills, strict=True)):
        ax.add_patch(FancyBboxPatch((j - NODE_W / 2, -NODE_H / 2), NODE_W, NODE_H,
                                    boxstyle="round,pad=0,rounding_size=0.06", facecolor=fill, edgecolor="#343a40",
                                    linewidth=1.3, zorder=4))
        ax.text(j, 0, label, ha="center", va="center", fontsize=NODE_FONT, zorder=5, color="#212529")

    texts: dict[int, Text] = {}
    for a in arcs:
        pts = a.points()
        if a.op is None:  # the concat bus: dashed, with a junction dot where each further node joins it
            style = {"color": CONCAT_COLOR, "linewidth": 1.2, "linestyle": (0, (4, 2))}
            ax.add_patch(FancyArrowPatch(path=MplPath(pts), arrowstyle="-|>", mutation_scale=11, shrinkA=0, shrinkB=0,
                                         zorder=1, **style))
            for x in a.tap_x.values():
                ax.add_line(Line2D([x, x], [a.side * NODE_H / 2, a.side * a.height], zorder=1, **style))
                ax.add_line(Line2D([x], [a.side * a.height], marker="o", markersize=3.5, color=CONCAT_COLOR,
                                   zorder=1))
            continue
        color = PARAM_FREE_COLOR if a.op in PARAMETER_FREE_OPS else CONV_COLOR
        ax.add_patch(FancyArrowPatch(path=MplPath(pts), arrowstyle="-|>", mutation_scale=13, color=color,
                                     linewidth=1.7, shrinkA=0, shrinkB=0, zorder=2))
        texts[a.order] = ax.text(a.label_x, a.side * a.height, a.op, ha="center", va="center", fontsize=EDGE_FONT,
                                 color=color, zorder=6,
                                 bbox={"boxstyle": f"round,pad={LABEL_PAD}", "facecolor": "white", "edgecolor": color,
                                       "linewidth": 0.9})

    label_h = _label_size_in("Ag")[1] / unit_in
    top = max([a.height for a in arcs if a.side > 0], default=NODE_H / 2)
    bottom = max([a.height for a in arcs if a.side < 0], default=NODE_H / 2)
    ax.set_xlim(-0.5, out + 0.5)
    ax.set_ylim(-bottom - label_h / 2 - 0.06, top + label_h / 2 + 0.06)
    ax.set_aspect("equal", adjustable="box")
    ax.axis("off")

    n_free = sum(op in PARAMETER_FREE_OPS for op, _ in cell)
    nodes = ", ".join(str(int(c) - 2) for c in concat)
    ax.set_title(f"{name} cell  ·  parameter-free ops: {n_free}/{len(cell)} ({100 * n_free / len(cell):.0f}%)"
                 f"  ·  $c_{{k}}$ = concat({nodes})", fontsize=11.5, loc="left", pad=8)
    return [texts[k] for k in range(len(cell))]


def _genotype_figure(genotype: Genotype, title: str | None = None) -> tuple[Figure, list[list[Text]]]:
    """The figure of :func:`plot_genotype` and the op label artists of its two panels (normal, reduction)."""
    cells = (("normal", genotype.normal, genotype.normal_concat),
             ("reduction", genotype.reduce, genotype.reduce_concat))
    for name, cell, concat in cells:
        _check_cell(cell, concat, name)
    unit_in = _unit_inches(genotype.ops())

    fig = Figure(dpi=DPI)
    FigureCanvasAgg(fig)
    axes = [fig.add_axes((0.0, 0.0, 1.0, 1.0)) for _ in cells]
    labels = [_draw_cell(ax, cell, concat, name=name, unit_in=unit_in)
              for ax, (name, cell, concat) in zip(axes, cells, strict=True)]

    # Size the figure so that one data unit is unit_in inches in both panels.
    margin, head, sub, gap = 0.2, 0.55, 0.4, 0.3
    sizes = [(float(np.ptp(ax.get_xlim())) * unit_in, float(np.ptp(ax.get_ylim())) * unit_in) for ax in axes]
    width = max(w for w, _ in sizes) + 2 * margin
    height = head + sum(h + sub for _, h in sizes) + gap * (len(sizes) - 1) + margin
    fig.set_size_inches(width, height)
    top = height - head
    for ax, (w, h) in zip(axes, sizes, strict=True):
        top -= sub
        ax.set_position(((width - w) / 2 / width, (top - h) / height, w / width, h / height))
        top -= h + gap

    y = 1 - 0.3 / height
    fig.text(margin / width, y, title or "Genotype", fontsize=14, fontweight="bold", va="center")
    fig.legend(handles=[Patch(color=CONV_COLOR, label="op with weights"),
                        Patch(color=PARAM_FREE_COLOR, label="parameter-free op"),
                        Line2D([], [], color=CONCAT_COLOR, linestyle=(0, (4, 2)), label=r"concat into $c_{k}$")],
               loc="center right", bbox_to_anchor=(1 - margin / width, y), ncol=3, fontsize=10, frameon=False,
               handlelength=1.6, borderaxespad=0.0, columnspacing=1.4)
    return fig, labels


def plot_genotype(genotype: Genotype, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Draw the normal and the reduction cell of ``genotype`` to a PNG.

    Each cell is an arc diagram: its nodes on a line (inputs ``c_{k-2}``, ``c_{k-1}``, intermediate nodes
    ``0 .. n-1``, output ``c_{k}``), one arrow per ``(op, input)`` pair from the input into its node, labelled with the
    op (edges from ``c_{k-2}`` below the line, all others above), and a dashed grey bus from the concatenated nodes
    into ``c_{k}``. Parameter-free ops (skip, pooling, none, noise) have another colour than ops with weights; each
    panel's subtitle gives their share.

    Args:
        genotype: The architecture to draw (any number of intermediate nodes).
        path: Target PNG; parent folders are created and the file is replaced atomically.
        title: Figure title; ``"Genotype"`` when None.

    Returns:
        The path written.

    Raises:
        ValueError: for a cell with an odd number of pairs, an input index its node cannot read, or a concat index
            that is not an intermediate node.
    """
    fig, _ = _genotype_figure(genotype, title)
    return save_atomic(fig, path)
