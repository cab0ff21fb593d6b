"""Problems of a sweep file: each names its field by its dotted path in the file (``grid.space[0]``) and its line.

``SweepError`` renders them on one line, ``file:line: path: message; ...``, for the CLI's ``rdarts: error: ...``;
pydantic's validation errors are turned into the same form here.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from rdarts.errors import UserError

GRID_TAGS = ("grid-mapping", "grid-list")
"""The tags of ``grid:``'s two forms (one mapping, a list of mappings)."""
UNION_TAGS = frozenset({"uniform", "loguniform", "choice", *GRID_TAGS})
"""What pydantic inserts into an error's location for a tagged union: not part of the file's paths."""


@dataclasses.dataclass(frozen=True)
class Problem:
    path: str
    """Dotted path of the offending field in the file, e.g. ``grid.space[0]``."""
    message: str
    line: int | None = None


class SweepError(UserError):
    """A sweep file that cannot run; ``str()`` is one line listing every problem as ``file:line: path: message``."""

    def __init__(self, problems: Sequence[Problem], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        super().__init__("; ".join(self._render(p) for p in self.problems))

    def _render(self, p: Problem) -> str:
        where = self.source or "sweep"
        if p.line is not None:
            where += f":{p.line}"
        return f"{where}: {p.path}: {p.message}" if p.path else f"{where}: {p.message}"


def loc_suffix(loc: Sequence[int | str]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


def unknown_key(key: str, valid: Sequence[str], what: str = "key") -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what}{hint}; valid: {', '.join(sorted(valid))}"


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def pydantic_message(err: Any) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "missing":
        return "required, but missing"
    if kind == "too_short" and isinstance(err.get("input"), list | dict):
        return "empty; give at least one value"
    if kind == "value_error":
        return str(err["ctx"]["error"])
    msg = str(msg).replace("Input should be", "must be")
    if "input" in err:
        value = err["input"]
        # A mapping or a list where a scalar belongs is often YAML indentation or a field mixed up with another.
        shape = "a mapping " if isinstance(value, dict) else "a list " if isinstance(value, list) else ""
        msg += f", got {shape}{short(value)}"
    return msg


def _model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model whose field list applies at ``loc`` (for the 'valid keys' of an unknown key)."""
    model: Any = root
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        model = next((a for a in (ann, *typing.get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)),
                     None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _clean_loc(data: Any, loc: Sequence[int | str]) -> tuple[int | str, ...]:
    """Drop the union tags pydantic inserts into ``loc`` (``sample.params.lr.uniform.low`` -> ``...lr.low``)."""
    out: list[int | str] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        elif isinstance(part, str) and part in UNION_TAGS:
            continue
        else:
            node = None
        out.append(part)
    return tuple(out)


def validation_problems(e: ValidationError, data: Any, root: type[BaseModel]) -> list[Problem]:
    """``e`` as problems at the paths of ``data`` (the parsed file), for the model ``root``."""
    problems = []
    for err in e.errors():
        loc = _clean_loc(data, err["loc"])
        path = loc_suffix(loc).lstrip(".")
        if err["type"] == "extra_forbidden":
            model = _model_at(root, loc[:-1])
            valid = list(model.model_fields) if model is not None else []
            problems.append(Problem(path, unknown_key(str(loc[-1]), valid)))
        else:
            problems.append(Problem(path, pydantic_message(err)))
    return problems
