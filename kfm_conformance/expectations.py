"""What a step observes of the scenario's world, handed to the pure checks of
:mod:`kfm_conformance.checks` and judged.

Each function gathers the observations one step needs (the last run, the output's rows, the
requests the origin received, the declared exit codes) from the :class:`ScenarioContext`,
calls the pure checks, and gives their findings to the scenario's judge. A finding is
*independent* (``judge.apply(..., independent=True)``): the scenario goes on, so that every
defect is reported at once; only a run that sent no request ends the step that needs its
request. Step definitions call these, one call a step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kfm_conformance import checks, outputs
from kfm_conformance.sandbox import FileState, RunResult
from kfm_conformance.upstream import Exchange, Version
from kfm_conformance.verdict import Finding

if TYPE_CHECKING:
    from kfm_conformance.scenario import ScenarioContext


def _check(kfm: ScenarioContext, findings: Finding | list[Finding]) -> None:
    kfm.judge.apply(findings, independent=True)


def finished(kfm: ScenarioContext, result: RunResult) -> None:
    """The run ended by itself within the profile's time bound."""
    _check(kfm, checks.run_finished(result, kfm.profile.timeout_s))


def exit_code(kfm: ScenarioContext, *outcomes: str) -> None:
    codes = {o: kfm.profile.exit_codes.of(o) for o in outcomes}
    _check(kfm, checks.exit_code(kfm.last_run, codes))


def every_run_succeeded(kfm: ScenarioContext) -> None:
    success = kfm.profile.exit_codes.success_codes()
    _check(kfm, checks.every_run_succeeded(kfm.all_runs, success))


def same_code_every_time(kfm: ScenarioContext) -> None:
    _check(kfm, checks.same_code_every_time(kfm.repeated_exit_codes))


def success_code(kfm: ScenarioContext) -> None:
    exit_code(kfm, "published", "not_modified")


def failure_code(kfm: ScenarioContext) -> None:
    success = kfm.profile.exit_codes.success_codes()
    _check(kfm, checks.failure_not_success(kfm.last_run, success))


def no_stragglers(kfm: ScenarioContext) -> None:
    """No run that ended by itself left a process of its own running (the harness killed
    each one it found; the command lines are the evidence)."""
    _check(kfm, checks.no_stragglers(kfm.all_runs))


def output_rows(kfm: ScenarioContext, version: Version | None = None) -> None:
    version = version or kfm.current
    path = kfm.sandbox.output_path
    exists = path.exists()
    _check(kfm, checks.output_exists(exists, kfm.profile.output, kfm.sandbox.files()))
    if not exists:
        return
    try:
        comparison = outputs.compare_rows(version.resource.body, path)
    except outputs.UnreadableOutput as exc:
        _check(kfm, checks.output_readable(str(exc)))
        return
    _check(
        kfm,
        checks.output_rows(
            comparison.same, comparison.describe(), comparison.expected_rows, version.number
        ),
    )
    if version.output is None:
        version.output = kfm.sandbox.output_state()


def output_untouched(kfm: ScenarioContext, *, inode: bool = True) -> None:
    """The output's bytes (and inode) are those of the last publication."""
    before = current_published_state(kfm)
    _check(kfm, checks.output_untouched(before, kfm.sandbox.output_state(), inode=inode))


def files_unchanged_by_last_run(kfm: ScenarioContext) -> None:
    kfm.marks["before the last run"] = kfm.last_run.files_before
    files_unchanged_since(kfm, "before the last run")


def outputs_identical_across_dirs(kfm: ScenarioContext) -> None:
    states = {box.workdir.name: box.output_state() for box in kfm.other_sandboxes}
    digests = {name: state.sha256 if state else None for name, state in states.items()}
    _check(kfm, checks.outputs_identical(digests))


def reader_saw_whole_versions(kfm: ScenarioContext) -> None:
    # Only versions whose published rows were checked against the upstream count as
    # complete: a run's own before/after snapshot could itself be torn.
    complete: set[str | None] = {None}
    complete |= {v.output.sha256 for v in kfm.versions if v.output is not None}
    seen = [d for batch in kfm.reader_observations for d in batch]
    kfm.evidence["reader_summary"] = {
        "reads_with_a_new_state": len(seen),
        "complete_versions": sorted(d for d in complete if d),
    }
    _check(kfm, checks.reader_saw_whole_versions(seen, complete))


def ims_verbatim_if_sent(kfm: ScenarioContext) -> None:
    sent = request_of_last_run(kfm).header("if-modified-since")
    _check(kfm, checks.ims_verbatim_if_sent(sent, served_versions(kfm)))


def current_published_state(kfm: ScenarioContext) -> FileState | None:
    return kfm.upstream.published()


def files_unchanged_since(kfm: ScenarioContext, mark: str) -> None:
    """Output and run-state are byte-identical to the marked moment."""
    _check(
        kfm,
        checks.files_unchanged(
            kfm.marks[mark], kfm.sandbox.files(), kfm.profile.output, kfm.profile.state
        ),
    )


def no_temporaries(kfm: ScenarioContext, since_last_run: bool = False) -> None:
    """Nothing temporary beside the output: no temp-named file, nor, after a run that did
    not publish, any file that run added."""
    files = kfm.sandbox.files()
    last = kfm.last_run if kfm.all_runs else None
    failed = last is not None and last.exit_code not in kfm.profile.exit_codes.success_codes()
    added = (
        [p for p in files if p not in last.files_before]
        if since_last_run and last is not None and failed
        else []
    )
    _check(
        kfm,
        checks.no_temporaries(
            files,
            kfm.profile.output,
            added_by_failed_run=added,
            declared_state=kfm.profile.state or (),
        ),
    )


def nothing_published(kfm: ScenarioContext) -> None:
    exists = kfm.sandbox.output_path.exists()
    _check(kfm, checks.nothing_published(exists, kfm.profile.output))
    no_temporaries(kfm)


# -- the requests ----------------------------------------------------------------------------
def served_versions(kfm: ScenarioContext) -> list[checks.ServedVersion]:
    return [
        checks.ServedVersion(
            v.number,
            v.resource.last_modified,
            v.resource.etag,
            v.output.sha256 if v.output else None,
        )
        for v in kfm.versions
    ]


def request_of_last_run(kfm: ScenarioContext) -> Exchange:
    """The first request of the last run; a run that sent none ends the step."""
    run = kfm.last_run
    seen = checks.requests_of_run(kfm.upstream.data_requests(), run)
    kfm.judge.apply(checks.request_sent(run, seen))
    return seen[0]


def request_header(kfm: ScenarioContext, name: str, value: str | None) -> None:
    """The last run's first request carried ``name`` with exactly ``value`` (or none)."""
    sent = request_of_last_run(kfm).header(name)
    _check(kfm, checks.request_header(name, sent, value))


def validators_of_published_version(kfm: ScenarioContext) -> None:
    """Whatever validators the last run sent belong to the version that is published."""
    exchange = request_of_last_run(kfm)
    published = current_published_state(kfm)
    holder = checks.published_version(served_versions(kfm), published.sha256 if published else None)
    _check(
        kfm,
        checks.validators_of_published_version(
            exchange.header("if-modified-since"), exchange.header("if-none-match"), holder
        ),
    )


def status_answered(kfm: ScenarioContext, status: int) -> None:
    _check(kfm, checks.status_answered(request_of_last_run(kfm), status))
