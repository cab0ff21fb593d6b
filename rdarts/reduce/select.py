"""The R-DARTS selection rule, as pure functions of the ``collect`` table.

Per group (``cfg.space``, ``cfg.dataset``):

1. each trial returns one genotype: the stop epoch's for a trial DARTS-ES stopped (read from what the trial
   reported: ``search_status == "es_stopped"`` with ``result_epoch``, or the scheduler's ``scheduler_kept_epoch``),
   the last epoch's otherwise (DARTS-ADA: the last epoch of its last round);
2. identical genotypes are one candidate (at most ``max_candidates`` per group, the best by one-shot validation
   accuracy at the returned epoch, then by lower final λ_max);
3. every candidate is retrained briefly on the training split minus a held-out validation split, and the winner is
   the one with the best validation accuracy there -- never the test set (reference digest, section 4); ties go to
   the lower final λ_max of the searches that returned it, then to the candidate key, so the result is deterministic.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from rdarts import keys

GROUP = ("cfg.space", "cfg.dataset")
FAILED_STATUSES = ("error", "failed", "diverged", "no results", "running", "unknown")
"""Trial statuses (results.csv) with no returned genotype: crashed, failed, diverged, never reported, or
interrupted."""


@dataclass(frozen=True)
class Selection:
    returned: pd.DataFrame
    """One row per trial: ``trial``, the group keys, ``returned_epoch``, ``genotype`` (canonical JSON),
    ``search_valid_acc``, ``final_eigenvalue`` (the last λ_max), ``end_eigenvalue`` (the mean of the last two),
    ``candidate`` (its key) and ``stop_source``."""
    candidates: pd.DataFrame
    """One row per distinct genotype per group: ``candidate``, group keys, ``genotype``, ``trials`` (comma-separated),
    ``n_trials``, ``search_valid_acc`` (best), ``final_eigenvalue`` (lowest), ``rank`` (0 = best one-shot)."""
    winners: pd.DataFrame
    """One row per group once ``scores`` are given: ``candidate``, ``valid_acc`` and ``final_eigenvalue``."""
    skipped: list[str] = field(default_factory=list)
    """``trial: why`` for each trial without a genotype (failed, never reported)."""


def canonical(genotype_json: str) -> str:
    """One text per architecture (key order and spacing normalised)."""
    return json.dumps(json.loads(genotype_json), sort_keys=True, separators=(",", ":"))


def candidate_key(group: Sequence[Any], genotype_json: str) -> str:
    digest = hashlib.sha1(canonical(genotype_json).encode()).hexdigest()[:10]
    return "-".join(str(g) for g in group) + "-" + digest


def _num(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v


def returned_epoch(last: Mapping[str, Any], epochs: Sequence[int]) -> tuple[int, str]:
    """The epoch whose genotype a trial returns, from its last report, and where that came from."""
    if last.get(keys.SEARCH_STATUS) == "es_stopped" and _num(last.get(keys.RESULT_EPOCH)) >= 0:
        return int(last[keys.RESULT_EPOCH]), "search"
    if last.get(keys.SCHEDULER_ACTION) == "stop" and _num(last.get(keys.SCHEDULER_KEPT_EPOCH)) >= 0:
        return int(last[keys.SCHEDULER_KEPT_EPOCH]), "scheduler"
    return int(max(epochs)), "last"


def stopped_at(last: Mapping[str, Any], source: str) -> int:
    """The epoch after which DARTS-ES stopped the trial (-1 when it ran to the end): where the rule fired."""
    if source == "last":
        return -1
    answered = _num(last.get(keys.STOP_EPOCH))
    return int(answered) if source == "search" and answered >= 0 else int(last[keys.EPOCH])


def _trial_row(rows: pd.DataFrame, group: tuple[str, ...]) -> dict[str, Any] | str:
    status = str(rows["status"].iloc[-1]) if "status" in rows else ""
    rows = rows[rows["final_branch"]] if "final_branch" in rows else rows
    rows = rows[rows["epoch"].notna()].sort_values("epoch", kind="stable")
    if status in FAILED_STATUSES or rows.empty:
        return f"status {status or 'unknown'}, no genotype"
    last = rows.iloc[-1].to_dict()
    if "report" in rows:  # the last report (by report order) carries the stop information
        last = rows.sort_values("report").iloc[-1].to_dict()
    epoch, source = returned_epoch(last, [int(e) for e in rows["epoch"]])
    at = rows[rows["epoch"] == epoch]
    if at.empty:
        return f"returned epoch {epoch} was not reported"
    eig = rows["dominant_eigenvalue"].astype(float)
    eig = eig[eig.notna()]
    genotype = canonical(str(at["genotype"].iloc[-1]))
    keys = [rows[g].iloc[0] for g in group]
    return {"trial": rows["trial"].iloc[0], **dict(zip(group, keys, strict=True)),
            "returned_epoch": epoch, "stop_epoch": stopped_at(last, source), "stop_source": source,
            "genotype": genotype,
            "search_valid_acc": _num(at["valid_acc"].iloc[-1]),
            "final_eigenvalue": float(eig.iloc[-1]) if len(eig) else math.nan,
            "end_eigenvalue": float(eig.iloc[-2:].mean()) if len(eig) else math.nan,
            "candidate": candidate_key(keys, genotype)}


def returned_genotypes(frame: pd.DataFrame, group: tuple[str, ...] = GROUP) -> tuple[pd.DataFrame, list[str]]:
    """Each trial's returned genotype (see the module docstring) and the trials that returned none."""
    out, skipped = [], []
    for trial, rows in frame.groupby("trial", sort=False):
        row = _trial_row(rows, group)
        if isinstance(row, str):
            skipped.append(f"{trial}: {row}")
        else:
            out.append(row)
    cols = ["trial", *group, "returned_epoch", "stop_epoch", "stop_source", "genotype", "search_valid_acc",
            "final_eigenvalue", "end_eigenvalue", "candidate"]
    return pd.DataFrame(out, columns=cols), skipped


