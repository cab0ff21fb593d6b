"""The search cell's forward with the plain path's math and fewer, larger kernel calls.

On CPU at search sizes (8-32 channels, 4-16 px) a supernet step is made of thousands of small kernels: depthwise and
pointwise convolutions take ~60 % of it, pooling ~13 %, BN, ReLU and the weighted sums most of the rest (profile in
the README). The plain path (``MixedOp.forward``, one call per op per edge) computes the same things several times:
every edge that leaves a state applies its own ReLU and its own pooling to the same tensor. Here, per cell:

1. Each state is passed through ReLU once; every op that starts with a ReLU (SepConv, DilConv, FactorizedReduce,
   conv_7x1_1x7) on every edge leaving the state reads that one result.
2. Each pooling is computed once per state (the edges leaving a state share its stride); every edge keeps its BN.
3. Same-shaped SepConv/DilConv ops on the edges leaving one state run as one grouped convolution: the shared input
   repeated once per edge, the depthwise weights concatenated (groups = edges x C), the pointwise weights as a 1x1
   conv with groups = edges, and the edges' BNs as one BN over the concatenated channels, whose running statistics
   are written back to each edge's BN. Per channel this is the same arithmetic, so results agree to float rounding.
4. `none` ops are skipped: they add w * 0 (their α still gets its softmax gradient through the other weights).

Random draws (the `noise` op, drop path masks) happen while the nodes are summed, node by node and edge by edge as
in the plain path, so both paths take the same numbers from the global RNG in the same order. Parameter and buffer
names are those of the plain modules: checkpoints and ``genotype()`` do not know which path ran.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rdarts.ops import DilConv, FactorizedReduce, Identity, NoiseOp, ReLUConvBN, SepConv, Zero, drop_path

# (edge index, op index) -> that op's output on the edge's input
_Outputs = dict[tuple[int, int], torch.Tensor]


def _bn_groupable(bns: list[nn.BatchNorm2d]) -> bool:
    return all(not b.affine and b.track_running_stats and b.momentum is not None for b in bns)


def grouped_batch_norm(bns: list[nn.BatchNorm2d], x: torch.Tensor) -> torch.Tensor:
    """``cat([bn_e(x_e) for e])`` for ``x`` the edge-major concatenation ``(B, E*C, H, W)``, as one BN call.

    Mirrors ``nn.BatchNorm2d.forward``: ``num_batches_tracked`` counts the batch and, in training, the running
    statistics move by ``momentum`` (on concatenated copies that are written back to each module's buffers).
    """
    if len(bns) == 1:
        return bns[0](x)
    if not _bn_groupable(bns):
        return torch.cat([bn(part) for bn, part in zip(bns, x.chunk(len(bns), dim=1), strict=True)], dim=1)
    bn0 = bns[0]
    mean = torch.cat([b.running_mean for b in bns])  # type: ignore[misc]
    var = torch.cat([b.running_var for b in bns])  # type: ignore[misc]
    out = F.batch_norm(x, mean, var, None, None, bn0.training, bn0.momentum, bn0.eps)  # type: ignore[arg-type]
    if bn0.training:
        with torch.no_grad():
            for b, m, v in zip(bns, mean.chunk(len(bns)), var.chunk(len(bns)), strict=True):
                b.running_mean.copy_(m)  # type: ignore[union-attr,operator]
                b.running_var.copy_(v)  # type: ignore[union-attr,operator]
                b.num_batches_tracked.add_(1)  # type: ignore[union-attr,operator]
    return out


def _pointwise(x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    """``cat([conv1x1(x_e, w_e) for e])`` for ``x`` edge-major ``(B, E*C, H, W)``, as one batched matmul.

    A matmul, not a grouped 1x1 convolution: at these sizes oneDNN's grouped 1x1 backward is ~3x slower on CPU.
    """
    e = len(weights)
    B, EC, H, W = x.shape
    w = torch.stack([wi.view(wi.shape[0], wi.shape[1]) for wi in weights])  # (E, C_out, C)
    return torch.matmul(w, x.reshape(B, e, EC // e, H * W)).view(B, -1, H, W)  # (B, E, C_out, HW)


def _dil_stage(stages: list[DilConv], x: torch.Tensor) -> torch.Tensor:
    """The convolutions and BN of ``len(stages)`` DilConvs on ``x = cat(relu inputs)``, edge-major."""
    dw = stages[0][1]
    dw_w = _cat_weights([s[1].weight for s in stages])
    y = F.conv2d(x, dw_w, None, dw.stride, dw.padding, dw.dilation, groups=x.shape[1])
    y = _pointwise(y, [s[2].weight for s in stages])
    return grouped_batch_norm([s[3] for s in stages], y)  # type: ignore[list-item]


def _cat_weights(ws: list[torch.Tensor]) -> torch.Tensor:
    return ws[0] if len(ws) == 1 else torch.cat(ws)


def _conv_key(d: DilConv) -> tuple[object, ...]:
    c = d[1]
    return c.kernel_size, c.stride, c.padding, c.dilation, c.in_channels, d[2].out_channels


def _relu(m: nn.Module) -> bool:
    """Whether ``m`` is the plain ReLU that the shared ``F.relu`` of a state stands for (a model whose activations
    were swapped, e.g. for Softplus in a smoothness test, keeps its own modules)."""
    return type(m) is nn.ReLU


def _group_key(op: nn.Module) -> tuple[object, ...] | None:
    """Ops with equal keys on one state's edges run as one grouped call; ``None``: run on their own."""
    if type(op) is DilConv and _relu(op[0]):
        return ("dil", *_conv_key(op))
    if type(op) is SepConv and _relu(op[0][0]) and _relu(op[1][0]):
        return ("sep", *_conv_key(op[0]), *_conv_key(op[1]))
    if type(op) is Identity:
        return ("id",)
    if type(op) is nn.Sequential and len(op) == 2 and isinstance(op[0], nn.MaxPool2d | nn.AvgPool2d) \
            and isinstance(op[1], nn.BatchNorm2d):
        return ("pool", repr(op[0]))
    return None


def _cat(xs: list[torch.Tensor]) -> torch.Tensor:
    return xs[0] if len(xs) == 1 else torch.cat(xs, dim=1)


def _run_group(key: tuple[object, ...], ops: list[nn.Module], hs: list[torch.Tensor],
               relu_hs: list[torch.Tensor], pooled: dict[tuple[str, int], torch.Tensor]) -> torch.Tensor:
    """One grouped call for ``ops`` (same key), op e reading state ``hs[e]``: the outputs concatenated, edge-major."""
    if key[0] == "id":
        return _cat(hs)
    if key[0] == "pool":
        xs = []
        for op, h in zip(ops, hs, strict=True):
            name = (str(key[1]), id(h))
            if name not in pooled:
                pooled[name] = op[0](h)  # type: ignore[index, operator]
            xs.append(pooled[name])
        return grouped_batch_norm([op[1] for op in ops], _cat(xs))  # type: ignore[index]
    x = _cat(relu_hs)
    if key[0] == "dil":
        return _dil_stage(ops, x)  # type: ignore[arg-type]
    y = _dil_stage([op[0] for op in ops], x)  # type: ignore[index]
    return _dil_stage([op[1] for op in ops], F.relu(y))  # type: ignore[index]


def _run_alone(op: nn.Module, h: torch.Tensor, relu_h: torch.Tensor) -> torch.Tensor | None:
    """An ungrouped op on state ``h``; ``None`` for ops handled elsewhere (`none` skipped, `noise` drawn later)."""
    if isinstance(op, Zero | NoiseOp):
        return None
    if type(op) is FactorizedReduce and _relu(op.relu):
        # FactorizedReduce.forward after its ReLU
        shifted = F.pad(relu_h[:, :, 1:, 1:], (0, 1, 0, 1)) if relu_h.shape[-1] % 2 else relu_h[:, :, 1:, 1:]
        return op.bn(torch.cat([op.conv_1(relu_h), op.conv_2(shifted)], dim=1))
    if type(op) is nn.Sequential and _relu(op[0]):  # conv_7x1_1x7
        y = relu_h
        for m in list(op)[1:]:
            y = m(y)
        return y
    return op(h)


def _weighted(ys: torch.Tensor, w: torch.Tensor) -> list[torch.Tensor]:
    """``[w_e * y_e]`` for ``ys`` the edge-major concatenation of ``len(w)`` outputs, with one multiplication."""
    e = w.shape[0]
    if e == 1:
        return [w[0] * ys]
    B, EC, H, W = ys.shape
    return list((ys.view(B, e, EC // e, H, W) * w.view(1, e, 1, 1, 1)).view(B, EC, H, W).chunk(e, dim=1))


def _edges_from(hs: list[torch.Tensor], edges: list[list[tuple[int, nn.Module]]], weights: torch.Tensor,
                out: _Outputs) -> None:
    """``w_ko * o(h)`` for every op ``o`` of the edges ``(k, MixedOp)`` in ``edges[s]`` that read state ``hs[s]``,
    into ``out[(k, o)]``; states of equal shape (a cell's two inputs) share the grouped calls."""
    relu_hs = [F.relu(h) for h in hs]
    groups: dict[tuple[object, ...], list[tuple[int, int, nn.Module, int]]] = {}
    for s, (h, relu_h) in enumerate(zip(hs, relu_hs, strict=True)):
        for k, edge in edges[s]:
            for o, op in enumerate(edge._ops):  # type: ignore[arg-type]
                key = _group_key(op)
                if key is None:
                    y = _run_alone(op, h, relu_h)
                    if y is not None:
                        out[(k, o)] = weights[k, o] * y
                else:
                    groups.setdefault((*key, tuple(h.shape)), []).append((k, o, op, s))
    pooled: dict[tuple[str, int], torch.Tensor] = {}
    for key, members in groups.items():
        ys = _run_group(key, [m[2] for m in members], [hs[m[3]] for m in members], [relu_hs[m[3]] for m in members],
                        pooled)
        w = weights[[m[0] for m in members], [m[1] for m in members]]  # (E,)
        for (k, o, _, _), y in zip(members, _weighted(ys, w), strict=True):
            out[(k, o)] = y


def _preprocess(op: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A cell's input op; ReLUConvBN 1x1 with its convolution as a matmul (see ``_pointwise``)."""
    conv = op[1] if type(op) is ReLUConvBN else None
    if conv is not None and _relu(op[0]) and conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1:
        return op[2](_pointwise(F.relu(x), [op[1].weight]))
    return op(x)


def _is_plain(edge: nn.Module, mixed_op: type[nn.Module]) -> bool:
    return isinstance(edge, mixed_op) and type(edge).forward is mixed_op.forward


def cell_forward(cell: nn.Module, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor, drop_prob: float,
                 mixed_op: type[nn.Module]) -> torch.Tensor:
    """``SearchCell.forward`` of the plain path, computed as the module docstring describes.

    Args:
        cell: A ``SearchCell``.
        s0, s1: The cell's inputs.
        weights: softmax(α) of the cell type, ``(edges, ops)``.
        drop_prob: Drop path probability (training only).
        mixed_op: The plain edge class. Its instances, subclasses included (they add ``extra_terms``, e.g. DARTS-'
            auxiliary skip), run as above; an edge that overrides ``forward`` (a method's own mixture, e.g.
            PC-DARTS' partial channels) runs its own forward.
    """
    steps: int = cell._steps  # type: ignore[assignment]
    edges: nn.ModuleList = cell._ops  # type: ignore[assignment]
    states = [_preprocess(cell.preprocess0, s0), _preprocess(cell.preprocess1, s1)]
    # The edges that leave each state: node i reads states 0..i+1 through edges offset_i + j.
    leaving: list[list[tuple[int, nn.Module]]] = [[] for _ in range(steps + 1)]
    offsets, k = [], 0
    for i in range(steps):
        offsets.append(k)
        for j in range(i + 2):
            if _is_plain(edges[k], mixed_op):
                leaving[j].append((k, edges[k]))
            k += 1
    out: _Outputs = {}
    _edges_from(states, leaving[:2], weights, out)
    dropping = cell.training and drop_prob > 0.0
    for i in range(steps):
        terms: list[torch.Tensor] = []
        for j, h in enumerate(states):
            k = offsets[i] + j
            edge = edges[k]
            if not _is_plain(edge, mixed_op):
                edge_terms = [edge(h, weights[k])]
            else:
                edge_terms = []
                for o, op in enumerate(edge._ops):  # type: ignore[arg-type]
                    if isinstance(op, NoiseOp):  # drawn here, in the plain path's order
                        edge_terms.append(weights[k, o] * op(h))
                    elif (k, o) in out:
                        edge_terms.append(out.pop((k, o)))
                if not edge_terms:  # only `none` ops: zeros, through the plain path (it may draw a drop path mask)
                    edge_terms = [edge(h, weights[k])]
                else:
                    edge_terms += edge.extra_terms(h, weights[k])  # type: ignore[operator]
            if dropping:
                terms.append(drop_path(sum(edge_terms), drop_prob))  # type: ignore[arg-type]
            else:
                terms.extend(edge_terms)
        node = terms[0]
        for t in terms[1:]:
            node = node + t
        states.append(node)
        if i + 2 <= steps:
            _edges_from([node], [leaving[i + 2]], weights, out)
    return torch.cat(states[-cell._multiplier:], dim=1)  # type: ignore[misc]
