"""The sweep file: a YAML description of many RobustDARTS searches, validated in full before anything runs.

A sweep file names the base search settings (``search:``, every field of ``rdarts.config.SearchConfig``), the axes
to sweep (``grid:``, a cartesian product; ``sample:``, random draws), the DARTS-ES rule (``stopping:``), what a
trial may use (``resources:``), where results go (``storage:``) and the later stages (``tracking:``, ``reduce:``,
``retrain:``). See ``sweeps/quickstart.yaml`` for a commented example and ``rdarts sweep schema`` for the schema.

Every trial the file expands to is built as a ``SearchConfig`` here, so an impossible combination (an unknown
space in the grid, an odd channel count) is rejected before Ray starts, and every problem names its field by its
dotted path in the file (``grid.space[0]: unknown search space 's9'; ...``) and, where known, its line.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Discriminator, Field, Tag, ValidationError, field_validator

from rdarts.config import ConfigError, RetrainConfig, SearchConfig
from rdarts.errors import UserError
from rdarts.methods import join_labels, method_labels
from rdarts.storage import REMOTE_SCHEMES, is_remote, normalise
from rdarts.sweep.problems import (
    GRID_TAGS,
    Problem,
    SweepError,
    loc_suffix,
    pydantic_message,
    short,
    unknown_key,
    validation_problems,
)
from rdarts.sweep.settings import (
    DEFAULT_MAX_TRIALS,
    DEFAULT_STORAGE,
    SEARCH_FIELDS,
    STOPPING_FIELDS,
    Choice,
    ReduceSpec,
    ResourcesSpec,
    RetrainSettings,
    SampleSpec,
    SearchSettings,
    StoppingSpec,
    StrictModel,
    TrackingSpec,
)
from rdarts.sweep.yamlio import compose, line_of, parse_yaml

__all__ = ["Problem", "SweepError", "SweepSpec", "json_schema", "load_sweep", "parse_yaml", "spec_from_data"]

Grid = dict[str, Annotated[list[Any], Field(min_length=1)]]
# A mapping or a list of mappings; the tags keep error paths plain (``grid.seed``, ``grid[1].seed``, see problems).
GridField = Annotated[
    Annotated[Grid, Tag(GRID_TAGS[0])] | Annotated[Annotated[list[Grid], Field(min_length=1)], Tag(GRID_TAGS[1])],
    Discriminator(lambda v: GRID_TAGS[1] if isinstance(v, list) else GRID_TAGS[0])]


class SweepSpec(StrictModel):
    """A validated sweep file. ``trials()`` lists the searches it runs."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    description: str = ""
    search: SearchSettings = Field(default_factory=SearchSettings)  # type: ignore[valid-type]
    grid: GridField = Field(default_factory=dict)
    """One cartesian product of setting -> values, or a list of them (their union, in order: e.g. one product per
    method)."""
    method_label: str | None = Field(None, min_length=1, max_length=80)
    """The method name of every search in the file (methods table, MLflow); default: derived from the settings
    (DARTS, DARTS-ES, DARTS-ADA, R-DARTS(L2), R-DARTS(DP))."""
    sample: SampleSpec | None = None
    stopping: StoppingSpec | None = None
    resources: ResourcesSpec = ResourcesSpec.model_validate({})  # frozen: one shared default is safe
    max_concurrent: int | None = Field(None, ge=1)
    max_trials: int = Field(DEFAULT_MAX_TRIALS, ge=1)
    """A guard against a grid far larger than meant (the paper's largest file has 15 searches): more trials than
    this are refused; raise it to run them."""
    max_failures: int = Field(2, ge=0)
    """Retries of a trial whose worker died, each from its last checkpoint."""
    storage: str = DEFAULT_STORAGE
    tracking: TrackingSpec = TrackingSpec.model_validate({})
    reduce: ReduceSpec = ReduceSpec.model_validate({})
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)  # type: ignore[valid-type]

    @field_validator("method_label")
    @classmethod
    def _label(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or ", " in v):
            raise ValueError(f"must be a non-empty name without ', ' (it separates the labels of a search), got {v!r}")
        return v

    @field_validator("storage")
    @classmethod
    def _storage(cls, v: str) -> str:
        if is_remote(v) and v.split("://", 1)[0] not in REMOTE_SCHEMES:
            raise ValueError(f"must be a folder or a URI with one of {', '.join(s + '://' for s in REMOTE_SCHEMES)}, "
                             f"got {v!r}")
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    def storage_path(self) -> str:
        """``storage`` for Ray: a URI as given, a local folder made absolute."""
        return normalise(self.storage)

    def grids(self) -> list[tuple[str, dict[str, list[Any]]]]:
        """The cartesian products of ``grid:``, each with its path in the file (``grid`` or ``grid[i]``)."""
        if isinstance(self.grid, dict):
            return [("grid", self.grid)]
        return [(f"grid[{i}]", g) for i, g in enumerate(self.grid)]

    def trials(self) -> list[dict[str, Any]]:
        """Every trial as ``{"index", "setting", "method", "search": SearchConfig.to_dict()}`` (Tune's config is
        ``{"trial": <this>}``), in grid order: the grids of a list one after the other, the first axis varying
        slowest, sample draws fastest. ``method`` is its method label(s), ``rdarts.methods.join_labels``.

        Raises:
            SweepError: if any combination is not a valid search (every distinct problem listed).
        """
        trials, problems = _expand(self)
        if problems:
            raise SweepError(problems)
        return trials


