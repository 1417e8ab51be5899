"""Lineage across a run hierarchy: a root run with task runs that name it as their parent.

The events are shaped like those of Airflow's OpenLineage provider at its default settings
(task runs with a ParentRunFacet naming the DAG run as parent and root, and DAG-run events with
no START under ``dag.test()``), built as plain JSON; every producer's hierarchy is judged the
same way.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kfm_conformance.capture.checks import judge_lineage_across_runs, judge_lineage_run
from kfm_conformance.capture.hierarchy import hierarchies
from kfm_conformance.capture.olmodel import default_model
from kfm_conformance.verdict import Finding

UPSTREAM = "http://127.0.0.1:8080/data/stations.csv"
OUTPUT = "out/data.parquet"
NS = "kfm-conformance"
PRODUCER = "https://github.com/apache/airflow/tree/providers-openlineage/2.20.3"
CORE = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
PARENT = "https://openlineage.io/spec/facets/1-2-0/ParentRunFacet.json#/$defs/ParentRunFacet"
_CLOCK = [datetime(2026, 1, 1, tzinfo=UTC)]


def _time() -> str:
    _CLOCK[0] += timedelta(milliseconds=5)
    return _CLOCK[0].isoformat()


def event(
    kind: str,
    run_id: str,
    job: str,
    *,
    parent: tuple[str, str] | None = None,
    root: tuple[str, str] | None = None,
    outputs: bool = False,
) -> dict[str, Any]:
    facets: dict[str, Any] = {}
    if parent is not None:
        facet: dict[str, Any] = {
            "_producer": PRODUCER,
            "_schemaURL": PARENT,
            "run": {"runId": parent[0]},
            "job": {"namespace": NS, "name": parent[1]},
        }
        if root is not None:
            facet["root"] = {"run": {"runId": root[0]}, "job": {"namespace": NS, "name": root[1]}}
        facets["parent"] = facet
    return {
        "eventType": kind,
        "eventTime": _time(),
        "producer": PRODUCER,
        "schemaURL": CORE,
        "run": {"runId": run_id, "facets": facets},
        "job": {"namespace": NS, "name": job},
        "inputs": [{"namespace": "http://127.0.0.1:8080", "name": "/data/stations.csv"}],
        "outputs": [{"namespace": "file", "name": f"/srv/{OUTPUT}"}] if outputs else [],
    }


def airflow_run(
    task_terminals: tuple[str, ...] = ("COMPLETE",),
    dag_terminal: str = "COMPLETE",
    *,
    dag_start: bool = False,
    with_root: bool = True,
    dag_events: bool = True,
    dag: str = "kfm_ingest",
    task: str = "ingest",
) -> list[dict[str, Any]]:
    """One DAG run: one task run per entry of ``task_terminals`` (later ones: retries)."""
    dag_run = str(uuid.uuid4())
    events = []
    if dag_start and dag_events:
        events.append(event("START", dag_run, dag))
    for terminal in task_terminals:
        task_run = str(uuid.uuid4())
        link = {"parent": (dag_run, dag), "root": (dag_run, dag) if with_root else None}
        events.append(event("START", task_run, f"{dag}.{task}", **link))
        events.append(
            event(terminal, task_run, f"{dag}.{task}", outputs=terminal == "COMPLETE", **link)
        )
    if dag_events:
        events.append(event(dag_terminal, dag_run, dag))
    return events


def judge(events: list[dict[str, Any]], *, exit_ok: bool = True, **options: Any) -> list[Finding]:
    return judge_lineage_run(
        events,
        exit_ok=exit_ok,
        published=exit_ok,
        upstream_url=UPSTREAM,
        output_relpath=OUTPUT,
        parquet_columns=None,
        schemas=default_model(),
        **options,
    )


def broken(findings: list[Finding]) -> dict[str, str]:
    return {f.check: f.message for f in findings if not f.ok}


def finding(findings: list[Finding], check: str) -> Finding:
    return next(f for f in findings if f.check == check)


# -- grouping ----------------------------------------------------------------------------------


def test_events_are_grouped_by_their_root() -> None:
    events = airflow_run(("FAIL", "COMPLETE"))
    (group,) = hierarchies(events)
    assert group.root is not None and group.root.job == f"{NS} / kfm_ingest"
    assert [r.job for r in group.below_root] == [f"{NS} / kfm_ingest.ingest"] * 2
    assert group.root_id == events[-1]["run"]["runId"]


def test_parent_chain_without_root_names_the_top() -> None:
    events = airflow_run(with_root=False)
    (group,) = hierarchies(events)
    assert group.root_id == events[-1]["run"]["runId"]


def test_an_absent_parent_is_the_root_known_only_by_its_children() -> None:
    events = airflow_run(dag_events=False)
    (group,) = hierarchies(events)
    assert group.root is None
    assert group.root_job == f"{NS} / kfm_ingest"
    assert [r.job for r in group.top] == [f"{NS} / kfm_ingest.ingest"]


def test_unlinked_runs_are_separate_hierarchies() -> None:
    a = str(uuid.uuid4())
    b = str(uuid.uuid4())
    groups = hierarchies([event("START", a, "job"), event("COMPLETE", b, "job")])
    assert len(groups) == 2


# -- the provider's default is certified -------------------------------------------------------


@pytest.mark.parametrize("dag_start", [False, True], ids=["dag-test", "scheduler"])
def test_airflow_default_shape_passes(dag_start: bool) -> None:
    findings = judge(airflow_run(dag_start=dag_start))
    assert not broken(findings), broken(findings)
    start = finding(findings, "lineage.start-event")
    if dag_start:
        assert "sent no START" not in start.message
    else:  # the missing DAG-run START is accepted, and the evidence says so
        assert "sent no START; accepted" in start.message
        assert "sent no START; accepted" in start.observed
    failed = judge(airflow_run(("FAIL",), "FAIL", dag_start=dag_start), exit_ok=False)
    assert not broken(failed), broken(failed)


def test_a_retried_task_that_completed_passes() -> None:
    findings = judge(airflow_run(("FAIL", "COMPLETE")))
    assert not broken(findings), broken(findings)


def test_task_events_alone_pass_with_an_absent_root() -> None:
    """An emission policy that switches DAG events off leaves task runs under an absent root."""
    assert not broken(judge(airflow_run(dag_events=False)))
    assert not broken(judge(airflow_run(("FAIL",), dag_events=False), exit_ok=False))


def test_an_external_parent_of_one_run_is_no_problem() -> None:
    """A plain pipeline launched by a scheduler may name the scheduler's run as parent."""
    scheduler = (str(uuid.uuid4()), "scheduler")
    run_id = str(uuid.uuid4())
    events = [
        event("START", run_id, "kfm.ingest", parent=scheduler),
        event("COMPLETE", run_id, "kfm.ingest", parent=scheduler, outputs=True),
    ]
    assert not broken(judge(events))


