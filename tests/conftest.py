"""Shared test setup: bounded CPU threads, seeded RNGs, and the tiny `digits` data.

Nothing here imports Ray or MLflow (the sweep fixtures import them when used); the engine tests run on CPU only.
"""

from __future__ import annotations

import os

import pytest
import torch

# The Ray and MLflow fixtures (imported lazily there) live with the rest of the sweep test pieces; registered here so
# that every module can ask for them by name: an import in the module itself reads as unused and gets dropped.
from sweep_fixtures import ray_session, server  # noqa: F401

# One intra-op thread by default on the 2-core box; RDARTS_TEST_THREADS=2 gives two. The test tensors are tiny, so a
# second thread buys little on an idle box, and on a shared one every op's OpenMP barrier waits for a descheduled
# worker: the engine tests (fast tier) took 195 s with 2 threads under load and about 55 s with 1.
torch.set_num_threads(int(os.environ.get("RDARTS_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    """Every test starts from the same global RNG state, so a failure reproduces in isolation."""
    torch.manual_seed(0)


@pytest.fixture
def generator() -> torch.Generator:
    """A seeded CPU generator for tests that draw their own random numbers."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled 8x8 digits (train split), loaded once; offline."""
    from rdarts.data import load_dataset

    return load_dataset("digits")
