"""The README's examples run as written: every code block marked ``<!-- runnable -->`` is executed.

Bash blocks run with ``bash -euo pipefail`` and python blocks with this interpreter, in a scratch folder that holds
``.venv/bin`` (this interpreter's bin folder) and ``sweeps/``, as in a checkout; each must exit 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARK = re.compile(r"<!-- runnable -->\s*\n```(bash|python)\n(.*?)\n```", re.S)


def runnable_blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in MARK.finditer((ROOT / "README.md").read_text())]


def test_the_readme_marks_its_examples() -> None:
    kinds = [k for k, _ in runnable_blocks()]
    assert "bash" in kinds and "python" in kinds  # the marker is found at all, so the test below runs something


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(runnable_blocks())))
def test_a_readme_block_runs_as_written(index: int, tmp_path: Path) -> None:
    kind, code = runnable_blocks()[index]
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "bin").symlink_to(Path(sys.executable).parent)
    (tmp_path / "sweeps").symlink_to(ROOT / "sweeps")
    cmd = ["bash", "-euo", "pipefail", "-c", code] if kind == "bash" else [sys.executable, "-c", code]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"README block {index} ({kind}) failed:\n{code}\n--- stderr:\n{proc.stderr[-3000:]}"
