"""Step definitions for crashes, I/O errors, concurrent runs and the durability protocol.

Each step is a thin call into :mod:`kfm_conformance.faults`; the judging lives there. What one
step computes and a later step judges is kept in the ``kfm_faults`` fixture (one per scenario).
Scenarios that need ``strace`` start with "Given the system-call tracer is available", which
skips them as ``unavailable`` (blocking certification) where strace is missing or ptrace is
denied; the time-based kills and the concurrent runs without slowed writes need no tracer.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pytest_bdd import given, parsers, then, when

from kfm_conformance import expectations
from kfm_conformance.faults import strace
from kfm_conformance.faults.concurrency import (
    ConcurrentOutcome,
    KillRestartOutcome,
    book_for,
    kill_and_restart,
    never_torn,
    two_runs_at_once,
)
from kfm_conformance.faults.crash import (
    CampaignResult,
    Recording,
    VersionBook,
    record,
    require_some_crash,
)
from kfm_conformance.faults.ioerror import (
    Injection,
    choose_target,
    inject,
    output_after_error,
    rebase,
    require_landed,
    state_not_advanced,
)
from kfm_conformance.faults.lint import (
    DURABILITY_CHECKS,
    IN_PLACE_CHECKS,
    ORDER_CHECKS,
    REPLACEMENT_CHECKS,
    Layout,
    lint_trace,
    select,
)
from kfm_conformance.faults.scenario_campaign import campaign_for
from kfm_conformance.scenario import ScenarioContext
from kfm_conformance.upstream import Resource, Version
from kfm_conformance.verdict import Finding, HarnessError, NotApplicable, SkipKind, fact


@dataclass
class FaultsWorld:
    """What the fault steps of one scenario share."""

    scratch: Path
    campaign: CampaignResult | None = None
    lint: list[Finding] = field(default_factory=list)
    concurrent: ConcurrentOutcome | None = None
    kill_restart: KillRestartOutcome | None = None
    reader: tuple[list[tuple[str, str | None]], int, str, str] | None = None
    injection: Injection | None = None


@pytest.fixture
def kfm_faults() -> Iterator[FaultsWorld]:
    """Per-scenario scratch space (traces live outside every working directory)."""
    world = FaultsWorld(Path(tempfile.mkdtemp(prefix="kfm-faults-")))
    yield world
    shutil.rmtree(world.scratch, ignore_errors=True)


def _label(version: Version) -> str:
    return f"version {version.number}"


def _book(kfm: ScenarioContext, versions: list[Version]) -> VersionBook:
    return book_for(kfm.profile, [(_label(v), v.resource) for v in versions])


# -- Given --------------------------------------------------------------------------------------
@given("the system-call tracer is available")
def tracer_available(kfm: ScenarioContext) -> None:
    found = strace.require_strace()
    kfm.evidence["strace"] = found.version


# -- crash campaign -------------------------------------------------------------------------------


@when(
    parsers.re(
        r"the pipeline is killed at each file-system step of (?P<publication>.+), "
        r"one run per step$"
    )
)
def killed_at_each_step(
    request: pytest.FixtureRequest, kfm: ScenarioContext, kfm_faults: FaultsWorld, publication: str
) -> None:
    strace.require_strace()
    result = campaign_for(kfm, publication, owner=request.node.nodeid)
    kfm_faults.campaign = result
    kfm.judge.apply(result.exploration_findings())
    require_some_crash(result)


def _campaign(world: FaultsWorld) -> CampaignResult:
    if world.campaign is None:
        raise HarnessError("no crash campaign ran in this scenario")
    return world.campaign


@then("after every kill the output is absent, the old version or the new version, complete")
def output_whole_after_kills(kfm: ScenarioContext, kfm_faults: FaultsWorld) -> None:
    kfm.judge.apply(_campaign(kfm_faults).output_findings())


@then("after every kill the next normal run publishes the new version")
def converges_after_kills(kfm: ScenarioContext, kfm_faults: FaultsWorld) -> None:
    if kfm_faults.kill_restart is not None:
        kfm.judge.apply(kfm_faults.kill_restart.restart_findings(kfm.profile))
        return
    kfm.judge.apply(_campaign(kfm_faults).recovery_findings())


@then("after every kill the next run sends only validators of the version whose data survived")
def state_follows_data_after_kills(kfm: ScenarioContext, kfm_faults: FaultsWorld) -> None:
    kfm.judge.apply(_campaign(kfm_faults).state_findings())


# -- the durability protocol ----------------------------------------------------------------------
def _recorded(
    kfm: ScenarioContext, world: FaultsWorld, label: str, context: str
) -> tuple[Recording, list[Finding]]:
    recording = record(
        kfm.sandbox, kfm.origin.url, world.scratch, label=label, extra_env=kfm.extra_env
    )
    expectations.exit_code(kfm, "published")
    expectations.output_rows(kfm)
    before = recording.result.files_before.get(kfm.profile.output)
    after = recording.result.files_after.get(kfm.profile.output)
    changed = before is None or after is None or before.sha256 != after.sha256
    layout = Layout(kfm.sandbox.workdir, kfm.profile.output, kfm.profile.state)
    findings = lint_trace(recording.trace, layout, context=context, output_changed=changed)
    kfm.evidence.setdefault("protocol_lint", {})[context] = {
        "steps": recording.describe_steps(),
        "findings": [f.to_json() for f in findings],
    }
    return recording, findings


@when(
    parsers.re(
        r"the system calls of a first publication of (?P<first>\d+) rows and of an update to "
        r"(?P<second>\d+) rows are recorded$"
    )
)
def protocol_recorded(
    kfm: ScenarioContext, kfm_faults: FaultsWorld, first: str, second: str
) -> None:
    strace.require_strace()
    kfm.upstream.serve_rows(int(first))
    _, found = _recorded(kfm, kfm_faults, "first publication under strace", "the first publication")
    kfm.upstream.serve_rows(int(second))
    _, more = _recorded(kfm, kfm_faults, "update under strace", "the update")
    kfm_faults.lint = found + more


@then("each new version is written to another file and renamed over the output")
def protocol_replacement(kfm: ScenarioContext, kfm_faults: FaultsWorld) -> None:
    kfm.judge.apply(select(kfm_faults.lint, REPLACEMENT_CHECKS))


@then("the output is never written in place or truncated")
def protocol_not_in_place(kfm: ScenarioContext, kfm_faults: FaultsWorld) -> None:
    kfm.judge.apply(select(kfm_faults.lint, IN_PLACE_CHECKS))


@then("the run-state changes for the last time only after the output is replaced")
def protocol_state_after_data(kfm: ScenarioContext, kfm_faults: FaultsWorld) -> None:
    kfm.judge.apply(select(kfm_faults.lint, ORDER_CHECKS))


@then("every file is flushed to disk before it is renamed, and its directory after the rename")
def protocol_durable(kfm: ScenarioContext, kfm_faults: FaultsWorld) -> None:
    broken = [f for f in select(kfm_faults.lint, DURABILITY_CHECKS) if not f.ok]
    kfm.judge.apply(
        fact(
            "protocol.durable",
            not broken,
            f"{len(broken)} durability step(s) missing: " + "; ".join(f.message for f in broken),
            expected="fsync of each temp file before its rename, fsync of its directory after",
            observed=[{"check": f.check, "observed": f.observed} for f in broken],
        )
    )


# -- I/O errors ---------------------------------------------------------------------------------
@when(
    parsers.re(
        r"the pipeline runs while its first (?P<operation>write|fsync|rename) for the new "
        r"version fails with (?P<error>ENOSPC|EIO)$"
    )
)
def runs_with_io_error(
    kfm: ScenarioContext, kfm_faults: FaultsWorld, operation: str, error: str
) -> None:
    strace.require_strace()

    def rehearse() -> Recording:
        rehearsal = kfm.fresh_sandbox()
        shutil.copytree(kfm.sandbox.workdir, rehearsal.workdir, dirs_exist_ok=True, symlinks=True)
        return record(
            rehearsal,
            kfm.origin.url,
            kfm_faults.scratch,
            label="rehearsal under strace, in a copy of the working directory",
            extra_env=kfm.extra_env,
        )

    recording = rehearse()
    layout = Layout(recording.sandbox.workdir, kfm.profile.output, kfm.profile.state)
    kfm.evidence["io_error"] = {"rehearsal_steps": recording.describe_steps()}
    target = choose_target(recording, layout, operation, rehearse_again=rehearse)
    if target is None:
        raise NotApplicable(
            f"not applicable: the publishing run makes no {operation} call in its working "
            "directory (see the durability checks)",
            SkipKind.NOT_DECLARED,
        )
    target = rebase(target, recording.sandbox.workdir, kfm.sandbox.workdir)
    injected, injection = inject(
        kfm.sandbox, kfm.origin.url, kfm_faults.scratch, target, error, extra_env=kfm.extra_env
    )
    kfm.evidence["io_error"]["injection"] = injection.to_json()
    kfm_faults.injection = injection
    require_landed(injection)
    expectations.finished(kfm, injected.result)


@then(
    "the output is the published version, or the new version complete where the error came "
    "after the new version was in place"
)
def output_after_io_error(kfm: ScenarioContext, kfm_faults: FaultsWorld) -> None:
    if kfm_faults.injection is None:
        raise HarnessError("no I/O error was injected in this scenario")
    kfm.judge.apply(
        output_after_error(
            kfm_faults.injection,
            expectations.current_published_state(kfm),
            kfm.current.resource,
            kfm.sandbox.output_path,
        )
    )


@then("its request carried no validator of the version it failed to publish")
def no_validator_of_failed_version(kfm: ScenarioContext) -> None:
    exchange = expectations.request_of_last_run(kfm)
    kfm.judge.apply(state_not_advanced(exchange, kfm.current.resource, kfm.last_run.label))


# -- two runs at once ---------------------------------------------------------------------------
@given("the profile declares that runs sharing a working directory are serialized")
def declares_serialized_runs(kfm: ScenarioContext) -> None:
    kfm.require_declared("concurrent_runs")


@when(
    parsers.re(
        r"a second run starts in the same working directory while the first is "
        r"(?P<busy>downloading the first version slowly|writing its file), after the "
        r"upstream moved to a new version of (?P<count>\d+) rows, and a reader polls the output "
        r"meanwhile$"
    )
)
def two_runs(kfm: ScenarioContext, kfm_faults: FaultsWorld, busy: str, count: str) -> None:
    overlap = "downloading" if busy.startswith("downloading") else "writing"
    if overlap == "writing":
        strace.require_strace()
    first = kfm.current
    book = _book(kfm, [first])

    def move_upstream() -> Version:
        version = kfm.upstream.serve_rows(int(count))
        book.add(_label(version), version.resource)
        return version

    bound = kfm.profile.limits.fetch_timeout_s
    download_s = min(1.0, 0.5 * bound) if bound else 1.0
    try:
        outcome = two_runs_at_once(
            profile=kfm.profile,
            sandbox=kfm.sandbox,
            origin=kfm.origin,
            first=first.resource,
            move_upstream=move_upstream,
            book=book,
            overlap=overlap,
            trace_dir=kfm_faults.scratch,
            extra_env=kfm.extra_env,
            download_s=download_s,
        )
    finally:
        book.close()
    kfm.evidence["two_runs"] = outcome.to_evidence()
    kfm_faults.concurrent = outcome
    kfm_faults.reader = (outcome.seen, outcome.reads, outcome.final, "while two runs shared it")
    for version in kfm.versions:
        if _label(version) == outcome.final:
            version.output = kfm.sandbox.output_state()


@then("both runs end with a code the profile declares")
def both_runs_declared(kfm: ScenarioContext, kfm_faults: FaultsWorld) -> None:
    if kfm_faults.concurrent is None:
        raise HarnessError("no concurrent runs in this scenario")
    kfm.judge.apply(kfm_faults.concurrent.declared_exit_findings(kfm.profile))


@then("the reader only ever saw no output or a whole version of the data")
def reader_saw_whole(kfm: ScenarioContext, kfm_faults: FaultsWorld) -> None:
    if kfm_faults.reader is None:
        raise HarnessError("no reader polled the output in this scenario")
    seen, reads, final, context = kfm_faults.reader
    if final == "torn":
        seen = [*seen, ("torn", "the output left at the end")]
    kfm.judge.apply(never_torn(seen, reads, f"{context}"))


# -- kills at random moments ---------------------------------------------------------------------
@when(
    parsers.re(
        r"(?P<rounds>\d+) runs, each publishing a new version, are killed at random moments "
        r"and restarted, while a reader polls the output$"
    )
)
def killed_at_random(kfm: ScenarioContext, kfm_faults: FaultsWorld, rounds: str) -> None:
    book = _book(kfm, [kfm.current])

    def serve_next() -> tuple[str, Resource]:
        version = kfm.upstream.serve_rows(2000 + 100 * len(kfm.versions))
        return _label(version), version.resource

    clean = kfm.last_run.duration_s if kfm.all_runs else 1.0
    try:
        outcome = kill_and_restart(
            sandbox=kfm.sandbox,
            origin=kfm.origin,
            serve_next=serve_next,
            book=book,
            rounds=int(rounds),
            rng=kfm.rng,
            clean_duration_s=clean,
            extra_env=kfm.extra_env,
        )
    finally:
        book.close()
    kfm.evidence["kills_at_random_moments"] = outcome.to_evidence()
    kfm_faults.kill_restart = outcome
    final = outcome.rounds[-1].after_restart if outcome.rounds else "absent"
    kfm_faults.reader = (outcome.seen, outcome.reads, final, "while runs were killed and restarted")
