"""The crash oracle is a pure function of what a kill left and what the next run did; the I/O
error oracle accepts the new complete version after the point of no return; the shared request
attribution is one function."""

from __future__ import annotations

from pathlib import Path

from kfm_conformance.faults.crash import (
    FIRST_PUBLICATION,
    UPDATE,
    CrashState,
    Recovery,
    judge_crash,
    workdir_digest,
)
from kfm_conformance.faults.ioerror import Injection, Target, output_after_error
from kfm_conformance.faults.requests import request_of_run
from kfm_conformance.sandbox import file_state
from kfm_conformance.upstream import Exchange, Resource, http_date, rows_payload

OLD_V = {"If-Modified-Since": http_date(1_700_086_400)}
NEW_V = {"If-Modified-Since": http_date(1_700_172_800)}
VERSIONS = [("old", OLD_V), ("new", NEW_V)]
OK = frozenset({0})


def recovery(output: str = "new", sent: dict[str, str] | None = None, code: int = 0) -> Recovery:
    validators: dict[str, str | None] = {"If-Modified-Since": None, "If-None-Match": None}
    validators.update(sent or {})
    return Recovery(code, output, validators)


def test_old_or_new_whole_with_matching_state_is_fine() -> None:
    for output, sent in (("old", OLD_V), ("new", NEW_V), ("old", {})):
        verdict = judge_crash(UPDATE, VERSIONS, OK, CrashState(output), recovery("new", sent))
        assert verdict.problems_output == verdict.problems_recovery == []
        if output == "new":
            assert verdict.problems_state == []


def test_a_torn_or_vanished_output_fails_the_output_check() -> None:
    torn = judge_crash(UPDATE, VERSIONS, OK, CrashState("torn"), recovery())
    assert torn.problems_output == ["the output is torn"]
    gone = judge_crash(UPDATE, VERSIONS, OK, CrashState("absent"), recovery())
    assert gone.problems_output == ["the output vanished"]
    first = judge_crash(FIRST_PUBLICATION, [VERSIONS[1]], OK, CrashState("absent"), recovery())
    assert first.problems_output == []


def test_a_state_that_runs_ahead_of_the_data_fails_the_state_check() -> None:
    """State before data: the old output survived, the next run sends the new validators."""
    verdict = judge_crash(UPDATE, VERSIONS, OK, CrashState("old"), recovery("old", NEW_V))
    assert verdict.problems_state and "new version" in verdict.problems_state[0]
    assert verdict.problems_recovery == [
        "after the next run the output is old, not the new version"
    ]


def test_a_failed_recovery_fails_convergence() -> None:
    verdict = judge_crash(UPDATE, VERSIONS, OK, CrashState("old"), recovery("old", OLD_V, 74))
    assert "the next run exited 74" in verdict.problems_recovery


def test_identical_directories_have_identical_digests(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name / "out").mkdir(parents=True)
        (tmp_path / name / "out" / "data").write_bytes(b"x")
    assert workdir_digest(tmp_path / "a") == workdir_digest(tmp_path / "b")
    (tmp_path / "b" / ".state").mkdir()
    assert workdir_digest(tmp_path / "a") != workdir_digest(tmp_path / "b")


def _injection(after_commit: bool) -> Injection:
    target = Target("fsync", 5, "fsync", 2, "fsync(out)", after_commit=after_commit)
    return Injection(target, "EIO", True, "fsync(out) = -1 EIO", 74)


def test_after_the_point_of_no_return_the_new_complete_version_may_stand(tmp_path: Path) -> None:
    old, new = tmp_path / "old.jsonl", tmp_path / "out.jsonl"
    body = rows_payload(5, version=2)
    old.write_text('{"id": 0}\n')
    import json

    new.write_text("".join(json.dumps(r) + "\n" for r in json.loads(body)))
    resource = Resource(body=body)
    published = file_state(old)
    assert output_after_error(_injection(True), published, resource, new).ok
    assert not output_after_error(_injection(False), published, resource, new).ok
    new.write_text('{"id": 1}\n')  # neither old nor the new version complete
    assert not output_after_error(_injection(True), published, resource, new).ok
    assert output_after_error(_injection(False), file_state(new), resource, new).ok


def test_a_run_s_request_is_the_first_that_arrived_while_it_ran() -> None:
    def exchange(number: int, at: float) -> Exchange:
        return Exchange(number, at, "GET", "/data.json", {}, [], 200, "", 0)

    seen = [exchange(1, 1.0), exchange(2, 2.5), exchange(3, 2.7)]
    assert request_of_run(seen, 2.0, 3.0) == seen[1]
    assert request_of_run(seen, 3.1, 4.0) is None


def test_random_tokens_in_names_do_not_make_states_distinct(tmp_path: Path) -> None:
    from kfm_conformance.faults.crash import canonical_name

    assert canonical_name("out/.data.parquet.k2j9x0aa.tmp") == "out/.data.parquet.*.tmp"
    assert canonical_name("out/.data.parquet.31065.tmp") == "out/.data.parquet.*.tmp"
    assert canonical_name("out/#9988556") == "out/#*"
    assert canonical_name("out/.data.parquet.rinqdmub.body.tmp") == "out/.data.parquet.*.body.tmp"
    assert canonical_name("out/data.parquet") == "out/data.parquet"
    assert canonical_name(".state/state.json") == ".state/state.json"
    assert canonical_name(".state/.state.json.q8w7e6rr.tmp") != ".state/state.json"
    for name, token in (("a", "k2j9x0aa"), ("b", "q8w7e6r1")):
        (tmp_path / name / "out").mkdir(parents=True)
        (tmp_path / name / "out" / f".data.parquet.{token}.tmp").write_bytes(b"PAR1")
    assert workdir_digest(tmp_path / "a") == workdir_digest(tmp_path / "b")
