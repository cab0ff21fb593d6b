"""Idempotent MLflow logging of a reduced sweep: one parent run per sweep, one nested run per search trial and per
retraining (STYLE.md section 6: ``tags.mlflow.parentRunId``).

Every run carries a deterministic ``rdarts.key`` tag (the sweep name, then ``/<trial>`` or ``/retrain/<job>``) and
an ``rdarts.fingerprint`` of what it holds. Logging again finds each run by its key: a run with the same fingerprint
is kept as it is, a changed or half-written one is deleted and written anew (MLflow cannot replace a metric history
or a parameter value). A changed parent takes its children with it. So ``rdarts reduce`` twice leaves the same runs,
with one value per metric and step.

MLflow is imported inside the functions only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEY, FINGERPRINT, COMPLETE = "rdarts.key", "rdarts.fingerprint", "rdarts.complete"
PARENT_TAG = "mlflow.parentRunId"
MAX_PARAM = 6000


@dataclass
class RunSpec:
    """What one MLflow run should hold."""

    key: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    """name -> [(step, value)]; non-finite values are left out (one value per step, none for NaN)."""
    artifacts: list[tuple[Path, str | None]] = field(default_factory=list)
    """(local file, artifact folder or None for the root)."""

    def fingerprint(self) -> str:
        def digest(p: Path) -> str:
            return hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "missing"

        data = {"name": self.name, "params": {k: _param(v) for k, v in self.params.items()}, "tags": self.tags,
                "metrics": {k: [(s, v) for s, v in pts if math.isfinite(v)] for k, pts in self.metrics.items()},
                "artifacts": [(str(d), p.name, digest(p)) for p, d in self.artifacts]}
        return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached (or failed while logging)."""


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MAX_PARAM]


TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"  # MLflow's own variable: the cluster files set it on the head


def default_uri(experiment: Path) -> str:
    return f"sqlite:///{experiment / 'mlflow.db'}"


def runs_page(base_url: str, experiment_id: str | None) -> str:
    """The UI's page of an experiment's runs table (MLflow 3 otherwise opens its GenAI overview)."""
    if experiment_id is None:
        return base_url
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def ui_command(uri: str, experiment_id: str | None = None) -> str:
    """The one command that shows these runs in a browser."""
    if uri.startswith(("http://", "https://")):
        return f"open {runs_page(uri, experiment_id)} in a browser"
    return (f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000, then open "
            f"{runs_page('http://127.0.0.1:5000', experiment_id)}")


def experiment_id_of(uri: str, name: str) -> str | None:
    """The id of experiment ``name`` in the store at ``uri`` (None when it is not there)."""
    exp = _client(uri).get_experiment_by_name(name)
    return None if exp is None else str(exp.experiment_id)


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Raise ``TrackingUnavailable`` when an http(s) tracking server does not answer its health check."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as r:  # noqa: S310 - http(s) only
            if r.status != 200:
                raise TrackingUnavailable(f"{uri}/health answered {r.status}")
    except (urllib.error.URLError, OSError) as e:
        raise TrackingUnavailable(f"no MLflow server at {uri} ({getattr(e, 'reason', e)})") from None


def _client(uri: str) -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # two lines per run otherwise
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


# MLflow 3's UI opens an experiment without this tag on its GenAI pages (traces, prompts); with it, on the runs
# table, where a sweep's runs are.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def _experiment_id(client: Any, name: str, artifact_location: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        if EXPERIMENT_KIND[0] not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
        return str(exp.experiment_id)
    return str(client.create_experiment(name, artifact_location=artifact_location, tags=dict([EXPERIMENT_KIND])))


def _find(client: Any, experiment_id: str, key: str, parent_id: str | None = None) -> list[Any]:
    flt = f"tags.`{KEY}` = '{key}'"
    if parent_id is not None:
        flt += f" and tags.`{PARENT_TAG}` = '{parent_id}'"
    return list(client.search_runs([experiment_id], filter_string=flt, max_results=1000))


