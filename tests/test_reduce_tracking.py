"""``rdarts reduce`` end to end: a tiny real sweep on Ray, retrains as Tune trials, a real ``mlflow server``.

Slow (about a minute and a half on 2 cores): one 2-trial sweep (plain and DARTS-ES with scripted eigenvalues that
make ES fire), one MLflow server (SQLite in tmp, ``--workers 1``), shared by the tests of this module.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sweep_fixtures import FAST_RULE, fault_trainable, free_port, tiny_spec

from rdarts.network import Network, count_parameters
from rdarts.reduce import reduce_experiment
from rdarts.reduce.runs import EPOCH_METRICS
from rdarts.spaces import Genotype
from rdarts.sweep.runner import run_sweep
from rdarts.tracking import KEY, PARENT_TAG

pytestmark = pytest.mark.slow

EPOCHS = 6
ES_STOP = 1  # with λ exploding from epoch 3, the FAST_RULE fires at epoch 4 and keeps the genotype of epoch 1


@pytest.fixture(scope="module")
def experiment(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    spec = tiny_spec("reduce-e2e", grid={"early_stop": ["off", "es"]}, search={"epochs": EPOCHS,
                                                                               "extra": {"explode_at": 3}},
                     stopping=FAST_RULE, max_concurrent=2,
                     reduce={"protocol": "winner", "epochs": 1, "layers": 3, "channels": 4, "batch_size": 32},
                     retrain={"epochs": 1, "layers": 3, "channels": 4, "batch_size": 32, "seeds": [1]})
    root = tmp_path_factory.mktemp("sweep")
    outcome = run_sweep(spec, storage=str(root), verbose=0, out=io.StringIO(), trainable=fault_trainable,
                        plots=False)
    assert outcome.num_errors == 0
    return Path(outcome.experiment_path), spec


def _runs(client: Any, name: str) -> tuple[Any, list[Any]]:
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if PARENT_TAG not in r.data.tags]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parents[0].info.run_id]
    assert len(children) == len(runs) - 1  # nothing outside the tree
    return parents[0], children


def _contents(client: Any, name: str) -> dict[str, Any]:
    parent, children = _runs(client, name)
    out = {}
    for run in [parent, *children]:
        hist = {m: [(x.step, x.value) for x in client.get_metric_history(run.info.run_id, m)]
                for m in run.data.metrics}
        arts = sorted(a.path for a in client.list_artifacts(run.info.run_id))
        out[run.data.tags[KEY]] = (run.info.run_id, run.data.params, hist, arts)
    return out


def test_reduce_logs_the_sweep_tree_once(experiment: tuple[Path, Any], server: str) -> None:
    from mlflow.tracking import MlflowClient

    path, spec = experiment
    t0 = time.monotonic()
    first = reduce_experiment(path, spec, tracking_uri=server, n_test=60, out=io.StringIO())
    print(f"first reduce: {time.monotonic() - t0:.1f} s")
    assert first.exit_code == 0 and not first.errors
    frame = pd.read_parquet(path / "results.parquet")
    assert set(frame["trial"]) == set(first.selection.returned["trial"]) and len(frame) == EPOCHS + ES_STOP + 4

    # The ES trial returns its stop epoch's genotype.
    returned = first.selection.returned.merge(frame.drop_duplicates("trial")[["trial", "cfg.early_stop"]])
    es = returned[returned["cfg.early_stop"] == "es"].iloc[0]
    assert es["returned_epoch"] == ES_STOP and es["stop_source"] == "search"
    es_rows = frame[(frame["trial"] == es["trial"]) & (frame["epoch"] == ES_STOP)]
    assert Genotype.from_json(es["genotype"]) == Genotype.from_json(es_rows["genotype"].iloc[0])

    client = MlflowClient(server)
    assert client.get_experiment_by_name(spec.name).tags["mlflow.experimentKind"] == "custom_model_development"
    parent, children = _runs(client, spec.name)
    assert parent.data.tags[KEY] == spec.name and parent.data.tags["rdarts.spec_hash"]
    assert parent.data.tags["rdarts.version"] and parent.data.params["search.space"] == "s3"
    assert {"results.parquet", "summary.csv", "summary.md", "scatter.png", "sweep.yaml"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)}
    by_kind: dict[str, list[Any]] = {}
    for c in children:
        by_kind.setdefault(c.data.tags.get("kind", "search"), []).append(c)
    n_cands = len(first.selection.candidates)
    assert len(by_kind["search"]) == 2 and len(by_kind["candidate"]) == n_cands and len(by_kind["final"]) == 1

    for run in by_kind["search"]:
        rid = run.info.run_id
        epochs = ES_STOP + 4 if run.data.tags["early_stop"] == "es" else EPOCHS
        for metric in ("valid_acc", "train_loss", "dominant_eigenvalue", "eigenvalue_ratio", "alpha_entropy",
                       "param_free_share"):
            steps = [m.step for m in client.get_metric_history(rid, metric)]
            if metric == "eigenvalue_ratio":
                assert len(steps) == len(set(steps)) and steps  # NaN epochs are left out
            else:
                assert sorted(steps) == list(range(epochs)), metric  # step = epoch, one value each
        assert set(run.data.metrics) <= set(EPOCH_METRICS)
        assert {"genotype.json", "genotype.png", "eigenvalues.png"} <= {a.path for a in client.list_artifacts(rid)}
        if run.data.tags["early_stop"] == "es":
            assert run.data.tags["kept_epoch"] == str(ES_STOP) and run.data.tags["stop_epoch"] == str(ES_STOP + 3)
            assert "DARTS-ES" in run.data.tags["stop_reason"]
        else:
            assert run.data.tags["stop_epoch"] == "-1"

    final = by_kind["final"][0]
    genotype = Genotype.from_json(final.data.params["genotype"])
    net = Network(genotype, 4, 10, 3, auxiliary=True, in_channels=1)
    assert final.data.metrics["params"] == count_parameters(net)
    assert final.data.tags["winner"] == "true"
    assert [m.step for m in client.get_metric_history(final.info.run_id, "test_error")] == [0]

    # Again: the same runs, the same contents, nothing duplicated.
    before = _contents(client, spec.name)
    t0 = time.monotonic()
    again = reduce_experiment(path, spec, tracking_uri=server, n_test=60, out=io.StringIO())
    print(f"second reduce: {time.monotonic() - t0:.1f} s")
    assert again.exit_code == 0 and again.tracking_counts is not None and again.tracking_counts["written"] == 0
    assert _contents(client, spec.name) == before


def test_server_down_keeps_everything_then_a_later_reduce_logs_it(experiment: tuple[Path, Any], server: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from mlflow.tracking import MlflowClient

    from rdarts.reduce.cli import main

    path, spec = experiment
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    spec = spec.model_copy(update={"tracking": spec.tracking.model_copy(update={"experiment": "down-then-up"})})
    (path / "sweep.yaml").write_text(spec.model_dump_json(exclude_unset=True))  # what 'rdarts reduce PATH' reads
    (path / "results.parquet").unlink()
    code = main(["reduce", str(path), "--tracking-uri", down, "--n-test", "60"])
    out = capsys.readouterr().out
    warning = [line for line in out.splitlines() if line.startswith("warning:")]
    assert code == 3 and len(warning) == 1 and down in warning[0] and f"rdarts reduce {path}" in warning[0]
    for f in ("results.parquet", "reduce/summary.md", "reduce/scatter.png", "reduce/selection.json"):
        assert (path / f).is_file(), f
    client = MlflowClient(server)
    assert client.get_experiment_by_name("down-then-up") is None

    assert main(["reduce", str(path), "--tracking-uri", server, "--n-test", "60"]) == 0
    parent, children = _runs(client, "down-then-up")
    assert len(children) == 2 + len(list((path / "reduce" / "retrain").iterdir()))
    assert "view them:" in capsys.readouterr().out


def test_the_environment_names_the_server_when_the_sweep_does_not(experiment: tuple[Path, Any],
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A cluster sets MLFLOW_TRACKING_URI on the head (cluster/*.yaml): the reduce step of a sweep without
    tracking.uri logs there, not to the SQLite file in the sweep folder; an explicit URI still wins."""
    from mlflow.tracking import MlflowClient

    path, spec = experiment
    assert spec.tracking.uri is None
    spec = spec.model_copy(update={"tracking": spec.tracking.model_copy(update={"experiment": "from-env"})})
    env_uri = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env_uri)
    default_db = path / "mlflow.db"
    existed = default_db.exists()
    outcome = reduce_experiment(path, spec, retrain=False, out=io.StringIO())
    assert outcome.exit_code == 0 and outcome.tracking_uri == env_uri
    parent, children = _runs(MlflowClient(env_uri), "from-env")
    assert len(children) == 2 and parent.data.tags[KEY] == spec.name
    assert default_db.exists() == existed

    explicit = f"sqlite:///{tmp_path / 'explicit.db'}"
    outcome = reduce_experiment(path, spec, explicit, retrain=False, out=io.StringIO())
    assert outcome.tracking_uri == explicit
    assert len(_runs(MlflowClient(explicit), "from-env")[1]) == 2


