"""Search spaces and genotypes of DARTS and RobustDARTS, as plain data (no torch: the supernet derives genotypes).

A search space is, for each cell type (normal, reduce), one op list per edge of the cell. The DARTS space and
RobustDARTS' S2-S4 use the same list on every edge; S1 has its own two-op list per edge. Edge ``k`` of a cell with
``steps`` intermediate nodes follows the reference order: node ``i`` has edges from inputs ``0 .. i+1``
(``c_{k-2}``, ``c_{k-1}``, then earlier nodes), so 4 nodes give 14 edges.

References:
    Zela et al., "Understanding and Robustifying Differentiable Architecture Search", ICLR 2020
    (automl/RobustDARTS ``src/spaces.py``, ``src/utils.py``); Liu et al., DARTS (quark0/darts ``cnn/genotypes.py``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
"""The 8 ops of the original DARTS space, in the reference's α column order."""

# Every op name a space may use (ops.OPS has a factory for each; a test keeps the two in step).
KNOWN_OPS: tuple[str, ...] = PRIMITIVES + ("noise", "sep_conv_7x7", "conv_7x1_1x7")

_SKIP, _MAX, _AVG = "skip_connect", "max_pool_3x3", "avg_pool_3x3"
_SEP3, _DIL3, _DIL5 = "sep_conv_3x3", "dil_conv_3x3", "dil_conv_5x5"

# RobustDARTS S1 (`primitives_1`): a 2-op list per edge, e0..e13; the order inside a list is the α column order.
_S1_NORMAL = (
    (_SKIP, _DIL3), (_SKIP, _DIL5), (_SKIP, _DIL5), (_SKIP, _SEP3), (_SKIP, _DIL3),
    (_MAX, _SKIP), (_SKIP, _SEP3), (_SKIP, _SEP3), (_SKIP, _DIL3), (_SKIP, _SEP3),
    (_MAX, _SKIP), (_SKIP, _DIL3), (_DIL3, _DIL5), (_DIL3, _DIL5),
)  # fmt: skip
_S1_REDUCE = (
    (_MAX, _AVG), (_MAX, _DIL3), (_MAX, _AVG), (_MAX, _AVG), (_SKIP, _DIL5),
    (_MAX, _AVG), (_MAX, _SEP3), (_SKIP, _DIL3), (_SKIP, _DIL5), (_MAX, _AVG),
    (_MAX, _AVG), (_SKIP, _DIL5), (_SKIP, _DIL5), (_SKIP, _DIL5),
)  # fmt: skip

# Uniform spaces: one op list for every edge of both cell types.
_UNIFORM: dict[str, tuple[str, ...]] = {
    "darts": PRIMITIVES,
    "s2": (_SKIP, _SEP3),
    "s3": ("none", _SKIP, _SEP3),
    "s4": ("noise", _SEP3),
}

SPACE_NAMES: tuple[str, ...] = ("darts", "s1", "s2", "s3", "s4")