def _children(client: Any, experiment_id: str, parent_id: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'",
                                  max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _is_current(run: Any, spec: RunSpec) -> bool:
    tags = run.data.tags
    return tags.get(COMPLETE) == "true" and tags.get(FINGERPRINT) == spec.fingerprint()


def _write(client: Any, experiment_id: str, spec: RunSpec, parent_id: str | None) -> str:
    from mlflow.entities import Metric, Param, RunTag

    tags = {**spec.tags, KEY: spec.key}
    if parent_id is not None:
        tags[PARENT_TAG] = parent_id
    run = client.create_run(experiment_id, run_name=spec.name, tags=tags)
    rid = run.info.run_id
    params = [Param(k, _param(v)) for k, v in sorted(spec.params.items())]
    for i in range(0, len(params), 100):
        client.log_batch(rid, params=params[i:i + 100])
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, int(s)) for k, pts in sorted(spec.metrics.items()) for s, v in pts
               if math.isfinite(float(v))]
    for i in range(0, len(metrics), 1000):
        client.log_batch(rid, metrics=metrics[i:i + 1000])
    for path, folder in spec.artifacts:
        if path.is_file():
            client.log_artifact(rid, str(path), folder)
    client.log_batch(rid, tags=[RunTag(FINGERPRINT, spec.fingerprint()), RunTag(COMPLETE, "true")])
    client.set_terminated(rid)
    return str(rid)


def log_runs(uri: str, experiment_name: str, parent: RunSpec, children: list[RunSpec], *,
             artifact_location: str | None = None) -> dict[str, int]:
    """Make the tracking store hold ``parent`` and exactly ``children`` under it; returns counts of runs
    ``written`` and ``kept`` (unchanged).

    Raises:
        TrackingUnavailable: if the server cannot be reached or fails while logging.
    """
    check_reachable(uri)
    try:
        return _log_runs(_client(uri), experiment_name, parent, children, artifact_location)
    except TrackingUnavailable:
        raise
    except Exception as e:  # MlflowException, requests' ConnectionError, ...: the store failed mid-way
        if uri.startswith(("http://", "https://")) and _unreachable(uri):
            raise TrackingUnavailable(f"the MLflow server at {uri} went away while logging ({type(e).__name__})") from e
        raise


def _unreachable(uri: str) -> bool:
    try:
        check_reachable(uri, timeout=2.0)
    except TrackingUnavailable:
        return True
    return False


def _log_runs(client: Any, experiment_name: str, parent: RunSpec, children: list[RunSpec],
              artifact_location: str | None) -> dict[str, int]:
    exp_id = _experiment_id(client, experiment_name, artifact_location)
    counts = {"written": 0, "kept": 0, "deleted": 0}
    found = _find(client, exp_id, parent.key)
    found = [r for r in found if PARENT_TAG not in r.data.tags]
    keep_parent = len(found) == 1 and _is_current(found[0], parent)
    if keep_parent:
        parent_id = found[0].info.run_id
        counts["kept"] += 1
    else:
        for run in found:  # changed or half-written: the parent and all its children go
            for child in _children(client, exp_id, run.info.run_id):
                client.delete_run(child.info.run_id)
                counts["deleted"] += 1
            client.delete_run(run.info.run_id)
            counts["deleted"] += 1
        parent_id = None
    existing: dict[str, list[Any]] = {}
    if parent_id is not None:
        for run in _children(client, exp_id, parent_id):
            existing.setdefault(run.data.tags.get(KEY, ""), []).append(run)
    if parent_id is None:
        # Written incomplete first (no COMPLETE tag yet): an interruption leaves it marked for rewriting.
        parent_id = _create_incomplete(client, exp_id, parent)
        counts["written"] += 1
    wanted = {c.key for c in children}
    for spec in children:
        runs = existing.pop(spec.key, [])
        if len(runs) == 1 and _is_current(runs[0], spec):
            counts["kept"] += 1
            continue
        for run in runs:
            client.delete_run(run.info.run_id)
            counts["deleted"] += 1
        _write(client, exp_id, spec, parent_id)
        counts["written"] += 1
    for key, runs in existing.items():  # children of an older reduce that are no longer produced
        if key not in wanted:
            for run in runs:
                client.delete_run(run.info.run_id)
                counts["deleted"] += 1
    if not keep_parent:
        _complete(client, parent_id, parent)
    return counts


def _create_incomplete(client: Any, experiment_id: str, spec: RunSpec) -> str:
    """The parent's params, metrics and artifacts, without the COMPLETE tag (``_complete`` adds it last)."""
    from mlflow.entities import RunTag

    complete = RunSpec(spec.key, spec.name, spec.params, spec.tags, spec.metrics, spec.artifacts)
    rid = _write(client, experiment_id, complete, None)
    client.log_batch(rid, tags=[RunTag(COMPLETE, "false")])
    return rid


def _complete(client: Any, run_id: str, spec: RunSpec) -> None:
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(FINGERPRINT, spec.fingerprint()), RunTag(COMPLETE, "true")])
