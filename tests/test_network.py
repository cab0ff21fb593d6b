"""The discrete evaluation network: structure against the genotype, parameters against formulas, shapes, drop path."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from rdarts import network
from rdarts.errors import UserError
from rdarts.network import Cell, Network, count_parameters
from rdarts.ops import DilConv, FactorizedReduce, Identity, SepConv
from rdarts.spaces import Genotype


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny convolutions: a second intra-op thread only adds contention (10x slower on a loaded 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

NORMAL = (("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_3x3", 0), ("max_pool_3x3", 2),
          ("avg_pool_3x3", 1), ("sep_conv_5x5", 3), ("dil_conv_5x5", 4), ("skip_connect", 0))
REDUCE = (("max_pool_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 2), ("dil_conv_3x3", 1),
          ("avg_pool_3x3", 0), ("skip_connect", 3), ("sep_conv_3x3", 4), ("dil_conv_5x5", 0))
# The reduction cell concatenates only three of its nodes: the channel bookkeeping must follow the concat list.
GENOTYPE = Genotype(NORMAL, (2, 3, 4, 5), REDUCE, (2, 3, 5))


def _module_kind(name: str, strided: bool) -> str:
    """The class an op name must compile to."""
    if name == "skip_connect":
        return "FactorizedReduce" if strided else "Identity"
    return {"sep": "SepConv", "dil": "DilConv", "max": "MaxPool2d", "avg": "AvgPool2d"}[name[:3]]


def _cell_types(layers: int) -> list[bool]:
    """Per cell, whether it is a reduction cell (DARTS: at layers//3 and 2*layers//3)."""
    return [i in (layers // 3, 2 * layers // 3) for i in range(layers)]


@pytest.mark.parametrize("layers", [1, 3, 5, 8])
def test_op_modules_match_the_genotype(layers: int) -> None:
    """Each op kind occurs (per-cell-type count) x (number of such cells) times, plus the preprocessing reductions."""
    net = Network(GENOTYPE, 4, 10, layers, auxiliary=True)
    reductions = _cell_types(layers)
    expected: Counter[str] = Counter()
    for i, reduction in enumerate(reductions):
        for name, index in REDUCE if reduction else NORMAL:
            expected[_module_kind(name, reduction and index < 2)] += 1
        if i > 0 and reductions[i - 1]:
            expected["FactorizedReduce"] += 1  # preprocess0 of a cell that follows a reduction
    # SepConv is built from two DilConv stages.
    expected["DilConv"] += 2 * expected["SepConv"]
    kinds = (SepConv, DilConv, Identity, FactorizedReduce, nn.MaxPool2d, nn.AvgPool2d)
    found = Counter(type(m).__name__ for m in net.modules() if isinstance(m, kinds))
    assert found == expected


def test_stride_two_exactly_on_reduction_cell_inputs() -> None:
    """An op halves the resolution iff it sits in a reduction cell and reads input 0 or 1."""
    net = Network(GENOTYPE, 4, 10, 5, auxiliary=False)
    for cell, reduction in zip(net.cells, _cell_types(5), strict=True):
        assert cell.reduction == reduction
        C = cell.preprocess1[1].out_channels
        for op, index in zip(cell.ops, cell.indices, strict=True):
            out = op(torch.randn(2, C, 8, 8))
            assert out.shape[-1] == (4 if reduction and index < 2 else 8)


# ---------------------------------------------------------------------------------------------------- parameter count
def _conv(c_in: int, c_out: int, k: int, groups: int = 1) -> int:
    return c_in // groups * c_out * k * k


def _bn(c: int) -> int:
    return 2 * c  # affine weight and bias


def _relu_conv_bn(c_in: int, c_out: int) -> int:
    return _conv(c_in, c_out, 1) + _bn(c_out)


def _factorized_reduce(c_in: int, c_out: int) -> int:
    return 2 * _conv(c_in, c_out // 2, 1) + _bn(c_out)


def _dil_conv(c: int, k: int) -> int:
    return _conv(c, c, k, groups=c) + _conv(c, c, 1) + _bn(c)


def _op(name: str, c: int, strided: bool) -> int:
    if name == "skip_connect":
        return _factorized_reduce(c, c) if strided else 0
    if name.startswith("sep_conv"):
        return 2 * _dil_conv(c, int(name[-1]))
    if name.startswith("dil_conv"):
        return _dil_conv(c, int(name[-1]))
    return 0  # pooling


def _cell(pairs: tuple[tuple[str, int], ...], c_pp: int, c_p: int, c: int, reduction: bool,
          reduction_prev: bool) -> int:
    pre0 = _factorized_reduce(c_pp, c) if reduction_prev else _relu_conv_bn(c_pp, c)
    return pre0 + _relu_conv_bn(c_p, c) + sum(_op(name, c, reduction and i < 2) for name, i in pairs)


def test_parameter_count_matches_the_op_formulas() -> None:
    """C=4, 3 layers, 1 input channel, 10 classes; cell 0 normal, cells 1 and 2 reductions (3//3, 2*3//3)."""
    stem = _conv(1, 12, 3) + _bn(12)
    cell0 = _cell(NORMAL, 12, 12, 4, False, False)  # out: 4 nodes x 4 = 16 channels
    cell1 = _cell(REDUCE, 12, 16, 8, True, False)  # out: 3 concatenated nodes x 8 = 24
    cell2 = _cell(REDUCE, 16, 24, 16, True, True)  # out: 3 x 16 = 48
    classifier = 48 * 10 + 10
    aux = _conv(48, 128, 1) + _bn(128) + _conv(128, 768, 2) + _bn(768) + 768 * 10 + 10  # fed by cell 2 (2*3//3)

    net = Network(GENOTYPE, 4, 10, 3, auxiliary=True, in_channels=1)
    assert count_parameters(net) == stem + cell0 + cell1 + cell2 + classifier
    assert count_parameters(net, exclude_aux=False) == stem + cell0 + cell1 + cell2 + classifier + aux
    no_aux = Network(GENOTYPE, 4, 10, 3, auxiliary=False, in_channels=1)
    assert count_parameters(no_aux, exclude_aux=False) == count_parameters(net)


# ---------------------------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("size", [8, 16, 28, 32])
@pytest.mark.parametrize("auxiliary", [True, False])
def test_forward_shapes(size: int, auxiliary: bool) -> None:
    net = Network(GENOTYPE, 4, 7, 3, auxiliary=auxiliary, in_channels=1)
    x = torch.randn(3, 1, size, size)
    logits, aux = net(x)
    assert logits.shape == (3, 7)
    if auxiliary:
        assert aux is not None and aux.shape == (3, 7)
    else:
        assert aux is None
    net.eval()
    logits, aux = net(x)
    assert logits.shape == (3, 7) and aux is None  # the auxiliary head is for training only


def test_auxiliary_head_pools_like_the_reference_on_8x8_maps() -> None:
    """32-px images give 8x8 maps, which the reference pools with AvgPool2d(5, stride 3) to 2x2."""
    head = network.AuxiliaryHead(6, 10).eval()
    x = torch.randn(2, 6, 8, 8)
    expected = head.classifier(head.features(nn.AvgPool2d(5, stride=3)(torch.relu(x))).flatten(1))
    torch.testing.assert_close(head(x), expected)


# ---------------------------------------------------------------------------------------------------- drop path
def _skip_only_cell(op_for_node_2: str = "skip_connect") -> Cell:
    pairs = (("skip_connect", 0), ("skip_connect", 1), (op_for_node_2, 2), ("skip_connect", 1),
             ("skip_connect", 3), ("skip_connect", 0), ("skip_connect", 4), ("skip_connect", 2))
    genotype = Genotype(pairs, (2, 3, 4, 5), REDUCE, (2, 3, 4, 5))
    return Cell(genotype, 6, 6, 4, reduction=False, reduction_prev=False)


def test_drop_path_spares_identity_ops() -> None:
    """A cell of identities gives the same output with drop prob 0 and 0.9; one conv among them makes it differ."""
    torch.manual_seed(0)
    s0, s1 = torch.randn(16, 6, 8, 8), torch.randn(16, 6, 8, 8)
    cell = _skip_only_cell().train()
    torch.testing.assert_close(cell(s0, s1, 0.9), cell(s0, s1, 0.0), rtol=0, atol=0)

    cell = _skip_only_cell("sep_conv_3x3").train()
    dropped, kept = cell(s0, s1, 0.9), cell(s0, s1, 0.0)
    assert not torch.equal(dropped, kept)
    cell.eval()  # no drop path outside training
    torch.testing.assert_close(cell(s0, s1, 0.9), cell(s0, s1, 0.0), rtol=0, atol=0)


def test_drop_path_is_applied_once_per_non_identity_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """Normal cells of identities only: drop path is called once per non-identity op of the reduction cells."""
    calls: list[float] = []

    def spy(x: torch.Tensor, p: float) -> torch.Tensor:
        calls.append(p)
        return x

    monkeypatch.setattr(network, "drop_path", spy)
    normal = _skip_only_cell().op_names
    net = Network(Genotype(tuple(zip(normal, (0, 1, 2, 1, 3, 0, 4, 2), strict=True)), (2, 3, 4, 5), REDUCE,
                           (2, 3, 5)), 4, 10, 5, auxiliary=False)
    x = torch.randn(2, 3, 8, 8)
    net.drop_path_prob = 0.3
    net(x)
    # REDUCE's skip_connect from node 1 (input 3) is an identity; its skip_connect from input 1 is strided, so dropped.
    per_reduction_cell = sum(not (name == "skip_connect" and index >= 2) for name, index in REDUCE)
    assert per_reduction_cell == 7
    assert calls == [0.3] * per_reduction_cell * 2  # 5 layers: reductions at cells 1 and 3
    calls.clear()
    net.eval()
    net(x)
    net.train()
    net.drop_path_prob = 0.0
    net(x)
    assert calls == []


# ---------------------------------------------------------------------------------------------------- errors
def test_unknown_op_names_the_valid_ones() -> None:
    bad = Genotype((("conv_9x9", 0),) + NORMAL[1:], (2, 3, 4, 5), REDUCE, (2, 3, 5))
    with pytest.raises(UserError, match=r"unknown op 'conv_9x9'; valid ops: .*sep_conv_3x3"):
        Network(bad, 4, 10, 3, auxiliary=False)


def test_input_of_a_later_node_is_rejected() -> None:
    bad = Genotype((("sep_conv_3x3", 2),) + NORMAL[1:], (2, 3, 4, 5), REDUCE, (2, 3, 5))
    with pytest.raises(UserError, match="node 0 can read only inputs 0..1"):
        Network(bad, 4, 10, 3, auxiliary=False)
