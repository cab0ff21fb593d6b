"""A sweep on a multi-node Ray cluster (``ray.cluster_utils.Cluster`` on this machine) that loses a worker node.

The whole cluster lives in a subprocess (a script written to ``tmp_path``), so it never meets the session Ray of the
other slow tests. Head without CPUs, three 1-CPU worker nodes: one trial per node and a spare. Once both trials
reported two epochs, the node of trial 0 is killed (no graceful shutdown) and trial 0 goes to the spare node; it must
be retried from its last Tune checkpoint and end with the records of an uninterrupted run of the same config.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from sweep_fixtures import RAY_ENV, TESTS, progress

pytestmark = pytest.mark.slow

EPOCHS = 6
KILL_AFTER = 2  # epochs both trials have reported when the node goes

SCRIPT = textwrap.dedent('''
    import json, os, sys, threading, time, traceback
    from pathlib import Path

    tmp, port = Path(sys.argv[1]), int(sys.argv[2])
    marks, storage = tmp / "marks", tmp / "results"
    marks.mkdir()
    import ray
    from ray.cluster_utils import Cluster
    from sweep_fixtures import tiny_spec
    from rdarts.sweep.runner import run_sweep

    def trainable(config):
        """run_trial, leaving marks: which node and process ran which attempt, from which checkpoint, which epoch."""
        import os, json, time
        from pathlib import Path
        import ray
        from ray import tune
        from rdarts.sweep.trainable import run_trial

        where = Path(config["trial"]["search"]["extra"]["marks"])
        index, pid = config["trial"]["index"], os.getpid()
        ck = tune.get_checkpoint()
        (where / f"start_{index}_{pid}.json").write_text(json.dumps({
            "index": index, "pid": pid, "time": time.time(), "node": ray.get_runtime_context().get_node_id(),
            "checkpoint": None if ck is None else Path(ck.path).name}))

        def after(record):
            (where / f"epoch_{index}_{record['epoch']}_{pid}").touch()

        run_trial(config, after_report=after)

    def reported(index):
        return {int(p.name.split("_")[2]) for p in marks.glob(f"epoch_{index}_*")}

    out = {"killed": None, "error": None}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "gcs_server_port": port, "include_dashboard": False,
        "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                           "health_check_failure_threshold": 4}})
    # Two nodes for the two trials and a spare (Node() can only start from the main thread: no replacement later).
    workers = [cluster.add_node(num_cpus=1) for _ in range(3)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)

    def kill_node():
        try:
            deadline = time.time() + 150
            while time.time() < deadline:
                if all(len(reported(i)) >= %(kill_after)d for i in (0, 1)):
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError("the trials did not get going")
            start = json.loads(next(marks.glob("start_0_*.json")).read_text())
            node = next(n for n in workers if n.node_id == start["node"])
            before = sorted(reported(0))
            cluster.remove_node(node, allow_graceful=False)
            out["killed"] = {"node": start["node"], "pid": start["pid"], "epochs_before": before,
                             "at": time.time()}
        except Exception:
            out["error"] = traceback.format_exc()

    watcher = threading.Thread(target=kill_node, daemon=True)
    watcher.start()
    spec = tiny_spec("multinode", grid={"seed": [1, 2]},
                     search={"epochs": %(epochs)d, "extra": {"marks": str(marks)}}, max_failures=3)
    try:
        outcome = run_sweep(spec, storage=str(storage), trainable=trainable, verbose=0, plots=False)
        watcher.join(timeout=60)
        out["rows"] = outcome.rows
        out["experiment"] = outcome.experiment_path
    finally:
        starts = [json.loads(p.read_text()) for p in marks.glob("start_*.json")]
        out["starts"] = sorted(starts, key=lambda s: s["time"])
        (tmp / "outcome.json").write_text(json.dumps(out, default=str))
        ray.shutdown()
        cluster.shutdown()
''') % {"kill_after": KILL_AFTER, "epochs": EPOCHS}

COMPARED = ("epoch", "valid_acc", "dominant_eigenvalue", "genotype")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _uninterrupted(search: dict[str, Any], out_dir: Path) -> list[dict[str, Any]]:
    """The same trial config as a plain ``Search`` here, on one thread as in a 1-CPU trial."""
    import torch

    from rdarts.config import SearchConfig
    from rdarts.search import Search

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return Search(SearchConfig.from_dict(search), out_dir).run().records
    finally:
        torch.set_num_threads(threads)


def test_sweep_survives_a_lost_worker_node(tmp_path: Path) -> None:
    script = tmp_path / "multinode.py"
    script.write_text(SCRIPT)
    env = {**os.environ, **RAY_ENV,
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), str(_free_port())], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=150)
    outcome_file = tmp_path / "outcome.json"
    assert proc.returncode == 0 and outcome_file.is_file(), proc.stderr[-4000:]
    out = json.loads(outcome_file.read_text())
    assert out["error"] is None, out["error"]
    killed = out["killed"]
    assert killed is not None, "the node was never removed"
    assert len(killed["epochs_before"]) < EPOCHS, "trial 0 had finished before its node went"

    rows = out["rows"]
    assert [r["status"] for r in rows] == ["finished", "finished"], rows
    assert [r["epochs"] for r in rows] == [EPOCHS, EPOCHS]
    for r in rows:  # every trial ends TERMINATED in Tune's own state
        assert (Path(r["path"]) / "result.json").is_file()
    states = sorted(Path(out["experiment"]).glob("experiment_state-*.json"))
    trials = [json.loads(s) for s, _ in json.loads(states[-1].read_text())["trial_data"]]
    assert sorted(t["status"] for t in trials) == ["TERMINATED", "TERMINATED"]

    # Trial 0 was retried on another node, from a checkpoint, and its epochs never started again from 0.
    starts = [s for s in out["starts"] if s["index"] == 0]
    assert len(starts) >= 2, starts
    assert starts[0]["node"] == killed["node"] and starts[0]["checkpoint"] is None
    retries = [s for s in starts if s["node"] != killed["node"]]
    assert retries and all(s["checkpoint"] is not None for s in retries), starts
    reported = progress(rows[0]["path"])
    epochs = [int(x["epoch"]) for x in reported]
    assert len({x["pid"] for x in reported}) >= 2  # rows from two worker processes: the restart
    assert epochs.count(0) == 1
    deduplicated = list(dict.fromkeys(epochs))
    assert deduplicated == list(range(EPOCHS)), epochs
    assert [int(x["training_iteration"]) for x in reported] == list(range(1, len(reported) + 1))

    # Both trials end with the records of an uninterrupted run of their config.
    for r in rows:
        params = json.loads((Path(r["path"]) / "params.json").read_text())
        plain = _uninterrupted(params["trial"]["search"], tmp_path / f"plain_{r['index']}")
        lines = (Path(r["path"]) / "result.json").read_text().splitlines()
        last = {int(x["epoch"]): x for x in map(json.loads, lines)}  # exact floats; a re-reported epoch: last row
        swept = [{k: last[e][k] for k in COMPARED} for e in sorted(last)]
        assert swept == [{k: p[k] for k in COMPARED} for p in plain], r["setting"]
