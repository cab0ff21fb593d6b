"""The DARTS one-shot model: every edge a softmax-weighted mixture of its candidate ops.

Follows quark0/darts ``cnn/model_search.py`` as used by automl/RobustDARTS ``src/search/model_search.py``:
BN without affine in search, BN after pooling ops, reductions at layers//3 and 2*layers//3, α initialised as
1e-3*randn, scheduled drop path applied to whole edges. The module holds no device: move it with ``.to()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rdarts.fast_forward import cell_forward
from rdarts.ops import FactorizedReduce, ReLUConvBN, drop_path, make_op
from rdarts.spaces import Genotype, SearchSpace


class MixedOp(nn.Module):
    """One edge: ``sum_o w_o * o(x)`` over the edge's own op list."""

    def __init__(self, C: int, stride: int, primitives: tuple[str, ...]):
        super().__init__()
        ops = []
        for name in primitives:
            op = make_op(name, C, stride, affine=False)
            if "pool" in name:  # the reference normalises pooling outputs, which have no learnable scale
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            ops.append(op)
        self._ops = nn.ModuleList(ops)

    def extra_terms(self, x: torch.Tensor, weights: torch.Tensor) -> list[torch.Tensor]:
        """What a subclass adds to ``sum_o w_o * o(x)``, from the weights past the ops' own; nothing here. (The fast
        forward computes the ops' sum its own way and adds these: a subclass overrides this, not ``forward``.)"""
        return []

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = sum(w * op(x) for w, op in zip(weights[: len(self._ops)], self._ops, strict=True))
        for term in self.extra_terms(x, weights):
            out = out + term
        return out  # type: ignore[return-value]


MixedOpFactory = Callable[[int, int, tuple[str, ...]], nn.Module]
"""``(C, stride, primitives) -> edge``: the edge module of a supernet (``MixedOp``; the robust methods' own)."""


class SearchCell(nn.Module):
    def __init__(self, steps: int, multiplier: int, C_pp: int, C_p: int, C: int, reduction: bool,
                 reduction_prev: bool, edges: tuple[tuple[str, ...], ...], mixed_op: MixedOpFactory = MixedOp):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = FactorizedReduce(C_pp, C, affine=False) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, 0,
                                                                                                     affine=False)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=False)
        self._steps, self._multiplier = steps, multiplier
        self.fast = True  # rdarts.fast_forward; False: the reference's structure, one call per op per edge
        ops, k = [], 0
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                ops.append(mixed_op(C, stride, edges[k]))
                k += 1
        self._ops = nn.ModuleList(ops)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor, drop_prob: float) -> torch.Tensor:
        if self.fast:
            return cell_forward(self, s0, s1, weights, drop_prob, MixedOp)
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self._steps):
            hs = []
            for j, h in enumerate(states):
                out = self._ops[offset + j](h, weights[offset + j])
                if self.training and drop_prob > 0.0:
                    out = drop_path(out, drop_prob)  # on the whole edge, per sample (RobustDARTS)
                hs.append(out)
            offset += len(states)
            states.append(sum(hs))  # type: ignore[arg-type]
        return torch.cat(states[-self._multiplier:], dim=1)


