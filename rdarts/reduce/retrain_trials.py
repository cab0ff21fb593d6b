"""Retraining of the selection's candidates (short, with a held-out validation split) and of the winner (the
sweep's ``retrain:`` block, one run per seed), as Ray Tune trials or in this process.

Each job is a ``rdarts.retrain`` run; its result (last-epoch test error, validation accuracy, parameter count, the
per-epoch history) is kept as ``<experiment>/reduce/retrain/<key>/result.json``, and a job whose result is there is
not run again. On Ray, the trial reports every epoch with the retrain's checkpoint (``latest.json`` and the newest
``epoch_NNN.pt``) as a Tune checkpoint; a restarted trial copies it back and the retrain resumes from it, and an
interrupted reduce resumes its Tune experiment (``<experiment>/reduce/tune/<kind>-<hash>``) on the next call.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rdarts.network import count_parameters
from rdarts.retrain import Retrain, RetrainConfig
from rdarts.spaces import Genotype

RETRAIN_DIR = "reduce/retrain"
TUNE_DIR = "reduce/tune"
RESULT_FILE = "result.json"
VALID_FRACTION = 0.1
"""Share of the training examples held out (from their end) to select candidates on."""


@dataclass(frozen=True)
class RetrainJob:
    key: str
    """Unique and stable: ``<candidate>.<kind>.s<seed>``."""
    kind: str
    """``candidate`` (short retrain for selection) or ``final`` (the winner, full protocol)."""
    candidate: str
    genotype: str
    config: dict[str, Any]
    """``RetrainConfig.to_dict()``."""

    def config_hash(self) -> str:
        text = json.dumps({"genotype": self.genotype, "config": self.config}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


def base_config(settings: dict[str, Any], spec: Any, *, kind: str, seed: int, epochs: int | None = None,
                n_test: int | None = None, valid_fraction: float = VALID_FRACTION) -> RetrainConfig:
    """The retrain settings of one job: the data of the search (``settings`` = a trial's ``cfg.*`` values without
    the prefix), the network and optimiser of the sweep's ``retrain:`` block, and for candidates the ``reduce:``
    block's shorter schedule and smaller network."""
    r, red = spec.retrain, spec.reduce
    short = kind == "candidate"
    return RetrainConfig(
        dataset=settings["dataset"], data_root=settings.get("data_root"), download=bool(settings.get("download")),
        n_train=settings.get("n_train"), n_test=n_test, image_size=settings.get("image_size"),
        valid_fraction=valid_fraction if short else 0.0,
        layers=(red.layers or r.layers) if short else r.layers, channels=(red.channels or r.channels) if short
        else r.channels, batch_size=(red.batch_size or r.batch_size) if short else r.batch_size,
        epochs=(epochs or red.epochs) if short else (epochs or r.epochs),
        lr=r.lr, weight_decay=r.weight_decay, drop_path=r.drop_path, cutout=r.cutout,
        cutout_length=None,  # half the image side: the reference's 16 at 32 px, and valid on smaller images
        auxiliary_weight=r.auxiliary_weight, auxiliary=r.auxiliary_weight > 0, seed=seed, amp=r.amp,
        device="cpu" if settings.get("device") == "cpu" else "auto")


def result_path(experiment: Path, job: RetrainJob) -> Path:
    return experiment / RETRAIN_DIR / job.key / RESULT_FILE


def load_result(experiment: Path, job: RetrainJob) -> dict[str, Any] | None:
    """A job's saved result, if it was run with the same genotype and settings."""
    path = result_path(experiment, job)
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return result if result.get("config_hash") == job.config_hash() else None


def _summary(job: RetrainJob, history: list[dict[str, Any]], params: int, sizes: tuple[int, int]) -> dict[str, Any]:
    last = history[-1]
    return {"key": job.key, "kind": job.kind, "candidate": job.candidate, "genotype": job.genotype,
            "config": job.config, "config_hash": job.config_hash(), "test_error": last["test_error"],
            "valid_acc": last["valid_acc"], "params": params, "train_size": sizes[0], "valid_size": sizes[1],
            "history": history}


def _save(experiment: Path, result: dict[str, Any]) -> None:
    path = experiment / RETRAIN_DIR / result["key"] / RESULT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=1, allow_nan=True))
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------- in process
def run_local(jobs: Sequence[RetrainJob], experiment: Path, *, log: Callable[[str], None] = print) -> None:
    """Run the jobs one after the other here (each resumes from ``reduce/retrain/<key>/checkpoints``)."""
    for job in jobs:
        log(f"retraining {job.key} ({job.config['epochs']} epochs, {job.config['layers']}x{job.config['channels']})")
        run = Retrain(Genotype.from_json(job.genotype), RetrainConfig.from_dict(job.config),
                      experiment / RETRAIN_DIR / job.key)
        result = run.run()
        _save(experiment, _summary(job, result.history, result.params, (result.train_size, result.valid_size)))