def test_a_sweep_folder_on_object_storage_is_reduced_through_a_mirror(experiment: tuple[Path, Any],
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Tune storage on S3/GCS (the cloud cluster files): the reducer mirrors the folder without the searches'
    checkpoints, reduces it, and copies its results back. pyarrow's file:// is the same code path as s3://."""
    import shutil

    from rdarts.errors import UserError
    from rdarts.reduce import collect
    from rdarts.storage import WRITTEN, mirror_path

    path, spec = experiment
    remote = tmp_path / "bucket" / spec.name
    shutil.copytree(path, remote, ignore=shutil.ignore_patterns(*WRITTEN))
    assert any(remote.glob("*/checkpoint_*")), "the sweep should have checkpoints for this test to mean anything"
    monkeypatch.setenv("RDARTS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = remote.as_uri()

    out = io.StringIO()
    outcome = reduce_experiment(uri, spec, retrain=False, tracking=False, out=out)
    assert outcome.exit_code == 0, out.getvalue()
    mirror = mirror_path(uri)
    assert outcome.experiment_path == mirror and not list(mirror.glob("*/checkpoint_*"))
    assert {p.name for p in mirror.iterdir() if p.is_dir()} == {p.name for p in remote.iterdir() if p.is_dir()}
    pd.testing.assert_frame_equal(pd.read_parquet(remote / "results.parquet"), collect(path), check_like=True)
    assert (remote / "reduce" / "summary.md").read_text() == (mirror / "reduce" / "summary.md").read_text()

    again = io.StringIO()
    reduce_experiment(uri, spec, retrain=False, tracking=False, out=again)
    assert "  0 file(s) fetched" in again.getvalue()  # the mirror is reused

    with pytest.raises(UserError, match="no such folder"):
        reduce_experiment((tmp_path / "nothing").as_uri(), spec, retrain=False, out=io.StringIO())