def json_schema() -> dict[str, Any]:
    """The JSON schema of the sweep file (for editors and documentation)."""
    return SweepSpec.model_json_schema()


# ------------------------------------------------------------------------------------------------- expansion
def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _draws(spec: SweepSpec) -> Iterator[dict[str, tuple[Any, str]]]:
    """One dict ``field -> (value, origin path)`` per sample draw (a single empty draw without ``sample:``)."""
    if spec.sample is None:
        yield {}
        return
    rng = random.Random(spec.sample.seed)
    for _ in range(spec.sample.num_samples):
        yield {k: (d.draw(rng), f"sample.params.{k}") for k, d in spec.sample.params.items()}


def count_trials(spec: SweepSpec) -> int:
    """How many trials the file expands to, without expanding it."""
    draws = spec.sample.num_samples if spec.sample is not None else 1
    return draws * sum(math.prod(len(v) for v in grid.values()) for _, grid in spec.grids())


def _expand(spec: SweepSpec) -> tuple[list[dict[str, Any]], list[Problem]]:
    n = count_trials(spec)  # first: a huge grid is refused before anything walks it
    if n > spec.max_trials:
        return [], [Problem("grid" if spec.grid else "sample.num_samples",
                            f"expands to {n:,} trials, more than max_trials ({spec.max_trials:,}); shrink it, or set "
                            f"max_trials: {n} at the top of the file to run them all")]
    problems = _check_axes(spec)
    if problems:
        return [], problems
    base: dict[str, tuple[Any, str]] = {}
    if spec.stopping is not None:
        base.update({f: (v, f"stopping.{k}") for (k, f), v in
                     zip(STOPPING_FIELDS.items(), spec.stopping.search_settings().values(), strict=True)})
    base.update({k: (v, f"search.{k}") for k, v in _set_in_search(spec).items()})
    trials: list[dict[str, Any]] = []
    seen: set[Problem] = set()
    draws = list(_draws(spec))  # shared by every grid point
    points = [point for prefix, grid in spec.grids() for point in
              itertools.product(*[[(k, v, f"{prefix}.{k}[{i}]") for i, v in enumerate(vs)] for k, vs in grid.items()])]
    first_of: dict[str, int] = {}  # a search's settings -> the trial that has them (a repeat across grids)
    for point in points:
        for draw in draws:
            settings = {**base, **{k: (v, origin) for k, v, origin in point}, **draw}
            label_keys = [k for k, _, _ in point] + list(draw)
            setting = " ".join(f"{k}={_fmt(settings[k][0])}" for k in label_keys) or "base"
            d = {k: v for k, (v, _) in settings.items()}
            d["extra"] = {**d.get("extra", {}), "sweep": spec.name, "setting": setting}
            try:
                cfg = SearchConfig.from_dict(d)
            except ConfigError as e:
                p = _blame(str(e), settings, d)
                if p not in seen:
                    seen.add(p)
                    problems.append(p)
                continue
            # extra counts: a user's extra keys may change what a trial does (the test hooks do); our labels do not
            own = {k: v for k, v in cfg.extra.items() if k not in ("sweep", "setting")}
            same = json.dumps({**cfg.result_affecting(), "extra": own}, sort_keys=True, default=str)
            if same in first_of:
                origin = point[0][2].rsplit(".", 1)[0] if point else "grid"
                problems.append(Problem(origin, f"{setting!r} repeats trial t{first_of[same]:03d} "
                                                f"({trials[first_of[same]]['setting']}): the same search twice; "
                                                "vary seed to repeat a setting"))
                continue
            first_of[same] = len(trials)
            trials.append({"index": len(trials), "setting": setting, "search": cfg.to_dict()})
    problems += _retrain_problems(spec, trials)
    if not problems:
        labels = method_labels([t["search"] for t in trials], spec.method_label)
        for t, ls in zip(trials, labels, strict=True):
            t["method"] = join_labels(ls)
    return trials, problems


def _retrain_problems(spec: SweepSpec, trials: list[dict[str, Any]]) -> list[Problem]:
    """``retrain:`` as ``RetrainConfig`` checks it, on the data of each kind of search in the sweep."""
    given = spec.retrain.model_dump(exclude={"seeds"})
    data = {(t["search"]["dataset"], t["search"]["image_size"]) for t in trials}
    for dataset, image_size in sorted(data, key=str):
        try:
            RetrainConfig(dataset=dataset, image_size=image_size, **given)
        except ConfigError as e:
            m = _FIELD_PREFIX.match(str(e))
            field = m.group(1) if m and m.group(1) in given else ""
            return [Problem(f"retrain.{field}" if field else "retrain", m.group(2) if field and m else str(e))]
    return []


