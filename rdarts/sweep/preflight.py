"""Refuse before starting: what every trial of a sweep needs, checked by the driver before Ray starts a trial.

The sweep file itself is checked when it loads (``rdarts.sweep.spec``: types, values, the size of the grid, YAML
aliases). Here the world around it: the results folder can be written, each dataset is where the trials will look
(fetched once, under a lock, when ``download: true``), and each trial's resources fit the machine (or the largest
node of the cluster joined). Each problem is one ``UserError`` line naming the field and the fix; the CLI exits 2
and nothing has started.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rdarts import storage as store
from rdarts.errors import UserError
from rdarts.sweep import gpu
from rdarts.sweep.spec import SweepSpec


def check_storage(spec: SweepSpec, override: str | None = None) -> None:
    """The results folder exists or can be created, is a folder, and can be written."""
    field = "--storage" if override else "storage"
    path = store.normalise(override or spec.storage)
    if store.is_remote(path):
        return  # object storage: the credentials are the cluster's; Tune reports its own errors there
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{field}: {folder} is a file, not a folder; give a folder for the results")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".rdarts-write-check-"):
            pass
    except OSError as e:
        raise UserError(f"{field}: cannot write results to {folder} ({e.strerror or e}); give a folder you can "
                        "write, e.g. --storage ~/rdarts_results") from None


@contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder``: two sweeps fetching the same dataset do not write it at the same time."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".rdarts-download.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def check_data(trials: list[dict[str, Any]]) -> None:
    """Each dataset the trials use loads here, both splits, as the trials and the retrains will load it."""
    from rdarts.data import DataError, load_dataset

    wanted = {(t["search"]["dataset"], t["search"]["data_root"], bool(t["search"]["download"])) for t in trials}
    for dataset, root, download in sorted(wanted, key=str):
        folder = Path(root).expanduser() if root else None
        try:
            if download and folder is not None:
                with _lock(folder):
                    load_dataset(dataset, root=folder, train=True, download=True)
                    load_dataset(dataset, root=folder, train=False, download=True)
            else:
                load_dataset(dataset, root=folder, train=True)
                load_dataset(dataset, root=folder, train=False)
        except DataError as e:
            # The engine's message names the CLI flags; say what they are in a sweep file.
            raise UserError(f"search.dataset {dataset!r}: {e} (in a sweep file: search.data_root: DIR, "
                            "search.download: true)") from None


def _local_resources() -> dict[str, float]:
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n = torch.cuda.device_count()
    memory = min((torch.cuda.get_device_properties(i).total_memory for i in range(n)), default=0) / 1e9
    return {"CPU": float(cpus), "GPU": float(n), "GPU_MEMORY_GB": memory}


def largest_node() -> dict[str, float]:
    """The most CPUs and GPUs one alive node of the joined Ray cluster has (a trial runs on one node)."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    return {k: max((float(n.get(k, 0)) for n in nodes), default=0.0) for k in ("CPU", "GPU")}


def check_resources(spec: SweepSpec, available: dict[str, float] | None = None, where: str = "this machine") -> None:
    """A trial's ``resources:`` fit one node; else Tune would leave the trials pending forever. ``gpu: auto`` must
    fit a GPU of ``resources.gpu_memory_gb`` (and that must not be more than this machine's GPU has)."""
    have = available if available is not None else _local_resources()
    auto = spec.resources.gpu == gpu.AUTO
    if auto:
        gpu.check(gpu.search_plan(spec))
        local_gb = have.get("GPU_MEMORY_GB", 0.0)
        if local_gb and local_gb < spec.resources.gpu_memory_gb:
            raise UserError(f"resources.gpu_memory_gb: {spec.resources.gpu_memory_gb:g} GB assumed for gpu: auto, "
                            f"but the GPU of {where} has {local_gb:.1f} GB; set resources.gpu_memory_gb: "
                            f"{int(local_gb)}")
    for key, field in (("CPU", "cpu"), ("GPU", "gpu")):
        need = float(getattr(spec.resources, field)) if field == "cpu" else gpu.search_gpu(spec)
        if need > have.get(key, 0.0):
            fix = (f"lower resources.{field} to at most {have.get(key, 0.0):g}" if have.get(key, 0.0)
                   else f"set resources.{field}: 0")
            asks = f"{need:g} {key}(s)" + (" (auto)" if auto and field == "gpu" else "")
            raise UserError(f"resources.{field}: each trial asks for {asks}, but {where} has "
                            f"{have.get(key, 0.0):g}; {fix}, or run on a cluster that has them (--address)")


def preflight(spec: SweepSpec, *, storage: str | None = None, local: bool = True) -> None:
    """Everything checkable before Ray starts; ``local`` (no ``--address``) adds the data and the machine's size."""
    check_storage(spec, storage)
    if local:
        check_resources(spec)
        check_data(spec.trials())