class Supernet(nn.Module):
    """The search network.

    Args:
        space: Op lists per edge; its edge count fixes the number of intermediate nodes.
        C: Initial channels (16 in the reference).
        num_classes: Classifier outputs.
        layers: Number of cells (8 in the reference).
        in_channels: Image channels (3 for CIFAR/SVHN, 1 for Fashion-MNIST).
        stem_multiplier: Stem width as a multiple of ``C`` (3 in the reference).
        mixed_op: The edge module (``rdarts.robust``: DARTS-' auxiliary skip, PC-DARTS' partial channels).
        fast: Cells run ``rdarts.fast_forward`` (same math, fewer kernel calls; edges of another ``mixed_op`` run
            their own forward); False: the plain structure, one call per op per edge.
    """

    def __init__(self, space: SearchSpace, C: int, num_classes: int, layers: int, in_channels: int = 3,
                 stem_multiplier: int = 3, mixed_op: MixedOpFactory = MixedOp, fast: bool = True):
        super().__init__()
        if C < 2 or C % 2:
            raise ValueError(f"channels must be an even number >= 2, got {C}")
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.space = space
        self._steps = steps = space.steps
        self._multiplier = steps
        self.drop_path_prob = 0.0
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_pp, C_p, C_curr = C_curr, C_curr, C
        cells, reduction_prev = [], False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            edges = space.reduce if reduction else space.normal
            cells.append(SearchCell(steps, self._multiplier, C_pp, C_p, C_curr, reduction, reduction_prev, edges,
                                    mixed_op))
            reduction_prev = reduction
            C_pp, C_p = C_p, self._multiplier * C_curr
        self.cells = nn.ModuleList(cells)
        for cell in cells:
            cell.fast = fast
        self.classifier = nn.Linear(C_p, num_classes)
        # α: one (edges, ops) matrix per cell type, initialised small so that every op starts almost equal.
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(len(space.normal), len(space.normal[0])))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(len(space.reduce), len(space.reduce[0])))

    def alpha_parameters(self) -> list[nn.Parameter]:
        """The op weights α (normal, reduce): what λ_max and the arch weight decay of the Hessian are taken over."""
        return [self.alphas_normal, self.alphas_reduce]

    def arch_parameters(self) -> list[nn.Parameter]:
        """Everything the α optimiser updates: α, and in a subclass its extra architecture parameters."""
        return self.alpha_parameters()

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def mixture_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """What each cell type's edges get (normal, reduce): softmax(α), ``(edges, ops)``; a subclass may append
        columns its own edge module reads."""
        return F.softmax(self.alphas_normal, dim=-1), F.softmax(self.alphas_reduce, dim=-1)

    def forward(self, x: torch.Tensor, weights: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits; ``weights`` replaces ``mixture_weights()`` (SDARTS' weight step on perturbed α)."""
        w_normal, w_reduce = self.mixture_weights() if weights is None else weights
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, w_reduce if cell.reduction else w_normal, self.drop_path_prob)
        out = F.adaptive_avg_pool2d(s1, 1)
        return self.classifier(out.flatten(1))

    def alpha_softmax(self) -> tuple[torch.Tensor, torch.Tensor]:
        """softmax(α) per cell type, detached: (normal, reduce), each (edges, ops)."""
        with torch.no_grad():
            return F.softmax(self.alphas_normal, dim=-1), F.softmax(self.alphas_reduce, dim=-1)

    def genotype(self) -> Genotype:
        return derive_genotype(*self.alpha_softmax(), self.space)


def _parse_cell(weights: torch.Tensor, edges: Sequence[Sequence[str]], steps: int) -> tuple[tuple[str, int], ...]:
    """Reference `_parse`: per node, the top-2 incoming edges by best non-`none` weight, then each edge's argmax op.

    The reference looks `none` up with an index local to the op list but applies it to the global list, which is wrong
    for per-edge lists that contain `none`; here every edge is read against its own list.
    """
    w = weights.detach().cpu().tolist()
    gene: list[tuple[str, int]] = []
    start = 0
    for i in range(steps):
        end = start + i + 2

        def best(k: int) -> tuple[float, int]:
            ops = edges[k]
            cands = [j for j, op in enumerate(ops) if op != "none"] or list(range(len(ops)))
            j = max(cands, key=lambda j: w[k][j])  # max() keeps the first of ties, as numpy's argmax
            return w[k][j], j

        # sorted() is stable: ties keep the lower input index, as the reference's sorted(range(...), key=...).
        ranked = sorted(range(start, end), key=lambda k: -best(k)[0])[:2]
        for k in ranked:
            gene.append((edges[k][best(k)[1]], k - start))
        start = end
    return tuple(gene)


def derive_genotype(weights_normal: torch.Tensor, weights_reduce: torch.Tensor, space: SearchSpace) -> Genotype:
    """The discrete architecture of a supernet, as the reference derives it from softmax(α).

    Args:
        weights_normal: Per-edge op weights of the normal cell, ``(edges, ops)``; rows may be padded past an edge's
            own op count, the padding is ignored.
        weights_reduce: The same for the reduction cell.
        space: The space the weights belong to.
    """
    steps = space.steps
    concat = tuple(range(2, 2 + steps))
    return Genotype(_parse_cell(weights_normal, space.normal, steps), concat,
                    _parse_cell(weights_reduce, space.reduce, steps), concat)
