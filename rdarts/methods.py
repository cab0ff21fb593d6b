"""Method labels: which column of the paper's tables a search belongs to, derived from the settings of a sweep.

Zela et al. (ICLR 2020) report, per space and dataset:

- ``DARTS``: a plain search (early stopping off) with the reference's regularisation, L2 = 3e-4 and no drop path;
- ``DARTS-ES`` and ``DARTS-ADA``: the same with early stopping (``es``) or adaptive regularisation (``ada``);
- ``R-DARTS(L2)``: the searches of a weight-decay grid (two or more values, drop path 0, everything else equal);
- ``R-DARTS(DP)``: the searches of a drop-path grid (two or more values at the reference's L2).

A search with another ``method`` (``rdarts.robust``) is that method's: ``SDARTS-RS``, ``SDARTS-ADV``, ``DARTS-``,
``β-DARTS``, ``PC-DARTS`` (with ``+ES`` / ``+ADA`` when early stopping is on), never plain DARTS nor a member of an
R-DARTS grid; like DARTS, each reports mean ± std over its searches.

The first three report mean ± std over the searches, each architecture retrained; the R-DARTS methods report the
one architecture that validation picks among the grid (``SELECTION_METHODS``). One search can belong to two methods:
the wd = 3e-4 search of an L2 grid is a DARTS search and a member of the grid.

A search that fits none of these is labelled by its departures from the reference (``DARTS-ES(wd=0.0009)``), and
when one label would pool searches that differ in anything but the seed and the regularisation of a grid, each
gets the differing settings appended (``DARTS(augment=False)`` beside ``DARTS(augment=True)``). A sweep file can
name the method of all its searches instead (``method_label:``).

Pure Python over ``SearchConfig.to_dict()`` dictionaries: the sweep file, the Tune trials, the reducer and the
tests all call ``method_labels``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from rdarts.config import SearchConfig

DARTS, DARTS_ES, DARTS_ADA = "DARTS", "DARTS-ES", "DARTS-ADA"
ROBUST_LABELS = {"sdarts-rs": "SDARTS-RS", "sdarts-adv": "SDARTS-ADV", "darts-minus": "DARTS-",
                 "beta-darts": "β-DARTS", "pc-darts": "PC-DARTS"}
"""The label of each robust-DARTS ``method`` (``rdarts.config.METHODS`` but ``darts``)."""
STOP_SUFFIX = {"es": "+ES", "ada": "+ADA"}
RDARTS_L2, RDARTS_DP = "R-DARTS(L2)", "R-DARTS(DP)"
SELECTION_METHODS = frozenset({RDARTS_L2, RDARTS_DP})
"""Methods that retrain one architecture, picked by validation among their searches; the others retrain every
search's architecture."""
BASE_BY_MODE = {"off": DARTS, "es": DARTS_ES, "ada": DARTS_ADA}
SEPARATOR = ", "
"""Between the labels of a search that belongs to several methods (``DARTS, R-DARTS(L2)``)."""

_REFERENCE = SearchConfig()
REFERENCE_WEIGHT_DECAY = _REFERENCE.weight_decay
REFERENCE_DROP_PATH = _REFERENCE.drop_path
# Settings that never tell methods apart: labels, where data and compute live, the seed (repeats of one setting).
_NEUTRAL = frozenset({"seed", "extra", "device", "data_root", "download"})
# What a grid of R-DARTS varies (cutout follows drop path in the reference), and what early stopping alone reads.
_REGULARISATION = frozenset({"weight_decay", "drop_path", "cutout"})
_STOPPING = frozenset({"early_stop", "es_window", "es_delta", "es_factor", "es_start_epoch", "ada_mul_factor",
                       "ada_max_weight_decay"})


def _same(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-15)


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _context(s: Mapping[str, Any]) -> str:
    """Everything a grid of R-DARTS keeps equal, as one comparable text."""
    keep = {k: v for k, v in s.items() if k not in _NEUTRAL | _REGULARISATION | _STOPPING}
    return json.dumps(keep, sort_keys=True, default=str)


def _is_reference_l2(s: Mapping[str, Any]) -> bool:
    return _same(s["weight_decay"], REFERENCE_WEIGHT_DECAY)


