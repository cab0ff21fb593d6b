"""The dominant eigenvalue of the α Hessian of the validation loss, measured in the middle of a search.

RobustDARTS' signal (automl/RobustDARTS ``src/search/analyze.py``): the Hessian of the validation loss plus the
architecture weight decay ``arch_wd/2 ‖α‖²`` w.r.t. α, on validation batches, with the supernet in train mode (BN on
batch statistics), as the reference computes it after each epoch. A measurement leaves the search as it found it:
the BN running statistics are restored and its random draws use a generator of its own.

With ``hessian_batches`` = k > 1, λ_max is the mean of the k batches' own λ_max and its standard error is reported
(``eigenvalue_se``): one batch's λ_max scatters by tens of percent, which is what the DARTS-ES ratio sees. The
released code measures one batch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from rdarts.errors import DivergedError
from rdarts.hessian import hvp_fn, lanczos

Batch = tuple[torch.Tensor, torch.Tensor]


@contextmanager
def saved_bn_buffers(model: torch.nn.Module) -> Iterator[None]:
    """A train-mode measurement must not move the BN running statistics of the search."""
    saved = {n: b.clone() for n, b in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(saved[n])


def alpha_entropy(weights: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Mean entropy of the per-edge op distributions (falls as the search commits to ops)."""
    ents = [-(w * w.clamp_min(1e-12).log()).sum(-1) for w in weights]
    return float(torch.cat(ents).mean())


def alpha_summary(weights: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """An epoch record's α fields: the mean entropy and both cells' softmax(α) as JSON (6 decimals)."""
    return {"alpha_entropy": alpha_entropy(weights),
            "alphas_normal": json.dumps([[round(v, 6) for v in row] for row in weights[0].tolist()]),
            "alphas_reduce": json.dumps([[round(v, 6) for v in row] for row in weights[1].tolist()])}


def measured_loss(model: torch.nn.Module, alphas: Sequence[torch.Tensor], batch: Batch,
                  arch_weight_decay: float) -> torch.Tensor:
    """The loss whose α Hessian is measured: validation cross-entropy plus ``arch_wd/2 ‖α‖²`` (the reference's)."""
    x, y = batch
    loss = F.cross_entropy(model(x), y)
    return loss + 0.5 * arch_weight_decay * sum((a * a).sum() for a in alphas)  # type: ignore[return-value]


@dataclass(frozen=True)
class EigenMeasurement:
    value: float
    """λ_max; with several batches the mean of their λ_max."""
    se: float
    """Standard error of that mean (sample std / √k); NaN for one batch."""
    iterations: int
    """Hessian-vector products, all batches together."""
    vector: torch.Tensor
    """The last solve's Ritz vector (float64, CPU): the warm start of the next measurement."""


def dominant_alpha_eigenvalue(model: torch.nn.Module, alphas: Sequence[torch.Tensor], batches: Sequence[Batch], *,
                              arch_weight_decay: float, tol: float, max_iter: int, generator: torch.Generator,
                              epoch: int, start: torch.Tensor | None = None) -> EigenMeasurement:
    """λ_max of ∇²_α (L_val + arch_wd/2 ‖α‖²) on each of ``batches``: their mean, its standard error, the products.

    Each batch's solve starts from the Ritz vector of the one before (the first from ``start``, or from a random
    vector drawn from ``generator`` when None). The eigenvalue is the same as a cold start's within the solver's
    tolerance; the products saved are few, because between two measurements of a search the dominant eigenvector
    turns (a new validation batch, moved weights: ``benchmarks/bench_warm_start.py`` measures by how much).
    Raises ``DivergedError`` when the products are not finite.
    """
    alphas = list(alphas)
    n = sum(a.numel() for a in alphas)
    if start is not None and start.numel() != n:
        start = None  # a vector of another supernet (a changed space): start cold
    values: list[float] = []
    iterations = 0
    model.train()
    for batch in batches:
        # The weights keep requires_grad: freezing them shrinks the graph but, measured at the reference's size on
        # CPU (benchmarks/bench_engine.py), made each Hessian-vector product about 2.6x slower.
        with saved_bn_buffers(model):
            matvec = hvp_fn(measured_loss(model, alphas, batch, arch_weight_decay), alphas)
            try:
                res = lanczos(matvec, n, tol=tol, max_iter=max_iter, generator=generator, device=alphas[0].device,
                              start=start)
            except torch.linalg.LinAlgError as e:  # NaN/inf Hessian-vector products
                raise DivergedError(f"diverged: the Hessian eigenvalue solve failed at epoch {epoch} ({e})") from None
        values.append(res.eigenvalues[0])
        iterations += res.iterations
        assert res.vector is not None
        start = res.vector
    assert start is not None
    k = len(values)
    mean = sum(values) / k
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1) / k) if k > 1 else math.nan
    return EigenMeasurement(mean, se, iterations, start)