def test_the_step_names_the_root_terminal() -> None:
    assert not broken(judge(airflow_run(), expected_terminal="COMPLETE"))
    assert "lineage.terminal-event" in broken(judge(airflow_run(), expected_terminal="FAIL"))


# -- contradictions are refused ----------------------------------------------------------------


def test_task_complete_while_the_root_fails_is_refused() -> None:
    problems = broken(judge(airflow_run(("COMPLETE",), "FAIL"), exit_ok=False))
    assert "every run beneath the root" in problems["lineage.terminal-event"]


def test_root_complete_on_a_failed_run_is_refused() -> None:
    problems = broken(judge(airflow_run(("FAIL",), "COMPLETE"), exit_ok=False))
    assert "the root run" in problems["lineage.terminal-event"]
    assert "ended with COMPLETE" in problems["lineage.terminal-event"]


def test_task_fail_under_a_completed_root_is_refused() -> None:
    problems = broken(judge(airflow_run(("FAIL",), "COMPLETE")))
    assert "no later run of the job" in problems["lineage.terminal-event"]


def test_root_fail_on_a_successful_run_is_refused() -> None:
    problems = broken(judge(airflow_run(("COMPLETE",), "FAIL")))
    assert "ended with FAIL" in problems["lineage.terminal-event"]


def test_a_task_without_start_or_terminal_is_refused() -> None:
    events = airflow_run()
    task_start = next(i for i, e in enumerate(events) if e["eventType"] == "START")
    problems = broken(judge(events[:task_start] + events[task_start + 1 :]))
    assert "sent no START event" in problems["lineage.start-event"]
    no_terminal = [
        e
        for e in airflow_run()
        if not e["job"]["name"].endswith(".ingest") or e["eventType"] == "START"
    ]
    assert "never sent a terminal event" in broken(judge(no_terminal))["lineage.terminal-event"]


def test_a_root_without_runs_beneath_it_needs_its_start() -> None:
    run_id = str(uuid.uuid4())
    problems = broken(judge([event("COMPLETE", run_id, "kfm_ingest", outputs=True)]))
    assert problems["lineage.start-event"] == "the run sent no START event"


def test_two_unlinked_runs_are_refused() -> None:
    problems = broken(judge(airflow_run() + airflow_run()))
    assert "separate run hierarchies" in problems["lineage.run-id"]


def test_time_order_is_judged_per_run() -> None:
    events = airflow_run()
    events[2]["eventTime"] = "2000-01-01T00:00:00+00:00"  # the DAG run's only event: no order
    assert not broken(judge(events))
    events[1]["eventTime"] = "2000-01-01T00:00:00+00:00"  # the task's COMPLETE before its START
    assert "lineage.event-time-order" in broken(judge(events))


# -- job stability per job name ----------------------------------------------------------------


def test_job_stable_across_hierarchies() -> None:
    ok = judge_lineage_across_runs([airflow_run(), airflow_run(("FAIL",), "FAIL"), airflow_run()])
    assert not broken(ok), broken(ok)
    renamed = judge_lineage_across_runs([airflow_run(), airflow_run(dag="kfm_ingest_v2")])
    assert "different jobs" in broken(renamed)["lineage.job-stable"]
    split = airflow_run()
    split[1]["job"]["name"] = "kfm_ingest.other"  # the task run's COMPLETE names another job
    assert (
        "names more than one job"
        in broken(judge_lineage_across_runs([split]))["lineage.job-stable"]
    )
    moved = airflow_run()
    for e in moved:
        if e["job"]["name"].endswith(".ingest"):
            e["job"]["namespace"] = "elsewhere"
    assert (
        "namespaces"
        in broken(judge_lineage_across_runs([airflow_run(), moved]))["lineage.job-stable"]
    )
