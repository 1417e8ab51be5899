"""Scenario results are typed data, validated against the report schema when read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kfm_conformance import channel
from kfm_conformance.report.model import MalformedResult, ScenarioResult


def _result(**overrides: object) -> ScenarioResult:
    fields: dict[str, object] = {
        "check_id": "exit-codes/nothing-of-a-run-goes-on-after-it-exits",
        "guarantee": "exit-codes",
        "name": "Nothing of a run goes on after it exits",
        "verdict": "fail",
        "message": "a process of the run was still running",
        "kind": "required",
        "nodeid": "test_guarantees.py::test_nothing",
        "findings": [
            {
                "check": "run.no-stragglers",
                "ok": False,
                "message": "m",
                "level": "required",
                "expected": None,
                "observed": {"run 1": ["x"]},
            }
        ],
        "steps": [{"keyword": "Given", "text": "the upstream serves 25 rows", "status": "passed"}],
    }
    fields.update(overrides)
    return ScenarioResult(**fields)  # type: ignore[arg-type]


def test_a_result_round_trips_through_json() -> None:
    result = _result(precondition_failed=True)
    again = ScenarioResult.from_json(result.to_json())
    assert again == result


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("verdict", "passed"),
        ("check_id", "No Guarantee"),
        ("kind", "optional"),
        ("findings", [{"check": "x"}]),
        ("steps", [{"keyword": "Given"}]),
    ],
)
def test_a_malformed_result_is_refused(field: str, value: object) -> None:
    data = _result().to_json()
    data[field] = value
    with pytest.raises(MalformedResult):
        ScenarioResult.from_json(data)


def test_the_channel_refuses_a_malformed_but_authenticated_result(tmp_path: Path) -> None:
    key = channel.new_key()
    good = _result().to_json()
    bad = {**good, "nodeid": "other", "verdict": "certainly"}
    collection = [{"nodeid": good["nodeid"], "check_id": good["check_id"]}]
    channel.append(tmp_path / "collection-main.jsonl", channel.seal(key, "collection", collection))
    for body in (good, bad):
        channel.append(tmp_path / "scenarios-main.jsonl", channel.seal(key, "result", body))
    contents = channel.read_channel(tmp_path, key, validate=ScenarioResult.from_json)
    assert [r["verdict"] for r in contents.results] == ["fail"]
    assert any("the result for other is malformed" in p for p in contents.problems)


def test_evidence_over_the_cap_is_cut_with_a_visible_note() -> None:
    from kfm_conformance.report.model import cap_evidence

    small = {"runs": [1, 2], "http": "x" * 100}
    assert cap_evidence(small, cap=10_000) == small
    big = {"runs": [1, 2], "stdout": "y" * 50_000, "spans": ["z" * 20_000]}
    capped = cap_evidence(big, cap=30_000)
    assert capped["runs"] == [1, 2]
    assert capped["stdout"]["truncated"] is True
    assert capped["stdout"]["original_bytes"] > 50_000
    assert "over the 30000-byte cap" in capped["stdout"]["note"]
    assert capped["evidence_truncated"] == ["stdout"]
    assert len(json.dumps(capped)) < 35_000
