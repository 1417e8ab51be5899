"""Step definitions for the lineage and telemetry guarantees.

The pipeline is pointed at the embedded capture services on every run (see
:mod:`kfm_conformance.capture.session`); these steps take one run's slice of what arrived and
hand it to the pure checks in :mod:`kfm_conformance.capture.checks`, then apply the findings a
step names to the scenario's judge. The judging lives in the checks; the steps only choose
which run and which checks.

"The run" is the scenario's last run; "every run" is every run of the scenario, setup runs
included.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from pytest_bdd import parsers, then, when

from kfm_conformance.capture.checks import (
    judge_lineage_across_runs,
    judge_lineage_run,
    judge_telemetry_run,
    output_version,
    run_id_per_run,
)
from kfm_conformance.capture.session import CaptureObserver, RunCapture
from kfm_conformance.scenario import ScenarioContext
from kfm_conformance.verdict import Finding, HarnessError


# -- helpers ----------------------------------------------------------------------------------
def _parquet_columns(kfm: ScenarioContext) -> list[tuple[str, str]] | None:
    """(name, Arrow type) of the published Parquet file, or None when it is unreadable."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(kfm.sandbox.output_path)
    except (OSError, ValueError):
        return None
    return [(f.name, str(f.type)) for f in schema]


def _lineage_findings(
    kfm: ScenarioContext,
    observer: CaptureObserver,
    run: RunCapture,
    *,
    published: bool | None = None,
    with_columns: bool = False,
    with_schemas: bool = False,
    expected_terminal: str | None = None,
) -> list[Finding]:
    previous = observer.last_publication_before(run)
    profile = kfm.profile
    return judge_lineage_run(
        run.events,
        exit_ok=run.success,
        published=run.published if published is None else published,
        upstream_url=kfm.origin.url,
        output_relpath=profile.output,
        parquet_columns=_parquet_columns(kfm) if with_columns else None,
        schemas=observer.services.validator() if with_schemas else None,
        previous_output_version=output_version(previous.events, profile.output)
        if previous is not None
        else None,
        expected_terminal=expected_terminal,
        over_limits=run.lineage_over_limits,
    )


def _apply(
    kfm: ScenarioContext,
    findings: Sequence[Finding],
    checks: Iterable[str],
    *,
    fallback: Sequence[str],
    step: str,
) -> None:
    """Apply the findings for ``checks``. When none applies to the run, apply the ``fallback``
    findings (the run sent nothing to check), or, if even those are missing, it is the
    scenario that is wrong: a harness error."""
    wanted = set(checks)
    chosen = [f for f in findings if f.check in wanted]
    if not chosen:
        chosen = [f for f in findings if f.check in fallback and not f.ok]
    if not chosen:
        raise HarnessError(
            f"step {step!r} does not apply to this run: none of {sorted(wanted)} was judged"
        )
    for finding in chosen:  # one at a time: the scenario's message is the first broken one
        kfm.judge.apply(finding)


def _apply_lineage(
    kfm: ScenarioContext, findings: Sequence[Finding], *checks: str, step: str
) -> None:
    # A request the sink refused for breaking a cap fails every lineage step of the run.
    checks = ("lineage.within-limits", *checks)
    _apply(kfm, findings, checks, fallback=("lineage.start-event",), step=step)


def _telemetry_findings(run: RunCapture, *, expect_error: bool | None = None) -> list[Finding]:
    return judge_telemetry_run(
        run.spans,
        exit_ok=run.success,
        run_id=run.root_run_id,
        run_ids=run.run_ids,
        expect_error=expect_error,
        over_limits=run.otlp_over_limits,
    )


def _apply_telemetry(
    kfm: ScenarioContext, findings: Sequence[Finding], *checks: str, step: str
) -> None:
    checks = ("telemetry.within-limits", *checks)
    _apply(kfm, findings, checks, fallback=("telemetry.trace-exported",), step=step)


# -- When ---------------------------------------------------------------------------------------
@when(parsers.re(r"the pipeline runs again while the upstream answers (?P<answer>.+)$"))
def runs_again_against(kfm: ScenarioContext, answer: str) -> None:
    kfm.script_answer(answer)
    kfm.run()


