"""Inside a Ray Tune trial: what the search trainable and the retrain trainable share.

Both run a resumable engine loop (``Search``, ``Retrain``) that writes ``checkpoints/epoch_NNN.pt`` and
``latest.json``; after each epoch they report the epoch's record with a Tune checkpoint holding the files a restart
needs, and a restarted trial copies those files back before the loop resumes from them. Threads follow the CPUs Tune
gave the trial: no oversubscription, and the same float results on a retry (the thread count changes the order of
float sums). On a shared GPU, CUDA allocations are capped at the trial's share.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from ray import tune

from rdarts.checkpoint import CheckpointStore
from rdarts.gpu_packing import memory_fraction_cap


def use_allocated_cpus() -> None:
    """As many torch threads as CPUs given to the trial; and on a shared GPU, its share of the memory at most."""
    resources = tune.get_context().get_trial_resources().required_resources
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))
    cap_gpu_memory(float(resources.get("GPU", 0.0)))


def cap_gpu_memory(fraction: float) -> float | None:
    """With a fraction of a GPU, cap this process's CUDA allocations at its share (``gpu_packing``): a search that
    outgrows its share fails alone (CUDA out of memory) instead of starving the searches beside it. Returns the
    cap, None when there is nothing to cap (no CUDA, no GPU or a whole one)."""
    if not 0 < fraction < 1 or not torch.cuda.is_available():
        return None
    cap = memory_fraction_cap(fraction)
    torch.cuda.set_per_process_memory_fraction(cap)
    print(f"GPU share {fraction:g}: CUDA allocations capped at {cap:.1%} of the GPU's memory", flush=True)
    return cap


def trial_dir() -> Path:
    """The trial's node-local working folder (Tune changes into it by default, ``RAY_CHDIR_TO_TRIAL_DIR``)."""
    if os.environ.get("RAY_CHDIR_TO_TRIAL_DIR", "1") != "0":
        return Path.cwd()
    folder = Path(tempfile.gettempdir()) / "rdarts_trials" / tune.get_context().get_trial_id()
    folder.mkdir(parents=True, exist_ok=True)  # all trials would otherwise share the driver's folder
    return folder


def restore_checkpoint(folder: Path) -> None:
    """Make ``folder`` hold exactly the trial's reported checkpoint (local files may be newer than the last report)."""
    checkpoint = tune.get_checkpoint()
    shutil.rmtree(folder, ignore_errors=True)
    if checkpoint is None:
        return
    folder.mkdir(parents=True)
    with checkpoint.as_directory() as d:
        for f in Path(d).iterdir():
            if f.is_file():
                shutil.copy2(f, folder / f.name)


def newest_files(store: CheckpointStore, keep: int) -> list[Path]:
    """``latest.json`` and the newest ``keep`` epoch files: what a restart from the latest state needs."""
    latest = store.latest_epoch()
    if latest is None:
        raise RuntimeError(f"no checkpoint in {store.folder} after an epoch")
    epochs = range(max(0, latest - keep + 1), latest + 1)
    return [store.folder / "latest.json"] + [store.path(e) for e in epochs if store.path(e).is_file()]


def report(metrics: dict[str, Any], files: Iterable[Path], staging_root: Path) -> None:
    """``tune.report`` with a checkpoint of ``files`` (hard links where possible: Tune copies them to storage)."""
    files = list(files)
    staging = Path(tempfile.mkdtemp(prefix="checkpoint_", dir=staging_root))
    try:
        for f in files:
            try:
                os.link(f, staging / f.name)
            except OSError:
                shutil.copy2(f, staging / f.name)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(staging)))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def prune(store: CheckpointStore, kept: Iterable[Path]) -> None:
    """Delete the epoch files that are not ``kept``: the loop writes one per epoch, a restart needs the reported."""
    names = {f.name for f in kept}
    for f in store.folder.glob("epoch_*.pt"):
        if f.name not in names:
            f.unlink()
