"""A sweep submitted as a Ray Job to a separate local Ray head: the project travels as the job's working dir."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sweep_fixtures import RAY_ENV, ROOT, SWEEPS

from rdarts.errors import UserError
from rdarts.sweep.jobs import describe_job, job_logs, job_status, submit_sweep

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """``ray start --head --block`` in its own session, on free ports; ended by its process group id.

    Its own temp dir keeps its address out of /tmp/ray/ray_current_cluster, where a plain ``ray.init()`` elsewhere
    on this machine would find it (and, once it is killed, fail to connect).
    """
    dashboard, gcs = _free_port(), _free_port()
    ray = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, **RAY_ENV}
    temp_dir = tempfile.mkdtemp(prefix="rdh", dir="/tmp")  # short: Ray puts unix sockets under it
    # Every fixed default port on free ones: the session Ray of the other slow tests holds the defaults (its
    # dashboard agent on 52365 would leave this head without a job agent: "No available agent to submit job").
    ports = [f"--{name}={_free_port()}" for name in ("ray-client-server-port", "dashboard-agent-listen-port",
                                                      "dashboard-agent-grpc-port", "runtime-env-agent-port",
                                                      "metrics-export-port")]
    head = subprocess.Popen([ray, "start", "--head", "--block", "--num-cpus", "2", "--port", str(gcs),
                             "--temp-dir", temp_dir, "--dashboard-host", "127.0.0.1", "--dashboard-port",
                             str(dashboard), "--include-dashboard", "true", *ports],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        from ray.job_submission import JobSubmissionClient

        deadline = time.time() + 120
        while True:
            assert head.poll() is None, "ray start --head exited"
            try:
                JobSubmissionClient(address).list_jobs()
                break
            except Exception:  # not up yet
                if time.time() > deadline:
                    raise
                time.sleep(1)
        yield address
    finally:
        _end_group(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not _points_to(gcs), "the test head left its address in /tmp/ray/ray_current_cluster"


def _points_to(port: int) -> bool:
    shared = Path("/tmp/ray/ray_current_cluster")
    return shared.is_file() and shared.read_text().strip().endswith(f":{port}")


def _end_group(head: subprocess.Popen[bytes]) -> None:
    """Stop the head and the services it started (its process group, by id); ``ray stop`` would hit every Ray."""
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    head.wait(timeout=30)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            os.killpg(head.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)


def test_submitted_sweep_runs_on_the_cluster(ray_head: str, tmp_path: Path) -> None:
    storage = tmp_path / "results"
    job = submit_sweep(SWEEPS / "smoke.yaml", ray_head, cli=("-m", "rdarts.sweep.cli"),
                       run_args=["--no-reduce", "--storage", str(storage)], agent_wait_s=120)
    deadline = time.time() + 300
    while job_status(job, ray_head) in ("PENDING", "RUNNING"):
        assert time.time() < deadline, job_logs(job, ray_head)[-3000:]
        time.sleep(2)
    logs = job_logs(job, ray_head)
    assert job_status(job, ray_head) == "SUCCEEDED", logs[-3000:]
    assert "2 trial(s), 0 failed" in logs
    assert (storage / "smoke" / "results.csv").is_file()
    info = describe_job(job, ray_head)
    assert "rdarts.sweep.cli run sweeps/smoke.yaml" in info["entrypoint"]


def test_a_file_outside_the_project_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "s.yaml"
    outside.write_text((SWEEPS / "smoke.yaml").read_text())
    with pytest.raises(UserError, match="inside the project folder"):
        submit_sweep(outside, "http://127.0.0.1:1")
    assert ROOT in (SWEEPS / "smoke.yaml").resolve().parents


def test_no_dashboard_is_a_user_error() -> None:
    with pytest.raises(UserError, match="no Ray dashboard at"):
        job_status("raysubmit_x", f"http://127.0.0.1:{_free_port()}")
