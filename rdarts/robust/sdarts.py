"""SDARTS (Chen & Hsieh, ICML 2020): the weight step on a perturbed architecture, to smooth the α loss landscape.

Read from xiangning-chen/SmoothDARTS@d3dbfed: ``sota/cnn/train_search.py`` (the loop and the ε schedule),
``attacker/perturb.py`` (``Random_alpha``, ``Linf_PGD_alpha``), ``attacker/linf_sgd.py`` (the PGD step) and
``sota/cnn/model_search.py`` (``softmax_arch_parameters``, ``clip``, ``updateType='weight'``). As that code:

- the perturbation is on the mixture weights softmax(α), not on the logits α: the weight step runs on
  ``w = simplex(softmax(α) + δ)``, ``‖δ‖_∞ ≤ ε``, where ``simplex`` clamps each edge's weights to [0, 1] and divides
  them by their sum (an edge clamped to all zeros gets 1 on its largest entry first);
- ε ramps linearly over the epochs, ``ε_e = 0.03 + (0.3 - 0.03) e / E`` (``--epsilon_alpha 0.3``): 0.03 at the first
  epoch, ``0.3 - 0.27 / E`` at the last (the code divides by E, not E - 1);
- SDARTS-RS: ``δ ~ U(-ε, ε)`` per entry, drawn for every weight step;
- SDARTS-ADV: 7 steps of L∞ PGD that ascend the weight step's own training loss: a random start ``U(-ε, ε)``, then
  ``w ← simplex(w0 + clamp(w + (2ε/7) sign ∇_w L − w0, −ε, ε))``; the attack runs with the supernet in eval mode (BN
  on running statistics) and is dropped (``w = w0``) when it ends with a lower loss than ``w0`` had;
- the α step is the unperturbed DARTS step (first order in the code's commands; second order is allowed, as the
  code's ``--unrolled``), and λ_max is measured at the unperturbed α.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rdarts.robust.hooks import MethodHooks
from rdarts.supernet import Supernet

EPSILON_START = 0.03
EPSILON_MAX = 0.3
"""``--epsilon_alpha``: the ball's radius that ε ramps towards."""
PGD_STEPS = 7
Weights = tuple[torch.Tensor, torch.Tensor]


def epsilon(epoch: int, epochs: int) -> float:
    """The ball's radius at ``epoch`` (0-based) of ``epochs``, as the released loop computes it."""
    return EPSILON_START + (EPSILON_MAX - EPSILON_START) * epoch / epochs


def simplex(w: torch.Tensor) -> torch.Tensor:
    """The code's ``clip``: each row clamped to [0, 1] and divided by its sum (an all-zero row: 1 at its argmax)."""
    clamped = w.clamp(0.0, 1.0)
    dead = clamped.sum(-1, keepdim=True) == 0
    top = F.one_hot(w.argmax(-1), w.shape[-1]).to(w.dtype)
    clamped = torch.where(dead, top, clamped)
    return clamped / clamped.sum(-1, keepdim=True)


def _uniform(like: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    # Drawn on the CPU from the search's generator (checkpointed), then moved: the same draws on every device.
    u = torch.rand(like.shape, generator=generator, dtype=like.dtype)
    return ((2 * u - 1) * eps).to(like.device)


def random_perturbation(w0: Weights, eps: float, generator: torch.Generator) -> tuple[Weights, Weights]:
    """SDARTS-RS: the perturbed weights and the offsets δ (``‖δ‖_∞ ≤ ε``) they were made from."""
    deltas = tuple(_uniform(w, eps, generator) for w in w0)
    return tuple(simplex(w + d) for w, d in zip(w0, deltas, strict=True)), deltas  # type: ignore[return-value]


def pgd_perturbation(model: Supernet, x: torch.Tensor, y: torch.Tensor, w0: Weights, eps: float,
                     generator: torch.Generator, steps: int = PGD_STEPS) -> tuple[Weights, Weights]:
    """SDARTS-ADV: the L∞ PGD weights that raise the training loss on (x, y), and their offsets from ``w0``
    before ``simplex`` (each within ε)."""
    was_training = model.training
    model.eval()  # as Linf_PGD_alpha: the attack sees BN's running statistics

    def loss_at(w: Weights) -> torch.Tensor:
        return F.cross_entropy(model(x, weights=w), y)

    try:
        with torch.no_grad():
            loss_before = loss_at(w0)
        deltas = tuple(_uniform(w, eps, generator) for w in w0)
        w = tuple(simplex(a + d) for a, d in zip(w0, deltas, strict=True))
        for _ in range(steps):
            w = tuple(t.detach().requires_grad_() for t in w)
            grads = torch.autograd.grad(loss_at(w), w, allow_unused=True)
            new, deltas = [], []
            for t, g, a in zip(w, grads, w0, strict=True):
                step = (2 * eps / steps) * torch.sign(g) if g is not None else torch.zeros_like(t)
                d = (t.detach() + step - a).clamp(-eps, eps)  # the projection onto the ball around w0
                deltas.append(d)
                new.append(simplex(a + d))
            w, deltas = tuple(new), tuple(deltas)
        with torch.no_grad():
            loss_after = loss_at(w)
        if loss_before > loss_after:  # the code keeps an attack only if it raised the loss
            w, deltas = w0, tuple(torch.zeros_like(a) for a in w0)
    finally:
        model.train(was_training)
    return w, deltas  # type: ignore[return-value]


class SDARTS(MethodHooks):
    """SDARTS-RS (``adversarial=False``) or SDARTS-ADV (``adversarial=True``)."""

    def __init__(self, adversarial: bool):
        self.adversarial = adversarial
        self.name = "sdarts-adv" if adversarial else "sdarts-rs"
        self.epsilon = EPSILON_START

    def begin_epoch(self, model: Supernet, epoch: int, epochs: int) -> None:
        self.epsilon = epsilon(epoch, epochs)

    def weight_step_logits(self, model: Supernet, x: torch.Tensor, y: torch.Tensor,
                           generator: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            w0 = tuple(w.detach() for w in model.mixture_weights())
        if self.adversarial:
            w, _ = pgd_perturbation(model, x, y, w0, self.epsilon, generator)  # type: ignore[arg-type]
        else:
            w, _ = random_perturbation(w0, self.epsilon, generator)  # type: ignore[arg-type]
        return model(x, weights=w)
