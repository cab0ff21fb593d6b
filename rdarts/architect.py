"""The architecture step of bi-level DARTS: first order, or second order through one unrolled weight step.

quark0/darts ``cnn/architect.py`` (reused by automl/RobustDARTS): Adam on α (lr 3e-4, betas (0.5, 0.999), weight
decay 1e-3). Second order differentiates the validation loss after a virtual SGD step
``w' = w - η (momentum * buf + ∇_w L_train(w, α) + wd * w)``:

    ∇_α L_val(w', α) - η ∇²_{α,w} L_train(w, α) ∇_{w'} L_val(w', α)

with the mixed second derivative by central finite differences, ``r = 0.01 / ‖∇_{w'} L_val‖``:
``(∇_α L_train(w + r v) - ∇_α L_train(w - r v)) / (2 r)``. The parentheses matter: several ports divide by 2 and
multiply by r (pt.darts#43, nni#3044). The virtual step uses the weight decay in force, also after a DARTS-ADA
increase; the reference kept the old value there.

``extra_loss`` is a robust method's term on the α loss (β-DARTS' Beta-decay): its α gradient is added to the step's,
in either order.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch.func import functional_call

from rdarts.supernet import Supernet

Batch = tuple[torch.Tensor, torch.Tensor]


def _grad(loss: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Gradients, with zeros for inputs the loss does not use (the normal α of a supernet made of reductions only)."""
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [g if g is not None else torch.zeros_like(x) for g, x in zip(grads, inputs, strict=True)]


class Architect:
    """Owns the α optimiser and computes α gradients.

    Args:
        model: The supernet.
        w_optimizer: The weights' SGD, read for its momentum buffers (second order).
        order: ``"first"`` or ``"second"``.
        lr, betas, weight_decay: Adam on α.
        autocast: Context for the forward passes of the main losses (bf16 on GPU); the finite-difference passes of
            the second-order term always run in full precision.
        extra_loss: ``model -> term`` added to the α loss (``None``: none this step), e.g. β-DARTS' Beta-decay.
    """

    def __init__(self, model: Supernet, w_optimizer: torch.optim.SGD, *, order: str = "second", lr: float = 3e-4,
                 betas: tuple[float, float] = (0.5, 0.999), weight_decay: float = 1e-3,
                 autocast: AbstractContextManager[object] | None = None,
                 extra_loss: Callable[[Supernet], torch.Tensor | None] | None = None):
        if order not in ("first", "second"):
            raise ValueError(f"order must be 'first' or 'second', got {order!r}")
        self.model, self.w_optimizer, self.order = model, w_optimizer, order
        self.weight_decay = weight_decay
        self.optimizer = torch.optim.Adam(model.arch_parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
        self._autocast = autocast
        self.extra_loss = extra_loss

    def _ac(self) -> AbstractContextManager[object]:
        return self._autocast if self._autocast is not None else nullcontext()

    def step(self, train: Batch, valid: Batch, eta: float, w_weight_decay: float) -> None:
        """One α update on a validation batch (and, second order, the training batch)."""
        self.optimizer.zero_grad(set_to_none=True)
        alphas = self.model.arch_parameters()
        if self.order == "first":
            with self._ac():
                loss = F.cross_entropy(self.model(valid[0]), valid[1])
            grads = _grad(loss, alphas)
        else:
            grads = self.unrolled_gradient(train, valid, eta, w_weight_decay)
        extra = self.extra_loss(self.model) if self.extra_loss is not None else None
        if extra is not None:
            grads = [g + e for g, e in zip(grads, _grad(extra, alphas), strict=True)]
        for a, g in zip(alphas, grads, strict=True):
            a.grad = g.to(a.dtype)
        self.optimizer.step()

    def unrolled_gradient(self, train: Batch, valid: Batch, eta: float, w_weight_decay: float) -> list[torch.Tensor]:
        """The second-order α gradient (without Adam's weight decay, which the optimiser adds)."""
        model = self.model
        weights = model.weight_parameters()
        alphas = model.arch_parameters()
        arch = {id(a) for a in alphas}
        names = [n for n, p in model.named_parameters() if id(p) not in arch]
        arch_named = {n: p for n, p in model.named_parameters() if id(p) in arch}
        momentum = self.w_optimizer.param_groups[0]["momentum"]

        with self._ac():
            train_loss = F.cross_entropy(model(train[0]), train[1])
        g_train = _grad(train_loss, weights)
        with torch.no_grad():
            unrolled = []
            for w, g in zip(weights, g_train, strict=True):
                buf = self.w_optimizer.state.get(w, {}).get("momentum_buffer")
                step = g + w_weight_decay * w + (momentum * buf if buf is not None else 0.0)
                unrolled.append((w - eta * step).requires_grad_())
        # The unrolled model gets copies of the BN buffers: the reference builds a fresh model for it, whose running
        # statistics are thrown away.
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        params = {**dict(zip(names, unrolled, strict=True)), **arch_named}
        with self._ac():
            valid_loss = F.cross_entropy(functional_call(model, {**params, **buffers}, (valid[0],)), valid[1])
        grads = _grad(valid_loss, alphas + unrolled)
        d_alpha, d_unrolled = list(grads[: len(alphas)]), grads[len(alphas):]
        implicit = self._mixed_hvp(list(d_unrolled), train)
        return [da - eta * ih for da, ih in zip(d_alpha, implicit, strict=True)]

    def _mixed_hvp(self, vector: list[torch.Tensor], train: Batch) -> list[torch.Tensor]:
        """∇²_{α,w} L_train(w, α) · v by central differences of ∇_α L_train at w ± r v."""
        weights = self.model.weight_parameters()
        alphas = self.model.arch_parameters()
        r = 0.01 / torch.cat([v.reshape(-1) for v in vector]).norm()

        saved = [w.detach().clone() for w in weights]

        def grad_alpha_at(sign: float) -> tuple[torch.Tensor, ...]:
            with torch.no_grad():
                for w, w0, v in zip(weights, saved, vector, strict=True):
                    w.copy_(w0 + sign * r * v)
            loss = F.cross_entropy(self.model(train[0]), train[1])
            return _grad(loss, alphas)

        try:
            g_pos, g_neg = grad_alpha_at(+1.0), grad_alpha_at(-1.0)
        finally:
            with torch.no_grad():  # restore w exactly, not by adding r v back
                for w, w0 in zip(weights, saved, strict=True):
                    w.copy_(w0)
        return [(gp - gn) / (2 * r) for gp, gn in zip(g_pos, g_neg, strict=True)]