def distinct_candidates(returned: pd.DataFrame, group: tuple[str, ...] = GROUP,
                        max_candidates: int | None = None) -> pd.DataFrame:
    """Identical genotypes merged, ranked per group by one-shot validation accuracy, then by lower final λ_max."""
    rows = []
    for key, same in returned.groupby("candidate", sort=False):
        rows.append({"candidate": key, **{g: same[g].iloc[0] for g in group}, "genotype": same["genotype"].iloc[0],
                     "trials": ",".join(same["trial"]), "n_trials": len(same),
                     "search_valid_acc": same["search_valid_acc"].max(),
                     "final_eigenvalue": same["final_eigenvalue"].min()})
    cands = pd.DataFrame(rows, columns=["candidate", *group, "genotype", "trials", "n_trials", "search_valid_acc",
                                        "final_eigenvalue"])
    cands = cands.sort_values([*group, "search_valid_acc", "final_eigenvalue", "candidate"],
                              ascending=[True] * len(group) + [False, True, True], na_position="last", kind="stable")
    cands["rank"] = cands.groupby(list(group)).cumcount()
    if max_candidates is not None:
        cands = cands[cands["rank"] < max_candidates]
    return cands.reset_index(drop=True)


def pick_winner(rows: pd.DataFrame, score: str = "valid_acc") -> pd.Series | None:
    """The best ``score`` (NaN never wins); ties: lower ``final_eigenvalue``, then the candidate key."""
    rows = rows[rows[score].notna()]
    if rows.empty:
        return None
    ordered = rows.sort_values([score, "final_eigenvalue", "candidate"], ascending=[False, True, True],
                               na_position="last", kind="stable")
    return ordered.iloc[0]


def select(frame: pd.DataFrame, scores: Mapping[str, float] | None = None, *, group: tuple[str, ...] = GROUP,
           max_candidates: int | None = None) -> Selection:
    """The returned genotypes, the distinct candidates and, given ``scores`` (candidate key -> validation accuracy
    after the short retrain), the winner of each group."""
    returned, skipped = returned_genotypes(frame, group)
    cands = distinct_candidates(returned, group, max_candidates)
    winners = []
    if scores is not None:
        scored = cands.assign(valid_acc=[_num(scores.get(k)) for k in cands["candidate"]])
        for _, rows in scored.groupby(list(group), sort=True):
            best = pick_winner(rows)
            if best is not None:
                winners.append(best[["candidate", *group, "genotype", "trials", "valid_acc",
                                     "final_eigenvalue"]].to_dict())
    winner_cols = ["candidate", *group, "genotype", "trials", "valid_acc", "final_eigenvalue"]
    return Selection(returned, cands, pd.DataFrame(winners, columns=winner_cols), skipped)
