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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rdarts.config import RetrainConfig, SearchConfig
from rdarts.network import count_parameters
from rdarts.retrain import Retrain
from rdarts.spaces import Genotype
from rdarts.sweep.gpu import retrain_gpu
from rdarts.sweep.spec import SweepSpec

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


def base_config(search: SearchConfig, spec: SweepSpec, *, kind: str, seed: int, epochs: int | None = None,
                n_test: int | None = None, valid_fraction: float = VALID_FRACTION) -> RetrainConfig:
    """The retrain settings of one job: the data of the search, the network and optimiser of the sweep's
    ``retrain:`` block, and for candidates the ``reduce:`` block's shorter schedule and smaller network."""
    train = spec.retrain.model_dump(exclude={"seeds"})
    train["auxiliary"] = train["auxiliary"] and train["auxiliary_weight"] > 0
    short = kind == "candidate"
    if short:
        red = spec.reduce
        train.update({k: v for k, v in (("layers", red.layers), ("channels", red.channels),
                                        ("batch_size", red.batch_size)) if v is not None})
        train["epochs"] = epochs or red.epochs
    elif epochs:
        train["epochs"] = epochs
    return RetrainConfig(
        dataset=search.dataset, data_root=search.data_root, download=search.download, n_train=search.n_train,
        n_test=n_test, image_size=search.image_size, valid_fraction=valid_fraction if short else 0.0, seed=seed,
        device="cpu" if search.device == "cpu" else "auto", **train)


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
def retrain_trainable(config: dict[str, Any]) -> None:
    """The Tune function trainable of one job (``config = {"job": asdict(RetrainJob)}``)."""
    from rdarts import tune_trial

    job = RetrainJob(**config["job"])
    tune_trial.use_allocated_cpus()
    out_dir = tune_trial.trial_dir() / "retrain"
    tune_trial.restore_checkpoint(out_dir / "checkpoints")
    run = Retrain(Genotype.from_json(job.genotype), RetrainConfig.from_dict(job.config), out_dir)
    extra = {"key": job.key, "params": count_parameters(run.model), "train_size": len(run.train_idx),
             "valid_size": len(run.valid_idx)}
    reported: list[int] = []

    def report(record: dict[str, Any]) -> None:
        assert run.store is not None
        kept = tune_trial.newest_files(run.store, 1)  # only the newest epoch is needed to resume
        tune_trial.report({**record, **extra}, kept, out_dir)
        tune_trial.prune(run.store, kept)
        reported.append(record["epoch"])

    run.run(on_epoch=report)
    if not reported and run.history:  # restarted after its last epoch: report the end again
        report(run.history[-1])


def run_ray(jobs: Sequence[RetrainJob], experiment: Path, spec: SweepSpec, *, address: str | None = None,
            log: Callable[[str], None] = print) -> list[str]:
    """Run the jobs as one Tune experiment (resumed if an earlier call was interrupted); returns error lines."""
    from rdarts.experiment import init_ray

    if not jobs:
        return []
    init_ray(address)  # before Ray is imported here: a local Ray's settings are read from the environment at import
    from ray import tune

    kind = jobs[0].kind
    digest = hashlib.sha1("".join(j.key + j.config_hash() for j in jobs).encode()).hexdigest()[:10]
    name = f"{kind}-{digest}"
    storage = experiment / TUNE_DIR
    gpu = retrain_gpu(spec, [(j.genotype, j.config) for j in jobs])
    trainable = tune.with_resources(retrain_trainable, {"cpu": spec.resources.cpu, "gpu": gpu})
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


def run_jobs(jobs: Sequence[RetrainJob], experiment: Path, spec: SweepSpec, *, runner: str = "ray",
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