# ------------------------------------------------------------------------------------------------- Ray Tune
def _restore_checkpoint(folder: Path, checkpoint: Any) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if checkpoint is None:
        return
    with checkpoint.as_directory() as d:
        for f in Path(d).iterdir():
            if f.is_file():
                shutil.copy2(f, folder / f.name)


def retrain_trainable(config: dict[str, Any]) -> None:
    """The Tune function trainable of one job (``config = {"job": asdict(RetrainJob)}``)."""
    import torch
    from ray import tune

    job = RetrainJob(**config["job"])
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    out_dir = Path.cwd() / "retrain"
    _restore_checkpoint(out_dir / "checkpoints", tune.get_checkpoint())
    run = Retrain(Genotype.from_json(job.genotype), RetrainConfig.from_dict(job.config), out_dir)
    params = count_parameters(run.model)
    extra = {"key": job.key, "params": params, "train_size": len(run.train_idx), "valid_size": len(run.valid_idx)}
    reported: list[int] = []

    def report(record: dict[str, Any]) -> None:
        assert run.store is not None
        latest = run.store.latest_epoch()
        staging = Path(tempfile.mkdtemp(prefix="checkpoint_", dir=out_dir))
        try:
            for f in (run.store.folder / "latest.json", run.store.path(latest if latest is not None else 0)):
                shutil.copy2(f, staging / f.name)
            tune.report({**record, **extra}, checkpoint=tune.Checkpoint.from_directory(str(staging)))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        reported.append(record["epoch"])
        for f in run.store.folder.glob("epoch_*.pt"):  # only the newest epoch is needed to resume
            if f != run.store.path(latest if latest is not None else 0):
                f.unlink()

    run.run(on_epoch=report)
    if not reported and run.history:  # restarted after its last epoch: report the end again
        report(run.history[-1])


def run_ray(jobs: Sequence[RetrainJob], experiment: Path, spec: Any, *, address: str | None = None,
            log: Callable[[str], None] = print) -> list[str]:
    """Run the jobs as one Tune experiment (resumed if an earlier call was interrupted); returns error lines."""
    from ray import tune

    from rdarts.sweep.runner import init_ray

    if not jobs:
        return []
    kind = jobs[0].kind
    digest = hashlib.sha1("".join(j.key + j.config_hash() for j in jobs).encode()).hexdigest()[:10]
    name = f"{kind}-{digest}"
    storage = experiment / TUNE_DIR
    init_ray(address)
    trainable = tune.with_resources(retrain_trainable, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    path = storage / name
    log(f"retraining {len(jobs)} {kind} job(s) on Ray Tune ({path})")
    if tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(str(path), trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable, param_space={"job": tune.grid_search([asdict(j) for j in jobs])},
            tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=spec.max_concurrent, reuse_actors=False,
                                        trial_dirname_creator=lambda t: t.config["job"]["key"][:120]),
            run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0,
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                      failure_config=tune.FailureConfig(max_failures=spec.max_failures)))
    grid = tuner.fit()
    errors = []
    by_key = {j.key: j for j in jobs}
    for result in grid:
        job = by_key.get(result.config["job"]["key"])
        if job is None:
            continue
        frame = result.metrics_dataframe
        if result.error is not None or frame is None or frame.empty:
            errors.append(f"{job.key}: {str(result.error).strip().splitlines()[-1] if result.error else 'no results'}")
            continue
        frame = frame.drop_duplicates("epoch", keep="last").sort_values("epoch")
        fields = ("epoch", "lr", "drop_path", "train_loss", "train_acc", "valid_acc", "test_acc", "test_error",
                  "epoch_time_s")
        history = [{k: r[k] for k in fields} for r in frame.to_dict("records")]
        last = frame.iloc[-1]
        _save(experiment, _summary(job, history, int(last["params"]),
                                   (int(last["train_size"]), int(last["valid_size"]))))
    return errors


def run_jobs(jobs: Sequence[RetrainJob], experiment: Path, spec: Any, *, runner: str = "ray",
             address: str | None = None, log: Callable[[str], None] = print) -> tuple[dict[str, dict[str, Any]],
                                                                                  list[str]]:
    """Run the jobs without a saved result; returns every job's result (key -> result) and error lines."""
    todo = [j for j in jobs if load_result(experiment, j) is None]
    errors: list[str] = []
    if todo:
        if runner == "ray":
            errors = run_ray(todo, experiment, spec, address=address, log=log)
        elif runner == "local":
            run_local(todo, experiment, log=log)
        else:
            raise ValueError(f"runner must be 'ray' or 'local', got {runner!r}")
    results = {j.key: r for j in jobs if (r := load_result(experiment, j)) is not None}
    return results, errors
