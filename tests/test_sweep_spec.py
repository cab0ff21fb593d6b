"""The sweep file: every shipped sweep validates; every malformed one is rejected with its field's dotted path."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_fixtures import CORPUS, ROOT, SWEEPS, TINY_SEARCH, run_cli, tiny_spec

from rdarts.config import SearchConfig
from rdarts.stopping import PRESETS
from rdarts.sweep.spec import SweepError, SweepSpec, json_schema, load_sweep, parse_yaml, spec_from_data

SWEEP_FILES = sorted(SWEEPS.glob("*.yaml"))
CORPUS_FILES = sorted(CORPUS.glob("*.yaml"))


def _expectation(path: Path) -> tuple[str, str | None]:
    text = path.read_text()
    where = re.search(r"^# expect: (.+)$", text, re.M)
    message = re.search(r"^# message: (.+)$", text, re.M)
    assert where, f"{path.name} needs a '# expect: <dotted path>' line"
    return where.group(1).strip(), message.group(1).strip() if message else None


# ------------------------------------------------------------------------------------------------- shipped sweeps
def test_sweeps_folder_is_not_empty() -> None:
    assert len(SWEEP_FILES) >= 5


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_shipped_sweep_validates(path: Path) -> None:
    spec = load_sweep(path)
    trials = spec.trials()
    assert trials, path
    for t in trials:
        SearchConfig.from_dict(t["search"])  # each trial is a whole, valid search
    assert path.read_text().lstrip().startswith("#"), f"{path.name} should open with a comment saying what it is"


def test_paper_sweeps_have_the_paper_grid() -> None:
    """R-DARTS(L2): 5 weight decays x 3 seeds; R-DARTS(DP): 4 drop paths x 3 seeds; DARTS/ES/ADA: 3 seeds each."""
    counts = {p.name: len(load_sweep(p).trials()) for p in SWEEP_FILES}
    for space in ("s1", "s2", "s3", "s4"):
        for data in ("cifar10", "cifar100", "svhn"):
            assert counts[f"rdarts_l2_{space}_{data}.yaml"] == 15
            assert counts[f"rdarts_dp_{space}_{data}.yaml"] == 12
            assert counts[f"darts_es_ada_{space}_{data}.yaml"] == 9
    for data in ("cifar10", "cifar100"):
        trials = load_sweep(SWEEPS / f"rdarts_l2_darts_{data}.yaml").trials()
        assert len(trials) == 15 and {t["search"]["space"] for t in trials} == {"darts"}
    l2 = load_sweep(SWEEPS / "rdarts_l2_s1_cifar10.yaml").trials()
    assert sorted({t["search"]["weight_decay"] for t in l2}) == pytest.approx([3e-4 * k for k in (1, 3, 9, 27, 81)])
    assert {t["search"]["order"] for t in l2} == {"second"} and {t["search"]["epochs"] for t in l2} == {50}
    dp = load_sweep(SWEEPS / "rdarts_dp_s3_svhn.yaml").trials()
    assert sorted({t["search"]["drop_path"] for t in dp}) == [0.0, 0.2, 0.4, 0.6]
    es_ada = load_sweep(SWEEPS / "darts_es_ada_s2_cifar100.yaml").trials()
    assert sorted(t["search"]["early_stop"] for t in es_ada) == ["ada"] * 3 + ["es"] * 3 + ["off"] * 3
    assert sorted(t["method"] for t in es_ada) == ["DARTS"] * 3 + ["DARTS-ADA"] * 3 + ["DARTS-ES"] * 3
    assert {t["method"] for t in l2} == {"DARTS, R-DARTS(L2)", "R-DARTS(L2)"}
    assert {t["method"] for t in dp} == {"DARTS, R-DARTS(DP)", "R-DARTS(DP)"}
    assert {load_sweep(p).reduce.protocol for p in SWEEP_FILES if p.name.startswith(("rdarts_", "darts_"))} == {
        "paper"}


def test_quickstart_is_small_and_has_es_trials() -> None:
    trials = load_sweep(SWEEPS / "quickstart.yaml").trials()
    assert len(trials) >= 4
    assert any(t["search"]["early_stop"] == "es" for t in trials)
    assert {t["search"]["dataset"] for t in trials} == {"fashion-mnist"}
    assert {t["search"]["device"] for t in trials} == {"cpu"}


# ------------------------------------------------------------------------------------------------- malformed sweeps
def test_corpus_is_broad() -> None:
    assert len(CORPUS_FILES) >= 30


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_malformed_sweep_is_rejected_with_its_path(path: Path) -> None:
    where, message = _expectation(path)
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    text = str(info.value)
    assert "\n" not in text
    assert f"{path}" in text
    assert where in text, text
    if message:
        assert message in text, text
    if ":" not in where and not where.endswith(".yaml"):  # a field problem: "file:line: path: message"
        assert re.search(rf"{re.escape(str(path))}(:\d+)?: {re.escape(where)}[\[.:]", text), text


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_cli_validate_exits_2_without_traceback(path: Path) -> None:
    code, out, err = run_cli(["sweep", "validate", str(path)])
    assert code == 2
    assert err.startswith("rdarts: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err + out
    assert _expectation(path)[0] in err


@pytest.mark.parametrize("name", ["unknown_space.yaml", "syntax_error.yaml", "python_tag.yaml"])
def test_module_cli_exits_2_without_traceback(name: str) -> None:
    """The same through a real process: one line on stderr, exit status 2."""
    proc = subprocess.run([sys.executable, "-m", "rdarts.sweep.cli", "validate", str(CORPUS / name)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("rdarts: error: ") and proc.stderr.count("\n") == 1
    assert not Path("/tmp/rdarts_pwned").exists()


def test_missing_file_is_a_user_error() -> None:
    code, _, err = run_cli(["sweep", "validate", "/nonexistent/sweep.yaml"])
    assert code == 2 and "cannot read sweep file" in err


def test_every_problem_is_listed_on_one_line() -> None:
    with pytest.raises(SweepError) as info:
        spec_from_data({"name": "x", "search": {"epochs": "3", "layers": 0.5}, "max_concurrent": 0})
    paths = [p.path for p in info.value.problems]
    assert sorted(paths) == ["max_concurrent", "search.epochs", "search.layers"]
    assert "\n" not in str(info.value)


def test_line_numbers_point_into_the_file(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("name: x\nsearch:\n  seed: 1\n  epochs: 0\n")
    with pytest.raises(SweepError, match=re.escape(f"{f}:4: search.epochs: must be greater than 0")):
        load_sweep(f)


# ------------------------------------------------------------------------------------------------- semantics
def test_yaml_scalars_follow_yaml_1_2() -> None:
    data = parse_yaml("a: 3e-4\nb: off\nc: yes\nd: true\ne: 1.5E+2\nf: 10\n")
    assert data == {"a": 3e-4, "b": "off", "c": "yes", "d": True, "e": 150.0, "f": 10}


def test_grid_is_a_cartesian_product_with_labels() -> None:
    spec = tiny_spec("g", grid={"weight_decay": [3e-4, 9e-4], "early_stop": ["off", "es", "ada"], "seed": [1, 2]})
    trials = spec.trials()
    assert len(trials) == 12
    assert [t["index"] for t in trials] == list(range(12))
    assert trials[0]["setting"] == "weight_decay=0.0003 early_stop=off seed=1"
    assert trials[0]["search"]["extra"] == {"sweep": "g", "setting": trials[0]["setting"]}
    assert len({t["setting"] for t in trials}) == 12
    assert all(t["search"]["epochs"] == TINY_SEARCH["epochs"] for t in trials)


def test_no_grid_is_one_trial() -> None:
    trials = tiny_spec("one").trials()
    assert len(trials) == 1 and trials[0]["setting"] == "base"


def test_samples_are_drawn_reproducibly_within_bounds() -> None:
    sample = {"num_samples": 4, "seed": 3, "params": {
        "lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1},
        "drop_path": {"type": "uniform", "low": 0.0, "high": 0.6},
        "order": {"type": "choice", "values": ["first", "second"]}}}
    a = tiny_spec("s", grid={"seed": [1, 2]}, sample=sample).trials()
    b = tiny_spec("s", grid={"seed": [1, 2]}, sample=sample).trials()
    assert len(a) == 8 and a == b
    assert all(1e-3 <= t["search"]["lr"] <= 1e-1 and 0 <= t["search"]["drop_path"] <= 0.6 for t in a)
    assert {t["search"]["order"] for t in a} <= {"first", "second"}
    # The draws are shared by the grid points (a crossed design: each seed sees the same 4 settings).
    assert len({t["search"]["lr"] for t in a}) == 4
    assert [t["search"]["lr"] for t in a[:4]] == [t["search"]["lr"] for t in a[4:]]


def test_a_mapping_where_a_name_belongs_says_it_got_a_mapping() -> None:
    # A space of one's own written under space: (it belongs under space_ops:): the message shows what was found.
    with pytest.raises(SweepError, match=r"search\.space: must be a valid string, got a mapping \{'normal'"):
        tiny_spec("s", search={"space": {"normal": ["skip_connect"]}})


def test_sample_choice_values_are_type_checked() -> None:
    sample = {"params": {"order": {"type": "choice", "values": ["first", 2]}}}
    with pytest.raises(SweepError, match=r"sample\.params\.order\.values\[1\]: must be a valid string"):
        tiny_spec("s", sample=sample)


def test_stopping_presets_set_the_search_rule() -> None:
    paper = tiny_spec("p", search={"epochs": 20}, stopping={"preset": "paper"}).trials()[0]["search"]
    rule = PRESETS["paper"]
    assert (paper["ev_every"], paper["es_window"], paper["es_delta"], paper["es_start_epoch"]) == (
        rule.ev_every, rule.window, rule.delta, rule.start_epoch)
    assert math.isclose(paper["es_factor"], rule.factor)
    custom = tiny_spec("c", stopping={"window": 3, "start_epoch": 2}).trials()[0]["search"]
    assert (custom["ev_every"], custom["es_window"], custom["es_delta"], custom["es_start_epoch"]) == (2, 3, 4, 2)


def test_stopping_and_search_cannot_both_set_a_field() -> None:
    with pytest.raises(SweepError, match=r"grid\.ev_every: also set by stopping\.ev_every"):
        tiny_spec("x", grid={"ev_every": [1, 2]}, stopping={"ev_every": 1})
    with pytest.raises(SweepError, match=r"search\.es_window: also set by stopping\.preset \('paper'\); .* "
                                         r"stopping\.window"):
        tiny_spec("x", search={"es_window": 3}, stopping={"preset": "paper"})


def test_search_rejects_an_engine_default_that_conflicts() -> None:
    """A default can be the culprit: S1 needs 4 nodes; the message says to set it."""
    with pytest.raises(SweepError, match=r"search\.nodes|search\.space"):
        spec_from_data({"name": "x", "search": {"space": "s1", "nodes": 3}})


def test_storage_paths() -> None:
    assert tiny_spec("a").storage_path() == str(Path("~/rdarts_results").expanduser().resolve())
    assert tiny_spec("a", storage="s3://bucket/runs").storage_path() == "s3://bucket/runs"
    assert tiny_spec("a", storage="rel/dir").storage_path() == str(Path("rel/dir").resolve())


def test_spec_is_frozen() -> None:
    spec = tiny_spec("f")
    with pytest.raises(Exception, match="frozen"):
        spec.name = "g"  # type: ignore[misc]


def test_json_schema_lists_every_section_and_search_field() -> None:
    schema = json_schema()
    assert set(schema["properties"]) == set(SweepSpec.model_fields)
    search = schema["$defs"]["SearchSettings"]["properties"]
    assert {"space", "weight_decay", "early_stop", "es_window", "seed"} <= set(search)
    code, out, _ = run_cli(["sweep", "schema"])
    assert code == 0 and '"SweepSpec"' in out


def test_cli_validate_counts_trials() -> None:
    code, out, err = run_cli(["sweep", "validate", str(SWEEPS / "rdarts_l2_s1_cifar10.yaml"), "--list"])
    assert code == 0, err
    assert "valid; 15 trial(s)" in out and "t014" in out


def test_spec_and_cli_import_without_ray() -> None:
    code = ("import sys, rdarts.sweep, rdarts.sweep.cli, rdarts.sweep.spec; "
            "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ray'))")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_resume_refuses_a_folder_of_another_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resuming loads pickled Tune state: a folder (or state file) owned by someone else is refused before Ray."""
    import os

    from rdarts.errors import UserError
    from rdarts.sweep.runner import resume_sweep

    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "tuner.pkl").write_bytes(b"not for you")
    owner = folder.stat().st_uid
    monkeypatch.setattr(os, "getuid", lambda: owner + 1)  # as seen by another user
    with pytest.raises(UserError, match="belongs to another user"):
        resume_sweep(str(folder))
