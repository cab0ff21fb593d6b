"""The discrete network that a searched genotype is retrained as.

Follows quark0/darts ``cnn/model.py`` (``NetworkCIFAR``), which automl/RobustDARTS ``src/evaluation/model.py`` reuses:
a 3x3 stem to ``3*C`` channels, ``layers`` cells with reductions (stride 2, channels doubled) at ``layers//3`` and
``2*layers//3``, affine BN everywhere, scheduled drop path on every op but the identity, and an auxiliary classifier
after the second reduction cell during training. The module holds no device: move it with ``.to()``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rdarts.errors import UserError
from rdarts.ops import OPS, FactorizedReduce, Identity, ReLUConvBN, drop_path, make_op
from rdarts.spaces import Genotype

STEM_MULTIPLIER = 3


def _check_cell(genotype: Genotype, reduction: bool) -> None:
    """A cell's pairs must name known ops and read only inputs that exist before their node."""
    kind = "reduce" if reduction else "normal"
    pairs = genotype.reduce if reduction else genotype.normal
    concat = genotype.reduce_concat if reduction else genotype.normal_concat
    if not pairs or len(pairs) % 2:
        raise UserError(f"genotype {kind}: needs two (op, input) pairs per node, got {len(pairs)} pairs")
    for k, (name, index) in enumerate(pairs):
        if name not in OPS:
            raise UserError(f"genotype {kind}: unknown op {name!r}; valid ops: {', '.join(OPS)}")
        if not 0 <= index < 2 + k // 2:
            raise UserError(f"genotype {kind}: pair {k} ({name!r}, {index}) reads input {index}, but node {k // 2} "
                            f"can read only inputs 0..{1 + k // 2}")
    states = 2 + len(pairs) // 2
    if not concat or any(not 0 <= i < states for i in concat):
        raise UserError(f"genotype {kind}_concat: {list(concat)} must be a non-empty list of states 0..{states - 1}")


class Cell(nn.Module):
    """One cell compiled from a genotype: node ``i`` is ``op(h_a) + op(h_b)`` over its two (op, input) pairs.

    Args:
        genotype: The architecture; the cell reads its ``reduce`` or ``normal`` half.
        C_pp: Channels of the cell's first input, the output of the cell two back.
        C_p: Channels of the second input, the previous cell's output.
        C: Channels of every node of this cell.
        reduction: Halve the resolution: the ops reading the two cell inputs get stride 2.
        reduction_prev: The previous cell halved the resolution, so ``c_{k-2}`` must be reduced to match.
    """

    def __init__(self, genotype: Genotype, C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        _check_cell(genotype, reduction)
        self.reduction = reduction
        self.preprocess0 = FactorizedReduce(C_pp, C) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0)
        pairs = genotype.reduce if reduction else genotype.normal
        self.op_names = tuple(name for name, _ in pairs)
        self.indices = tuple(index for _, index in pairs)
        self.concat = tuple(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.multiplier = len(self.concat)
        self.ops = nn.ModuleList(
            make_op(name, C, 2 if reduction and index < 2 else 1, True) for name, index in pairs
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(0, len(self.ops), 2):
            h1 = self._edge(i, states, drop_prob)
            h2 = self._edge(i + 1, states, drop_prob)
            states.append(h1 + h2)
        return torch.cat([states[i] for i in self.concat], dim=1)

    def _edge(self, k: int, states: list[torch.Tensor], drop_prob: float) -> torch.Tensor:
        op = self.ops[k]
        h = op(states[self.indices[k]])
        # The identity is never dropped (DARTS model.py): it keeps a clean path through every cell.
        if self.training and drop_prob > 0.0 and not isinstance(op, Identity):
            h = drop_path(h, drop_prob)
        return h


class AuxiliaryHead(nn.Module):
    """The DARTS CIFAR auxiliary classifier, fed by the second reduction cell.

    The reference pools its 8x8 input (32 px images) with a 5x5 window, stride 3, to 2x2. Other map sizes
    (8 or 16 px images give 2x2 or 4x4 maps, 28 px gives 7x7) would break it, so those are pooled adaptively to 2x2.
    """

    def __init__(self, C: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        h, w = x.shape[-2:]
        if (h - 5) // 3 + 1 == 2 and (w - 5) // 3 + 1 == 2:  # 8-10 px maps: exactly the reference's pooling
            x = F.avg_pool2d(x, 5, stride=3)
        else:
            x = F.adaptive_avg_pool2d(x, 2)
        x = self.features(x)  # (B, 768, 1, 1)
        return self.classifier(x.flatten(1))


class Network(nn.Module):
    """The evaluation network of a genotype.

    Args:
        genotype: The architecture of the normal and the reduction cells.
        C: Channels of the first cells (36 for CIFAR-10 in DARTS, 16 in RobustDARTS' other settings).
        num_classes: Classifier outputs.
        layers: Number of cells (20 in DARTS, 8 in RobustDARTS' other settings).
        auxiliary: Build the auxiliary head; its logits are returned in training mode only.
        in_channels: Image channels.

    Attributes:
        drop_path_prob: Drop-path probability used in training mode; the training loop ramps it per epoch.
    """

    def __init__(self, genotype: Genotype, C: int, num_classes: int, layers: int, *, auxiliary: bool,
                 in_channels: int = 3):
        super().__init__()
        for name, value in (("C", C), ("num_classes", num_classes), ("layers", layers), ("in_channels", in_channels)):
            if value < 1:
                raise UserError(f"Network: {name} must be at least 1, got {value}")
        self.genotype = genotype
        self.drop_path_prob = 0.0
        self._aux_after = 2 * layers // 3
        C_curr = STEM_MULTIPLIER * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_pp, C_p, C_curr = C_curr, C_curr, C
        cells, reduction_prev, C_aux = [], False, C_p
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = Cell(genotype, C_pp, C_p, C_curr, reduction, reduction_prev)
            cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, cell.multiplier * C_curr
            if i == self._aux_after:
                C_aux = C_p
        self.cells = nn.ModuleList(cells)
        self.auxiliary_head = AuxiliaryHead(C_aux, num_classes) if auxiliary else None
        self.classifier = nn.Linear(C_p, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns the logits and, in training mode with the auxiliary head, the auxiliary logits (else ``None``)."""
        logits_aux = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self._aux_after and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        out = F.adaptive_avg_pool2d(s1, 1)
        return self.classifier(out.flatten(1)), logits_aux


def count_parameters(model: nn.Module, exclude_aux: bool = True) -> int:
    """Number of weights; the auxiliary head is left out by default, as the reference reports model size."""
    return sum(p.numel() for name, p in model.named_parameters()
               if not (exclude_aux and name.startswith("auxiliary_head.")))
