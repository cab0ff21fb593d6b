"""Tests of rdarts.plots: the eigenvalue curve and the cell diagram PNGs (CPU, Agg, no pyplot)."""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rdarts.plots import cells, eigenvalues
from rdarts.plots import common as plot_common
from rdarts.spaces import PARAMETER_FREE_OPS, Genotype

DARTS_V2 = Genotype(
    normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)),
    reduce_concat=(2, 3, 4, 5),
)

TWO_NODES = Genotype(
    normal=(("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 2), ("none", 0)),
    normal_concat=(2, 3),
    reduce=(("avg_pool_3x3", 1), ("max_pool_3x3", 0), ("skip_connect", 2), ("sep_conv_5x5", 1)),
    reduce_concat=(2, 3),
)

_OPS = ("sep_conv_3x3", "skip_connect", "max_pool_3x3", "dil_conv_5x5", "conv_7x1_1x7", "noise", "avg_pool_3x3")


def _dense_cell(steps: int, shift: int) -> tuple[tuple[str, int], ...]:
    """A deterministic cell whose nodes read their two farthest-apart inputs (long, nested, crossing arcs)."""
    ops = itertools.cycle(_OPS[shift:] + _OPS[:shift])
    return tuple(pair for i in range(steps) for pair in ((next(ops), 0 if i % 2 else 1), (next(ops), i + 1)))


def _genotype(steps: int) -> Genotype:
    concat = tuple(range(2, steps + 2))
    return Genotype(_dense_cell(steps, 0), concat, _dense_cell(steps, 3), concat)


def _read_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(path)


def _assert_good_png(path: Path, min_w: int = 400, min_h: int = 200) -> np.ndarray:
    assert path.is_file()
    img = _read_png(path)
    h, w = img.shape[:2]
    assert min_w <= w <= 4000 and min_h <= h <= 4000, img.shape
    assert float(np.var(img[..., :3])) > 0.0  # not blank
    assert path.stat().st_mode & 0o044, "the PNG must be readable by others"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temporary file left behind"
    return img


# ---------------------------------------------------------------------------------------------------------------------
# Cell diagram
# ---------------------------------------------------------------------------------------------------------------------


def test_plot_genotype_darts_v2(tmp_path: Path) -> None:
    target = tmp_path / "new" / "dir" / "genotype.png"
    out = cells.plot_genotype(DARTS_V2, target, title="DARTS_V2")
    assert out == target
    img = _assert_good_png(target, min_w=800, min_h=500)
    # Both op colours are present: conv (blue) and parameter-free (orange) edges.
    rgb = (img[..., :3] * 255).round().astype(int).reshape(-1, 3)
    for hex_color in (cells.CONV_COLOR, cells.PARAM_FREE_COLOR):
        ref = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(rgb - ref).sum(axis=1) < 30).sum() > 200, hex_color


def test_plot_genotype_two_nodes(tmp_path: Path) -> None:
    out = cells.plot_genotype(TWO_NODES, str(tmp_path / "two.png"))
    assert out == tmp_path / "two.png"
    _assert_good_png(out)


def test_plot_genotype_replaces_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "g.png"
    target.write_bytes(b"stale")
    cells.plot_genotype(TWO_NODES, target)
    _assert_good_png(target)


@pytest.mark.parametrize("genotype", [DARTS_V2, TWO_NODES], ids=["darts_v2", "two_nodes"])
def test_one_label_per_edge_in_order(genotype: Genotype) -> None:
    fig, labels = cells._genotype_figure(genotype)
    assert [[t.get_text() for t in cell] for cell in labels] == [[op for op, _ in genotype.normal],
                                                                 [op for op, _ in genotype.reduce]]
    # No other text in the panels looks like an op label.
    ops = set(genotype.ops())
    for ax, cell_labels in zip(fig.axes, labels, strict=True):
        drawn = sorted(t.get_text() for t in ax.texts if t.get_text() in ops)
        assert drawn == sorted(t.get_text() for t in cell_labels)
    for cell_labels in labels:
        for t in cell_labels:
            expected = cells.PARAM_FREE_COLOR if t.get_text() in PARAMETER_FREE_OPS else cells.CONV_COLOR
            assert t.get_color() == expected, t.get_text()


def test_draw_cell_returns_the_edge_labels() -> None:
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    texts = cells._draw_cell(ax, TWO_NODES.reduce, TWO_NODES.reduce_concat, name="reduction")
    assert [t.get_text() for t in texts] == ["avg_pool_3x3", "max_pool_3x3", "skip_connect", "sep_conv_5x5"]
    assert all(t.axes is ax for t in texts)
    assert "parameter-free ops: 3/4 (75%)" in ax.get_title(loc="left")
    node_names = {t.get_text() for t in ax.texts} - {t.get_text() for t in texts}
    assert node_names == {r"$c_{k-2}$", r"$c_{k-1}$", "0", "1", r"$c_{k}$"}


@pytest.mark.parametrize("steps", [2, 3, 4, 5, 6])
def test_labels_do_not_overlap(steps: int) -> None:
    genotypes = [_genotype(steps)] + ([DARTS_V2] if steps == 4 else [])
    for genotype in genotypes:
        fig, labels = cells._genotype_figure(genotype)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()  # places the label boxes
        renderer = canvas.get_renderer()
        for ax, cell_labels in zip(fig.axes, labels, strict=True):
            assert len(cell_labels) == 2 * steps
            boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in cell_labels]
            for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2):
                assert not a.overlaps(b), (steps, cell_labels[i].get_text(), cell_labels[j].get_text())
            nodes = [p.get_window_extent(renderer) for p in ax.patches if type(p).__name__ == "FancyBboxPatch"]
            assert len(nodes) == steps + 3
            assert not any(a.overlaps(n) for a in boxes for n in nodes)
            # Everything stays inside the figure.
            fig_box = fig.bbox
            assert all(fig_box.x0 <= a.x0 and a.x1 <= fig_box.x1 and fig_box.y0 <= a.y0 and a.y1 <= fig_box.y1
                       for a in boxes)