def _departures(s: Mapping[str, Any]) -> list[str]:
    """The regularisation settings of a search that differ from the reference's, as ``key=value``."""
    out = []
    if not _is_reference_l2(s):
        out.append(f"wd={_fmt(s['weight_decay'])}")
    if not _same(s["drop_path"], REFERENCE_DROP_PATH):
        out.append(f"dp={_fmt(s['drop_path'])}")
    if s.get("cutout") is not None and s["cutout"] != (s["drop_path"] > 0):
        out.append(f"cutout={s['cutout']}")
    return out


def _base_label(s: Mapping[str, Any]) -> str:
    method = str(s.get("method", "darts"))
    if method != "darts":
        base = ROBUST_LABELS.get(method, method) + STOP_SUFFIX.get(str(s["early_stop"]), "")
    else:
        base = BASE_BY_MODE.get(str(s["early_stop"]), str(s["early_stop"]))
    dep = _departures(s)
    return f"{base}({','.join(dep)})" if dep else base


def _grid_members(settings: Sequence[Mapping[str, Any]]) -> list[set[str]]:
    """R-DARTS(L2) / R-DARTS(DP) membership of each search (plain searches of a regularisation grid)."""
    members: list[set[str]] = [set() for _ in settings]
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(settings):
        if s["early_stop"] == "off" and s.get("method", "darts") == "darts":  # the grids are RobustDARTS' own
            groups.setdefault(_context(s), []).append(i)
    for idx in groups.values():
        l2 = [i for i in idx if _same(settings[i]["drop_path"], 0.0) and settings[i].get("cutout") in (None, False)]
        if len({float(settings[i]["weight_decay"]) for i in l2}) >= 2:
            for i in l2:
                members[i].add(RDARTS_L2)
        dp = [i for i in idx if _is_reference_l2(settings[i]) and settings[i].get("cutout") is None]
        if len({float(settings[i]["drop_path"]) for i in dp}) >= 2:
            for i in dp:
                members[i].add(RDARTS_DP)
    return members


def _disambiguate(settings: Sequence[Mapping[str, Any]], labels: list[list[str]]) -> list[list[str]]:
    """Append the settings that differ between searches sharing a label (other than seeds and grid values)."""
    cell = ("space", "dataset", "order")
    by_label: dict[tuple[Any, ...], list[tuple[int, int]]] = {}  # (cell..., label) -> [(search, label position)]
    for i, ls in enumerate(labels):
        for j, label in enumerate(ls):
            by_label.setdefault((*(settings[i].get(c) for c in cell), label), []).append((i, j))
    out = [list(ls) for ls in labels]
    for key, entries in by_label.items():
        label, idx = key[-1], sorted({i for i, _ in entries})
        ignore = _NEUTRAL | _REGULARISATION | set(cell) | (_STOPPING if label in SELECTION_METHODS else set())
        differ = sorted(k for k in settings[idx[0]] if k not in ignore
                        and len({json.dumps(settings[i].get(k), sort_keys=True, default=str) for i in idx}) > 1)
        for i, j in entries if differ else ():
            extra = ",".join(f"{k}={_fmt(settings[i].get(k))}" for k in differ)
            out[i][j] = f"{label[:-1]},{extra})" if label.endswith(")") else f"{label}({extra})"
    return out


def method_labels(settings: Sequence[Mapping[str, Any]], user_label: str | None = None) -> list[list[str]]:
    """The method labels of each search of a sweep (see the module docstring), in the order given.

    Args:
        settings: ``SearchConfig.to_dict()`` of every search of the sweep (the grid is read off them).
        user_label: The sweep file's ``method_label``: every search gets it instead.
    """
    if user_label is not None:
        return [[user_label] for _ in settings]
    defaults = _REFERENCE.to_dict()
    settings = [{**defaults, **s} for s in settings]  # a partial record reads as the reference's settings
    members = _grid_members(settings)
    labels: list[list[str]] = []
    for s, grid in zip(settings, members, strict=True):
        base = _base_label(s)
        own = [base] if base == DARTS or s["early_stop"] != "off" or not grid else []
        labels.append(own + sorted(grid))
    return _disambiguate(settings, labels)


def join_labels(labels: Sequence[str]) -> str:
    """The labels of one search as one text (results.csv, MLflow tags, the Tune table)."""
    return SEPARATOR.join(labels)


def split_labels(text: str) -> list[str]:
    """``join_labels``'s inverse."""
    return [t for t in (p.strip() for p in str(text).split(SEPARATOR)) if t]
