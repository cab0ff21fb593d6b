"""The reducer's MLflow logging: make the store hold exactly the runs a reduced sweep should have, idempotently.

Each run is found by its ``rdarts.key`` and compared with what it should hold (``RunSpec.fingerprint``):

- a complete run with the same fingerprint is kept as it is;
- a run the live logging of the sweep started (``rdarts.live``) is completed in place -- its missing parameters,
  metric points, artifacts and tags added -- so it keeps its id, its start time and its duration; if what it holds
  disagrees with the final results (a DARTS-ADA round that was rolled back left two values at one epoch), it is
  written anew with the same start and end times;
- a changed or half-written run is deleted and written anew (MLflow cannot replace a metric history or a parameter
  value). A changed (non-live) parent takes its children with it.

So ``rdarts reduce`` twice leaves the same runs, with one value per metric and step.
"""

from __future__ import annotations

import math
import time
from typing import Any

from rdarts.tracking import (
    COMPLETE,
    FINGERPRINT,
    KEY,
    LIVE,
    PARENT_TAG,
    RunSpec,
    TrackingUnavailable,
    check_reachable,
    children,
    client,
    experiment_id,
    find,
    is_current,
    is_http,
    param_text,
)


def _is_live(run: Any) -> bool:
    return run.data.tags.get(LIVE) == "true" and run.data.tags.get(COMPLETE) != "true"


def _write(cl: Any, exp_id: str, spec: RunSpec, parent_id: str | None, like: Any = None, *,
           complete: bool = True) -> str:
    """Create the run of ``spec`` (with the start and end times of ``like``, the run it replaces, if any)."""
    tags = {**spec.tags, KEY: spec.key}
    if parent_id is not None:
        tags[PARENT_TAG] = parent_id
    start = like.info.start_time if like is not None else None
    run = cl.create_run(exp_id, run_name=spec.name, tags=tags, start_time=start)
    rid = str(run.info.run_id)
    _add(cl, rid, spec, params=spec.params, points={k: list(v) for k, v in spec.metrics.items()})
    if complete:
        _mark_complete(cl, rid, spec)
    end = like.info.end_time if like is not None and like.info.end_time else None
    cl.set_terminated(rid, end_time=end)
    return rid


def _add(cl: Any, rid: str, spec: RunSpec, *, params: dict[str, Any], points: dict[str, list[tuple[int, float]]]
         ) -> None:
    from mlflow.entities import Metric, Param, RunTag

    plist = [Param(k, param_text(v)) for k, v in sorted(params.items())]
    for i in range(0, len(plist), 100):
        cl.log_batch(rid, params=plist[i:i + 100])
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, int(s)) for k, pts in sorted(points.items()) for s, v in pts
               if math.isfinite(float(v))]
    for i in range(0, len(metrics), 1000):
        cl.log_batch(rid, metrics=metrics[i:i + 1000])
    for path, folder in spec.artifacts:
        if path.is_file():
            cl.log_artifact(rid, str(path), folder)
    tags = [RunTag(k, v) for k, v in sorted(spec.tags.items())]
    if tags:
        cl.log_batch(rid, tags=tags)


def _mark_complete(cl: Any, rid: str, spec: RunSpec) -> None:
    from mlflow.entities import RunTag

    cl.log_batch(rid, tags=[RunTag(FINGERPRINT, spec.fingerprint()), RunTag(COMPLETE, "true")])


def _missing(cl: Any, run: Any, spec: RunSpec) -> tuple[dict[str, Any], dict[str, list[tuple[int, float]]]] | None:
    """What a live run lacks of ``spec`` (parameters, metric points), or None when it holds something else."""
    rid, have = run.info.run_id, run.data.params
    params = {k: v for k, v in spec.params.items() if k not in have}
    if any(have[k] != param_text(v) for k, v in spec.params.items() if k in have):
        return None
    points: dict[str, list[tuple[int, float]]] = {}
    for name, pts in spec.metrics.items():
        wanted = {int(s): float(v) for s, v in pts if math.isfinite(float(v))}
        logged: dict[int, list[float]] = {}
        for m in cl.get_metric_history(rid, name):
            logged.setdefault(int(m.step), []).append(float(m.value))
        if set(logged) - set(wanted) or any(len(v) > 1 or not math.isclose(v[0], wanted[s], rel_tol=1e-9,
                                                                              abs_tol=1e-12)
                                             for s, v in logged.items()):
            return None  # a rolled-back round, or another run's values: not this history
        points[name] = [(s, v) for s, v in sorted(wanted.items()) if s not in logged]
    return params, points


