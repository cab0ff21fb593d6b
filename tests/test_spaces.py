"""Search spaces and genotype derivation against the RobustDARTS reference (`src/spaces.py`, `Network.genotype`).

The expected tables and genotypes are written out here by hand, independently of ``rdarts/spaces.py``.
"""

from __future__ import annotations

import json

import pytest
import torch

from rdarts.spaces import (
    KNOWN_OPS,
    SPACE_NAMES,
    Genotype,
    SearchSpace,
    get_space,
    num_edges,
    space_from_op_lists,
    uniform_space,
)
from rdarts.supernet import derive_genotype

SKIP, MAX, AVG = "skip_connect", "max_pool_3x3", "avg_pool_3x3"
SEP3, SEP5, DIL3, DIL5 = "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"

# RobustDARTS `primitives_1` (S1), one row per edge e0..e13: (normal ops, reduce ops), in α column order.
S1_TABLE = [
    ((SKIP, DIL3), (MAX, AVG)),  # e0
    ((SKIP, DIL5), (MAX, DIL3)),  # e1
    ((SKIP, DIL5), (MAX, AVG)),  # e2
    ((SKIP, SEP3), (MAX, AVG)),  # e3
    ((SKIP, DIL3), (SKIP, DIL5)),  # e4
    ((MAX, SKIP), (MAX, AVG)),  # e5
    ((SKIP, SEP3), (MAX, SEP3)),  # e6
    ((SKIP, SEP3), (SKIP, DIL3)),  # e7
    ((SKIP, DIL3), (SKIP, DIL5)),  # e8
    ((SKIP, SEP3), (MAX, AVG)),  # e9
    ((MAX, SKIP), (MAX, AVG)),  # e10
    ((SKIP, DIL3), (SKIP, DIL5)),  # e11
    ((DIL3, DIL5), (SKIP, DIL5)),  # e12
    ((DIL3, DIL5), (SKIP, DIL5)),  # e13
]

DARTS_OPS = ("none", MAX, AVG, SKIP, SEP3, SEP5, DIL3, DIL5)
UNIFORM_SPACES = {
    "darts": DARTS_OPS,
    "s2": (SKIP, SEP3),
    "s3": ("none", SKIP, SEP3),
    "s4": ("noise", SEP3),
}


# ----------------------------------------------------------------------------------------------- the spaces
def test_s1_per_edge_lists_match_reference_table() -> None:
    s1 = get_space("s1")
    assert [list(ops) for ops in s1.normal] == [list(normal) for normal, _ in S1_TABLE]
    assert [list(ops) for ops in s1.reduce] == [list(reduce) for _, reduce in S1_TABLE]
    assert not s1.is_uniform


@pytest.mark.parametrize("name", sorted(UNIFORM_SPACES))
def test_uniform_spaces_use_the_same_list_on_every_edge_and_cell(name: str) -> None:
    space = get_space(name)
    expected = [list(UNIFORM_SPACES[name])] * 14
    assert [list(ops) for ops in space.normal] == expected
    assert [list(ops) for ops in space.reduce] == expected
    assert space.is_uniform


def test_space_names_are_case_insensitive_and_complete() -> None:
    assert set(SPACE_NAMES) == {"darts", "s1", "s2", "s3", "s4"}
    assert get_space("S3") == get_space("s3")


@pytest.mark.parametrize(("name", "expected"), [("s1", 56), ("s2", 56), ("s3", 84), ("s4", 56), ("darts", 224)])
def test_num_alphas_is_the_hessian_dimension_of_the_reference(name: str, expected: int) -> None:
    space = get_space(name)
    assert space.num_alphas == expected
    # 2 cell types x 14 edges x ops per edge
    assert space.num_alphas == 2 * 14 * len(space.normal[0])


@pytest.mark.parametrize(("steps", "edges"), [(1, 2), (2, 5), (3, 9), (4, 14), (5, 20)])
def test_edge_count_and_steps_round_trip(steps: int, edges: int) -> None:
    assert num_edges(steps) == edges
    assert get_space("s2", steps=steps).steps == steps


def test_unknown_space_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="nope") as info:
        get_space("nope")
    for name in ("darts", "s1", "s2", "s3", "s4"):
        assert name in str(info.value)


