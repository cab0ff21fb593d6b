"""The α step: the second-order gradient against finite differences of the unrolled objective, first order against
plain autograd, and what a step may change.

The oracle for second order is the objective itself, ``f(α) = L_val(w - η(m·buf + ∇_w L_train(w, α) + wd·w), α)``,
differentiated by central differences in float64. The tiny supernet's ReLUs are swapped for Softplus: the engine's
own finite difference (radius 0.01 in weight space, as in DARTS) crosses ReLU kinks on a 2-channel net and its
gradient is then off by several hundred percent, which says nothing about the formula; on a smooth net its error is
O(r²), 5e-5 here.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from rdarts.architect import Architect
from rdarts.data import Augment, ImageData
from rdarts.spaces import get_space
from rdarts.supernet import Supernet

ETA, WD, MOMENTUM = 0.1, 0.2, 0.9
Batch = tuple[torch.Tensor, torch.Tensor]


def _smooth(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, nn.Softplus())
        else:
            _smooth(child)


class Setup:
    def __init__(self, digits: ImageData, order: str, smooth: bool = True):
        x = Augment(digits, augment=False)(digits.images[:48], torch.Generator().manual_seed(0)).double()
        y = digits.labels[:48]
        self.train: Batch = (x[:16], y[:16])
        self.valid: Batch = (x[16:32], y[16:32])
        torch.manual_seed(0)
        # s2 with 2 nodes: 5 edges x 2 ops x 2 cell types = 20 α; 3 cells (normal, reduce, reduce); float64.
        self.model = Supernet(get_space("s2", steps=2), 2, 10, 3, in_channels=1).double().train()
        if smooth:
            _smooth(self.model)
        with torch.no_grad():  # away from the symmetric start, so every α matters differently
            for a in self.model.arch_parameters():
                a.normal_(0.0, 0.5)
        self.sgd = torch.optim.SGD(self.model.weight_parameters(), lr=ETA, momentum=MOMENTUM, weight_decay=WD)
        # One real weight step, so that the virtual step sees a non-zero momentum buffer.
        F.cross_entropy(self.model(x[32:]), y[32:]).backward()
        self.sgd.step()
        self.model.zero_grad(set_to_none=True)
        self.architect = Architect(self.model, self.sgd, order=order)

    def unrolled_objective(self, alphas: tuple[torch.Tensor, torch.Tensor], eta: float, wd: float) -> torch.Tensor:
        """f(α) evaluated functionally; the model's own tensors are left alone."""
        model = self.model
        names = [n for n, _ in model.named_parameters() if not n.startswith("alphas_")]
        weights = [p.detach().clone().requires_grad_() for p in model.weight_parameters()]
        bufs = [self.sgd.state[p]["momentum_buffer"] for p in model.weight_parameters()]
        arch = {"alphas_normal": alphas[0], "alphas_reduce": alphas[1]}

        def loss(ws: list[torch.Tensor], batch: Batch) -> torch.Tensor:
            buffers = {n: b.clone() for n, b in model.named_buffers()}
            return F.cross_entropy(functional_call(model, {**dict(zip(names, ws, strict=True)), **arch, **buffers},
                                                   (batch[0],)), batch[1])

        grads = torch.autograd.grad(loss(weights, self.train), weights)
        unrolled = [w - eta * (MOMENTUM * b + g + wd * w) for w, b, g in zip(weights, bufs, grads, strict=True)]
        return loss(unrolled, self.valid)

    def finite_difference_gradient(self, eta: float, wd: float, eps: float = 1e-6) -> torch.Tensor:
        a0 = [a.detach().clone() for a in self.model.arch_parameters()]
        flat = torch.cat([a.reshape(-1) for a in a0])
        n0 = a0[0].numel()

        def f(z: torch.Tensor) -> float:
            return float(self.unrolled_objective((z[:n0].view_as(a0[0]), z[n0:].view_as(a0[1])), eta, wd).detach())

        out = torch.zeros_like(flat)
        for i in range(len(flat)):
            e = torch.zeros_like(flat)
            e[i] = eps
            out[i] = (f(flat + e) - f(flat - e)) / (2 * eps)
        return out


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture
def second(digits: ImageData) -> Setup:
    return Setup(digits, "second")


# ----------------------------------------------------------------------------------------------- second order
def test_second_order_gradient_matches_finite_differences_of_the_unrolled_objective(second: Setup) -> None:
    oracle = second.finite_difference_gradient(ETA, WD)
    engine = _flat(second.architect.unrolled_gradient(second.train, second.valid, ETA, WD))
    assert _rel(engine, oracle) < 2e-4

    # The check is sharp: each term moves the answer by far more than the tolerance. Autograd through the objective
    # as written (∇_w L_train not differentiated) gives the explicit term ∂L_val(w', α)/∂α alone; with η = 0 it is
    # the first-order gradient.
    copies = tuple(a.detach().clone().requires_grad_() for a in second.model.arch_parameters())
    explicit = _flat(list(torch.autograd.grad(second.unrolled_objective(copies, ETA, WD), copies)))
    plain = _flat(list(torch.autograd.grad(second.unrolled_objective(copies, 0.0, WD), copies)))
    assert _rel(explicit, oracle) > 1e-2
    assert _rel(plain, oracle) > 1e-2
    without_wd = _flat(second.architect.unrolled_gradient(second.train, second.valid, ETA, 0.0))
    assert _rel(without_wd, oracle) > 3e-3
    second.sgd.param_groups[0]["momentum"] = 0.0
    without_momentum = _flat(second.architect.unrolled_gradient(second.train, second.valid, ETA, WD))
    assert _rel(without_momentum, oracle) > 3e-3


