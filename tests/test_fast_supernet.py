"""The fast cell forward (``rdarts.fast_forward``) against the plain structure, on the same weights.

Oracle: ``Supernet(..., fast=False)``, the reference's one-call-per-op structure. In float64 the two paths agree to
rounding: logits, α and weight gradients, BN running statistics, and α Hessian-vector products (the double backward
every λ_max runs). Both paths draw noise and drop path masks from the global RNG in the same order, so each
comparison seeds the RNG once before each path and expects equal results with drop path on as well.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rdarts.spaces import SPACE_NAMES, get_space
from rdarts.supernet import Supernet

TOL = 1e-10


def _pair(space: str) -> tuple[Supernet, Supernet]:
    torch.manual_seed(0)
    plain = Supernet(get_space(space), 4, 10, 3, in_channels=1, fast=False).double()
    fast = Supernet(get_space(space), 4, 10, 3, in_channels=1).double()
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(6, 1, 9, 9, generator=gen, dtype=torch.float64), torch.randint(0, 10, (6,), generator=gen)


def _run(model: Supernet, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    torch.manual_seed(7)  # the same noise and drop path masks for both paths
    logits = model(x)
    return logits, list(torch.autograd.grad(F.cross_entropy(logits, y), list(model.parameters())))


def test_fast_is_the_default_and_keeps_the_names() -> None:
    plain, fast = _pair("darts")
    assert all(c.fast for c in fast.cells) and not any(c.fast for c in plain.cells)
    assert list(fast.state_dict()) == list(plain.state_dict())


@pytest.mark.parametrize("space", SPACE_NAMES)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("drop_prob", [0.0, 0.3])
def test_fast_equals_plain(space: str, train: bool, drop_prob: float) -> None:
    plain, fast = _pair(space)
    x, y = _batch()
    results = []
    for model in (plain, fast):
        model.train(train)
        model.drop_path_prob = drop_prob
        results.append(_run(model, x, y))
    (logits_p, grads_p), (logits_f, grads_f) = results
    torch.testing.assert_close(logits_f, logits_p, rtol=TOL, atol=TOL)
    names = [n for n, _ in plain.named_parameters()]
    for name, gp, gf in zip(names, grads_p, grads_f, strict=True):
        torch.testing.assert_close(gf, gp, rtol=TOL, atol=TOL, msg=lambda m, name=name: f"{name}: {m}")
    assert grads_f[names.index("alphas_normal")].abs().sum() > 0  # the α gradient is really compared
    for (name, bp), bf in zip(plain.state_dict().items(), fast.state_dict().values(), strict=True):
        torch.testing.assert_close(bf, bp, rtol=TOL, atol=TOL, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("space", ["darts", "s3"])
def test_fast_alpha_hessian_vector_product(space: str) -> None:
    """The double backward of a λ_max measurement: H_αα v through both paths."""
    plain, fast = _pair(space)
    x, y = _batch()
    v = [torch.randn_like(a) for a in plain.arch_parameters()]
    hvps = []
    for model in (plain, fast):
        alphas = model.arch_parameters()
        g = torch.autograd.grad(F.cross_entropy(model.train()(x), y), alphas, create_graph=True)
        hvps.append(torch.autograd.grad(sum((gi * vi).sum() for gi, vi in zip(g, v, strict=True)), alphas))
    for hp, hf in zip(*hvps, strict=True):
        torch.testing.assert_close(hf, hp, rtol=1e-9, atol=1e-12)
