"""Fuzzing the mission loader: arbitrary input gives a Mission or a MissionError, never anything else."""
from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.mission import Mission, MissionError, parse_mission

WEEK1 = yaml.safe_load((Path(__file__).resolve().parents[3] / "missions" / "week1.yaml").read_text())
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=12)


def _parse(text: str) -> Mission | None:
    try:
        return parse_mission(text, "fuzz.yaml")
    except MissionError as exc:
        assert str(exc).startswith("fuzz.yaml: ") and len(str(exc)) > len("fuzz.yaml: ")
        return None


@SETTINGS
@given(st.text(max_size=300))
def test_arbitrary_text(text):
    _parse(text)


@SETTINGS
@given(values)
def test_arbitrary_yaml_documents(doc):
    _parse(yaml.safe_dump(doc))


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


PATHS = [p for p in _paths(WEEK1) if p]


@SETTINGS
@given(st.sampled_from(PATHS), values)
def test_one_field_of_the_real_mission_replaced(path, value):
    """The real mission with one field anywhere replaced by anything: valid, or one clear error."""
    doc = yaml.safe_load(yaml.safe_dump(WEEK1))
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    _parse(yaml.safe_dump(doc))


@SETTINGS
@given(st.sampled_from([p for p in PATHS if isinstance(p[-1], str)]))
def test_one_field_removed(path):
    doc = yaml.safe_load(yaml.safe_dump(WEEK1))
    node = doc
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    _parse(yaml.safe_dump(doc))