def test_same_input_twice_is_drawn_twice(tmp_path: Path) -> None:
    g = Genotype((("sep_conv_3x3", 0), ("skip_connect", 0), ("none", 2), ("noise", 2)), (2, 3),
                 (("max_pool_3x3", 1), ("dil_conv_3x3", 1), ("avg_pool_3x3", 0), ("sep_conv_7x7", 1)), (3,))
    fig, labels = cells._genotype_figure(g)
    assert [t.get_text() for t in labels[0]] == ["sep_conv_3x3", "skip_connect", "none", "noise"]
    for cell in labels:
        positions = [t.get_position() for t in cell]
        assert len(set(positions)) == len(positions)
    _assert_good_png(cells.plot_genotype(g, tmp_path / "dup.png"))


@pytest.mark.parametrize("bad", [
    {"normal": (("sep_conv_3x3", 0), ("skip_connect", 2)), "normal_concat": (2,)},  # node 0 cannot read node 0
    {"normal": (("sep_conv_3x3", 0),), "normal_concat": (2,)},  # odd number of pairs
    {"normal": (("sep_conv_3x3", 0), ("skip_connect", 1)), "normal_concat": (1,)},  # concat of an input
])
def test_invalid_genotype_raises(tmp_path: Path, bad: dict) -> None:
    g = Genotype(**{"reduce": TWO_NODES.reduce[:2], "reduce_concat": (2,), **bad})
    with pytest.raises(ValueError, match="normal cell"):
        cells.plot_genotype(g, tmp_path / "bad.png")
    assert not list(tmp_path.iterdir())


def test_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        cells.plot_genotype(TWO_NODES, tmp_path / "g.png")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------------------------
# Eigenvalue curve
# ---------------------------------------------------------------------------------------------------------------------


def _record(epoch: int, ada_round: int, eig: float, wd: float, event: str = "", stop: int = -1) -> dict:
    return {"epoch": epoch, "ada_round": ada_round, "dominant_eigenvalue": eig,
            "eigenvalue_local_avg": eig * 0.9 if math.isfinite(eig) and epoch >= 4 else math.nan,
            "eigenvalue_ratio": 1.0 + epoch / 40 if epoch >= 8 else math.nan, "valid_acc": 50.0 + epoch,
            "event": event, "target_epoch": stop, "weight_decay": wd, "param_free_share": 0.25}


def _ada_records() -> list[dict]:
    """Round 0 (eigenvalue every 2nd epoch) rolls back at epoch 14 to 10; round 1 stops by ES at 19, keeping 15."""
    recs = [_record(e, 0, 0.05 * 1.2**e if e % 2 == 0 else math.nan, 3e-4) for e in range(15)]
    recs[-1].update(event="ada_rollback", target_epoch=10)
    recs += [_record(e, 1, 0.3 + 0.01 * e if e % 2 == 1 else math.nan, 9e-4) for e in range(11, 20)]
    recs[-1].update(event="es_stop", target_epoch=15)
    return recs