def _set_in_search(spec: SweepSpec) -> dict[str, Any]:
    """The ``search:`` settings the file gives (not the defaults)."""
    search: BaseModel = spec.search
    return search.model_dump(exclude_unset=True)


def _check_axes(spec: SweepSpec) -> list[Problem]:
    """Each grid/sample key is a search setting, set in one place only, and each value has the setting's type."""
    problems: list[Problem] = []
    set_in_search = _set_in_search(spec)
    # With a stopping: block, it owns all five fields of the rule (its preset sets those it does not name).
    stopping = {}
    if spec.stopping is not None:
        stopping = {f: (f"stopping.{k}" if getattr(spec.stopping, k) is not None
                        else f"stopping.preset ({spec.stopping.preset!r})") for k, f in STOPPING_FIELDS.items()}
    key_of = {f: k for k, f in STOPPING_FIELDS.items()}
    for k in set_in_search:
        if k in stopping:
            problems.append(Problem(f"search.{k}", f"also set by {stopping[k]}; with a stopping: block, "
                                                   f"set it there as stopping.{key_of[k]}"))
    sampled = spec.sample.params if spec.sample is not None else {}
    swept = {k for _, grid in spec.grids() for k in grid}
    for section, keys in [*((prefix, list(grid)) for prefix, grid in spec.grids()), ("sample.params", list(sampled))]:
        for k in keys:
            path = f"{section}.{k}"
            if k not in SEARCH_FIELDS:
                problems.append(Problem(path, unknown_key(k, SEARCH_FIELDS, "search setting")))
            elif k in set_in_search:
                problems.append(Problem(path, f"also set as search.{k}; set it in one place"))
            elif k in stopping:
                problems.append(Problem(path, f"also set by {stopping[k]}; set it in one place"))
            elif section == "sample.params" and k in swept:
                problems.append(Problem(path, f"also swept in grid.{k}; set it in one place"))
    if problems:
        return problems
    for prefix, grid in spec.grids():
        for k, values in grid.items():
            for i, v in enumerate(values):
                problems += _type_problems(k, v, f"{prefix}.{k}[{i}]")
                first = next(j for j, w in enumerate(values) if w == v and type(w) is type(v))
                if first < i:
                    problems.append(Problem(f"{prefix}.{k}[{i}]", f"repeats {prefix}.{k}[{first}] ({short(v)}): the "
                                                                  "same trial twice; vary seed to repeat a setting"))
    for k, dist in sampled.items():
        if isinstance(dist, Choice):
            for i, v in enumerate(dist.values):
                problems += _type_problems(k, v, f"sample.params.{k}.values[{i}]")
        elif float not in typing.get_args(SearchSettings.model_fields[k].annotation) + (
                SearchSettings.model_fields[k].annotation,):
            problems.append(Problem(f"sample.params.{k}.type",
                                    f"{dist.type} draws floats, but {k} is not a float setting; use type: choice"))
    return problems


def _type_problems(key: str, value: Any, path: str) -> list[Problem]:
    try:
        SearchSettings.model_validate({key: value})
    except ValidationError as e:
        return [Problem(path + loc_suffix(err["loc"][1:]), pydantic_message(err)) for err in e.errors()]
    return []


_FIELD_PREFIX = re.compile(r"^(\w+)(?: |=)(.*)$", re.S)


def _blame(message: str, settings: dict[str, tuple[Any, str]], d: dict[str, Any]) -> Problem:
    """Turn an engine ``ConfigError`` into a problem at the path that supplied the offending setting."""
    field, text = None, message
    m = _FIELD_PREFIX.match(message)
    if message.startswith(("unknown search space", "space ")):  # from rdarts.spaces: about the space as a whole
        field = "space_ops" if d.get("space_ops") is not None else "space"
    elif message.startswith("unknown dataset"):
        field = "dataset"
    elif m and m.group(1) in SEARCH_FIELDS:
        field, text = m.group(1), m.group(2)
    if field is None:
        return Problem("search", message)
    if field in settings:
        return Problem(settings[field][1], text)
    return Problem(f"search.{field}", f"{text} (the default; set search.{field})")


def spec_from_data(data: Any, source: str = "sweep", text: str | None = None) -> SweepSpec:
    """Validate parsed data as a sweep (every trial included); raises ``SweepError`` naming each bad field."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise SweepError([Problem("", "a sweep file is a mapping with name:, search:, grid:, ... keys; "
                                      f"got {got}")], source)
    try:
        spec = SweepSpec.model_validate(data)
        problems = _expand(spec)[1]
    except ValidationError as e:
        problems = validation_problems(e, data, SweepSpec)
    if problems:
        root = compose(text) if text is not None else None
        raise SweepError([dataclasses.replace(p, line=line_of(root, p.path)) for p in problems], source)
    return spec


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file (YAML, safe loading only: nothing in it is run as code)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot read sweep file {str(p)!r}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return spec_from_data(parse_yaml(text, str(p)), str(p), text)
