"""The `rdarts search` command as a user runs it: real Fashion-MNIST, outputs, resume, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

FASHION = Path("/usr/share/datasets/fashion-mnist")
TINY = ["--space", "s3", "--dataset", "fashion-mnist", "--layers", "3", "--channels", "4", "--n-train", "128",
        "--image-size", "12", "--batch-size", "32", "--ev-every", "1", "--no-progress"]


def rdarts(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rdarts", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(not FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist (scripts/setup installs it)")
def test_search_on_fashion_mnist_writes_everything_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = rdarts("search", *TINY, "--epochs", "2", "--order", "second", "--out", str(out))
    assert first.returncode == 0, first.stderr
    df = pd.read_parquet(out / "epochs.parquet")
    needed = {"epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "dominant_eigenvalue", "weight_decay",
              "drop_path", "genotype", "param_free_share", "alphas_normal"}
    assert needed <= set(df.columns)
    assert list(df["epoch"]) == [0, 1]
    assert df["dominant_eigenvalue"].notna().all()  # --ev-every 1
    genotype = json.loads((out / "genotype.json").read_text())
    assert set(genotype) == {"normal", "normal_concat", "reduce", "reduce_concat"}
    assert json.loads(df["genotype"].iloc[-1]) == genotype  # a plain search returns the last epoch's genotype
    for name in ("eigenvalues.png", "genotype.png", "result.json", "checkpoints/epoch_001.pt"):
        assert (out / name).is_file(), name
    assert (out / "eigenvalues.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Same command, same folder: nothing is recomputed and the result is the same.
    again = rdarts("search", *TINY, "--epochs", "2", "--order", "second", "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr
    assert json.loads((out / "genotype.json").read_text()) == genotype
    pd.testing.assert_frame_equal(pd.read_parquet(out / "epochs.parquet"), df)

    # Other settings on the same folder: refused, with the differing field named.
    other = rdarts("search", *TINY, "--epochs", "2", "--order", "first", "--out", str(out))
    assert other.returncode == 2 and "order" in other.stderr and "Traceback" not in other.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--space", "s9"], "valid spaces: darts, s1, s2, s3, s4"),
        (["--dataset", "imagenet"], "valid datasets"),
        (["--epochs", "-3"], "epochs must be greater than 0"),
        (["--epochs", "three"], "invalid int value"),
        (["--order", "third"], "invalid choice"),
        (["--drop-path", "1.5"], "drop_path must be in [0, 1)"),
        (["--dataset", "cifar10", "--data-root", "/nonexistent/cifar"], "does not exist"),
        (["--dataset", "cifar10"], "--data-root"),
    ],
)
def test_bad_input_is_one_line_exit_2_no_traceback(args: list[str], needle: str, tmp_path: Path) -> None:
    res = rdarts("search", *args, "--out", str(tmp_path / "x"), timeout=120)
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_missing_cifar_files_name_the_folder_and_the_fix(tmp_path: Path) -> None:
    res = rdarts("search", "--dataset", "cifar10", "--data-root", str(tmp_path), "--out", str(tmp_path / "x"),
                 timeout=120)
    assert res.returncode == 2 and str(tmp_path) in res.stderr and "--download" in res.stderr
