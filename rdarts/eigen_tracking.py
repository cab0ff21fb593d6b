"""The dominant eigenvalue of the α Hessian of the validation loss, measured in the middle of a search.

RobustDARTS' signal (automl/RobustDARTS ``src/search/analyze.py``): the Hessian of the validation loss plus the
architecture weight decay ``arch_wd/2 ‖α‖²`` w.r.t. α, on validation batches, with the supernet in train mode (BN on
batch statistics), as the reference computes it after each epoch. A measurement leaves the search as it found it:
the BN running statistics are restored and its random draws use a generator of its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

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


def dominant_alpha_eigenvalue(model: torch.nn.Module, alphas: Sequence[torch.Tensor], batches: Sequence[Batch], *,
                              arch_weight_decay: float, tol: float, max_iter: int, generator: torch.Generator,
                              epoch: int) -> tuple[float, int]:
    """λ_max of ∇²_α (mean L_val over ``batches`` + arch_wd/2 ‖α‖²) and the Hessian-vector products it took.

    Raises ``DivergedError`` when the products are not finite (the eigensolver fails on NaN/inf).
    """
    alphas = list(alphas)

    def loss_fn() -> torch.Tensor:
        loss = sum(F.cross_entropy(model(x), y) for x, y in batches) / len(batches)
        return loss + 0.5 * arch_weight_decay * sum((a * a).sum() for a in alphas)  # type: ignore[return-value]

    model.train()
    # The weights keep requires_grad: freezing them shrinks the graph but, measured at the reference's size on
    # CPU (benchmarks/bench_engine.py), made each Hessian-vector product about 2.6x slower.
    with saved_bn_buffers(model):
        matvec = hvp_fn(loss_fn(), alphas)
        n = sum(a.numel() for a in alphas)
        try:
            res = lanczos(matvec, n, tol=tol, max_iter=max_iter, generator=generator, device=alphas[0].device)
        except torch.linalg.LinAlgError as e:  # NaN/inf Hessian-vector products
            raise DivergedError(f"diverged: the Hessian eigenvalue solve failed at epoch {epoch} ({e})") from None
    return res.eigenvalues[0], res.iterations
