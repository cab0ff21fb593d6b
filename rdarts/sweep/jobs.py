"""Ray Jobs: submit ``rdarts sweep run FILE`` to a cluster (the project folder travels as the job's working dir),
follow, inspect and stop it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from rdarts.errors import UserError
from rdarts.sweep.spec import load_sweep


def project_root() -> Path:
    """The folder that holds the ``rdarts`` package: what a Ray Job ships as its working dir."""
    return Path(__file__).resolve().parents[2]


def _is_local(address: str) -> bool:
    host = re.sub(r"^\w+://", "", address).split(":")[0].split("/")[0]
    return host in ("127.0.0.1", "localhost", "0.0.0.0", os.uname().nodename)


JOB_EXCLUDES = (".venv", "venv", ".git", "runs", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache")


def submit_sweep(file: str | Path, address: str, *, python: str | None = None, run_args: Sequence[str] = (),
                 cli: Sequence[str] = ("-m", "rdarts", "sweep"), excludes: Sequence[str] = JOB_EXCLUDES,
                 agent_wait_s: float = 60.0) -> str:
    """Submit ``rdarts sweep run FILE`` as a Ray Job (the project folder is its working dir); returns the job id.

    Args:
        file: The sweep file; it must lie inside the project folder, since that is what travels.
        address: The cluster's dashboard address, e.g. ``http://127.0.0.1:8265``.
        python: The interpreter on the cluster; this one's path for a local cluster, ``python`` otherwise.
        run_args: Extra arguments of ``rdarts sweep run`` (e.g. ``--no-reduce``).
        cli: How the job calls the sweep command (``python -m rdarts sweep``); ``("-m", "rdarts.sweep.cli")``
            runs it without the main CLI.
        excludes: What of the project folder stays behind (Ray also skips what .gitignore lists).
        agent_wait_s: How long to retry while a fresh cluster's job agent is not up yet.
    """
    spec = load_sweep(file)  # fail here, not on the cluster
    root = project_root()
    path = Path(file).resolve()
    if not path.is_relative_to(root):
        raise UserError(f"{file}: a submitted sweep file must be inside the project folder {root} (it travels with "
                        "the code as the job's working dir); copy it there, e.g. into sweeps/")
    interpreter = python or (sys.executable if _is_local(address) else "python")
    entrypoint = " ".join(shlex.quote(a) for a in
                          [interpreter, *cli, "run", str(path.relative_to(root)), *run_args])
    client = _client(address)
    runtime_env = {"working_dir": str(root), "excludes": list(excludes)}
    with _quiet_ray():
        return _submit_job(client, entrypoint, runtime_env, spec.name, agent_wait_s)


@contextlib.contextmanager
def _quiet_ray() -> Iterator[None]:
    """Ray's client logs every packaging step, each default-excluded folder and the log stream's closing at
    INFO/WARNING; the sweep commands print their own lines, so only Ray's errors pass."""
    def only_errors(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not record.name.startswith("ray")

    # On the handlers, not the loggers: Ray's client modules set their own loggers' levels to INFO.
    handlers = [*logging.getLogger("ray").handlers, *logging.getLogger().handlers]
    for h in handlers:
        h.addFilter(only_errors)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(only_errors)


def _submit_job(client: Any, entrypoint: str, runtime_env: dict[str, Any], name: str, agent_wait_s: float) -> str:
    # Right after 'ray start' the dashboard answers before its job agent is up ("No available agent"): wait for it.
    deadline = time.monotonic() + agent_wait_s
    while True:
        try:
            job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                                       metadata={"rdarts_sweep": name})
            return str(job_id)
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def _client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except ConnectionError as e:
        raise UserError(f"no Ray dashboard at {address} ({e}); start one with 'ray start --head' or check "
                        "--address (the dashboard address, e.g. http://127.0.0.1:8265)") from None


def job_status(job_id: str, address: str) -> str:
    return str(_client(address).get_job_status(job_id).value)


def job_logs(job_id: str, address: str) -> str:
    return str(_client(address).get_job_logs(job_id))


def job_follow(job_id: str, address: str, out: TextIO | None = None) -> str:
    """Print a job's output as it comes, until the job ends; returns its final status."""
    import asyncio

    client = _client(address)
    stream = out if out is not None else sys.stdout

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            stream.write(chunk)
            stream.flush()

    with _quiet_ray():
        asyncio.run(tail())
    return str(client.get_job_status(job_id).value)


def job_stop(job_id: str, address: str) -> bool:
    return bool(_client(address).stop_job(job_id))


def describe_job(job_id: str, address: str) -> dict[str, Any]:
    info = _client(address).get_job_info(job_id)
    return {"job_id": job_id, "status": str(info.status.value), "message": str(info.message or ""),
            "entrypoint": str(info.entrypoint)}
