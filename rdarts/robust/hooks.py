"""The points where a robust-DARTS method changes the search loop, and plain DARTS at each of them.

``rdarts.search.Search`` runs one loop for every method and calls a ``MethodHooks`` at five points:

1. ``build_supernet``: the one-shot model (DARTS-: an auxiliary skip on every edge; PC-DARTS: partial channels and
   edge normalisation);
2. ``begin_epoch``: the method's per-epoch schedule (SDARTS' ε, DARTS-' β, β-DARTS' λ);
3. ``arch_step``: the α step on a validation batch (PC-DARTS: none during its warm-up);
4. ``alpha_loss``: a term added to the α loss (β-DARTS' Beta-decay), through ``Architect(extra_loss=...)``;
5. ``weight_step_logits``: the forward pass of the weight step (SDARTS: on perturbed α).

Every schedule is a function of the epoch, and every random draw comes from the search's generator (which its
checkpoint carries), so a method has no state of its own to save and a resumed search ends as an uninterrupted one.
"""

from __future__ import annotations

import torch

from rdarts.architect import Architect, Batch
from rdarts.spaces import SearchSpace
from rdarts.supernet import Supernet


class MethodHooks:
    """Plain DARTS (``method: darts``): every hook does what the RobustDARTS loop does without it."""

    name = "darts"

    def build_supernet(self, space: SearchSpace, C: int, num_classes: int, layers: int,
                       in_channels: int) -> Supernet:
        return Supernet(space, C, num_classes, layers, in_channels)

    def begin_epoch(self, model: Supernet, epoch: int, epochs: int) -> None:
        """Set the method's schedule for ``epoch`` (of ``epochs``), before its first step."""

    def arch_step(self, architect: Architect, epoch: int, train: Batch, valid: Batch, eta: float,
                  w_weight_decay: float) -> None:
        architect.step(train, valid, eta, w_weight_decay)

    def alpha_loss(self, model: Supernet) -> torch.Tensor | None:
        """A term added to the α loss of this step; ``None``: nothing."""
        return None

    def weight_step_logits(self, model: Supernet, x: torch.Tensor, y: torch.Tensor,
                           generator: torch.Generator) -> torch.Tensor:
        """The logits the weight step differentiates (its loss is cross-entropy on ``y``)."""
        return model(x)
