"""The package surface: a sorted, complete __all__, and an engine that imports without Ray or MLflow."""

from __future__ import annotations

import subprocess
import sys

import rdarts

ENGINE = ["rdarts", "rdarts.spaces", "rdarts.ops", "rdarts.supernet", "rdarts.architect", "rdarts.search",
          "rdarts.hessian", "rdarts.stopping", "rdarts.network", "rdarts.retrain", "rdarts.data", "rdarts.config",
          "rdarts.checkpoint", "rdarts.regularization", "rdarts.plots", "rdarts.outputs"]


def test_all_is_sorted_and_resolves() -> None:
    assert rdarts.__all__ == sorted(rdarts.__all__)
    for name in rdarts.__all__:
        assert getattr(rdarts, name) is not None


def test_engine_imports_neither_ray_nor_mlflow() -> None:
    code = ("import sys\n" + "".join(f"import {m}\n" for m in ENGINE)
            + "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow'))\n"
            + "print(','.join(bad))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "", f"engine modules pulled in {res.stdout.strip()}"


def test_cli_parser_builds_without_importing_ray() -> None:
    code = ("import sys\nfrom rdarts.cli import build_parser\nbuild_parser()\n"
            "print(any(m.split('.')[0] == 'ray' for m in sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"
