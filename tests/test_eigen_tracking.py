"""Warm-started λ_max and its standard error over several batches, against dense-Hessian oracles."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
import torch.nn.functional as F

from rdarts.config import SearchConfig
from rdarts.data import Augment, ImageData
from rdarts.eigen_tracking import dominant_alpha_eigenvalue
from rdarts.hessian import dense_hessian, lanczos
from rdarts.search import Search
from rdarts.spaces import get_space
from rdarts.supernet import Supernet


def _symmetric(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    return (a + a.T) / 2


def test_the_ritz_vector_is_the_top_eigenvector() -> None:
    A = _symmetric(40, 1)
    res = lanczos(lambda v: A @ v, 40, tol=1e-10, max_iter=40, generator=torch.Generator().manual_seed(0))
    evals, evecs = torch.linalg.eigh(A)
    assert res.vector is not None and res.vector.shape == (40,)
    assert abs(float(res.vector @ evecs[:, -1])) == pytest.approx(1.0, abs=1e-6)
    assert float((A @ res.vector - evals[-1] * res.vector).norm()) < 1e-5


def test_a_start_at_the_eigenvector_converges_at_once_and_a_random_one_does_not() -> None:
    A = _symmetric(60, 2)
    top = torch.linalg.eigh(A).eigenvectors[:, -1]
    warm = lanczos(lambda v: A @ v, 60, tol=1e-8, start=top)
    cold = lanczos(lambda v: A @ v, 60, tol=1e-8, generator=torch.Generator().manual_seed(0))
    assert warm.iterations == 1 and cold.iterations > 5  # an invariant subspace: the residual is zero at once
    assert warm.eigenvalues[0] == pytest.approx(cold.eigenvalues[0], rel=1e-8)


def test_a_near_start_still_finds_the_largest_eigenvalue() -> None:
    # A start almost along the *second* eigenvector: the Krylov space still reaches the top one.
    A = _symmetric(30, 3)
    evals, evecs = torch.linalg.eigh(A)
    start = evecs[:, -2] + 1e-3 * evecs[:, -1]
    res = lanczos(lambda v: A @ v, 30, tol=1e-10, max_iter=30, start=start)
    assert res.eigenvalues[0] == pytest.approx(float(evals[-1]), rel=1e-8)


@pytest.mark.parametrize("bad", [torch.zeros(5), torch.ones(4), torch.full((5,), math.nan)])
def test_a_bad_start_vector_is_refused(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="start vector"):
        lanczos(lambda v: v, 5, start=bad)


def test_several_batches_give_the_mean_and_its_standard_error(digits: ImageData) -> None:
    torch.manual_seed(0)
    model = Supernet(get_space("s3"), 2, 10, 3, in_channels=1)
    aug = Augment(digits, augment=False)
    batches = [(aug(digits.images[i:i + 16], torch.Generator()), digits.labels[i:i + 16]) for i in (0, 16, 32)]
    alphas, wd = model.arch_parameters(), 1e-3
    m = dominant_alpha_eigenvalue(model, alphas, batches, arch_weight_decay=wd, tol=1e-8, max_iter=84,
                                  generator=torch.Generator().manual_seed(0), epoch=0)
    exact = []
    for x, y in batches:
        H = dense_hessian(lambda x=x, y=y: F.cross_entropy(model(x), y) + 0.5 * wd * sum((a * a).sum()
                                                                                        for a in alphas), alphas)
        exact.append(float(torch.linalg.eigvalsh(H.double())[-1]))
    assert m.value == pytest.approx(statistics.mean(exact), rel=1e-5)
    assert m.se == pytest.approx(statistics.stdev(exact) / math.sqrt(3), rel=1e-3)
    assert m.iterations > 3 and m.vector.shape == (sum(a.numel() for a in alphas),)
    one = dominant_alpha_eigenvalue(model, alphas, batches[:1], arch_weight_decay=wd, tol=1e-8, max_iter=84,
                                    generator=torch.Generator().manual_seed(0), epoch=0)
    assert math.isnan(one.se) and one.value == pytest.approx(exact[0], rel=1e-5)


def _search(digits: ImageData, **over: object) -> SearchConfig:
    base = dict(space="s3", dataset="digits", n_train=192, layers=3, channels=4, batch_size=32, epochs=5, order="first",
                ev_every=1, device="cpu", early_stop="off")
    return SearchConfig(**{**base, **over})  # type: ignore[arg-type]


def test_warm_and_cold_searches_agree_and_the_measurement_moves_nothing(digits: ImageData) -> None:
    runs = {warm: Search(_search(digits, hessian_warm_start=warm, hessian_batches=2), train_data=digits).run()
            for warm in (True, False)}
    warm, cold = ([r["dominant_eigenvalue"] for r in runs[w].records] for w in (True, False))
    assert all(math.isfinite(v) for v in warm)
    for w, c in zip(warm, cold, strict=True):
        assert w == pytest.approx(c, rel=1e-3)
    # The searches themselves are the same (the measurement draws from a generator of its own).
    assert [r["valid_acc"] for r in runs[True].records] == [r["valid_acc"] for r in runs[False].records]
    assert all(math.isfinite(r["eigenvalue_se"]) and r["eigenvalue_se"] >= 0 for r in runs[True].records)


def test_the_ritz_vector_survives_a_resume(digits: ImageData, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = _search(digits, epochs=4)
    whole = Search(cfg, tmp_path / "whole", train_data=digits).run()
    # Two epochs by hand, as an interrupted run leaves them; run() then resumes from the latest checkpoint.
    part = Search(cfg, tmp_path / "part", train_data=digits)
    state = None
    for epoch in range(2):
        part.records.append(part.run_epoch(epoch))
        part.next_epoch = epoch + 1
        part.save(epoch)
        state = part.ritz_vector
    resumed = Search(cfg, tmp_path / "part", train_data=digits)
    assert resumed.resume() and resumed.ritz_vector is not None and torch.equal(resumed.ritz_vector, state)
    result = resumed.run()
    assert [r["dominant_eigenvalue"] for r in result.records] == [r["dominant_eigenvalue"] for r in whole.records]
    assert [r["hessian_iters"] for r in result.records] == [r["hessian_iters"] for r in whole.records]
