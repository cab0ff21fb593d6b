"""``benchmarks/bench_warm_start.py``: its oracle counts on known spectra (fast), and a tiny real run (slow)."""

from __future__ import annotations

import math
import subprocess
import sys
from types import ModuleType

import pytest
import torch
from bench_fixtures import ROOT, load_benchmark


def _bench() -> ModuleType:
    return load_benchmark("bench_warm_start")


def _rotated(eigenvalues: list[float], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A symmetric matrix with the given spectrum in a random basis, and that basis (columns)."""
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=torch.Generator().manual_seed(
        seed), dtype=torch.float64))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T, q


def test_the_exact_eigenvector_needs_one_product_and_a_two_vector_start_two() -> None:
    bench = _bench()
    H, q = _rotated([5.0, 4.0, 3.0, 2.0, 1.0, 0.5], seed=0)
    assert bench.hvps_to_reach(H, q[:, 0], 1e-8) == 1
    # A start in the span of two eigenvectors: its Krylov space is that span after two products, so exact then,
    # and not before (one product gives the Rayleigh quotient (5 + 4) / 2).
    assert bench.hvps_to_reach(H, (q[:, 0] + q[:, 1]) / math.sqrt(2), 1e-8) == 2


def test_the_oracle_count_falls_as_the_start_nears_the_eigenvector() -> None:
    bench = _bench()
    H, q = _rotated([1.0, 0.97, 0.9, 0.6, 0.3, 0.1, -0.2, -0.5] + [0.0] * 40, seed=1)
    rest = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    rest -= (rest @ q[:, 0]) * q[:, 0]
    rest /= rest.norm()
    counts = [bench.hvps_to_reach(H, c * q[:, 0] + math.sqrt(1 - c * c) * rest, 1e-4) for c in (0.1, 0.7, 0.999)]
    assert counts[0] >= counts[1] >= counts[2] and counts[0] > counts[2]


def test_the_stopping_rule_never_stops_before_the_oracle() -> None:
    bench = _bench()
    gen = torch.Generator().manual_seed(3)
    for seed in range(20):
        top = [1.0, 0.95 - 0.01 * (seed % 10)]  # top gaps of 5 to 14 %
        H, _ = _rotated(top + (torch.rand(40, generator=gen, dtype=torch.float64) * 1.6 - 0.8).tolist(), seed)
        start = torch.randn(H.shape[0], generator=gen, dtype=torch.float64)
        assert bench.hvps_by_rule(H, start, 1e-4) >= bench.hvps_to_reach(H, start, 1e-4)


@pytest.mark.slow
def test_a_tiny_real_run_prints_the_table() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_warm_start.py"), "--spaces", "s1",
                          "--epochs", "3", "--layers", "3", "--channels", "4", "--n-train", "200", "--image-size",
                          "8", "--batch-size", "16", "--threads", "1"], capture_output=True, text=True, timeout=300,
                         check=True).stdout
    row = [line for line in out.splitlines() if line.startswith("| s1 |")]
    assert len(row) == 1 and len(row[0].split("|")) == 10, out
