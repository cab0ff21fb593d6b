"""Retraining jobs in process, and the ``rdarts retrain`` / ``rdarts reduce`` commands' parsing (fast)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from rdarts.engine_cli import add_parser as add_engine_parser
from rdarts.errors import UserError
from rdarts.network import Network, count_parameters
from rdarts.reduce.cli import add_parser
from rdarts.reduce.retrain_trials import RetrainJob, load_result, run_jobs
from rdarts.retrain import RetrainConfig
from rdarts.spaces import Genotype

CELL = [["sep_conv_3x3", 0], ["skip_connect", 1]] * 4
GENOTYPE = Genotype.from_dict({"normal": CELL, "normal_concat": [2, 3, 4, 5], "reduce": CELL,
                               "reduce_concat": [2, 3, 4, 5]})
TINY = RetrainConfig(dataset="digits", epochs=1, layers=3, channels=4, batch_size=32, n_train=96, n_test=32,
                     valid_fraction=0.25, device="cpu", cutout_length=None)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rdarts")
    sub = p.add_subparsers(dest="command", required=True)
    add_parser(sub)
    add_engine_parser(sub)
    return p


def test_local_job_records_the_parameter_count_of_its_genotype(tmp_path: Path) -> None:
    job = RetrainJob("c.candidate.s1", "candidate", "c", GENOTYPE.to_json(), TINY.to_dict())
    results, errors = run_jobs([job], tmp_path, spec=None, runner="local", log=lambda _: None)
    r = results[job.key]
    assert not errors and r["valid_size"] == 24 and r["train_size"] == 72
    net = Network(GENOTYPE, TINY.channels, 10, TINY.layers, auxiliary=True, in_channels=1)
    assert r["params"] == count_parameters(net)
    assert [h["epoch"] for h in r["history"]] == [0] and 0 <= r["test_error"] <= 100
    assert load_result(tmp_path, job) == r  # saved, and reused: run_jobs does not train it again
    changed = RetrainJob(job.key, job.kind, job.candidate, job.genotype, {**TINY.to_dict(), "epochs": 2})
    assert load_result(tmp_path, changed) is None  # other settings: not the same result


def test_retrain_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gfile = tmp_path / "genotype.json"
    gfile.write_text(GENOTYPE.to_json())
    out = tmp_path / "out"
    args = _parser().parse_args(["retrain", str(gfile), "--dataset", "digits", "--epochs", "1", "--layers", "3",
                                 "--channels", "4", "--batch-size", "32", "--n-train", "64", "--n-test", "32",
                                 "--device", "cpu", "--out", str(out), "--no-progress"])
    assert args.func(args) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["params"] == count_parameters(Network(GENOTYPE, 4, 10, 3, auxiliary=True, in_channels=1))
    assert "test error" in capsys.readouterr().out


def test_retrain_command_user_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"normal": []}')
    for argv, match in (([str(tmp_path / "none.json")], "cannot read"), ([str(bad)], "not a genotype"),
                        ([str(bad.with_name("g.json")), "--n-train", "1"], "cannot read")):
        args = _parser().parse_args(["retrain", *argv, "--dataset", "digits"])
        with pytest.raises(UserError, match=match):
            args.func(args)


def test_reduce_command_parses_and_rejects_a_folder_without_trials(tmp_path: Path) -> None:
    args = _parser().parse_args(["reduce", str(tmp_path), "--tracking-uri", "http://127.0.0.1:1", "--no-retrain",
                                 "--candidate-epochs", "2"])
    assert (args.tracking_uri, args.no_retrain, args.candidate_epochs) == ("http://127.0.0.1:1", True, 2)
    with pytest.raises(UserError, match="no Tune trials"):
        args.func(args)
    with pytest.raises(SystemExit):
        _parser().parse_args(["reduce", str(tmp_path), "--candidate-epochs", "0"])


def test_importing_the_reducer_loads_neither_ray_nor_mlflow() -> None:
    import subprocess
    import sys

    code = "import sys, rdarts.reduce, rdarts.reduce.cli; print('ray' in sys.modules, 'mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
