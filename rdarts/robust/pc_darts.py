"""PC-DARTS (Xu et al., ICLR 2020): partial channel connections and edge normalisation.

Read from yuhuixu1993/PC-DARTS@b74702f: ``model_search.py`` (``channel_shuffle``, ``MixedOp``, ``Cell``,
``Network.forward`` and ``genotype``) and ``train_search.py`` (the CIFAR-10 search). As that code:

- partial channels, K = 4: an edge sends its first C/K channels through the ops, passes the other channels by
  (max-pooled 2x2 on a stride-2 edge), concatenates both and shuffles the channels in K groups
  (``channel_shuffle(x, 4)``): the next edge on the same tensor sees other channels;
- edge normalisation: per-edge parameters β (``betas_normal``, ``betas_reduce``, initialised 1e-3 randn, updated by
  the α optimiser); each node sums its incoming edges weighted by the softmax of their β over that node's edges;
- the genotype is derived from ``softmax(α) * softmax_node(β)`` per edge (the edge ranking and each edge's op as the
  DARTS parse, on the products);
- the α step (α and β) starts after a warm-up, ``if epoch >= 15`` in a 50-epoch search: rdarts keeps the 30 %
  share, ``int(0.3 E)`` warm-up epochs (15 of 50, 0 for searches of 3 epochs or fewer);
- the code's own search settings (batch 256, SGD lr 0.1 cosine to 0, Adam 6e-4 on α, first order) are ordinary
  settings here; the sweep files set them for their PC-DARTS rows.

λ_max is measured w.r.t. α only (β fixed at its current value), the Hessian every other method reports, so that it
compares across methods; the arch weight decay inside it is α's too. A pooling bypass on an odd side uses
``ceil_mode`` so that it matches the strided ops (the code's floor pooling fails there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rdarts.architect import Architect, Batch
from rdarts.robust.hooks import MethodHooks
from rdarts.spaces import Genotype, SearchSpace
from rdarts.supernet import MixedOp, Supernet, derive_genotype

K = 4
"""The code's ``self.k``: 1/K of the channels go through the ops."""
WARMUP_SHARE = 15 / 50
"""``if epoch >= 15`` of the code's 50 epochs: the share of the search without α steps."""


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's shuffle: view the channels as (groups, C/groups), transpose, flatten."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def node_softmax(betas: torch.Tensor, steps: int) -> torch.Tensor:
    """Edge normalisation: the softmax of β over each node's incoming edges (2, 3, ... per node), concatenated."""
    out, start = [], 0
    for i in range(steps):
        end = start + 2 + i
        out.append(F.softmax(betas[start:end], dim=-1))
        start = end
    return torch.cat(out)


def warmup_epochs(epochs: int) -> int:
    return int(WARMUP_SHARE * epochs)


class PartialMixedOp(nn.Module):
    """A PC-DARTS edge: the ops on C/K channels, the rest passed by, shuffled; the output scaled by its edge weight
    (the last column of its weights, ``PCSupernet``)."""

    def __init__(self, C: int, stride: int, primitives: tuple[str, ...]):
        super().__init__()
        if C % K:
            raise ValueError(f"PC-DARTS needs channels divisible by {K}, got {C}")
        self.mixed = MixedOp(C // K, stride, primitives)
        self.bypass: nn.Module = nn.MaxPool2d(2, 2, ceil_mode=True) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        part = x.shape[1] // K
        y = torch.cat([self.mixed(x[:, :part], weights[:-1]), self.bypass(x[:, part:])], dim=1)
        return weights[-1] * channel_shuffle(y, K)


class PCSupernet(Supernet):
    """The DARTS supernet with partial-channel edges and edge normalisation β."""

    def __init__(self, space: SearchSpace, C: int, num_classes: int, layers: int, in_channels: int = 3):
        super().__init__(space, C, num_classes, layers, in_channels, mixed_op=PartialMixedOp)
        self.betas_normal = nn.Parameter(1e-3 * torch.randn(len(space.normal)))
        self.betas_reduce = nn.Parameter(1e-3 * torch.randn(len(space.reduce)))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [*self.alpha_parameters(), self.betas_normal, self.betas_reduce]

    def edge_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """softmax_node(β) per cell type: (normal, reduce), each (edges,)."""
        return node_softmax(self.betas_normal, self._steps), node_softmax(self.betas_reduce, self._steps)

    def mixture_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        (w_normal, w_reduce), (e_normal, e_reduce) = super().mixture_weights(), self.edge_weights()
        return torch.cat([w_normal, e_normal[:, None]], dim=1), torch.cat([w_reduce, e_reduce[:, None]], dim=1)

    def genotype(self) -> Genotype:
        with torch.no_grad():
            (w_normal, w_reduce), (e_normal, e_reduce) = self.alpha_softmax(), self.edge_weights()
            return derive_genotype(w_normal * e_normal[:, None], w_reduce * e_reduce[:, None], self.space)


class PCDarts(MethodHooks):
    name = "pc-darts"

    def __init__(self, epochs: int) -> None:
        self.warmup = warmup_epochs(epochs)

    def build_supernet(self, space: SearchSpace, C: int, num_classes: int, layers: int,
                       in_channels: int) -> Supernet:
        return PCSupernet(space, C, num_classes, layers, in_channels)

    def arch_step(self, architect: Architect, epoch: int, train: Batch, valid: Batch, eta: float,
                  w_weight_decay: float) -> None:
        if epoch >= self.warmup:
            architect.step(train, valid, eta, w_weight_decay)
