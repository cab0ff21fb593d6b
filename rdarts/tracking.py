"""A sweep in MLflow: one parent run per sweep, one nested run per search trial and per retraining (STYLE.md
section 6: ``tags.mlflow.parentRunId``); what the live logging of a running sweep (``rdarts.sweep.live``) and the
reducer's idempotent logging (``rdarts.tracking_sync``) share.

Every run carries a deterministic ``rdarts.key`` tag (the sweep name, then ``/<trial>`` or ``/retrain/<job>``), by
which both find it again. MLflow is imported inside the functions only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEY, FINGERPRINT, COMPLETE, LIVE = "rdarts.key", "rdarts.fingerprint", "rdarts.complete", "rdarts.live"
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

        data = {"name": self.name, "params": {k: param_text(v) for k, v in self.params.items()}, "tags": self.tags,
                "metrics": {k: [(s, v) for s, v in pts if math.isfinite(v)] for k, pts in self.metrics.items()},
                "artifacts": [(str(d), p.name, digest(p)) for p, d in self.artifacts]}
        return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached (or failed while logging)."""


def param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text[:MAX_PARAM]


TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"  # MLflow's own variable: the cluster files set it on the head


def default_uri(experiment: Path) -> str:
    return f"sqlite:///{experiment / 'mlflow.db'}"


def runs_page(base_url: str, experiment_id: str | None) -> str:
    """The UI's page of an experiment's runs table (MLflow 3 otherwise opens its GenAI overview)."""
    if experiment_id is None:
        return base_url
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def ui_command(uri: str, experiment_id: str | None = None, experiment: Path | None = None) -> str:
    """The one command that shows these runs in a browser (it runs as printed: ``rdarts`` by its own path)."""
    if uri.startswith(("http://", "https://")):
        return f"open {runs_page(uri, experiment_id)} in a browser"
    rdarts = Path(sys.executable).with_name("rdarts")
    exe = str(rdarts) if rdarts.is_file() else f"{sys.executable} -m rdarts"
    where = str(experiment) if experiment is not None else f"--tracking-uri {uri}"
    return f"{exe} ui {where}   (then open the printed address)"


def resolve_uri(spec_uri: str | None, experiment: Path, override: str | None = None) -> tuple[str, bool]:
    """The tracking URI of a sweep and whether it was named (not the default): ``--tracking-uri``, else the sweep
    file's ``tracking.uri``, else ``$MLFLOW_TRACKING_URI`` (the cluster files set it on the head), else a SQLite file
    in the sweep folder."""
    env_uri = os.environ.get(TRACKING_URI_ENV) or None
    uri = override or spec_uri or env_uri
    return (uri, True) if uri else (default_uri(experiment), False)


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def experiment_id_of(uri: str, name: str) -> str | None:
    """The id of experiment ``name`` in the store at ``uri`` (None when it is not there)."""
    exp = client(uri).get_experiment_by_name(name)
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


def client(uri: str) -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # two lines per run otherwise
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


# MLflow 3's UI opens an experiment without this tag on its GenAI pages (traces, prompts); with it, on the runs
# table, where a sweep's runs are.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def experiment_id(client: Any, name: str, artifact_location: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        if EXPERIMENT_KIND[0] not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
        return str(exp.experiment_id)
    return str(client.create_experiment(name, artifact_location=artifact_location, tags=dict([EXPERIMENT_KIND])))


def find(client: Any, experiment_id: str, key: str, parent_id: str | None = None) -> list[Any]:
    flt = f"tags.`{KEY}` = '{key}'"
    if parent_id is not None:
        flt += f" and tags.`{PARENT_TAG}` = '{parent_id}'"
    return list(client.search_runs([experiment_id], filter_string=flt, max_results=1000))


def children(client: Any, experiment_id: str, parent_id: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'",
                                  max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def is_current(run: Any, spec: RunSpec) -> bool:
    tags = run.data.tags
    return tags.get(COMPLETE) == "true" and tags.get(FINGERPRINT) == spec.fingerprint()


# ------------------------------------------------------------------------------------------------- a search trial's run
_SHORT = {"weight_decay": "wd", "drop_path": "dp", "early_stop": ""}


def _compact(value: str) -> str:
    try:
        v = float(value)
    except ValueError:
        return value
    if v != 0 and abs(v) < 1e-2 and "." in value:
        mantissa, exp = f"{v:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"
    return value


def search_run_name(setting: str, method: str) -> str:
    """A search run's name says its setting: ``early_stop=es seed=1 weight_decay=0.0003`` -> ``es seed=1 wd=3e-4``."""
    parts = []
    for token in setting.split():
        key, _, value = token.partition("=")
        short = _SHORT.get(key, key)
        parts.append(_compact(value) if short == "" else f"{short}={_compact(value)}")
    return " ".join(parts) if parts and setting != "base" else method or setting


def search_run_key(sweep: str, trial: str) -> str:
    return f"{sweep}/{trial}"


def search_run_params(search: dict[str, Any], trial: str, setting: str, index: int) -> dict[str, Any]:
    """A search run's parameters: its settings as the sweep gave them, and where it stands in the sweep."""
    return {**search, "trial": trial, "setting": setting, "trial_index": index}


def search_run_tags(method: str, setting: str, search: dict[str, Any], status: str) -> dict[str, str]:
    return {"method": method, "setting": setting, "status": status, "order": str(search.get("order")),
            "early_stop": str(search.get("early_stop"))}


# ------------------------------------------------------------------------------------------------- the sweep's run
def flat_params(prefix: str, value: Any) -> dict[str, Any]:
    """Nested settings as ``a.b.c`` parameters."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flat_params(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: value}


def sweep_run_params(spec: Any) -> dict[str, Any]:
    """The parent run's parameters: the whole sweep file (a ``SweepSpec``), flattened."""
    return flat_params("", spec.model_dump(mode="json"))


def sweep_run_tags(spec: Any, experiment: str) -> dict[str, str]:
    import rdarts

    text = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    return {"rdarts.version": rdarts.__version__, "rdarts.spec_hash": hashlib.sha256(text.encode()).hexdigest(),
            "rdarts.experiment_path": experiment}