def _complete_live(cl: Any, run: Any, spec: RunSpec) -> bool:
    """Complete a live run in place; False when it holds something else (then it is written anew)."""
    missing = _missing(cl, run, spec)
    if missing is None:
        return False
    rid = str(run.info.run_id)
    _add(cl, rid, spec, params=missing[0], points=missing[1])
    _mark_complete(cl, rid, spec)
    if run.info.status == "RUNNING":  # the sweep's driver died before it could end the run
        cl.set_terminated(rid)
    return True


def log_runs(uri: str, experiment_name: str, parent: RunSpec, runs: list[RunSpec], *,
             artifact_location: str | None = None) -> dict[str, int]:
    """Make the tracking store hold ``parent`` and exactly ``runs`` under it; returns counts of runs ``written``,
    ``completed`` (live runs filled in), ``kept`` (unchanged) and ``deleted``.

    Raises:
        TrackingUnavailable: if the server cannot be reached or fails while logging.
    """
    check_reachable(uri)
    try:
        return _log_runs(client(uri), experiment_name, parent, runs, artifact_location)
    except TrackingUnavailable:
        raise
    except Exception as e:  # MlflowException, requests' ConnectionError, ...: the store failed mid-way
        if is_http(uri) and _unreachable(uri):
            raise TrackingUnavailable(f"the MLflow server at {uri} went away while logging ({type(e).__name__})") from e
        raise


def _unreachable(uri: str) -> bool:
    try:
        check_reachable(uri, timeout=2.0)
    except TrackingUnavailable:
        return True
    return False


def _log_runs(cl: Any, experiment_name: str, parent: RunSpec, runs: list[RunSpec],
              artifact_location: str | None) -> dict[str, int]:
    exp_id = experiment_id(cl, experiment_name, artifact_location)
    counts = {"written": 0, "completed": 0, "kept": 0, "deleted": 0}

    def delete(run: Any) -> None:
        cl.delete_run(run.info.run_id)
        counts["deleted"] += 1

    found = [r for r in find(cl, exp_id, parent.key) if PARENT_TAG not in r.data.tags]
    current = [r for r in found if is_current(r, parent)]
    live = [r for r in found if _is_live(r) and _missing(cl, r, parent) is not None]
    keep = (current or live)[:1]
    for run in found:
        if run not in keep:  # changed or half-written: the parent and all its children go
            for child in children(cl, exp_id, run.info.run_id):
                delete(child)
            delete(run)
    if keep:
        parent_id = keep[0].info.run_id
    else:  # written incomplete first (no COMPLETE tag): an interruption leaves it marked for rewriting
        parent_id = _write(cl, exp_id, parent, None, complete=False)
        counts["written"] += 1
    existing: dict[str, list[Any]] = {}
    for run in children(cl, exp_id, parent_id):
        existing.setdefault(run.data.tags.get(KEY, ""), []).append(run)
    for spec in runs:
        same = existing.pop(spec.key, [])
        if len(same) == 1 and is_current(same[0], spec):
            counts["kept"] += 1
        elif len(same) == 1 and _is_live(same[0]) and _complete_live(cl, same[0], spec):
            counts["completed"] += 1
        else:
            for run in same:
                delete(run)
            _write(cl, exp_id, spec, parent_id, same[0] if same else None)
            counts["written"] += 1
    for stale in existing.values():  # children of an older reduce that are no longer produced
        for run in stale:
            delete(run)
    if current:
        counts["kept"] += 1
    elif live and _complete_live(cl, live[0], parent):
        counts["completed"] += 1
    else:
        _mark_complete(cl, parent_id, parent)
    return counts
