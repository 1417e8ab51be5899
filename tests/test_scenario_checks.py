"""The pure checks of the HTTP and data guarantees (kfm_conformance.checks), judged directly:
each holds on what a correct pipeline leaves and breaks on what its defect leaves."""

from __future__ import annotations

from pathlib import Path

from kfm_conformance import checks
from kfm_conformance.sandbox import FileState, RunResult
from kfm_conformance.upstream import Exchange
from kfm_conformance.verdict import Level


def run(label: str = "run 1", code: int | None = 0, **kw: object) -> RunResult:
    fields: dict[str, object] = {
        "label": label,
        "argv": ["p"],
        "exit_code": code,
        "timed_out": False,
        "duration_s": 0.1,
        "stdout_tail": "",
        "stderr_tail": "",
        "started_at": 10.0,
        "ended_at": 11.0,
    }
    fields.update(kw)
    return RunResult(**fields)  # type: ignore[arg-type]


def state(digest: str, inode: int = 1) -> FileState:
    return FileState(sha256=digest, size=1, inode=inode)


def exchange(at: float, **headers: str) -> Exchange:
    return Exchange(
        number=1,
        at=at,
        method="GET",
        path="/data.json",
        headers={k.lower().replace("_", "-"): v for k, v in headers.items()},
        raw_headers=[],
        status=200,
        answer="",
        body_bytes=0,
    )


def test_exit_codes() -> None:
    assert checks.exit_code(run(code=75), {"upstream_transient": 75}).ok
    broken = checks.exit_code(run(code=0), {"upstream_transient": 75})
    assert not broken.ok and "run 1 exited 0" in broken.message
    assert checks.failure_not_success(run(code=65), frozenset({0})).ok
    assert not checks.failure_not_success(run(code=0), frozenset({0})).ok
    assert checks.same_code_every_time([65, 65, 65]).ok
    assert not checks.same_code_every_time([65, 0, 65]).ok
    assert not checks.every_run_succeeded([run(code=0), run("run 2", 75)], frozenset({0})).ok


def test_a_timed_out_run_did_not_finish_and_says_what_was_observed() -> None:
    finished = checks.run_finished(run(), 60)
    assert finished.ok and finished.observed == "exited 0 after 0.10 s"
    timed_out = checks.run_finished(run(code=None, timed_out=True), 60)
    assert not timed_out.ok and "killed with SIGKILL" in timed_out.observed


def test_stragglers_count_only_for_runs_that_ended_by_themselves() -> None:
    assert checks.no_stragglers([run()]).ok
    assert checks.no_stragglers([run(stragglers=["sleep 9"], killed=True)]).ok
    broken = checks.no_stragglers([run(stragglers=["python helper.py"])])
    assert not broken.ok and broken.observed == {"run 1": ["python helper.py"]}


def test_output_untouched_by_bytes_and_inode() -> None:
    assert all(f.ok for f in checks.output_untouched(state("a"), state("a")))
    assert not checks.output_untouched(state("a"), state("b"))[0].ok
    assert not checks.output_untouched(state("a"), None)[0].ok
    assert not checks.output_untouched(state("a", 1), state("a", 2))[1].ok
    assert len(checks.output_untouched(state("a", 1), state("a", 2), inode=False)) == 1


def test_files_unchanged_is_a_requirement_only_for_declared_state() -> None:
    before = {"out/d.parquet": state("a"), ".state/s.json": state("s")}
    after = {"out/d.parquet": state("a"), ".state/s.json": state("t")}
    declared = checks.files_unchanged(before, after, "out/d.parquet", (".state",))
    assert declared[0].ok and not declared[1].ok and declared[1].level is Level.REQUIRED
    undeclared = checks.files_unchanged(before, after, "out/d.parquet", None)
    assert not undeclared[1].ok and undeclared[1].level is Level.RECOMMENDED
    assert undeclared[1].check == "state.unchanged-undeclared"
    changed_output = checks.files_unchanged(
        before, {**after, "out/d.parquet": state("z")}, "out/d.parquet", (".state",)
    )
    assert not changed_output[0].ok


def test_no_temporaries_beside_the_output() -> None:
    assert checks.no_temporaries(["out/d.parquet", ".wal/x.tmp"], "out/d.parquet").ok
    assert not checks.no_temporaries(["out/d.parquet", "out/.d.parquet.tmp"], "out/d.parquet").ok
    leftover = checks.no_temporaries(
        ["out/d.parquet", "out/partial"], "out/d.parquet", added_by_failed_run=["out/partial"]
    )
    assert not leftover.ok and leftover.observed == ["out/partial"]
    state_ok = checks.no_temporaries(
        ["out/d.parquet", "out/.st"],
        "out/d.parquet",
        added_by_failed_run=["out/.st"],
        declared_state=("out/.st",),
    )
    assert state_ok.ok


def test_reader_and_identical_outputs() -> None:
    assert checks.reader_saw_whole_versions([None, "a", "b"], {None, "a", "b"}).ok
    assert not checks.reader_saw_whole_versions([None, "torn"], {None, "a"}).ok
    assert checks.outputs_identical({"A": "x", "B": "x"}).ok
    assert not checks.outputs_identical({"A": "x", "B": "y"}).ok
    assert not checks.outputs_identical({"A": None, "B": None}).ok


def test_requests_are_attributed_by_the_run_window() -> None:
    exchanges = [exchange(9.5), exchange(10.2), exchange(11.5)]
    assert [e.at for e in checks.requests_of_run(exchanges, run())] == [10.2]
    assert not checks.request_sent(run(), []).ok


def test_validators() -> None:
    served = [
        checks.ServedVersion(1, "Mon, 01 Jan 2024 00:00:00 GMT", '"e1"', "d1"),
        checks.ServedVersion(2, "Tue, 02 Jan 2024 00:00:00 GMT", '"e2"', None),
    ]
    assert checks.ims_verbatim_if_sent(None, served).ok
    assert checks.ims_verbatim_if_sent("Mon, 01 Jan 2024 00:00:00 GMT", served).ok
    assert not checks.ims_verbatim_if_sent("Mon, 01 Jan 2024 00:00:01 GMT", served).ok
    assert checks.request_header("If-None-Match", '"e1"', '"e1"').ok
    assert not checks.request_header("If-None-Match", 'W/"e1"', '"e1"').ok
    assert not checks.request_header("If-Modified-Since", "x", None).ok
    published = checks.published_version(served, "d1")
    assert published is not None and published.number == 1
    assert checks.validators_of_published_version(None, '"e1"', published).ok
    assert not checks.validators_of_published_version(None, '"e2"', published).ok
    assert checks.published_version(served, None) is None


def test_a_reader_beside_an_action_sees_each_state_of_the_file_once(tmp_path: Path) -> None:
    """outputs.poll_during: absent, then each version's digest, in order, without repeats."""
    import hashlib
    import time

    from kfm_conformance.outputs import poll_during

    target = tmp_path / "out" / "data.bin"

    def publish() -> None:
        time.sleep(0.02)
        target.parent.mkdir()
        for body in (b"one", b"two"):
            staged = target.with_suffix(".tmp")
            staged.write_bytes(body)
            staged.replace(target)
            time.sleep(0.02)

    seen = poll_during(target, publish)
    assert seen == [None, *(hashlib.sha256(b).hexdigest() for b in (b"one", b"two"))]
