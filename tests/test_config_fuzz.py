"""Fuzzed study files: every mutation of a valid study either validates or is refused with one
line and exit code 2, writing nothing; never a traceback (hypothesis, 500 examples)."""

from __future__ import annotations

import copy
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_config import valid_study

from model.data import load_arrays
from model.errors import ConfigError
from sweep import launch
from sweep.__main__ import main

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "500"))


def base_study() -> dict[str, Any]:
    study = valid_study()
    study["resources"]["gpus_per_trial"] = 0  # valid on a machine without a GPU too
    return study


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path and list index in a study, the root included."""
    found = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            found += paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += paths(child, (*prefix, index))
    return found


def deep(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = {"x": leaf}
    return leaf


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**31, 2**63, 1e308, -1e308, 5e-324, 1e-300]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),  # unicode, control characters, empty
    st.sampled_from(["", "nan", "inf", "1e-3", "digits", "adam", "sgd", "asha", "../x", "é"]),
)
values = st.one_of(
    scalars,
    st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=6)
            | st.dictionaries(st.text(max_size=12), children, max_size=6)
        ),
        max_leaves=25,
    ),
    st.lists(st.floats(min_value=1e-6, max_value=1.0), min_size=500, max_size=3000),
    st.lists(st.integers(min_value=1, max_value=2000), min_size=500, max_size=2000),
    st.builds(deep, st.integers(min_value=10, max_value=200), scalars),
)


@st.composite
def mutated_studies(draw) -> Any:
    """A valid study with 1 to 3 mutations: a value replaced, a key removed, a key added."""
    study = base_study()
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        where = draw(st.sampled_from(paths(study)))
        kind = draw(st.sampled_from(["set", "delete", "add"]))
        if not where:  # the root itself
            if kind == "set":
                return draw(values)
            continue
        parent = study
        for part in where[:-1]:
            parent = parent[part]
        last = where[-1]
        if kind == "set":
            parent[last] = draw(values)
        elif kind == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(values)
        else:
            parent.append(draw(values))
    return study


class Started(Exception):
    """Raised where Ray would start: the study passed every check."""


@pytest.fixture(scope="module")
def digits():
    from sweep.config import parse_study

    return load_arrays(parse_study(base_study()).data)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(study=mutated_studies())
def test_a_mutated_study_validates_or_is_one_line_exit_2_writing_nothing(
    study, digits, monkeypatch, capsys
):
    def no_ray(opts):
        raise Started

    monkeypatch.setattr(launch, "start_ray", no_ray)
    monkeypatch.setattr(launch, "_load_dataset", lambda spec: digits)  # offline, fast
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "study.yaml"
        path.write_text(yaml.safe_dump(study, allow_unicode=True), encoding="utf-8")
        results = Path(tmp) / "results"
        capsys.readouterr()
        try:
            code = main(["run", str(path), "--results", str(results)])
        except Started:
            code = None  # valid: it got as far as starting Ray
        err = capsys.readouterr().err
        assert not results.exists(), "a refused or unstarted study wrote results"
        assert sorted(os.listdir(tmp)) == ["study.yaml"]
    if code is not None:
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert "Traceback" not in err


def test_the_fuzzer_reaches_both_outcomes():
    """The base study passes, and a mutation that must fail does (the property is not vacuous)."""
    from sweep.config import parse_study

    parse_study(base_study())
    broken = copy.deepcopy(base_study())
    broken["train"]["epochs"] = math.nan
    with pytest.raises(ConfigError, match="train.epochs"):
        parse_study(broken)