# -- Then: lineage of one run ----------------------------------------------------------------
@then(
    parsers.re(r"the run's lineage opens with START and closes with (?P<terminal>COMPLETE|FAIL)$")
)
def lineage_opens_and_closes(
    kfm: ScenarioContext, kfm_observer: CaptureObserver, terminal: str
) -> None:
    run = kfm_observer.last
    # The root's terminal must be the one the step names, and fit the run's exit.
    findings = _lineage_findings(kfm, kfm_observer, run, expected_terminal=terminal)
    _apply_lineage(
        kfm, findings, "lineage.start-event", "lineage.terminal-event", step="opens/closes"
    )


@then("every event of the run carries a UUID run id: the run's own or one of its task runs")
def lineage_one_run_id(kfm: ScenarioContext, kfm_observer: CaptureObserver) -> None:
    findings = _lineage_findings(kfm, kfm_observer, kfm_observer.last)
    _apply_lineage(kfm, findings, "lineage.run-id", step="run id")


@then("the run's event times never go backwards")
def lineage_time_order(kfm: ScenarioContext, kfm_observer: CaptureObserver) -> None:
    findings = _lineage_findings(kfm, kfm_observer, kfm_observer.last)
    _apply_lineage(kfm, findings, "lineage.event-time-order", step="event times")


@then("the run names the upstream as its input")
def lineage_names_input(kfm: ScenarioContext, kfm_observer: CaptureObserver) -> None:
    findings = _lineage_findings(kfm, kfm_observer, kfm_observer.last)
    _apply_lineage(kfm, findings, "lineage.inputs", step="inputs")


@then("a COMPLETE event of the run names the published output")
def lineage_names_output(kfm: ScenarioContext, kfm_observer: CaptureObserver) -> None:
    findings = _lineage_findings(kfm, kfm_observer, kfm_observer.last, published=True)
    _apply_lineage(kfm, findings, "lineage.outputs", step="outputs")


@then("the output's schema facet matches the written Parquet schema")
def lineage_schema_facet(kfm: ScenarioContext, kfm_observer: CaptureObserver) -> None:
    run = kfm_observer.last
    if Path(kfm.profile.output).suffix.lower() not in (".parquet", ".pq"):
        # A CSV or JSON Lines output has no written schema to match: nothing to judge.
        kfm.notes.append(
            f"schema facet not judged: {kfm.profile.output} is not Parquet, so it has no "
            "written schema"
        )
        return
    if _parquet_columns(kfm) is None:
        kfm.judge.require(
            "lineage.schema-facet",
            False,
            "the output is not a readable Parquet file, so no schema facet can match it",
            expected="a readable Parquet output",
            observed=kfm.profile.output,
        )
        return
    findings = _lineage_findings(kfm, kfm_observer, run, published=True, with_columns=True)
    _apply_lineage(kfm, findings, "lineage.schema-facet", step="schema facet")


@then("the run claims no new version of the output")
def lineage_no_new_version(kfm: ScenarioContext, kfm_observer: CaptureObserver) -> None:
    findings = _lineage_findings(kfm, kfm_observer, kfm_observer.last, published=False)
    _apply_lineage(kfm, findings, "lineage.not-modified-no-version", step="no new version")


# -- Then: lineage across runs -------------------------------------------------------------------
@then("every run's lineage opens with START and closes with the terminal event its exit calls for")
def every_run_opens_and_closes(kfm: ScenarioContext, kfm_observer: CaptureObserver) -> None:
    for run in kfm_observer.runs:
        findings = _lineage_findings(kfm, kfm_observer, run)
        labelled = [_labelled(f, run) for f in findings]
        _apply_lineage(
            kfm, labelled, "lineage.start-event", "lineage.terminal-event", step="every run"
        )


@then("every run carries a run id of its own")
def every_run_own_run_id(kfm: ScenarioContext, kfm_observer: CaptureObserver) -> None:
    kfm.judge.apply(run_id_per_run({run.label: run.run_ids for run in kfm_observer.runs}))


