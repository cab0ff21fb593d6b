"""Sweeps on a real local Ray: end to end, a killed worker, a killed driver, a diverging trial, DARTS-ES stops.

All slow: tiny digits searches (3 cells x 4 channels on 8x8 images, 128 images), a few epochs each.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from sweep_fixtures import FAST_RULE, RAY_ENV, TESTS, TINY_SEARCH, fault_trainable, progress, tiny_spec

from rdarts.search import EpochRecord
from rdarts.sweep.runner import RESULTS_FILE, SPEC_FILE, resume_sweep, run_sweep

pytestmark = pytest.mark.slow

# What must be equal between an interrupted and an uninterrupted run: every record field but the timings.
SAME = [f.name for f in dataclasses.fields(EpochRecord) if not f.name.endswith("_time_s")] + [
    "search_status", "result_epoch", "result_genotype", "stop_reason", "eigenvalue_history"]


def _comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and math.isnan(v) else v

    return [{k: clean(r[k]) for k in SAME} for r in rows]


def _by_setting(outcome: Any) -> dict[str, dict[str, Any]]:
    return {r["setting"]: r for r in outcome.rows}


def _run(spec: Any, tmp_path: Path, **kw: Any) -> Any:
    return run_sweep(spec, storage=str(tmp_path / "results"), verbose=0, out=io.StringIO(), **kw)


def test_sweep_runs_end_to_end(ray_session: None, tmp_path: Path) -> None:
    spec = tiny_spec("e2e", grid={"early_stop": ["off", "es"]}, max_concurrent=2)
    outcome = _run(spec, tmp_path, spec_text="name: e2e  # the file as written\n")
    exp = Path(outcome.experiment_path)
    assert exp == tmp_path / "results" / "e2e"
    assert (exp / SPEC_FILE).read_text() == "name: e2e  # the file as written\n"
    rows = outcome.rows
    assert [r["status"] for r in rows] == ["finished", "finished"] and outcome.num_errors == 0
    assert [r["setting"] for r in rows] == ["early_stop=off", "early_stop=es"]
    csv = (exp / RESULTS_FILE).read_text().splitlines()
    assert len(csv) == 3 and csv[0].startswith("index,trial,setting,status")
    for r in rows:
        reported = progress(r["path"])
        assert [x["epoch"] for x in reported] == list(range(TINY_SEARCH["epochs"]))
        assert all(x["dominant_eigenvalue"] > 0 for x in reported)  # the real Hessian, every epoch (ev_every 1)
        assert {"scheduler_action", "scheduler_kept_epoch", "last_eigenvalue"} <= set(reported[0])
        assert json.loads(reported[-1]["result_genotype"])  # the search's answer, as JSON
        checkpoints = sorted(p.name for p in Path(r["path"]).glob("checkpoint_*"))
        assert len(checkpoints) == 2  # CheckpointConfig(num_to_keep=2)
        assert sorted(p.name for p in (Path(r["path"]) / checkpoints[-1]).iterdir()) == ["epoch_002.pt",
                                                                                       "latest.json"]
    with pytest.raises(Exception, match="already holds a sweep"):
        _run(spec, tmp_path)


def test_killed_worker_resumes_with_the_same_records(ray_session: None, tmp_path: Path) -> None:
    """A worker killed mid-trial (``os._exit``) is retried from its last checkpoint and ends as a twin never
    killed: with the real Hessian, and with DARTS-ADA killed right after a rollback."""
    marker = tmp_path / "crashed_{}"
    grid = {"extra": [
        {"twin": "real"}, {"twin": "real", "crash_at_epoch": 1, "crash_marker": str(marker).format("real")},
        {"twin": "ada", "explode_at": 3},
        {"twin": "ada", "explode_at": 3, "crash_at_epoch": 4, "crash_marker": str(marker).format("ada")}]}
    spec = tiny_spec("crash", grid=grid, search={"epochs": 6, "early_stop": "ada"}, stopping=FAST_RULE,
                     max_failures=1)
    outcome = _run(spec, tmp_path, trainable=fault_trainable)
    assert (tmp_path / "crashed_real").exists() and (tmp_path / "crashed_ada").exists()
    assert outcome.num_errors == 0
    rows = outcome.rows
    for plain, crashed in ((rows[0], rows[1]), (rows[2], rows[3])):
        assert plain["status"] == crashed["status"] == "finished"
        assert _comparable(progress(crashed["path"])) == _comparable(progress(plain["path"]))
        assert crashed["result_genotype"] == plain["result_genotype"]
    ada = progress(rows[3]["path"])
    assert [r["event"] for r in ada if isinstance(r["event"], str)] == ["ada_rollback", "ada_rollback",
                                                                       "ada_ignored"]
    assert ada[-1]["ada_round"] == 2 and ada[-1]["weight_decay"] == pytest.approx(3e-2)


def test_diverged_trial_fails_and_the_others_finish(ray_session: None, tmp_path: Path) -> None:
    spec = tiny_spec("nan", grid={"lr": [0.025, 1e20]}, search={"epochs": 2}, max_failures=2)
    outcome = _run(spec, tmp_path)
    ok, bad = outcome.rows
    assert ok["status"] == "finished" and ok["epochs"] == 2
    assert bad["status"] == "diverged" and "diverged" in bad["note"], bad["note"]
    assert outcome.num_errors == 1
    assert "diverged" in (Path(outcome.experiment_path) / RESULTS_FILE).read_text()


def test_scheduler_stops_the_exploding_trial_and_the_others_run_on(ray_session: None, tmp_path: Path) -> None:
    grid = {"early_stop": ["es", "ada", "off"], "extra": [{"explode_at": 3}, {"explode_at": 99}]}
    spec = tiny_spec("explode", grid=grid, search={"epochs": 6}, stopping=FAST_RULE)
    outcome = _run(spec, tmp_path, trainable=fault_trainable)
    rows = {(r["setting"].split()[0], "calm" if "99" in r["setting"] else "explode"): r for r in outcome.rows}
    stopped = rows[("early_stop=es", "explode")]
    last = progress(stopped["path"])[-1]
    assert stopped["status"] == "es_stopped" and stopped["epochs"] == 5  # detected after epoch 4 of 6
    assert (last["scheduler_action"], last["scheduler_kept_epoch"]) == ("stop", 1)  # the scheduler's decision
    assert (last["event"], last["target_epoch"], last["result_epoch"]) == ("es_stop", 1, 1)  # the search's
    assert last["stop_epoch"] == 4 and (stopped["stop_epoch"], stopped["kept_epoch"]) == (4, 1)  # fired / kept
    assert "genotype of epoch 1 is kept" in last["scheduler_reason"] and "epoch 1" in last["stop_reason"]
    assert stopped["note"] == last["scheduler_reason"]
    assert stopped["result_genotype"] == progress(stopped["path"])[1]["genotype"]  # epoch 1's architecture
    for key in [("early_stop=es", "calm"), ("early_stop=ada", "explode"), ("early_stop=ada", "calm"),
                ("early_stop=off", "explode"), ("early_stop=off", "calm")]:
        assert rows[key]["status"] == "finished" and rows[key]["epochs"] == 6, key
    watched = progress(rows[("early_stop=ada", "explode")]["path"])
    assert "watch" in [r["scheduler_action"] for r in watched]
    assert all(r["scheduler_action"] != "stop" for r in watched)


def _trial_states(exp: Path) -> dict[int, str]:
    """Trial index -> status, from the newest experiment state Tune wrote."""
    states = sorted(exp.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except json.JSONDecodeError:  # caught mid-write
        return {}
    trials = [json.loads(state) for state, _ in data["trial_data"]]
    return {t["config"]["trial"]["index"]: t["status"] for t in trials}


def _rows(exp: Path, index: int) -> int:
    found = list(exp.glob(f"t{index:03d}_*/progress.csv"))
    return len(found[0].read_text().splitlines()) - 1 if found else 0


def test_killed_driver_resumes_without_rerunning_finished_trials(ray_session: None, tmp_path: Path) -> None:
    data = {"name": "driver", "search": {**TINY_SEARCH, "epochs": 5}, "grid": {"seed": [1, 2, 3]},
            "max_concurrent": 1}
    sweep = tmp_path / "driver.yaml"
    sweep.write_text(yaml.safe_dump(data))
    storage = tmp_path / "results"
    exp = storage / "driver"
    env = {**os.environ, **RAY_ENV}
    driver = subprocess.Popen([sys.executable, str(TESTS / "sweep_fixtures.py"), "run", str(sweep), "--storage",
                               str(storage)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            if _trial_states(exp).get(0) == "TERMINATED" and _rows(exp, 1) >= 1:
                break
            assert driver.poll() is None, "the sweep ended before it could be interrupted"
            time.sleep(0.2)
        else:
            pytest.fail("the sweep did not get going")
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
    _end_session(driver.pid)
    first = next(exp.glob("t000_*")) / "progress.csv"
    finished_rows = first.read_text()
    rows_of_1 = _rows(exp, 1)
    assert _trial_states(exp).get(2) in ("PENDING", None)

    outcome = resume_sweep(str(exp), verbose=0, out=io.StringIO())
    assert [r["status"] for r in outcome.rows] == ["finished"] * 3
    assert first.read_text() == finished_rows  # the finished trial was not run again
    resumed = [r["epoch"] for r in progress(outcome.rows[1]["path"])]
    assert resumed[:rows_of_1] == list(range(rows_of_1))
    assert resumed[-1] == 4 and resumed.count(0) == 1  # continued from its checkpoint, not from scratch
    assert [r["epoch"] for r in progress(outcome.rows[2]["path"])] == list(range(5))


def _end_session(pgid: int) -> None:
    """Take down what the killed driver started (its own Ray: GCS, raylet, workers), as on a lost machine.

    Only the process group of the session this test started is signalled, by its id.
    """
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    pytest.fail(f"processes of session {pgid} survived SIGKILL")
