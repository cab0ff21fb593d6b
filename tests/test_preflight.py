"""Refusal before anything starts: storage, data, resources (fast: no Ray is started)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_fixtures import ROOT, tiny_spec

from rdarts.errors import UserError
from rdarts.sweep.preflight import check_data, check_resources, check_storage


def test_storage_must_be_a_folder_that_can_be_written(tmp_path: Path) -> None:
    spec = tiny_spec("p")
    a_file = tmp_path / "results"
    a_file.write_text("not a folder")
    with pytest.raises(UserError, match=r"^--storage: .* is a file"):
        check_storage(spec, str(a_file))
    with pytest.raises(UserError, match=r"^--storage: cannot write results to /proc/rdarts"):
        check_storage(spec, "/proc/rdarts")
    check_storage(spec, str(tmp_path / "new" / "folder"))  # created
    assert (tmp_path / "new" / "folder").is_dir() and not list((tmp_path / "new" / "folder").iterdir())


def test_resources_must_fit_the_machine_or_the_largest_node() -> None:
    spec = tiny_spec("p", resources={"cpu": 100})
    with pytest.raises(UserError, match=r"^resources\.cpu: each trial asks for 100 CPU\(s\), but this machine has 2"):
        check_resources(spec, {"CPU": 2.0, "GPU": 0.0})
    with pytest.raises(UserError, match=r"resources\.gpu: .* 0; set resources\.gpu: 0"):
        check_resources(tiny_spec("p", resources={"gpu": 0.5}), {"CPU": 8.0, "GPU": 0.0})
    check_resources(tiny_spec("p", resources={"cpu": 2, "gpu": 0.5}), {"CPU": 2.0, "GPU": 1.0})


def test_missing_data_names_the_dataset_and_the_folder(tmp_path: Path) -> None:
    spec = tiny_spec("p", search={"dataset": "cifar10", "data_root": str(tmp_path), "image_size": None})
    with pytest.raises(UserError, match=rf"search\.dataset 'cifar10': .*{tmp_path}.*--download") as info:
        check_data(spec.trials())
    assert "\n" not in str(info.value)
    check_data(tiny_spec("p").trials())  # digits: bundled, present


def test_sweep_run_with_missing_data_exits_2_before_any_trial(tmp_path: Path) -> None:
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: nodata\nsearch: {{dataset: svhn, data_root: {tmp_path / 'data'}, epochs: 1}}\n"
                     f"storage: {tmp_path / 'results'}\n")
    (tmp_path / "data").mkdir()
    env = {**os.environ, "RDARTS_RAY_TMP": str(tmp_path / "r")}
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "rdarts", "sweep", "run", str(sweep)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert time.monotonic() - t0 < 60
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "svhn" in lines[0] and str(tmp_path / "data") in lines[0], res.stderr
    assert not (tmp_path / "r").exists()  # Ray never started
    assert not (tmp_path / "results" / "nodata").exists()
