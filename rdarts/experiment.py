"""A sweep's folder (``<storage>/<name>``) and the Ray it runs on: what ``rdarts.sweep`` and ``rdarts.reduce`` share.

The folder holds Tune's own files (a folder per trial with ``params.json``, ``result.json``, ``progress.csv`` and
checkpoints), ``sweep.yaml`` (the file as given), ``results.csv`` (a row per trial), ``plots/`` and, after the
reduce step, ``results.parquet``, ``reduce/`` and the MLflow store. Ray is imported inside ``init_ray`` only.
"""

from __future__ import annotations

import os
from typing import Any

from rdarts import storage
from rdarts.errors import UserError
from rdarts.sweep.spec import SweepSpec, parse_yaml, spec_from_data

SPEC_FILE = "sweep.yaml"
RESULTS_FILE = "results.csv"
PLOTS_DIR = "plots"
# Ray settings this service relies on (see the notes on the stack): the legacy progress table (CLIReporter),
# no warning for per-epoch checkpoints, no token auth file for a local cluster.
RAY_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
           "RAY_AUTH_MODE": "disabled"}


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


def init_ray(address: str | None = None, **local: Any) -> None:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``, as inside a Ray Job), else start a new Ray here.

    Without an address a new local instance is started even if ``ray start`` runs on this machine: joining it
    takes ``--address auto``.
    """
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    import ray

    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address)
    else:
        # A local Ray is a service like any other here: bound to the loopback address unless asked otherwise.
        ray.init(**{"address": "local", "include_dashboard": False, "_node_ip_address": "127.0.0.1", **local})
