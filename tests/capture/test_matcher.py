"""The strict matcher catches what a first-element-only matcher lets through."""

from __future__ import annotations

from typing import Any

import pytest

from kfm_conformance.capture.matcher import ANY, Mismatch, match


def first_element_only_match(expected: Any, actual: Any) -> bool:
    """How OpenLineage's test helper treats lists of named dicts: it looks at element 0 only."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and first_element_only_match(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        if not expected:
            return True
        return bool(actual) and first_element_only_match(expected[0], actual[0])
    return bool(expected == actual)


EXPECTED_EVENT = {
    "eventType": "COMPLETE",
    "inputs": [
        {"namespace": "http://127.0.0.1:8080", "name": "/data/stations.csv"},
        {"namespace": "http://127.0.0.1:8080", "name": "/data/readings.csv"},
    ],
}


def test_wrong_second_element_is_caught_where_first_element_only_passes() -> None:
    actual = {
        "eventType": "COMPLETE",
        "inputs": [
            {"namespace": "http://127.0.0.1:8080", "name": "/data/stations.csv", "facets": {}},
            {"namespace": "http://127.0.0.1:8080", "name": "/data/WRONG.csv", "facets": {}},
        ],
    }
    assert first_element_only_match(EXPECTED_EVENT, actual), "the weak matcher should pass"

    mismatch = match(EXPECTED_EVENT, actual)

    assert isinstance(mismatch, Mismatch)
    assert mismatch.path == "$.inputs[1]"
    assert mismatch.deepest.path == "$.inputs[1].name"
    assert mismatch.deepest.expected == "/data/readings.csv"
    assert mismatch.deepest.actual == "/data/WRONG.csv"
    assert "$.inputs[1]" in str(mismatch)


def test_good_event_matches_with_extra_keys_and_any_order() -> None:
    actual = {
        "eventType": "COMPLETE",
        "producer": "https://example.invalid/producer",
        "inputs": [
            {"namespace": "http://127.0.0.1:8080", "name": "/data/readings.csv"},
            {"namespace": "http://127.0.0.1:8080", "name": "/data/stations.csv"},
        ],
    }
    assert match(EXPECTED_EVENT, actual) is None


def test_one_actual_element_cannot_satisfy_two_expected_ones() -> None:
    expected = [{"name": "a"}, {"name": "a"}]
    actual = [{"name": "a"}, {"name": "b"}]
    mismatch = match(expected, actual)
    assert mismatch is not None
    assert mismatch.path == "$[1]"
    assert "already matched" in mismatch.reason


def test_matching_is_maximal_not_greedy() -> None:
    # Greedy first-fit gives expected[0] to actual[0] and then fails expected[1].
    expected = [{"x": 1}, {"x": 1, "y": 2}]
    actual = [{"x": 1, "y": 2}, {"x": 1}]
    assert match(expected, actual) is None


def test_too_few_elements_and_exact_lists() -> None:
    too_few = match({"outputs": [{"name": "a"}, {"name": "b"}]}, {"outputs": [{"name": "a"}]})
    assert too_few is not None
    assert too_few.path == "$.outputs"
    assert match([1], [1, 2]) is None
    exact = match([1], [1, 2], exact_lists=True)
    assert exact is not None
    assert "expected 1 elements, got 2" in exact.reason


def test_missing_key_reports_path() -> None:
    mismatch = match({"run": {"facets": {"parent": ANY}}}, {"run": {"facets": {}}})
    assert mismatch is not None
    assert mismatch.path == "$.run.facets.parent"
    assert mismatch.reason == "key is missing"


@pytest.mark.parametrize(
    ("expected", "actual", "ok"),
    [
        (True, 1, False),
        (1, True, False),
        (1, 1.0, True),
        ("1", 1, False),
        (None, None, True),
        (None, "x", False),
        ({"a": 1}, [1], False),
        ([1], {"a": 1}, False),
        (ANY, {"anything": [1, 2]}, True),
    ],
)
def test_scalar_and_type_strictness(expected: Any, actual: Any, ok: bool) -> None:
    assert (match(expected, actual) is None) is ok


def test_predicates() -> None:
    def is_uuid_like(value: Any) -> bool:
        return isinstance(value, str) and value.count("-") == 4

    assert match({"runId": is_uuid_like}, {"runId": "0190d3a2-6c4e-7b8f-9a1b-2c3d4e5f6a7b"}) is None
    mismatch = match({"runId": is_uuid_like}, {"runId": "nope"})
    assert mismatch is not None
    assert mismatch.path == "$.runId"
    assert "is_uuid_like" in mismatch.reason

    def explodes(value: Any) -> bool:
        raise RuntimeError("boom")

    assert match(explodes, 1) is not None


def test_nested_lists_report_the_first_mismatch_path() -> None:
    expected = {"outputs": [{"facets": {"schema": {"fields": [{"name": "id"}, {"name": "ts"}]}}}]}
    actual = {"outputs": [{"facets": {"schema": {"fields": [{"name": "id"}, {"name": "tz"}]}}}]}
    mismatch = match(expected, actual)
    assert mismatch is not None
    assert mismatch.path == "$.outputs[0]"
    assert mismatch.deepest.path == "$.outputs[0].facets.schema.fields[1].name"
