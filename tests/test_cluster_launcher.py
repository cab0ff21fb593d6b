"""A real ``ray up`` of ``cluster/local-venv.yaml`` against 127.0.0.1, a sweep submitted to it, and ``ray down``.

``cluster/localhost.py setup`` does what the README tells a user to do: it installs openssh-server and rsync when
missing, adds an ssh user (here ``rdarts-test``, so that the head's ``ray stop`` cannot touch this session's own Ray),
starts an sshd on 127.0.0.1:22 and writes the cluster file with free ports. Then, as a user would:
``ray up -y``, ``rdarts sweep submit sweeps/smoke.yaml`` (searches, reduce step, MLflow on the head), ``rdarts sweep
status/logs``, ``ray down -y``. Needs root (apt-get, useradd, sshd); slow (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
USER = "rdarts-test"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0,
                                 reason="needs root on Linux: installs sshd, adds an ssh user")]


def _run(cmd: list[str], timeout: float, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kw)


def _user_processes(user: str) -> list[str]:
    r = subprocess.run(["ps", "-u", user, "-o", "comm="], capture_output=True, text=True)
    return [line.strip() for line in r.stdout.splitlines() if line.strip()]


def _host_address() -> str | None:
    """This machine's own non-loopback address (the route's source address; no packet is sent), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


def _listening(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def localhost() -> Iterator[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="rdarts-launcher-"))
    shared = Path(tempfile.mkdtemp(prefix="rdarts-shared-", dir="/tmp"))  # in /tmp: the ssh user must reach it
    setup = _run([sys.executable, "cluster/localhost.py", "setup", "--dir", str(work), "--user", USER,
                  "--name", "rdarts-test", "--shared", str(shared), "--ports", "free"], timeout=300)
    state_file = work / "localhost.json"
    try:
        assert setup.returncode == 0, setup.stdout + setup.stderr
        state = json.loads(state_file.read_text())
        yield state
    finally:
        if state_file.exists():  # also after a setup that failed half-way: teardown undoes what it did
            config = json.loads(state_file.read_text()).get("config")
            if config:
                _run([str(BIN / "ray"), "down", "-y", config], timeout=120)  # a no-op when the test got that far
            _run([sys.executable, "cluster/localhost.py", "teardown", "--dir", str(work), "--remove-user"],
                 timeout=60)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(shared, ignore_errors=True)


def test_setup_writes_a_loopback_config_that_ray_accepts(localhost: dict[str, Any]) -> None:
    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    text = Path(localhost["config"]).read_text()
    cfg = yaml.safe_load(text)
    validate_config(prepare_config(cfg))
    assert cfg["provider"] == {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    assert cfg["auth"]["ssh_user"] == USER
    for placeholder in ("192.0.2.", "/opt/rdarts", "/mnt/rdarts", ":6379", ":8265", ":5000"):
        assert placeholder not in text, placeholder
    # sshd: on the loopback address only, and a key login works; the user is not root
    host = _host_address()
    if host is not None:
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((host, 22)) != 0, f"sshd answers on {host}:22, not only on 127.0.0.1"
    who = _run(["ssh", "-i", localhost["key"], "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"{USER}@127.0.0.1", "id -un"],
               timeout=30)
    assert who.stdout.strip() == USER, who.stderr


def test_ray_up_submit_a_sweep_then_ray_down(localhost: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient

    from rdarts.tracking import PARENT_TAG

    config, dashboard, mlflow = localhost["config"], localhost["dashboard"], localhost["mlflow"]
    t0 = time.monotonic()
    up = _run([str(BIN / "ray"), "up", "-y", config], timeout=300)
    assert up.returncode == 0, (up.stdout + up.stderr)[-4000:]
    print(f"ray up: {time.monotonic() - t0:.1f} s")
    assert "raylet" in _user_processes(USER), "Ray does not run as the ssh user"
    deadline = time.monotonic() + 60
    while not _listening(mlflow):  # started in the background by head_start_ray_commands
        assert time.monotonic() < deadline, "the head's MLflow server did not come up"
        time.sleep(1)

    rdarts = str(BIN / "rdarts")
    sub = _run([rdarts, "sweep", "submit", "sweeps/smoke.yaml", "--address", dashboard, "--storage",
                localhost["storage"]], timeout=180)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    job = re.search(r"submitted (\S+)", sub.stdout).group(1)
    follow = _run([rdarts, "sweep", "logs", job, "--address", dashboard, "--follow"], timeout=420)
    assert follow.returncode == 0 and follow.stdout.rstrip().endswith(f"{job}: SUCCEEDED"), follow.stdout[-4000:]
    status = _run([rdarts, "sweep", "status", job, "--address", dashboard], timeout=60).stdout
    logs = _run([rdarts, "sweep", "logs", job, "--address", dashboard], timeout=60).stdout
    assert ": SUCCEEDED" in status, status + logs[-4000:]
    assert logs.strip() and logs.strip() in follow.stdout  # --follow printed all of it
    print(f"ray up + sweep: {time.monotonic() - t0:.1f} s")
    assert "2 trial(s), 0 failed" in logs
    assert re.search(rf"MLflow: \d+ run\(s\) written, .* at {re.escape(mlflow)}", logs), logs[-3000:]

    # Results on the shared folder, written by the ssh user.
    sweep = Path(localhost["storage"]) / "smoke"
    for name in ("results.csv", "results.parquet", "reduce/summary.md", "reduce/selection.json"):
        assert (sweep / name).is_file(), name
    assert (sweep / "results.csv").owner() == USER
    # The runs are in the head's MLflow server (the cluster's MLFLOW_TRACKING_URI), not in a file in the folder.
    assert not (sweep / "mlflow.db").exists()
    client = MlflowClient(mlflow)
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id])
    kinds = sorted(r.data.tags.get("kind", "search") for r in runs if PARENT_TAG in r.data.tags)
    assert kinds == ["candidate", "final", "search", "search"], kinds
    search = next(r for r in runs if r.data.tags.get("early_stop") == "es")
    assert [m.step for m in client.get_metric_history(search.info.run_id, "dominant_eigenvalue")] == [0, 1]

    down = _run([str(BIN / "ray"), "down", "-y", config], timeout=120)
    assert down.returncode == 0, (down.stdout + down.stderr)[-3000:]
    deadline = time.monotonic() + 30  # MLflow's watcher notices Ray is gone within 5 s
    while {"raylet", "gcs_server"} & set(_user_processes(USER)) or _listening(mlflow):
        assert time.monotonic() < deadline, f"left running after ray down: {_user_processes(USER)}"
        time.sleep(1)
    print(f"total: {time.monotonic() - t0:.1f} s")