@then("every run names the same job")
def every_run_same_job(kfm: ScenarioContext, kfm_observer: CaptureObserver) -> None:
    runs = [run.events for run in kfm_observer.runs]
    empty = [run.label for run in kfm_observer.runs if not run.events]
    kfm.judge.require(
        "lineage.start-event",
        not empty,
        f"no OpenLineage event arrived for {', '.join(empty)}",
        expected="events from every run",
        observed={run.label: len(run.events) for run in kfm_observer.runs},
    )
    kfm.judge.apply(judge_lineage_across_runs(runs))


@then("every event of every run follows the OpenLineage specification")
def every_event_spec_valid(kfm: ScenarioContext, kfm_observer: CaptureObserver) -> None:
    # The validator is looked up first: a given schema cache that cannot be used makes this
    # step (and only this step) a harness error, "schema unavailable", never a failure.
    validator = kfm_observer.services.validator()
    kfm.notes.append(f"lineage validated against {validator.describe()}")
    for run in kfm_observer.runs:
        findings = _lineage_findings(kfm, kfm_observer, run, with_schemas=True)
        labelled = [_labelled(f, run) for f in findings]
        _apply_lineage(kfm, labelled, "lineage.spec-valid", step="spec")


def _labelled(finding: Finding, run: RunCapture) -> Finding:
    """The finding, its message prefixed with the run it is about."""
    return Finding(
        check=finding.check,
        ok=finding.ok,
        message=f"{run.label}: {finding.message}",
        expected=finding.expected,
        observed=finding.observed,
    )


# -- Then: telemetry ------------------------------------------------------------------------------
@then("the run exported a trace with exactly one root span")
def telemetry_one_root(kfm: ScenarioContext, kfm_observer: CaptureObserver) -> None:
    findings = _telemetry_findings(kfm_observer.last)
    _apply_telemetry(
        kfm, findings, "telemetry.trace-exported", "telemetry.root-span", step="one root span"
    )


@then(parsers.re(r"the root span's status is (?P<negation>not )?ERROR$"))
def telemetry_root_status(
    kfm: ScenarioContext, kfm_observer: CaptureObserver, negation: str | None
) -> None:
    # The status the step names must be the root span's, and fit the run's exit.
    findings = _telemetry_findings(kfm_observer.last, expect_error=not negation)
    _apply_telemetry(kfm, findings, "telemetry.root-status", step="root status")


@then("the spans name the service they come from")
def telemetry_service_name(kfm: ScenarioContext, kfm_observer: CaptureObserver) -> None:
    findings = _telemetry_findings(kfm_observer.last)
    _apply_telemetry(kfm, findings, "telemetry.service-name", step="service name")


@then("the root span has step spans beneath it")
def telemetry_step_spans(kfm: ScenarioContext, kfm_observer: CaptureObserver) -> None:
    findings = _telemetry_findings(kfm_observer.last)
    _apply_telemetry(kfm, findings, "telemetry.step-spans", step="step spans")


@then("the HTTP request to the upstream is described with the HTTP semantic conventions")
def telemetry_http_semconv(kfm: ScenarioContext, kfm_observer: CaptureObserver) -> None:
    findings = _telemetry_findings(kfm_observer.last)
    _apply_telemetry(kfm, findings, "telemetry.http-semconv", step="HTTP conventions")


@then("the trace carries the run's OpenLineage run id")
def telemetry_runid(kfm: ScenarioContext, kfm_observer: CaptureObserver) -> None:
    run = kfm_observer.last
    if not run.run_ids:
        kfm.judge.require(
            "telemetry.runid-correlation",
            False,
            "the run sent no OpenLineage run id, so the trace cannot be tied to its lineage",
            expected="a span attribute whose value is the run's OpenLineage run id",
            observed="no OpenLineage event with a run id arrived for this run",
        )
        return
    findings = _telemetry_findings(run)
    _apply_telemetry(kfm, findings, "telemetry.runid-correlation", step="run id correlation")


@then("any metrics the run exported are kept as evidence")
def telemetry_metrics(kfm: ScenarioContext, kfm_observer: CaptureObserver) -> None:
    run = kfm_observer.last
    names = run.metric_names
    kfm.evidence["metrics"] = {
        "run": run.label,
        "names": names,
        "note": "metrics are optional; they are informational evidence and never judged",
    }
    kfm.notes.append(
        f"{run.label} exported {len(names)} metric(s)" + (f": {', '.join(names)}" if names else "")
    )
