"""MLflow while a sweep runs: the parent run when the sweep starts, a run per trial when the trial starts, every
epoch's metrics (step = epoch) and the stop and DARTS-ADA events as they are reported.

A Tune callback on the driver (``rdarts.sweep.runner.build_tuner``). The runs carry the keys, names, parameters and
tags the reducer gives them (``rdarts.tracking``), plus ``rdarts.live``: the reducer completes these same runs in
place (``rdarts.tracking_sync``). Tracking never stops a sweep: if the server cannot be reached, or fails, one
warning says so and the sweep runs on; a later ``rdarts reduce`` logs everything from disk.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from rdarts import keys
from rdarts import storage as store
from rdarts.records import numeric_fields
from rdarts.sweep.spec import SweepSpec
from rdarts.tracking import (
    KEY,
    LIVE,
    PARENT_TAG,
    check_reachable,
    children,
    client,
    default_uri,
    experiment_id,
    find,
    is_http,
    param_text,
    resolve_uri,
    search_run_key,
    search_run_name,
    search_run_params,
    search_run_tags,
    sweep_run_params,
    sweep_run_tags,
)

METRICS = numeric_fields()
TERMINAL = {"finished": "FINISHED", "es_stopped": "FINISHED"}


def live_uri(spec: SweepSpec, experiment: str, override: str | None) -> tuple[str, Path]:
    """The tracking URI the reducer will use for this sweep, and the local folder its default store lives in."""
    local = store.mirror_path(experiment) if store.is_remote(experiment) else Path(experiment)
    uri, _ = resolve_uri(spec.tracking.uri, local, override)
    return uri, local


class LiveTracking(Callback):
    """Creates and fills the MLflow runs of a running sweep (see the module docstring)."""

    def __init__(self, spec: SweepSpec, experiment: str, tracking_uri: str | None = None):
        # Tune pickles its callbacks with the experiment (tuner.pkl): plain data here, the client made in setup().
        self.spec, self.experiment = spec, experiment
        self.uri, self.local = live_uri(spec, experiment, tracking_uri)
        self.client: Any = None
        self.exp_id = self.parent_id = ""
        self.runs: dict[str, str] = {}  # Tune trial id -> MLflow run id
        self.logged: dict[str, tuple[int, int]] = {}  # trial id -> (last epoch logged, its DARTS-ADA round)

    # --------------------------------------------------------------------------------------------- plumbing
    def _fail(self, what: str, e: Exception) -> None:
        print(f"warning: live MLflow tracking stopped ({what}: {type(e).__name__}: {str(e)[:200]}); the sweep runs "
              f"on, and 'rdarts reduce {self.experiment}' logs everything later", file=sys.stderr, flush=True)
        self.client = None

    def _safely(self, what: str, fn: Any, *args: Any) -> None:
        if self.client is None:
            return
        try:
            fn(*args)
        except Exception as e:  # a tracking failure must never stop the searches
            self._fail(what, e)

    def setup(self, **info: Any) -> None:
        if not self.spec.tracking.enabled:
            return
        try:
            check_reachable(self.uri)
            if self.uri.startswith("sqlite:"):
                self.local.mkdir(parents=True, exist_ok=True)
            self.client = client(self.uri)
            location = None if is_http(self.uri) else (self.local / "mlartifacts").as_uri()
            self.exp_id = experiment_id(self.client, self.spec.tracking.experiment or self.spec.name, location)
            self.parent_id = self._parent()
        except Exception as e:  # TrackingUnavailable, or the store failed
            self._fail(f"cannot log to {self.uri}", e)
            return
        where = "" if self.uri != default_uri(self.local) else f" (see them: rdarts ui {self.experiment})"
        print(f"MLflow: logging the sweep live to {self.uri}{where}", flush=True)

    def _parent(self) -> str:
        found = [r for r in find(self.client, self.exp_id, self.spec.name) if PARENT_TAG not in r.data.tags]
        if found:  # a resumed sweep, or one reduced before: its parent goes on
            return str(found[0].info.run_id)
        tags = {**sweep_run_tags(self.spec, self.experiment), KEY: self.spec.name, LIVE: "true"}
        run = self.client.create_run(self.exp_id, run_name=self.spec.name, tags=tags)
        self._params(run.info.run_id, sweep_run_params(self.spec))
        return str(run.info.run_id)

    def _params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, param_text(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    # --------------------------------------------------------------------------------------------- trials
    def _run_of(self, trial: Any) -> str:
        if trial.trial_id in self.runs:
            return self.runs[trial.trial_id]
        entry = trial.config[keys.TRIAL]
        name = keys.trial_dirname(trial)
        key = search_run_key(self.spec.name, name)
        mine = [r for r in children(self.client, self.exp_id, self.parent_id) if r.data.tags.get(KEY) == key]
        if mine:  # the driver restarted: go on in the same run, after what it already holds
            rid = str(mine[0].info.run_id)
            epochs = self.client.get_metric_history(rid, "epoch_time_s")
            rounds = self.client.get_metric_history(rid, "ada_round")
            self.logged[trial.trial_id] = (max((int(m.step) for m in epochs), default=-1),
                                           max((int(m.value) for m in rounds), default=0))
        else:
            tags = {**search_run_tags(entry["method"], entry["setting"], entry["search"], "running"), KEY: key,
                    PARENT_TAG: self.parent_id, LIVE: "true"}
            run = self.client.create_run(self.exp_id, run_name=search_run_name(entry["setting"], entry["method"]),
                                         tags=tags)
            rid = str(run.info.run_id)
            self._params(rid, search_run_params(entry["search"], name, entry["setting"], int(entry["index"])))
        self.runs[trial.trial_id] = rid
        return rid

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._safely("trial start", self._run_of, trial)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        self._safely("trial result", self._result, trial, result)

    def _result(self, trial: Any, result: dict[str, Any]) -> None:
        from mlflow.entities import Metric, RunTag

        rid = self._run_of(trial)
        epoch, ada_round = int(result.get(keys.EPOCH, -1)), int(result.get("ada_round", 0) or 0)
        last, last_round = self.logged.get(trial.trial_id, (-1, 0))
        tags = {"status": str(result.get(keys.SEARCH_STATUS, "running"))}
        for key in (keys.STOP_REASON, keys.SCHEDULER_REASON):
            if result.get(key):
                tags[key] = str(result[key])[:5000]
        if result.get(keys.EVENT):
            tags["last_event"] = f"{result[keys.EVENT]} at epoch {epoch}"
        self.client.log_batch(rid, tags=[RunTag(k, v) for k, v in tags.items()])
        if epoch <= last and ada_round <= last_round:
            return  # a replay after a restart: already logged
        now = int(time.time() * 1000)
        points = [Metric(m, float(result[m]), now, epoch) for m in METRICS
                  if isinstance(result.get(m), int | float) and math.isfinite(float(result[m]))]
        if points:
            self.client.log_batch(rid, metrics=points)
        self.logged[trial.trial_id] = (epoch, ada_round)

    def _end(self, trial: Any, failed: bool) -> None:
        rid = self._run_of(trial)
        status = "error" if failed else str((trial.last_result or {}).get(keys.SEARCH_STATUS, "finished"))
        self.client.set_tag(rid, "status", status)
        self.client.set_terminated(rid, TERMINAL.get(status, "FAILED"))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._safely("trial end", self._end, trial, False)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._safely("trial error", self._end, trial, True)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        if self.client is not None:
            self._safely("sweep end", self.client.set_terminated, self.parent_id)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "client": None}  # the client holds a connection: made anew after unpickling
