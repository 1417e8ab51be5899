"""The real crash campaign: the small correct pipeline survives every crash point, and the
oracle catches the in-place writer (torn output) and the state-before-data pipeline (a run-state
that claims an unpublished version, so the next run gets 304 and stays stale)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import fixture_profile

from kfm_conformance.faults import hold, strace
from kfm_conformance.faults.crash import FIRST_PUBLICATION, UPDATE, CampaignResult, run_campaign
from kfm_conformance.profile import load_profile
from kfm_conformance.sandbox import Sandbox
from kfm_conformance.upstream import Resource, http_date, rows_payload

needs_strace = pytest.mark.skipif(not strace.probe().ok, reason="strace unavailable here")

OLD = Resource(body=rows_payload(2000, version=1), last_modified=http_date(1_700_086_400))
NEW = Resource(body=rows_payload(2500, version=2), last_modified=http_date(1_700_172_800))


def campaign(tmp_path: Path, script: str, case: str, **options: object) -> CampaignResult:
    profile = load_profile(fixture_profile(tmp_path, script))
    counter = itertools.count(1)
    runs = tmp_path / "runs"
    make: Callable[[], Sandbox] = lambda: Sandbox(profile, runs / f"box-{next(counter)}")  # noqa: E731
    return run_campaign(
        profile,
        make,
        case=case,
        old=OLD if case == UPDATE else None,
        new=NEW,
        seed=7,
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.faults
@needs_strace
@pytest.mark.parametrize("case", [FIRST_PUBLICATION, UPDATE])
def test_the_correct_pipeline_survives_every_crash_point(tmp_path: Path, case: str) -> None:
    result = campaign(tmp_path, "kfm_fixture.py", case)
    strace_points = [p for p in result.points if p.kind == "strace"]
    assert len(strace_points) >= 10, result.recording_steps
    assert result.landed == len(strace_points), [p.landed_at for p in strace_points]
    assert not result.unreachable
    assert all(p.ok for p in result.points), [p.to_json() for p in result.points if not p.ok]
    findings = (
        result.exploration_findings()
        + result.output_findings()
        + result.recovery_findings()
        + result.state_findings()
    )
    assert all(f.ok for f in findings)
    summary = result.summary()
    assert summary["crash_points_explored"] == len(result.points) > len(strace_points)
    assert summary["duration_s"] > 0
    seen = {p.output for p in strace_points}
    assert seen == ({"absent", "new"} if case == FIRST_PUBLICATION else {"old", "new"})
    crashed = strace_points[0]
    assert crashed.syscall and crashed.ordinal and crashed.state is not None
    # Held where the machine allows it (every point from one run), else killed at each point.
    assert {p.method for p in strace_points} == {"hold" if hold.supported() else "kill"}
    if crashed.method == "kill":
        assert crashed.exit_code == -9
    else:
        assert crashed.exit_code is None and "held on entry to" in crashed.landed_at
        held_runs = [r for box in result.keep for r in box.runs if r.label.startswith("held run")]
        assert len(held_runs) == 1, "the held run is in the evidence"


@pytest.mark.faults
@needs_strace
def test_the_oracle_catches_an_in_place_writer(tmp_path: Path) -> None:
    result = campaign(tmp_path, "in_place_writer.py", UPDATE)
    (output,) = result.output_findings()
    assert not output.ok
    torn = [p for p in result.points if p.output == "torn"]
    assert torn
    assert "write" in {p.syscall for p in torn if p.kind == "strace"}
    kept = {box.workdir.name for box in result.keep}
    assert {p.workdir for p in torn} <= kept, "a failed crash keeps its directory as evidence"


@pytest.mark.faults
@needs_strace
def test_the_oracle_catches_state_written_before_data(tmp_path: Path) -> None:
    result = campaign(tmp_path, "state_before_data.py", UPDATE)
    assert all(f.ok for f in result.output_findings())  # the data itself is replaced atomically
    (state,) = result.state_findings()
    (recovery,) = result.recovery_findings()
    assert not state.ok and not recovery.ok
    stale = [p for p in result.points if p.problems_state]
    assert all(p.output == "old" and p.recovery_output == "old" for p in stale)
    assert all(p.recovery_validators["If-Modified-Since"] == NEW.last_modified for p in stale)


def test_without_strace_only_the_time_based_kills_run(tmp_path: Path) -> None:
    result = campaign(tmp_path, "kfm_fixture.py", UPDATE, use_strace=False, timed_kills=3)
    assert [p.kind for p in result.points] == ["timed"] * 3
    assert all(p.ok for p in result.points), [p.to_json() for p in result.points]


@pytest.mark.faults
@needs_strace
def test_identical_states_are_recovered_once(tmp_path: Path) -> None:
    result = campaign(tmp_path, "kfm_fixture.py", UPDATE)
    digests = [p.state_digest for p in result.points]
    assert result.distinct_states == len(set(digests)) < len(result.points)
    assert result.recovery_runs == result.distinct_states
    first_of = {}
    for point in result.points:
        if point.recovery_reused_from is None:
            first_of[point.state_digest] = point
    for point in result.points:
        if point.recovery_reused_from is not None:
            twin = first_of[point.state_digest]
            assert point.recovery_reused_from == twin.label
            assert point.recovery_validators == twin.recovery_validators
    summary = result.summary()
    assert summary["distinct_states"] == result.distinct_states
    assert summary["recovery_runs"] == result.recovery_runs
    again = CampaignResult.from_json(result.to_json())
    assert [p.to_json() for p in again.points] == [p.to_json() for p in result.points]
    assert again.to_json()["runs"], "a campaign read back carries its runs"
