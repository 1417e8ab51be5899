"""Lineage re-verified through a real Marquez: what it accepted, run states, parents, the graph.

When the session runs Marquez, the embedded lineage sink tees every event to it
(``LineageSink(forward_to=...)``) and records Marquez's answer on each record. After a
pipeline run, :func:`judge_marquez_run` checks, from the outside, that Marquez understood it.
A pipeline run may be one OpenLineage run or a hierarchy (an Airflow DAG run whose task runs
carry a ``parent`` run facet naming it); the events are grouped per OpenLineage run id
(:func:`lineage_runs`) and each run is judged as Marquez stores it:

* ``marquez.accepted``: every event the sink accepted was accepted by Marquez with a 2xx.
  A 4xx is Marquez saying the event is invalid: a finding against the pipeline, with
  Marquez's own error text. So is a 5xx whose body carries a 4xx code: Marquez answers an
  event it cannot deserialize (say, an unparsable ``eventTime``) with HTTP 500 and
  ``{"code": 400, "message": ...}`` (its ``JsonProcessingExceptionMapper``). Any other 5xx, or
  no answer at all, is the service's fault: :class:`~kfm_conformance.verdict.HarnessError`.
* ``marquez.run-state``: each run is listed under its job
  (``/api/v1/namespaces/{ns}/jobs/{job}/runs``) in the right state: a top-level run (one
  without a parent) in the state the pipeline's exit calls for (``COMPLETED`` on success,
  ``FAILED`` on failure); a child run in the state its own terminal event names.
* ``marquez.parent-run`` (only for runs with a parent): Marquez's record of the run
  (``/api/v1/jobs/runs/{id}``) names the parent run, Marquez knows that parent run, and it
  linked the run's job to a parent job.
* ``marquez.lineage-graph``: for each run that names datasets, the graph at
  ``/api/v1/lineage?nodeId=job:{ns}:{job}`` links each input dataset to the run's job and the
  job to each output dataset.

Marquez writes an event before it answers 201, but reads are polled for a few seconds to be
safe.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import requests

from kfm_conformance.verdict import Finding, HarnessError, fact

__all__ = ["LineageRun", "MarquezClient", "judge_marquez_run", "lineage_runs", "marquez_error"]

TERMINAL_STATES = {"COMPLETE": "COMPLETED", "FAIL": "FAILED", "ABORT": "ABORTED"}
#: The state Marquez gives a run for each event type that sets one.
EVENT_STATES = {"START": "RUNNING", "RUNNING": "RUNNING", **TERMINAL_STATES}
_T = TypeVar("_T")


class MarquezClient:
    """The few read endpoints of Marquez's API that the checks use."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.http = requests.Session()

    def _get(self, path: str, **params: str) -> requests.Response:
        try:
            return self.http.get(f"{self.url}{path}", params=params, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise HarnessError(f"Marquez did not answer GET {path}: {exc}") from exc

    def _json(self, response: requests.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise HarnessError(f"Marquez answered {what} with something not JSON") from exc

    def runs(self, namespace: str, job: str) -> list[dict[str, Any]] | None:
        """The job's runs (newest first), or None when Marquez does not know the job."""
        ns, name = (urllib.parse.quote(v, safe="") for v in (namespace, job))
        response = self._get(f"/api/v1/namespaces/{ns}/jobs/{name}/runs", limit="100")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise HarnessError(f"Marquez answered {response.status_code} listing runs of {job}")
        runs = self._json(response, f"the runs of {job}").get("runs", [])
        return [r for r in runs if isinstance(r, dict)]

    def job(self, namespace: str, job: str) -> dict[str, Any] | None:
        """The job as Marquez stores it, or None when it does not know it."""
        ns, name = (urllib.parse.quote(v, safe="") for v in (namespace, job))
        response = self._get(f"/api/v1/namespaces/{ns}/jobs/{name}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise HarnessError(f"Marquez answered {response.status_code} for job {job}")
        found = self._json(response, f"job {job}")
        return found if isinstance(found, dict) else None

    def run(self, run_id: str) -> dict[str, Any] | None:
        """One run by id (with its facets), or None when Marquez does not know it."""
        response = self._get(f"/api/v1/jobs/runs/{urllib.parse.quote(run_id, safe='')}")
        if response.status_code in (400, 404):  # 400: not a UUID, so not a run it has
            return None
        if response.status_code != 200:
            raise HarnessError(f"Marquez answered {response.status_code} for run {run_id}")
        found = self._json(response, f"run {run_id}")
        return found if isinstance(found, dict) else None

    def lineage(self, node_id: str, depth: int = 2) -> list[dict[str, Any]]:
        """The lineage graph's nodes around ``node_id`` (``job:ns:name``)."""
        response = self._get("/api/v1/lineage", nodeId=node_id, depth=str(depth))
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise HarnessError(f"Marquez answered {response.status_code} for the lineage graph")
        graph = self._json(response, "the lineage graph").get("graph", [])
        return [n for n in graph if isinstance(n, dict)]


# --------------------------------------------------------------------------- events


@dataclass
class LineageRun:
    """The events of one OpenLineage run id within a pipeline run, in arrival order."""

    run_id: str
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def job(self) -> tuple[str, str] | None:
        """(namespace, name) of the run's job, from its first event that names one."""
        for event in self.events:
            job = event.get("job")
            if isinstance(job, dict) and job.get("namespace") and job.get("name"):
                return str(job["namespace"]), str(job["name"])
        return None

    @property
    def parent(self) -> tuple[str, str | None] | None:
        """(parent run id, parent job name) from the ``parent`` run facet, if any event has one."""
        for event in self.events:
            run = event.get("run")
            facets = run.get("facets") if isinstance(run, dict) else None
            parent = facets.get("parent") if isinstance(facets, dict) else None
            if not isinstance(parent, dict):
                continue
            parent_run = parent.get("run")
            parent_job = parent.get("job")
            run_id = parent_run.get("runId") if isinstance(parent_run, dict) else None
            if isinstance(run_id, str) and run_id:
                name = parent_job.get("name") if isinstance(parent_job, dict) else None
                return run_id, str(name) if name else None
        return None

    @property
    def last_state(self) -> str | None:
        """The state the run's last event that sets one leaves it in: what Marquez shows once
        it has taken every event of the run (None if no event sets a state)."""
        for event in reversed(self.events):
            state = EVENT_STATES.get(str(event.get("eventType")))
            if state:
                return state
        return None

    @property
    def terminal_state(self) -> str | None:
        """The Marquez state the run's last terminal event names (None without one)."""
        for event in reversed(self.events):
            state = TERMINAL_STATES.get(str(event.get("eventType")))
            if state:
                return state
        return None

    def datasets(self, side: str) -> list[str]:
        """Marquez node ids of the datasets the run's events name on ``side``."""
        found: dict[str, None] = {}
        for event in self.events:
            for dataset in event.get(side) or []:
                if isinstance(dataset, dict) and dataset.get("namespace") and dataset.get("name"):
                    found[f"dataset:{dataset['namespace']}:{dataset['name']}"] = None
        return list(found)


def lineage_runs(events: Sequence[dict[str, Any]]) -> list[LineageRun]:
    """Group run events by run id (runs in order of their first event)."""
    runs: dict[str, LineageRun] = {}
    for event in events:
        run = event.get("run")
        run_id = run.get("runId") if isinstance(run, dict) else None
        if isinstance(run_id, str):
            runs.setdefault(run_id, LineageRun(run_id)).events.append(event)
    return list(runs.values())


def marquez_error(body: str | None) -> str:
    """Marquez's error text from a response body (``{"errors": [...]}`` or
    ``{"code": ..., "message": ...}``), else the body itself, shortened."""
    text = (body or "").strip()
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        errors = parsed.get("errors")
        if isinstance(errors, list) and errors:
            return "; ".join(str(e) for e in errors)[:300]
        message = parsed.get("message")
        if message:
            return str(message).splitlines()[0][:300]
    return text[:300]


def _refused_by_body(body: str | None) -> bool:
    """A 5xx whose body is Marquez's client-error message (see the module docstring)."""
    try:
        parsed = json.loads(body or "")
    except ValueError:
        return False
    code = parsed.get("code") if isinstance(parsed, dict) else None
    return isinstance(code, int) and 400 <= code < 500


def _edges(graph: list[dict[str, Any]]) -> set[tuple[str, str]]:
    edges: set[tuple[str, str]] = set()
    for node in graph:
        for key in ("inEdges", "outEdges"):
            for edge in node.get(key) or []:
                if isinstance(edge, dict):
                    edges.add((str(edge.get("origin")), str(edge.get("destination"))))
    return edges


def _graph_edges(client: MarquezClient, node: str) -> set[tuple[str, str]]:
    return _edges(client.lineage(node))


def _parent_in(stored: dict[str, Any] | None) -> str | None:
    """The parent run id in Marquez's record of a run (its ``parent`` run facet)."""
    facets = (stored or {}).get("facets") or {}
    parent = facets.get("parent") if isinstance(facets, dict) else None
    parent_run = parent.get("run") if isinstance(parent, dict) else None
    value = parent_run.get("runId") if isinstance(parent_run, dict) else None
    return str(value) if value else None


def _names_parent(parent_id: str, stored: dict[str, Any] | None) -> bool:
    return _parent_in(stored) == parent_id


def _poll(read: Callable[[], _T], done: Callable[[_T], bool], deadline: float, poll_s: float) -> _T:
    while True:
        value = read()
        if done(value) or time.monotonic() >= deadline:
            return value
        time.sleep(poll_s)


# --------------------------------------------------------------------------- judging


def judge_marquez_run(
    records: Sequence[Any],
    *,
    exit_ok: bool,
    client: MarquezClient,
    wait_s: float = 5.0,
    poll_s: float = 0.2,
) -> tuple[list[Finding], dict[str, Any]]:
    """Judge one pipeline run as Marquez saw it; return the findings and the evidence.

    ``records`` are the run's :class:`~kfm_conformance.capture.lineage.LineageRecord` objects
    after forwarding (each with ``forward_status``/``forward_body``/``forward_error``).
    """
    forwarded = [r for r in records if r.accepted and r.event is not None]
    evidence: dict[str, Any] = {
        "forwarded": [
            {
                "eventType": (r.event or {}).get("eventType"),
                "runId": ((r.event or {}).get("run") or {}).get("runId"),
                "status": r.forward_status,
                "body": (r.forward_body or "")[:500],
                "error": r.forward_error,
            }
            for r in forwarded
        ]
    }
    findings: list[Finding] = []
    if not forwarded:
        return findings, evidence

    def refused(record: Any) -> bool:
        status = record.forward_status
        return status is not None and (
            400 <= status < 500 or (status >= 500 and _refused_by_body(record.forward_body))
        )

    broken = [
        r
        for r in forwarded
        if r.forward_status is None or (r.forward_status >= 500 and not refused(r))
    ]
    if broken:
        first = broken[0]
        raise HarnessError(
            "Marquez did not take an event: "
            + (first.forward_error or f"it answered {first.forward_status}: {first.forward_body}")
        )
    invalid = [r for r in forwarded if refused(r)]
    reasons = [
        f"{(r.event or {}).get('eventType')}: {r.forward_status} {marquez_error(r.forward_body)}"
        for r in invalid
    ]
    findings.append(
        fact(
            "marquez.accepted",
            not invalid,
            f"Marquez refused {len(invalid)} of the run's {len(forwarded)} events as invalid: "
            + "; ".join(reasons)
            if invalid
            else f"Marquez accepted all {len(forwarded)} events of the run",
            expected="2xx for every event",
            observed=reasons
            or [f"{(r.event or {}).get('eventType')}: {r.forward_status}" for r in forwarded],
        )
    )
    if invalid:
        return findings, evidence

    runs = [r for r in lineage_runs([r.event for r in forwarded]) if r.job is not None]
    if not runs:
        return findings, evidence
    deadline = time.monotonic() + wait_s
    findings.append(_judge_states(runs, exit_ok, client, evidence, deadline, poll_s))
    children = [r for r in runs if r.parent is not None]
    if children:
        findings.append(_judge_parents(children, client, evidence, deadline, poll_s))
    graph = _judge_graph(runs, client, evidence, deadline, poll_s)
    if graph is not None:
        findings.append(graph)
    return findings, evidence


def _judge_states(
    runs: list[LineageRun],
    exit_ok: bool,
    client: MarquezClient,
    evidence: dict[str, Any],
    deadline: float,
    poll_s: float,
) -> Finding:
    exit_state = "COMPLETED" if exit_ok else "FAILED"
    rows: list[dict[str, Any]] = []
    wrong: list[str] = []
    for run in runs:
        assert run.job is not None
        namespace, name = run.job
        if run.parent is None:
            expected, why = exit_state, "the pipeline's exit"
        else:
            expected, why = run.terminal_state or "", "its terminal event"
        if not expected:  # a child run without a terminal event: the capture checks say so
            continue

        def state_of(ns: str = namespace, job: str = name, run_id: str = run.run_id) -> str | None:
            listed = client.runs(ns, job) or []
            return next((str(r.get("state")) for r in listed if r.get("id") == run_id), None)

        # Polled until Marquez shows the expected state or the one the run's last event
        # leaves it in: either way it has taken the whole run, and nothing will change it
        # later (a wrong state is then judged at once, not after the deadline).
        settled = {expected, run.last_state} - {None}
        state = _poll(state_of, settled.__contains__, deadline, poll_s)
        rows.append(
            {
                "namespace": namespace,
                "job": name,
                "run_id": run.run_id,
                "parent_run_id": run.parent[0] if run.parent else None,
                "state": state,
                "expected": expected,
            }
        )
        if state != expected:
            seen = f"shows it as {state}" if state else "does not list it"
            wrong.append(
                f"run {run.run_id} of job {name}: Marquez {seen}, expected {expected} (from {why})"
            )
    evidence["runs"] = rows
    return fact(
        "marquez.run-state",
        not wrong,
        "; ".join(wrong)
        if wrong
        else (
            f"Marquez shows the run as {rows[0]['state']}"
            if len(rows) == 1
            else f"Marquez shows each of the {len(rows)} runs in the state its events call for"
        ),
        expected=rows[0]["expected"]
        if len(rows) == 1
        else {r["run_id"]: r["expected"] for r in rows},
        observed=(rows[0]["state"] or "run not listed")
        if len(rows) == 1
        else {r["run_id"]: r["state"] or "run not listed" for r in rows},
    )


def _judge_parents(
    children: list[LineageRun],
    client: MarquezClient,
    evidence: dict[str, Any],
    deadline: float,
    poll_s: float,
) -> Finding:
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for run in children:
        assert run.job is not None and run.parent is not None
        namespace, name = run.job
        parent_id, parent_job = run.parent

        stored = _poll(
            partial(client.run, run.run_id), partial(_names_parent, parent_id), deadline, poll_s
        )
        parent_known = client.run(parent_id) is not None
        job = client.job(namespace, name) or {}
        row = {
            "run_id": run.run_id,
            "job": name,
            "parent_run_id": parent_id,
            "parent_job": parent_job,
            "marquez_parent_run_id": _parent_in(stored),
            "marquez_knows_parent_run": parent_known,
            "marquez_parent_job": job.get("parentJobName"),
        }
        rows.append(row)
        if stored is None:
            problems.append(f"Marquez does not know run {run.run_id} of job {name}")
        elif row["marquez_parent_run_id"] != parent_id:
            problems.append(
                f"Marquez's record of run {run.run_id} (job {name}) names parent run "
                f"{row['marquez_parent_run_id']}, not {parent_id}"
            )
        elif not parent_known:
            problems.append(f"Marquez does not know the parent run {parent_id} of job {name}")
        elif not job.get("parentJobUuid"):
            problems.append(f"Marquez did not link job {name} to a parent job")
    evidence["parents"] = rows
    return fact(
        "marquez.parent-run",
        not problems,
        "; ".join(problems)
        if problems
        else f"Marquez links each of the {len(rows)} child run(s) to its parent run",
        expected={r["run_id"]: r["parent_run_id"] for r in rows},
        observed={
            r["run_id"]: {
                "parent run in Marquez": r["marquez_parent_run_id"],
                "parent run known": r["marquez_knows_parent_run"],
                "parent job": r["marquez_parent_job"],
            }
            for r in rows
        },
    )


def _judge_graph(
    runs: list[LineageRun],
    client: MarquezClient,
    evidence: dict[str, Any],
    deadline: float,
    poll_s: float,
) -> Finding | None:
    wanted_by_node: dict[str, set[tuple[str, str]]] = {}
    for run in runs:
        assert run.job is not None
        node = f"job:{run.job[0]}:{run.job[1]}"
        wanted = {(i, node) for i in run.datasets("inputs")}
        wanted |= {(node, o) for o in run.datasets("outputs")}
        if wanted:
            wanted_by_node.setdefault(node, set()).update(wanted)
    if not wanted_by_node:
        return None
    missing: list[tuple[str, str]] = []
    graphs: dict[str, list[tuple[str, str]]] = {}
    for node, wanted in wanted_by_node.items():
        edges = _poll(partial(_graph_edges, client, node), wanted.issubset, deadline, poll_s)
        graphs[node] = sorted(edges)[:50]
        missing += sorted(wanted - edges)
    evidence["lineage_graph"] = graphs
    wanted_all = sorted(e for wanted in wanted_by_node.values() for e in wanted)
    return fact(
        "marquez.lineage-graph",
        not missing,
        "Marquez's lineage graph links the upstream to the job and the job to the output"
        if not missing
        else f"Marquez's lineage graph lacks {len(missing)} edge(s) the events describe",
        expected=wanted_all,
        observed={"missing": missing},
    )