def test_implicit_term_uses_the_reference_radius_and_restores_w_bitwise(second: Setup) -> None:
    weights = second.model.weight_parameters()
    before = [w.detach().clone() for w in weights]
    vector = [torch.randn_like(w) for w in weights]
    distances: list[float] = []
    handle = second.model.register_forward_pre_hook(
        lambda *_: distances.append(float(_flat([w.detach() - b for w, b in zip(weights, before, strict=True)])
                                          .norm())))
    second.architect._mixed_hvp(vector, second.train)
    handle.remove()
    # DARTS: w ± r·v with r = 0.01 / ‖v‖, so both evaluation points are 0.01 away from w.
    assert distances == pytest.approx([0.01, 0.01], rel=1e-9)
    assert all(torch.equal(w, b) for w, b in zip(weights, before, strict=True))


def test_weights_are_restored_even_when_the_finite_difference_fails(second: Setup) -> None:
    weights = second.model.weight_parameters()
    before = [w.detach().clone() for w in weights]
    calls = []

    def fail_on_second_call(*_: object) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")

    second.model.register_forward_pre_hook(fail_on_second_call)
    with pytest.raises(RuntimeError, match="boom"):
        second.architect._mixed_hvp([torch.randn_like(w) for w in weights], second.train)
    assert all(torch.equal(w, b) for w, b in zip(weights, before, strict=True))


def test_second_order_step_applies_the_unrolled_gradient(second: Setup) -> None:
    expected = second.architect.unrolled_gradient(second.train, second.valid, ETA, WD)
    second.architect.step(second.train, second.valid, ETA, WD)
    for a, g in zip(second.model.arch_parameters(), expected, strict=True):
        assert a.grad is not None
        assert torch.allclose(a.grad, g, rtol=1e-10, atol=1e-14)


# ----------------------------------------------------------------------------------------------- first order
def test_first_order_is_the_plain_validation_gradient_then_adam(digits: ImageData) -> None:
    s = Setup(digits, "first", smooth=False)
    alphas = s.model.arch_parameters()
    expected = torch.autograd.grad(F.cross_entropy(s.model(s.valid[0]), s.valid[1]), alphas)
    # Adam as the reference configures it, on copies.
    copies = [a.detach().clone().requires_grad_() for a in alphas]
    adam = torch.optim.Adam(copies, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    for c, g in zip(copies, expected, strict=True):
        c.grad = g.clone()
    adam.step()

    s.architect.step(s.train, s.valid, ETA, WD)
    for a, g, c in zip(alphas, expected, copies, strict=True):
        assert a.grad is not None and torch.allclose(a.grad, g, rtol=1e-12, atol=1e-15)
        assert torch.allclose(a.detach(), c.detach(), rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------------------------- what a step changes
@pytest.mark.parametrize("order", ["first", "second"])
def test_step_changes_alpha_and_not_the_weights(digits: ImageData, order: str) -> None:
    s = Setup(digits, order, smooth=False)
    model = s.model
    weights_before = [w.detach().clone() for w in model.weight_parameters()]
    alphas_before = [a.detach().clone() for a in model.arch_parameters()]
    momentum_before = [s.sgd.state[w]["momentum_buffer"].clone() for w in model.weight_parameters()]
    buffers_before = {n: b.clone() for n, b in model.named_buffers()}
    reference = copy.deepcopy(model)

    s.architect.step(s.train, s.valid, ETA, WD)

    assert all(torch.equal(w, b) for w, b in zip(model.weight_parameters(), weights_before, strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(model.arch_parameters(), alphas_before, strict=True))
    assert all(torch.equal(s.sgd.state[w]["momentum_buffer"], m)
               for w, m in zip(model.weight_parameters(), momentum_before, strict=True))
    assert all(w.grad is None for w in model.weight_parameters())
    # BN running statistics move as in the reference, whose α step runs the real model in train mode: first order
    # once on the validation batch; second order on the training batch at w and at w ± r·v (the unrolled model's
    # statistics are discarded).
    tracked = {n: int(b) for n, b in model.named_buffers() if n.endswith("num_batches_tracked")}
    forwards = 1 if order == "first" else 3
    assert all(tracked[n] == int(buffers_before[n]) + forwards for n in tracked)
    if order == "first":
        reference(s.valid[0])  # one plain train-mode forward on the validation batch
        for (n, b), (_, r) in zip(model.named_buffers(), reference.named_buffers(), strict=True):
            assert torch.allclose(b, r, rtol=1e-12, atol=1e-15), n


def test_order_is_validated(digits: ImageData) -> None:
    s = Setup(digits, "first", smooth=False)
    with pytest.raises(ValueError, match="order"):
        Architect(s.model, s.sgd, order="third")
