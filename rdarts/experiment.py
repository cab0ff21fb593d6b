"""A sweep's folder (``<storage>/<name>``) and the Ray it runs on: what ``rdarts.sweep`` and ``rdarts.reduce`` share.

The folder holds Tune's own files (a folder per trial with ``params.json``, ``result.json``, ``progress.csv`` and
checkpoints), ``sweep.yaml`` (the file as given), ``results.csv`` (a row per trial), ``plots/`` and, after the
reduce step, ``results.parquet``, ``reduce/`` and the MLflow store. Ray is imported inside ``init_ray`` only.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from rdarts import storage
from rdarts.errors import UserError
from rdarts.sweep.spec import SweepSpec, parse_yaml, spec_from_data

SPEC_FILE = "sweep.yaml"
RESULTS_FILE = "results.csv"
PLOTS_DIR = "plots"
# Ray settings this service relies on (see the notes on the stack): the legacy progress table (CLIReporter),
# no warning for per-epoch checkpoints.
RAY_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}
# A local Ray is one machine's service: token authentication on every HTTP and gRPC entry point, and every server
# bound to the loopback address. Ray 2.60 has no bind setting; it binds its agents, metrics servers and gRPC servers
# to the node address, which it takes as the host's external address unless clusters are switched off: that switch
# (meant for macOS and Windows) makes the node address 127.0.0.1 (measured: nothing listens beyond loopback then).
LOCAL_RAY_ENV = {"RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
MAX_TEMP_PATH = 36


def experiment_path(spec: SweepSpec, storage_override: str | None = None) -> str:
    """``<storage>/<name>``: the folder (or URI) of a sweep."""
    return storage.join(storage.normalise(storage_override or spec.storage), spec.name)


def holds_sweep(path: str) -> bool:
    """Whether ``path`` already holds a sweep (a spec file or Tune's experiment state)."""
    names = storage.list_names(path)
    return names is not None and any(n == SPEC_FILE or n.startswith("experiment_state") for n in names)


def load_spec(path: str) -> SweepSpec:
    """The sweep file a sweep folder was started with."""
    data = storage.read_bytes(path, SPEC_FILE)
    if data is None:
        raise UserError(f"{path}: no {SPEC_FILE} here; give the folder of a sweep started with "
                        "'rdarts sweep run' (<storage>/<name>)")
    text = data.decode()
    source = storage.join(path, SPEC_FILE)
    return spec_from_data(parse_yaml(text, source), source, text)


def private_temp_dir() -> Path:
    """``$RDARTS_RAY_TMP`` or ``/tmp/rdarts-<uid>``: a folder only this user can enter (0700), for Ray's session
    files (Ray makes its own temp folder world-writable, so it goes one level down in here)."""
    base = Path(os.environ.get("RDARTS_RAY_TMP") or f"/tmp/rdarts-{os.getuid()}")
    # Ray puts Unix sockets at <temp>/ray/session_<date>_<pid>/sockets/plasma_store; Linux caps such paths at 107 bytes.
    if len(str(base)) > MAX_TEMP_PATH:
        raise UserError(f"RDARTS_RAY_TMP={base} is too long for Ray's socket paths (at most {MAX_TEMP_PATH} "
                        "characters); use a shorter folder")
    base.mkdir(mode=0o700, exist_ok=True)
    info = base.lstat()
    if base.is_symlink() or info.st_uid != os.getuid():
        raise UserError(f"{base} is not a folder of this user (owner uid {info.st_uid}, or a link); remove it, or "
                        "set RDARTS_RAY_TMP to a folder of your own")
    os.chmod(base, 0o700)
    return base


def ensure_auth_token() -> Path:
    """Ray's token file (``~/.ray/auth_token``), created readable by this user only (Ray's own is 0644)."""
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))  # Ray's own format: 256 bits as hex
    os.chmod(path, 0o600)
    return path


def joins_cluster(address: str | None) -> bool:
    """Whether ``init_ray(address)`` joins a running cluster (else it starts a local Ray)."""
    return bool(address or os.environ.get("RAY_ADDRESS"))


def quiet_logs(verbose: bool) -> None:
    """Ray Tune's and MLflow's INFO lines (each checkpoint, each state file written) only with ``--verbose``."""
    import logging

    for name in ("ray.tune", "ray.train", "ray.air", "mlflow"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def init_ray(address: str | None = None, *, verbose: bool = False, **local: Any) -> None:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``, as inside a Ray Job), else start a new Ray here.

    Without an address a new local instance is started even if ``ray start`` runs on this machine: joining it
    takes ``--address auto``. A local instance uses token authentication, listens on 127.0.0.1 only and keeps its
    session files in ``private_temp_dir()``. The trials' own output reaches this terminal only with ``verbose``
    (their results and errors come back through Tune either way).
    """
    quiet_logs(verbose)
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    joining = joins_cluster(address)
    if not joining:
        os.environ.update(LOCAL_RAY_ENV)  # before Ray is imported: its constants read the environment once
        ensure_auth_token()
    import ray

    if ray.is_initialized():
        return
    if joining:
        ray.init(address=address, log_to_driver=verbose)
        return
    from ray._private import ray_constants
    from ray._raylet import Config

    # In case Ray was imported before the environment was set: it reads both once (a constant, its cached config).
    ray_constants.ENABLE_RAY_CLUSTER = False
    Config.initialize("")
    temp_dir = str(private_temp_dir() / "ray")
    ray.init(**{"address": "local", "include_dashboard": False, "_node_ip_address": "127.0.0.1",
                "_temp_dir": temp_dir, "log_to_driver": verbose, **local})
