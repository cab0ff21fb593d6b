"""YAML for sweep files: safe loading (plain data only), YAML 1.2 scalars, duplicate keys as errors, line lookup."""

from __future__ import annotations

import re
from typing import Any

import yaml

from rdarts.sweep.problems import Problem, SweepError


class _Loader(yaml.SafeLoader):  # type: ignore[misc,unused-ignore]
    """``yaml.SafeLoader`` (plain data only, no tags that build objects) with YAML 1.2 scalars.

    PyYAML follows YAML 1.1, where ``3e-4`` is a string and ``off``/``yes`` are booleans; a sweep file writes weight
    decays as ``3e-4`` and ``early_stop: off``. So: floats may omit the dot, and only true/false are booleans.
    Duplicate keys are errors (PyYAML keeps the last one silently).
    """


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    mapping: dict[Any, Any] = yaml.SafeLoader.construct_mapping(loader, node, deep=deep)
    return mapping


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


MAX_VALUES = 20_000
"""Values a sweep file may hold once its YAML aliases are expanded (the paper's files hold about a hundred)."""


def expanded_size(data: Any, limit: int = MAX_VALUES) -> int:
    """The number of values in ``data`` with every alias expanded, counted up to just past ``limit``.

    PyYAML builds an alias as the same object again, so a few kilobytes of nested aliases (a "billion laughs") are a
    small object graph that expands to billions of values once the trials copy it; counting stops at the limit.
    """
    count, todo = 0, [data]
    while todo and count <= limit:
        item = todo.pop()
        count += 1
        if isinstance(item, dict):
            todo += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            todo += item
    return count


def parse_yaml(text: str, source: str = "sweep") -> Any:
    """Parse YAML text as plain data; syntax errors become a ``SweepError`` with line and column, and a file whose
    aliases expand to more than ``MAX_VALUES`` values is refused."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        what = " ".join(str(x) for x in (e.context, e.problem) if x)
        raise SweepError([Problem("", f"YAML syntax error: {what}")], f"{source}{where}") from None
    except yaml.YAMLError as e:
        raise SweepError([Problem("", f"YAML error: {e}")], source) from None
    if expanded_size(data) > MAX_VALUES:
        raise SweepError([Problem("", f"its YAML aliases expand to more than {MAX_VALUES:,} values; a sweep file "
                                      "needs far fewer: write the values out, or use grid: for combinations")], source)
    return data


def line_of(root: yaml.Node | None, path: str) -> int | None:
    """1-based line of the node at a dotted ``path`` (or of its nearest ancestor present in the file)."""
    parts = [p for p in re.split(r"\.|\[(\d+)\]", path) if p]
    node, line = root, None
    for part in parts:
        if node is None:
            break
        line = node.start_mark.line + 1
        nxt = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if getattr(k, "value", None) == part:
                    nxt, line = v, k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            nxt = node.value[int(part)]
            line = nxt.start_mark.line + 1
        node = nxt
    return line


def compose(text: str) -> yaml.Node | None:
    """The node tree of ``text`` (for ``line_of``)."""
    node: yaml.Node | None = yaml.compose(text, Loader=_Loader)
    return node
