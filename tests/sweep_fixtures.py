"""Shared pieces of the sweep tests: tiny specs, a session Ray, test trainables, a CLI harness.

The test trainables run in Ray workers, which import this module by name: the Ray fixture puts ``tests/`` on the
workers' ``PYTHONPATH``. Run as a script it is a CLI harness: ``python tests/sweep_fixtures.py run FILE ...`` is
``rdarts sweep run`` with the test trainables registered (used for the killed-driver test).
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SWEEPS = ROOT / "sweeps"
CORPUS = TESTS / "sweep_corpus"

# A search of well under a second per epoch on one core (digits: 8x8 images; 3 cells so a normal cell exists).
TINY_SEARCH: dict[str, Any] = {
    "space": "s3", "dataset": "digits", "n_train": 128, "image_size": 8, "layers": 3, "channels": 4, "epochs": 3,
    "batch_size": 32, "order": "first", "ev_every": 1, "device": "cpu",
}
# A DARTS-ES rule that can fire within 6 epochs: eigenvalues every epoch, windows of 3, look back 2, from epoch 1.
FAST_RULE: dict[str, Any] = {"ev_every": 1, "window": 3, "delta": 2, "factor": 1.3, "start_epoch": 1}
RAY_ENV = {"RAY_AUTH_MODE": "token", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
           "RAY_AIR_NEW_OUTPUT": "0", "TUNE_GLOBAL_CHECKPOINT_S": "1", "RAY_DEDUP_LOGS": "0"}


def tiny_spec(name: str, grid: dict[str, list[Any]] | list[dict[str, list[Any]]] | None = None,
              search: dict[str, Any] | None = None, **top: Any) -> Any:
    from rdarts.sweep.spec import STOPPING_FIELDS, spec_from_data

    grid = grid or {}
    swept = {k for g in (grid if isinstance(grid, list) else [grid]) for k in g}
    taken = swept | set(top.get("sample", {}).get("params", {}))
    if "stopping" in top:
        taken |= set(STOPPING_FIELDS.values())
    base = {k: v for k, v in TINY_SEARCH.items() if k not in taken}
    return spec_from_data({"name": name, "search": {**base, **(search or {})}, "grid": grid, **top})


def progress(path: str | Path) -> list[dict[str, Any]]:
    """A trial's reported rows (``progress.csv``) as dicts."""
    import pandas as pd

    return pd.read_csv(Path(path) / "progress.csv").to_dict("records")  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray for all slow tests (2 CPUs, no dashboard, quiet workers)."""
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    import ray

    from rdarts.experiment import ensure_auth_token, init_ray

    ensure_auth_token()  # the token every Ray of the tests uses (token auth is on, as in rdarts itself)
    if ray.is_initialized():
        yield
        return
    init_ray(num_cpus=2, log_to_driver=False)
    yield
    ray.shutdown()


# ------------------------------------------------------------------------------------------------- test trainables
def scripted_eigenvalues(extra: dict[str, Any]) -> Any:
    """λ_max = 0.1 before epoch ``explode_at``, then growing 10x per epoch; ``None`` (the real Hessian) without."""
    at = extra.get("explode_at")
    if at is None:
        return None
    return lambda epoch: 0.1 if epoch < at else 0.1 * 10.0 ** (epoch - at + 1)


def fault_trainable(config: dict[str, Any]) -> None:
    """``search_trainable`` steered by test labels in ``search.extra``.

    - ``explode_at``: scripted eigenvalues (the search's ``eigenvalue_fn`` seam) that explode from that epoch;
    - ``crash_at_epoch`` + ``crash_marker``: the worker process dies (``os._exit``) right after that epoch's report,
      once: the marker file records that it happened;
    - ``epoch_sleep``: seconds to wait after each report (a trial slow enough to be watched while it runs).
    """
    from rdarts.sweep.trainable import run_trial

    extra = config["trial"]["search"]["extra"]

    def crash_once(record: dict[str, Any]) -> None:
        marker = Path(extra["crash_marker"])
        if record["epoch"] == extra["crash_at_epoch"] and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)  # as a lost node: no exception, no cleanup

    def after(record: dict[str, Any]) -> None:
        time.sleep(float(extra.get("epoch_sleep", 0.0)))
        if "crash_at_epoch" in extra:
            crash_once(record)

    run_trial(config, eigenvalue_fn=scripted_eigenvalues(extra), after_report=after)


TRAINABLES = {"search": None, "fault": fault_trainable}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow server on 127.0.0.1 (SQLite store, one worker) for the module; yields its URI."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"mlflow server did not start (exit code {proc.poll()})")
            time.sleep(0.5)
    yield uri
    proc.terminate()
    proc.wait(timeout=30)


# ------------------------------------------------------------------------------------------------- CLI harness
def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """The ``sweep`` command under a minimal main CLI, in-process: (exit code, stdout, stderr)."""
    from contextlib import redirect_stderr, redirect_stdout

    from rdarts.errors import UserError
    from rdarts.sweep.cli import add_parser

    parser = argparse.ArgumentParser(prog="rdarts")
    add_parser(parser.add_subparsers(dest="command", required=True))
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        args = parser.parse_args(argv)
        try:
            code = int(args.func(args))
        except UserError as e:  # what the main CLI does
            print(f"rdarts: error: {e}", file=sys.stderr)
            code = 2
    return code, out.getvalue(), err.getvalue()


def _main() -> int:
    """``run FILE --storage DIR [--trainable NAME]``: a sweep driver for the killed-driver test."""
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["run"])
    parser.add_argument("file")
    parser.add_argument("--storage", required=True)
    parser.add_argument("--trainable", default="search", choices=list(TRAINABLES))
    args = parser.parse_args()
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    from rdarts.experiment import init_ray
    from rdarts.sweep.runner import run_sweep
    from rdarts.sweep.spec import load_sweep

    init_ray(num_cpus=2, log_to_driver=False)
    import sweep_fixtures  # the workers unpickle the trainables by this module name, not as __main__

    outcome = run_sweep(load_sweep(args.file), storage=args.storage, spec_text=Path(args.file).read_text(),
                        trainable=sweep_fixtures.TRAINABLES[args.trainable], verbose=0)
    return 1 if outcome.num_errors else 0


if __name__ == "__main__":
    sys.path.insert(0, str(TESTS))
    sys.exit(_main())
