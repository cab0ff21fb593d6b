"""DARTS- (Chu et al., ICLR 2021): an auxiliary skip connection on every edge, its coefficient β decaying to 0.

Read from Meituan-AutoML/DARTS-@adb81a8: ``src/search/model_search.py`` (``MixedOp``: ``sum_o w_o o(x) + β aux(x)``),
``src/utils.py`` (``DecayScheduler``), ``src/search/args.py`` and ``scripts/run_darts_minus.sh`` (the S1-S4 search:
``--auxiliary_skip --skip_beta 1 --decay linear``, first order, weight decay 3e-4, drop path 0). As that code:

- the auxiliary op is an identity on stride-1 edges and a ``FactorizedReduce(C, C)`` (no affine BN, its convolutions
  trained with the weights) on the stride-2 edges of a reduction cell; it is outside the softmax, not an α entry;
- ``β_e = (E - e) / E`` at epoch ``e`` of ``E`` (``linear``: ``base (T_max - e) / (T_max - T_start)`` with
  ``T_start = 0`` and ``T_max = T_stop`` = the search's epochs): 1 at the first epoch and 0 at the end of the search
  (the last epoch runs at 1/E), set once per epoch before its first step;
- β is in every forward pass of the epoch: the α step, the weight step, validation and the λ_max measurement (the
  Hessian of the supernet the method trains), as the code's module-level ``decay_rate``.
"""

from __future__ import annotations

import torch
from torch import nn

from rdarts.ops import FactorizedReduce
from rdarts.robust.hooks import MethodHooks
from rdarts.spaces import SearchSpace
from rdarts.supernet import MixedOp, Supernet

BETA_START = 1.0
"""``--skip_beta 1``: β at the first epoch."""


def beta(epoch: int, epochs: int) -> float:
    """The auxiliary skip's coefficient at ``epoch`` (0-based; ``epochs``: the end of the search, where it is 0)."""
    return BETA_START * (epochs - epoch) / epochs


class AuxSkipMixedOp(MixedOp):
    """A DARTS edge plus ``β * skip(x)``; β is the last column of the edge's weights (``DartsMinusSupernet``)."""

    def __init__(self, C: int, stride: int, primitives: tuple[str, ...]):
        super().__init__(C, stride, primitives)
        self.aux: nn.Module = FactorizedReduce(C, C, affine=False) if stride == 2 else nn.Identity()

    def extra_terms(self, x: torch.Tensor, weights: torch.Tensor) -> list[torch.Tensor]:
        return [weights[-1] * self.aux(x)]


class DartsMinusSupernet(Supernet):
    """The DARTS supernet with an auxiliary skip on every edge; ``aux_beta`` is its coefficient."""

    def __init__(self, space: SearchSpace, C: int, num_classes: int, layers: int, in_channels: int = 3):
        super().__init__(space, C, num_classes, layers, in_channels, mixed_op=AuxSkipMixedOp)
        self.aux_beta = BETA_START

    def mixture_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        def with_beta(w: torch.Tensor) -> torch.Tensor:
            return torch.cat([w, w.new_full((w.shape[0], 1), self.aux_beta)], dim=1)

        w_normal, w_reduce = super().mixture_weights()
        return with_beta(w_normal), with_beta(w_reduce)


class DartsMinus(MethodHooks):
    name = "darts-minus"

    def build_supernet(self, space: SearchSpace, C: int, num_classes: int, layers: int,
                       in_channels: int) -> Supernet:
        return DartsMinusSupernet(space, C, num_classes, layers, in_channels)

    def begin_epoch(self, model: Supernet, epoch: int, epochs: int) -> None:
        assert isinstance(model, DartsMinusSupernet)
        model.aux_beta = beta(epoch, epochs)
