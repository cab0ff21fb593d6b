"""Run a sweep on Ray Tune: start (or join) Ray, run every trial of the spec, summarise; resume; submit as a Ray Job.

The experiment folder (``<storage>/<name>``) holds Tune's own files (one folder per trial with ``result.json``,
``progress.csv`` and checkpoints) plus ``sweep.yaml`` (the file as given), ``results.csv`` (one row per trial) and
``plots/<trial>.png`` (eigenvalue curves, when ``rdarts.plots.plot_eigenvalues`` exists).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rdarts.errors import UserError
from rdarts.sweep.spec import SweepSpec, load_sweep, parse_yaml, spec_from_data

if TYPE_CHECKING:
    import pyarrow.fs
    from ray import tune

SPEC_FILE = "sweep.yaml"
RESULTS_FILE = "results.csv"
PLOTS_DIR = "plots"
# Ray settings this service relies on (see the notes on the stack): the legacy progress table (CLIReporter),
# no warning for per-epoch checkpoints, no token auth file for a local cluster.
RAY_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
           "RAY_AUTH_MODE": "disabled"}
PROGRESS_METRICS = {"epoch": "epoch", "valid_acc": "valid_acc", "last_eigenvalue": "λ_max",
                    "eigenvalue_ratio": "ratio", "search_status": "search"}
SUMMARY_COLUMNS = ("index", "trial", "setting", "method", "status", "epochs", "valid_acc", "last_eigenvalue",
                   "stop_epoch", "ada_round", "result_epoch", "param_free_share", "result_genotype", "note")


@dataclass
class SweepOutcome:
    experiment_path: str
    rows: list[dict[str, Any]]
    table: str
    plots: list[str] = field(default_factory=list)

    @property
    def num_errors(self) -> int:
        return sum(1 for r in self.rows if r["status"] == "error")


# ------------------------------------------------------------------------------------------------- Ray
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


def trial_name(trial: Any) -> str:
    return f"t{trial.config['trial']['index']:03d}"


def trial_dirname(trial: Any) -> str:
    return f"t{trial.config['trial']['index']:03d}_{trial.trial_id}"


def build_tuner(spec: SweepSpec, *, storage: str | None = None, trainable: Callable[..., Any] | None = None,
                verbose: int = 1) -> tune.Tuner:
    """The Tuner of a sweep: one trial per ``spec.trials()`` entry, EigenvalueStopper, per-epoch checkpoints."""
    from ray import tune

    from rdarts.sweep.scheduler import EigenvalueStopper
    from rdarts.sweep.trainable import search_trainable

    stopper = EigenvalueStopper()
    # One grid value per trial, each a plain dict: Tuner.restore needs nothing re-specified (a sample_from lambda
    # would come back as a placeholder).
    param_space = {"trial": tune.grid_search(spec.trials())}
    reporter = tune.CLIReporter(parameter_columns={"trial/setting": "setting", "trial/method": "method"},
                                metric_columns=PROGRESS_METRICS,
                                max_report_frequency=30, max_column_length=40, max_progress_rows=100)
    return tune.Tuner(
        _with_resources(trainable or search_trainable, spec),
        param_space=param_space,
        tune_config=tune.TuneConfig(scheduler=stopper, max_concurrent_trials=spec.max_concurrent, num_samples=1,
                                    trial_name_creator=trial_name, trial_dirname_creator=trial_dirname,
                                    reuse_actors=False),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=storage or spec.storage_path(),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            progress_reporter=reporter, callbacks=[stopper.callback()], verbose=verbose),
    )


def _with_resources(trainable: Callable[..., Any], spec: SweepSpec) -> Any:
    from ray import tune

    return tune.with_resources(trainable, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


# ------------------------------------------------------------------------------------------------- storage
def _fs(path: str) -> tuple[pyarrow.fs.FileSystem, str]:
    import pyarrow.fs

    if "://" in path:
        return pyarrow.fs.FileSystem.from_uri(path)  # type: ignore[no-any-return]
    return pyarrow.fs.LocalFileSystem(), str(Path(path).expanduser().resolve())


def _write(experiment_path: str, rel: str, data: bytes) -> str:
    fs, base = _fs(experiment_path)
    target = f"{base}/{rel}"
    fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(target) as f:
        f.write(data)
    return target if "://" not in experiment_path else f"{experiment_path}/{rel}"


def _read(experiment_path: str, rel: str) -> bytes | None:
    import pyarrow.fs

    fs, base = _fs(experiment_path)
    if fs.get_file_info(f"{base}/{rel}").type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(f"{base}/{rel}") as f:
        return f.read()  # type: ignore[no-any-return]


def _has_experiment(experiment_path: str) -> bool:
    import pyarrow.fs

    fs, base = _fs(experiment_path)
    if fs.get_file_info(base).type != pyarrow.fs.FileType.Directory:
        return False
    infos = fs.get_file_info(pyarrow.fs.FileSelector(base))
    return any(Path(i.path).name.startswith("experiment_state") or Path(i.path).name == SPEC_FILE for i in infos)


# ------------------------------------------------------------------------------------------------- run / resume
def run_sweep(spec: SweepSpec, address: str | None = None, *, storage: str | None = None,
              spec_text: str | None = None, trainable: Callable[..., Any] | None = None, verbose: int = 1,
              plots: bool = True, out: Any = None) -> SweepOutcome:
    """Run every trial of ``spec`` and summarise them.

    Args:
        spec: The validated sweep.
        address: A Ray cluster to join (``host:6379``, ``ray://...``, ``auto``); a local Ray is started without.
        storage: Overrides ``spec.storage``.
        spec_text: The sweep file's text, kept as ``sweep.yaml`` (the spec's JSON when omitted).
        trainable: Replaces ``search_trainable`` (tests).
        verbose: Tune's verbosity (0 silent, 1 the progress table).
        plots: Write eigenvalue curves when ``rdarts.plots.plot_eigenvalues`` is available.
        out: Where the summary is printed (stdout by default).
    """
    storage_path = storage or spec.storage_path()
    experiment_path = f"{storage_path.rstrip('/')}/{spec.name}"
    if _has_experiment(experiment_path):
        raise UserError(f"{experiment_path} already holds a sweep named {spec.name!r}: resume it with "
                        f"'rdarts sweep resume {experiment_path}', delete it, or change name: in the sweep file")
    tuner_storage = storage_path if "://" in storage_path else str(Path(storage_path).expanduser().resolve())
    init_ray(address)
    tuner = build_tuner(spec, storage=tuner_storage, trainable=trainable, verbose=verbose)
    _write(experiment_path, SPEC_FILE, (spec_text or spec.model_dump_json(indent=2, exclude_unset=True)).encode())
    grid = tuner.fit()
    return summarise(grid, experiment_path, plots=plots, out=out)


def load_experiment_spec(experiment_path: str) -> SweepSpec:
    data = _read(experiment_path, SPEC_FILE)
    if data is None:
        raise UserError(f"{experiment_path}: no {SPEC_FILE} here; give the folder of a sweep started with "
                        "'rdarts sweep run' (<storage>/<name>)")
    text = data.decode()
    source = f"{experiment_path}/{SPEC_FILE}"
    return spec_from_data(parse_yaml(text, source), source, text)


def resume_sweep(experiment_path: str, address: str | None = None, *, trainable: Callable[..., Any] | None = None,
                 verbose: int = 1, plots: bool = True, out: Any = None) -> SweepOutcome:
    """Continue an interrupted sweep: unfinished and errored trials resume from their checkpoints; finished
    trials are not run again."""
    from ray import tune

    from rdarts.sweep.trainable import search_trainable

    path = experiment_path if "://" in experiment_path else str(Path(experiment_path).expanduser().resolve())
    spec = load_experiment_spec(path)
    init_ray(address)
    if not tune.Tuner.can_restore(path):
        raise UserError(f"{path}: no Tune experiment state to resume from (the sweep never started?)")
    tuner = tune.Tuner.restore(path, _with_resources(trainable or search_trainable, spec), resume_errored=True)
    grid = tuner.fit()
    return summarise(grid, path, plots=plots, out=out)


# ------------------------------------------------------------------------------------------------- summary
_ERROR_LINE = re.compile(r"^\s*(?:[\w.]+(?:Error|Exception)): (.+)$", re.M)


def error_message(error: BaseException | None) -> str:
    """The innermost ``SomeError: message`` line of a trial error (Tune wraps the trainable's traceback)."""
    if error is None:
        return ""
    found = _ERROR_LINE.findall(str(error))
    return found[-1].strip() if found else str(error).strip().splitlines()[-1]


def _row(result: Any) -> dict[str, Any]:
    m, cfg = result.metrics or {}, (result.config or {}).get("trial", {})
    status = "error" if result.error is not None else (m.get("search_status") or "unknown")
    note = error_message(result.error) if result.error is not None else (m.get("scheduler_reason") or
                                                                          m.get("stop_reason") or "")
    return {
        "index": cfg.get("index"), "trial": Path(result.path).name, "setting": cfg.get("setting", ""),
        "method": cfg.get("method", ""),
        "status": status, "epochs": m.get("epoch", -1) + 1, "valid_acc": m.get("valid_acc"),
        "last_eigenvalue": m.get("last_eigenvalue"), "stop_epoch": m.get("stop_epoch", -1),
        "ada_round": m.get("ada_round"),
        "result_epoch": m.get("result_epoch"), "param_free_share": m.get("param_free_share"),
        "result_genotype": m.get("result_genotype", ""), "note": note, "path": result.path,
    }


def summarise(grid: Any, experiment_path: str, *, plots: bool = True, out: Any = None) -> SweepOutcome:
    """Print and save the one-row-per-trial table; draw the eigenvalue curves."""
    import pandas as pd

    rows = sorted((_row(r) for r in grid), key=lambda r: (r["index"] is None, r["index"]))
    frame = pd.DataFrame(rows, columns=[*SUMMARY_COLUMNS, "path"])
    _write(experiment_path, RESULTS_FILE, frame.to_csv(index=False).encode())
    shown = frame.drop(columns=["path", "result_genotype"])
    table = shown.to_string(index=False, max_colwidth=60, float_format=lambda v: f"{v:.4g}")
    outcome = SweepOutcome(experiment_path, rows, table)
    if plots:
        outcome.plots = _plot_curves(grid, experiment_path, out)
    stream = out if out is not None else sys.stdout
    print(f"\n{len(rows)} trial(s), {outcome.num_errors} failed; results in {experiment_path}/{RESULTS_FILE}",
          file=stream)
    print(table, file=stream)
    return outcome


def _plot_curves(grid: Any, experiment_path: str, out: Any) -> list[str]:
    try:
        from rdarts.plots import plot_eigenvalues  # written separately; optional until it exists
    except ImportError:
        return []
    import tempfile

    written = []
    for result in grid:
        frame = result.metrics_dataframe
        if frame is None or frame.empty:
            continue
        name = Path(result.path).name
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / f"{name}.png"
            try:
                plot_eigenvalues(frame.to_dict("records"), local)
            except Exception as e:  # a plot must not hide the results of a finished sweep; say so and go on
                print(f"warning: no eigenvalue plot for {name}: {type(e).__name__}: {e}", file=out or sys.stderr)
                continue
            if local.is_file():
                written.append(_write(experiment_path, f"{PLOTS_DIR}/{name}.png", local.read_bytes()))
    return written


# ------------------------------------------------------------------------------------------------- Ray Jobs
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
