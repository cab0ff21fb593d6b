"""While a sweep runs (``--no-reduce``), MLflow already holds each trial's run with its λ_max history (slow tier).

A real local Ray, a real MLflow server on 127.0.0.1; a thread polls the server while the driver runs the sweep and
records what it sees. Each trial waits a little after every report so that the poller catches it mid-run.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import pytest
from sweep_fixtures import fault_trainable, tiny_spec

from rdarts.sweep.runner import run_sweep
from rdarts.tracking import KEY, PARENT_TAG

pytestmark = pytest.mark.slow
EPOCHS = 6


def _watch(uri: str, name: str, stop: threading.Event, seen: dict[str, list[tuple[str, int]]]) -> None:
    """Every 0.3 s: each trial run's status and how many λ_max values it holds, by the run's rdarts key."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    while not stop.is_set():
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            for run in client.search_runs([exp.experiment_id], max_results=100):
                if PARENT_TAG not in run.data.tags:
                    continue
                n = len(client.get_metric_history(run.info.run_id, "dominant_eigenvalue"))
                seen.setdefault(run.data.tags[KEY], []).append((run.info.status, n))
        time.sleep(0.3)


def test_mlflow_shows_every_trials_eigenvalues_while_the_sweep_runs(ray_session: None, server: str,
                                                                     tmp_path: Any) -> None:
    spec = tiny_spec("live", grid={"seed": [1, 2]}, search={"epochs": EPOCHS, "extra": {"epoch_sleep": 1.0}},
                     max_concurrent=2)
    seen: dict[str, list[tuple[str, int]]] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(server, "live", stop, seen), daemon=True)
    watcher.start()
    try:
        outcome = run_sweep(spec, storage=str(tmp_path), verbose=0, out=io.StringIO(), trainable=fault_trainable,
                            plots=False, tracking_uri=server)
    finally:
        stop.set()
        watcher.join(timeout=30)
    assert outcome.num_errors == 0 and len(outcome.rows) == 2
    assert len(seen) == 2, seen  # a run per trial, under the sweep's parent
    for key, views in seen.items():
        running = [n for status, n in views if status == "RUNNING"]
        # Seen while running with a partial history, and the history grew while it ran: streamed, not logged at the end.
        assert running and any(0 < n < EPOCHS for n in running), (key, views)
        assert max(running) > min(running), (key, views)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server)
    exp = client.get_experiment_by_name("live")
    children = [r for r in client.search_runs([exp.experiment_id]) if PARENT_TAG in r.data.tags]
    for run in children:  # the finished trial: its whole history, step = epoch, and a name that says the setting
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "dominant_eigenvalue")]
        assert sorted(steps) == list(range(EPOCHS))
        assert "seed=" in run.info.run_name and run.data.tags.get("method")