def test_s1_needs_four_nodes() -> None:
    with pytest.raises(ValueError, match="4 nodes"):
        get_space("s1", steps=3)


def test_unknown_op_lists_the_valid_ops() -> None:
    with pytest.raises(ValueError, match="conv_9x9") as info:
        uniform_space("mine", ["skip_connect", "conv_9x9"])
    for op in KNOWN_OPS:
        assert op in str(info.value)


@pytest.mark.parametrize(
    ("normal", "message"),
    [
        ([[SKIP, SKIP]] * 14, "twice"),
        ([[SKIP, SEP3]] * 13 + [[SKIP]], "same number of ops"),
        ([[SKIP, SEP3]] * 13 + [[]], "empty"),
        ([[SKIP, SEP3]] * 13, "13 per-edge op lists"),
    ],
)
def test_invalid_user_spaces_fail_with_the_cause(normal: list[list[str]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        space_from_op_lists("mine", normal)


def test_user_space_from_one_list_or_per_edge_lists() -> None:
    uniform = space_from_op_lists("mine", [SKIP, SEP3])
    assert uniform == uniform_space("mine", [SKIP, SEP3])
    per_edge = space_from_op_lists("mine", [[SKIP, SEP3]] * 14, [[MAX, AVG]] * 14)
    assert per_edge.reduce == ((MAX, AVG),) * 14
    assert per_edge.normal == ((SKIP, SEP3),) * 14
    assert per_edge.num_alphas == 56


# ----------------------------------------------------------------------------------------------- derivation
def _rows(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# S3 normal-cell weights (none, skip, sep3): `none` has the largest weight on e0, e2, e5, e10, e11, e12; including
# it in either the edge ranking or the op choice changes the genotype. Ties: e2 and e8 (op choice, first max wins),
# e9 / e11 / e13 (edge ranking at 0.4, the stable sort keeps the lower input index).
S3_NORMAL = _rows(
    [0.90, 0.04, 0.06],  # e0  n0 <- 0: best non-none sep 0.06
    [0.10, 0.60, 0.30],  # e1  n0 <- 1: skip 0.6
    [0.80, 0.10, 0.10],  # e2  n1 <- 0: skip 0.1 (tie with sep: first max)
    [0.20, 0.30, 0.50],  # e3  n1 <- 1: sep 0.5
    [0.50, 0.45, 0.05],  # e4  n1 <- n0: skip 0.45
    [0.98, 0.01, 0.01],  # e5  n2 <- 0: 0.01
    [0.10, 0.20, 0.70],  # e6  n2 <- 1: sep 0.7
    [0.00, 0.60, 0.40],  # e7  n2 <- n0: skip 0.6
    [0.30, 0.35, 0.35],  # e8  n2 <- n1: skip 0.35 (tie)
    [0.20, 0.40, 0.40],  # e9  n3 <- 0: skip 0.4 (tie)
    [0.70, 0.20, 0.10],  # e10 n3 <- 1: skip 0.2
    [0.60, 0.00, 0.40],  # e11 n3 <- n0: sep 0.4
    [0.50, 0.30, 0.20],  # e12 n3 <- n1: skip 0.3
    [0.20, 0.40, 0.40],  # e13 n3 <- n2: skip 0.4 (tie, loses to e9 and e11 by input index)
)
# Ranked per node by the best non-none weight, strongest edge first (the reference's order).
S3_NORMAL_GENE = (
    (SKIP, 1), (SEP3, 0),  # n0: e1 0.6, e0 0.06
    (SEP3, 1), (SKIP, 2),  # n1: e3 0.5, e4 0.45 (e2 would win with `none`)
    (SEP3, 1), (SKIP, 2),  # n2: e6 0.7, e7 0.6 (e5 would win with `none`)
    (SKIP, 0), (SEP3, 2),  # n3: e9 0.4, e11 0.4 (stable tie break), e13 0.4 dropped
)  # fmt: skip
# Reduce cell: every edge [none 0.5, skip 0.25, sep 0.25] -> all edges tie, all ops tie: first two inputs, skip.
S3_REDUCE = torch.tensor([[0.5, 0.25, 0.25]] * 14, dtype=torch.float64)
S3_REDUCE_GENE = ((SKIP, 0), (SKIP, 1)) * 4


def test_derivation_excludes_none_from_ranking_and_op_choice() -> None:
    g = derive_genotype(S3_NORMAL, S3_REDUCE, get_space("s3"))
    assert g.normal == S3_NORMAL_GENE
    assert g.reduce == S3_REDUCE_GENE
    assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)
    assert "none" not in g.ops()


def test_derivation_in_the_darts_space_never_picks_none() -> None:
    # Same weights moved into the 8-op space: none at column 0, skip at 3, sep3 at 4, all other ops at 0.
    def widen(w: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(14, 8, dtype=torch.float64)
        out[:, 0], out[:, 3], out[:, 4] = w[:, 0], w[:, 1], w[:, 2]
        return out

    g = derive_genotype(widen(S3_NORMAL), widen(S3_REDUCE), get_space("darts"))
    assert g.normal == S3_NORMAL_GENE
    assert g.reduce == S3_REDUCE_GENE


# S1: each edge's argmax column names an op of that edge's own list (column 1 of e5 is skip, of e12 dil5, ...).
S1_NORMAL = _rows(
    [0.30, 0.70], [0.80, 0.20],  # n0: e0 -> dil3 0.7, e1 -> skip 0.8
    [0.40, 0.60], [0.10, 0.90], [0.55, 0.45],  # n1: e2 dil5 0.6, e3 sep3 0.9, e4 skip 0.55
    [0.65, 0.35], [0.50, 0.50], [0.25, 0.75], [0.60, 0.40],  # n2: e5 max 0.65, e6 skip 0.5, e7 sep3 .75, e8 skip .6
    [0.45, 0.55], [0.35, 0.65], [0.70, 0.30], [0.20, 0.80], [0.90, 0.10],  # n3: sep3 .55, skip .65, skip .7, dil5 .8,
)  # fmt: skip                                                               #     dil3 .9
S1_NORMAL_GENE = (
    (SKIP, 1), (DIL3, 0),  # n0
    (SEP3, 1), (DIL5, 0),  # n1
    (SEP3, 2), (MAX, 0),  # n2
    (DIL3, 4), (DIL5, 3),  # n3
)  # fmt: skip
# Reduce: every edge [0.4, 0.6]: ties across edges keep the first two inputs; column 1 of each edge's own list.
S1_REDUCE = torch.tensor([[0.4, 0.6]] * 14, dtype=torch.float64)
S1_REDUCE_GENE = (
    (AVG, 0), (DIL3, 1),  # e0 (max, avg), e1 (max, dil3)
    (AVG, 0), (AVG, 1),  # e2, e3
    (AVG, 0), (SEP3, 1),  # e5 (max, avg), e6 (max, sep3)
    (AVG, 0), (AVG, 1),  # e9, e10
)  # fmt: skip


def test_derivation_maps_each_edge_argmax_to_its_own_op_list() -> None:
    g = derive_genotype(S1_NORMAL, S1_REDUCE, get_space("s1"))
    assert g.normal == S1_NORMAL_GENE
    assert g.reduce == S1_REDUCE_GENE


def test_supernet_genotype_is_derived_from_softmax_alphas() -> None:
    from rdarts.supernet import Supernet

    model = Supernet(get_space("s1"), C=2, num_classes=3, layers=3, in_channels=1)
    with torch.no_grad():  # log of row-normalised weights: softmax gives the weights back
        model.alphas_normal.copy_(S1_NORMAL.log())
        model.alphas_reduce.copy_(torch.tensor([[0.45, 0.55]] * 14).log())
    g = model.genotype()
    assert g.normal == S1_NORMAL_GENE
    assert g.reduce == S1_REDUCE_GENE


def test_none_on_some_edges_only_is_read_against_each_edges_own_list() -> None:
    # A 2-node user space (5 edges) with `none` at different columns on different edges. The reference looks the
    # `none` column up in the wrong edge's list; each edge must use its own.
    normal = [[SKIP, "none"], ["none", SEP3], [SEP3, SKIP], ["none", SKIP], [SKIP, SEP3]]
    space = space_from_op_lists("mine", normal, steps=2)
    w = _rows(
        [0.30, 0.70],  # e0 n0 <- 0: none excluded -> skip 0.3
        [0.90, 0.10],  # e1 n0 <- 1: none excluded -> sep3 0.1
        [0.60, 0.40],  # e2 n1 <- 0: sep3 0.6
        [0.80, 0.20],  # e3 n1 <- 1: none excluded -> skip 0.2 (would rank first at 0.8)
        [0.35, 0.65],  # e4 n1 <- n0: sep3 0.65
    )
    g = derive_genotype(w, w, space)
    expected = ((SKIP, 0), (SEP3, 1), (SEP3, 2), (SEP3, 0))
    assert g.normal == expected
    assert g.reduce == expected
    assert g.normal_concat == (2, 3)


def test_space_without_none_ranks_edges_over_all_ops() -> None:
    # A space without `none` ranks over all ops (the reference's ValueError fallback): a 1-node cell.
    space = space_from_op_lists("mine", [[SKIP, SEP3], [SEP3, SKIP]], steps=1)
    g = derive_genotype(_rows([0.2, 0.8], [0.9, 0.1]), _rows([0.6, 0.4], [0.3, 0.7]), space)
    assert g.normal == ((SEP3, 1), (SEP3, 0))
    assert g.reduce == ((SKIP, 1), (SKIP, 0))


# ----------------------------------------------------------------------------------------------- genotype I/O
# DARTS_V2 from quark0/darts `cnn/genotypes.py`, in the reference's JSON shape.
DARTS_V2 = {
    "normal": [[SEP3, 0], [SEP3, 1], [SEP3, 0], [SEP3, 1], [SEP3, 1], [SKIP, 0], [SKIP, 0], [DIL3, 2]],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [[MAX, 0], [MAX, 1], [SKIP, 2], [MAX, 1], [MAX, 0], [SKIP, 2], [SKIP, 2], [MAX, 1]],
    "reduce_concat": [2, 3, 4, 5],
}


def test_genotype_json_has_the_reference_shape_and_round_trips() -> None:
    g = Genotype.from_dict(DARTS_V2)
    assert g.normal[7] == (DIL3, 2)
    assert g.reduce_concat == (2, 3, 4, 5)
    text = g.to_json()
    assert json.loads(text) == DARTS_V2  # lists of [op, input] pairs and concat lists, nothing else
    assert Genotype.from_json(text) == g


def test_derived_genotype_round_trips_through_json() -> None:
    g = derive_genotype(S1_NORMAL, S1_REDUCE, get_space("s1"))
    assert Genotype.from_json(g.to_json()) == g


def test_genotype_from_dict_rejects_missing_keys_and_unknown_ops() -> None:
    with pytest.raises(ValueError, match="reduce_concat"):
        Genotype.from_dict({k: v for k, v in DARTS_V2.items() if k != "reduce_concat"})
    bad = {**DARTS_V2, "normal": [["conv_9x9", 0]] + DARTS_V2["normal"][1:]}
    with pytest.raises(ValueError, match="conv_9x9") as info:
        Genotype.from_dict(bad)
    assert "sep_conv_3x3" in str(info.value)  # the valid ops are listed


def test_parameter_free_share_counts_ops_without_weights() -> None:
    # DARTS_V2: normal has 2 skip of 8; reduce has 5 max and 3 skip of 8: (2 + 8) / 16.
    assert Genotype.from_dict(DARTS_V2).parameter_free_share() == pytest.approx(10 / 16)
    # none, noise and both pools count; sep/dil convs do not.
    g = Genotype(
        (("none", 0), ("noise", 1), (AVG, 0), (MAX, 1), (SEP3, 0), (SEP5, 1), (DIL3, 0), (DIL5, 1)), (2, 3, 4, 5),
        ((SEP3, 0), (SEP3, 1), (SEP3, 0), (SEP3, 1), (SEP3, 0), (SEP3, 1), (SEP3, 0), (SEP3, 1)), (2, 3, 4, 5),
    )
    assert g.parameter_free_share() == pytest.approx(4 / 16)


def test_search_space_rejects_a_non_cell_edge_count() -> None:
    space = SearchSpace("odd", ((SKIP,),) * 4, ((SKIP,),) * 4)
    with pytest.raises(ValueError, match="not a valid DARTS cell"):
        _ = space.steps