# Ops without weights: a genotype dominated by them is the collapse RobustDARTS detects.
PARAMETER_FREE_OPS: frozenset[str] = frozenset({"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "noise"})


def num_edges(steps: int) -> int:
    """Number of edges of a cell with ``steps`` intermediate nodes (node i has i+2 inputs)."""
    return sum(i + 2 for i in range(steps))


@dataclass(frozen=True)
class SearchSpace:
    """Op lists per edge for the normal and the reduction cell.

    Attributes:
        name: The space's name (``darts``, ``s1`` ... or a user's own).
        normal: One op tuple per edge of the normal cell, in the reference's edge order.
        reduce: The same for the reduction cell.
    """

    name: str
    normal: tuple[tuple[str, ...], ...]
    reduce: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        for cell, edges in (("normal", self.normal), ("reduce", self.reduce)):
            if not edges:
                raise ValueError(f"space {self.name!r}: the {cell} cell has no edges")
            for k, ops in enumerate(edges):
                if not ops:
                    raise ValueError(f"space {self.name!r}: {cell} edge {k} has an empty op list")
                for op in ops:
                    if op not in KNOWN_OPS:
                        raise ValueError(
                            f"space {self.name!r}: unknown op {op!r} on {cell} edge {k}; "
                            f"valid ops: {', '.join(KNOWN_OPS)}"
                        )
                if len(set(ops)) != len(ops):
                    raise ValueError(f"space {self.name!r}: {cell} edge {k} lists an op twice: {list(ops)}")
            # α of a cell is one (edges, ops) matrix, as in the reference, so every edge needs the same op count.
            if len({len(ops) for ops in edges}) != 1:
                raise ValueError(f"space {self.name!r}: every {cell} edge needs the same number of ops, "
                                 f"got {[len(ops) for ops in edges]}")
        if len(self.normal) != len(self.reduce):
            raise ValueError(f"space {self.name!r}: normal and reduce cells have different edge counts")

    @property
    def steps(self) -> int:
        """Number of intermediate nodes implied by the edge count."""
        n, steps = 0, 0
        while n < len(self.normal):
            n += steps + 2
            steps += 1
        if n != len(self.normal):
            raise ValueError(f"space {self.name!r}: {len(self.normal)} edges is not a valid DARTS cell")
        return steps

    @property
    def num_alphas(self) -> int:
        """Total number of architecture parameters (the Hessian's dimension)."""
        return sum(len(ops) for ops in self.normal) + sum(len(ops) for ops in self.reduce)

    @property
    def is_uniform(self) -> bool:
        return len({*self.normal, *self.reduce}) == 1


def uniform_space(name: str, ops: Sequence[str], steps: int = 4) -> SearchSpace:
    """A space with the same op list on every edge of both cell types."""
    edges = tuple(tuple(ops) for _ in range(num_edges(steps)))
    return SearchSpace(name, edges, edges)


def get_space(name: str, steps: int = 4) -> SearchSpace:
    """The named built-in space, for cells of ``steps`` intermediate nodes.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones), or S1 with other than 4 nodes.
    """
    key = name.lower()
    if key in _UNIFORM:
        return uniform_space(key, _UNIFORM[key], steps)
    if key == "s1":
        if steps != 4:
            raise ValueError("space 's1' has per-edge op lists for 4 nodes only; use --nodes 4 or another space")
        return SearchSpace("s1", _S1_NORMAL, _S1_REDUCE)
    raise ValueError(f"unknown search space {name!r}; valid spaces: {', '.join(SPACE_NAMES)}")


def space_from_op_lists(name: str, normal: Sequence[Sequence[str]], reduce: Sequence[Sequence[str]] | None = None,
                        steps: int = 4) -> SearchSpace:
    """A user's own space: either one op list (uniform) or one list per edge, per cell type.

    Args:
        name: Name to record for the space.
        normal: ``[ops]`` for a uniform cell, or ``[[ops of e0], [ops of e1], ...]`` per edge.
        reduce: The same for the reduction cell; the normal cell's lists when omitted.
        steps: Intermediate nodes, used to expand a single list to every edge.
    """

    def expand(spec: Sequence[Sequence[str]] | Sequence[str]) -> tuple[tuple[str, ...], ...]:
        if spec and all(isinstance(op, str) for op in spec):
            return tuple(tuple(spec) for _ in range(num_edges(steps)))  # type: ignore[arg-type]
        edges = tuple(tuple(ops) for ops in spec)
        if len(edges) != num_edges(steps):
            raise ValueError(f"space {name!r}: {len(edges)} per-edge op lists given, "
                             f"a cell with {steps} nodes has {num_edges(steps)} edges")
        return edges

    n = expand(normal)
    return SearchSpace(name, n, expand(reduce) if reduce is not None else n)


@dataclass(frozen=True)
class Genotype:
    """A discrete cell pair: for each intermediate node, two ``(op, input)`` pairs; inputs 0, 1 are the cell inputs.

    The JSON form is the reference's namedtuple with lists: ``{"normal": [[op, input], ...], "normal_concat": [2, 3,
    4, 5], "reduce": [...], "reduce_concat": [...]}``.
    """

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "normal": [[op, i] for op, i in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, i] for op, i in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Genotype:
        missing = {"normal", "normal_concat", "reduce", "reduce_concat"} - set(d)
        if missing:
            raise ValueError(f"genotype is missing {sorted(missing)}")

        def pairs(key: str) -> tuple[tuple[str, int], ...]:
            out = []
            for item in d[key]:
                op, idx = item
                if op not in KNOWN_OPS:
                    raise ValueError(f"genotype {key}: unknown op {op!r}; valid ops: {', '.join(KNOWN_OPS)}")
                out.append((str(op), int(idx)))
            return tuple(out)

        return cls(pairs("normal"), tuple(int(i) for i in d["normal_concat"]),
                   pairs("reduce"), tuple(int(i) for i in d["reduce_concat"]))

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        return cls.from_dict(json.loads(text))

    def ops(self) -> list[str]:
        return [op for op, _ in self.normal + self.reduce]

    def parameter_free_share(self) -> float:
        """Share of the genotype's ops that carry no weights (skip, pooling, none, noise)."""
        ops = self.ops()
        return sum(op in PARAMETER_FREE_OPS for op in ops) / len(ops)