def _legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_plot_eigenvalues_ada_rounds_and_events(tmp_path: Path) -> None:
    recs = _ada_records()
    out = eigenvalues.plot_eigenvalues(recs, tmp_path / "plots" / "eig.png", title="run 1")
    assert out == tmp_path / "plots" / "eig.png"
    _assert_good_png(out)

    fig = eigenvalues._eigen_figure(recs)
    ax = fig.axes[0]
    lines = {line.get_gid(): line for a in fig.axes for line in a.get_lines() if line.get_gid()}
    # NaN epochs are skipped, so the markers sit on the evaluated epochs only.
    assert list(lines["eigenvalue_round_0"].get_xdata()) == list(range(0, 15, 2))
    assert list(lines["eigenvalue_round_1"].get_xdata()) == list(range(11, 20, 2))
    assert lines["eigenvalue_round_0"].get_color() != lines["eigenvalue_round_1"].get_color()
    assert not np.isnan(np.asarray(lines["ratio_round_1"].get_ydata(), float)).any()
    assert "ratio_round_0" in lines and "local_avg_round_1" in lines
    texts = _legend_texts(fig)
    for expected in ("ADA round 0 (wd=3.0e-04)", "ADA round 1 (wd=9.0e-04)", "ES factor 1.3",
                     "ADA rollback detected (epoch 14)", "rolled back to epoch 10",
                     "ES stop detected (epoch 19)", "returned architecture (epoch 15)"):
        assert expected in texts, texts
    vlines = sorted(line.get_xdata()[0] for line in ax.get_lines() if list(line.get_xdata()) in ([14, 14], [19, 19]))
    assert vlines == [14, 19]
    stars = [line for line in ax.get_lines() if line.get_marker() == "*"]  # one: what the search returns
    assert [(line.get_xdata()[0], line.get_ydata()[0]) for line in stars] == [(15, pytest.approx(0.45))]
    crosses = [line for line in ax.get_lines() if line.get_marker() == "X"]  # each rollback's target
    assert [(line.get_xdata()[0], line.get_ydata()[0]) for line in crosses] == [(10, pytest.approx(0.05 * 1.2**10))]
    assert texts.count("local average") == 1 and not any(t.startswith("kept architecture") for t in texts)
    factor_lines = [line for line in fig.axes[1].get_lines() if list(line.get_ydata()) == [1.3, 1.3]]
    assert len(factor_lines) == 1


def test_plot_eigenvalues_single_round_and_custom_factor() -> None:
    recs = [_record(e, 0, 0.1 + 0.02 * e, 3e-4) for e in range(12)]
    recs[-1].update(event="ada_ignored", target_epoch=7)
    fig = eigenvalues._eigen_figure(recs, factor=None)
    texts = _legend_texts(fig)
    assert not any(t.startswith("ADA round") for t in texts)
    assert not any(t.startswith("ES factor") for t in texts)
    assert "ES trigger ignored at max wd (epoch 11)" in texts
    assert "returned architecture (epoch 11)" in texts  # ADA at max wd goes on: the last epoch is returned
    fig = eigenvalues._eigen_figure(recs, factor=1 / 0.75)
    assert "ES factor 1.33333" in _legend_texts(fig)


def test_plot_eigenvalues_without_eigenvalues(tmp_path: Path) -> None:
    recs = [_record(e, 0, math.nan, 3e-4) for e in range(3)]
    for records, name in ((recs, "nan.png"), ([], "empty.png"), ([{"epoch": 0, "event": None}], "sparse.png")):
        out = eigenvalues.plot_eigenvalues(records, tmp_path / name)
        _assert_good_png(out)
        fig = eigenvalues._eigen_figure(records)
        assert any("no eigenvalues yet" in t.get_text() for t in fig.axes[0].texts)
    texts = eigenvalues._eigen_figure(_ada_records()).axes[0].texts
    assert not any("no eigenvalues yet" in t.get_text() for t in texts)


def test_standard_errors_are_error_bars_and_listed_only_when_drawn() -> None:
    recs = [{**_record(e, 0, 0.1 + 0.01 * e, 3e-4), "eigenvalue_se": 0.005 if e % 2 == 0 else math.nan}
            for e in range(6)]
    fig = eigenvalues._eigen_figure(recs)
    bars = fig.axes[0].containers
    segments = [seg for c in bars for lc in c.lines[2] for seg in lc.get_segments()]
    assert sorted(float(seg[0][0]) for seg in segments) == [0.0, 2.0, 4.0]  # only where a standard error exists
    assert all(float(seg[1][1] - seg[0][1]) == pytest.approx(0.01) for seg in segments)  # ± one SE
    assert "± standard error over the batches" in _legend_texts(fig)
    assert "± standard error over the batches" not in _legend_texts(eigenvalues._eigen_figure(_ada_records()))


def test_plot_eigenvalues_reads_csv_like_values(tmp_path: Path) -> None:
    recs = [{k: ("" if isinstance(v, float) and math.isnan(v) else str(v)) for k, v in r.items()}
            for r in _ada_records()]
    fig = eigenvalues._eigen_figure(recs)
    assert "ADA round 1 (wd=9.0e-04)" in _legend_texts(fig)
    _assert_good_png(eigenvalues.plot_eigenvalues(recs, tmp_path / "csv.png"))


def test_imports_no_pyplot_ray_or_mlflow() -> None:
    modules: set[str] = set()
    for path in Path(plot_common.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        modules |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert "matplotlib.backends.backend_agg" in modules  # the test sees the imports at all
    banned = [m for m in modules if m == "matplotlib.pyplot" or m.split(".")[0] in ("ray", "mlflow", "pylab")]
    assert not banned
