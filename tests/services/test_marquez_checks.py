"""The Marquez re-verification checks (kfm_conformance.services.marquez), against a FAKE Marquez.

Unit tests of the checks' logic: ``FakeMarquez`` is a few dozen lines that answer the endpoints
the checks read (POST /api/v1/lineage, GET .../jobs/{job}, .../jobs/{job}/runs,
/api/v1/jobs/runs/{id}, /api/v1/lineage?nodeId=...) the way the real Marquez 0.51.1 does, and
can be told to misbehave in the ways the checks must catch. It is a test double for the checks,
NOT the real service. The same checks against the real Marquez are in test_local_services.py.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests

from kfm_conformance.capture.lineage import LineageSink
from kfm_conformance.services.marquez import (
    MarquezClient,
    judge_marquez_run,
    lineage_runs,
    marquez_error,
)
from kfm_conformance.verdict import HarnessError

STATES = {"START": "RUNNING", "COMPLETE": "COMPLETED", "FAIL": "FAILED", "ABORT": "ABORTED"}


class FakeMarquez:
    """A FAKE Marquez for unit tests (see the module docstring).

    ``refuse_types``: event types answered 422 the way Marquez answers an invalid event;
    ``fail_status``/``fail_body``: answer every POST with this status and body;
    ``drop_edges``: build the graph without output edges; ``drop_parents``: forget the
    ``parent`` run facet and the parent job.
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.refuse_types: set[str] = set()
        self.fail_status: int | None = None
        self.fail_body: Any = {"error": "fake failure"}
        self.drop_edges = False
        self.drop_parents = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                event = json.loads(body)
                if fake.fail_status is not None:
                    return self._send(fake.fail_status, fake.fail_body)
                if event.get("eventType") in fake.refuse_types:
                    return self._send(422, {"errors": ["producer must not be null"]})
                fake.events.append(event)
                return self._send(201, {})

            def do_GET(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                parts = [unquote(p) for p in url.path.split("/")]
                if url.path.startswith("/api/v1/namespaces/") and parts[-1] == "runs":
                    return self._send(200, {"runs": fake.runs(parts[4], parts[6])})
                if url.path.startswith("/api/v1/namespaces/") and len(parts) == 7:
                    job = fake.job(parts[4], parts[6])
                    return self._send(200, job) if job else self._send(404, {})
                if url.path.startswith("/api/v1/jobs/runs/"):
                    run = fake.run(parts[-1])
                    return self._send(200, run) if run else self._send(404, {})
                if url.path == "/api/v1/lineage":
                    return self._send(200, {"graph": fake.graph(parse_qs(url.query)["nodeId"][0])})
                return self._send(404, {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def runs(self, namespace: str, job: str) -> list[dict[str, Any]]:
        states: dict[str, str] = {}
        for event in self.events:
            if event["job"] == {"namespace": namespace, "name": job}:
                states[event["run"]["runId"]] = STATES[event["eventType"]]
        return [{"id": run_id, "state": state} for run_id, state in reversed(states.items())]

    def _parent(self, event: dict[str, Any]) -> dict[str, Any] | None:
        parent = (event["run"].get("facets") or {}).get("parent")
        return None if self.drop_parents else parent

    def job(self, namespace: str, job: str) -> dict[str, Any] | None:
        events = [e for e in self.events if e["job"] == {"namespace": namespace, "name": job}]
        if not events:
            return None
        parent = next((p for e in events if (p := self._parent(e))), None)
        return {
            "name": job,
            "parentJobName": parent["job"]["name"] if parent else None,
            "parentJobUuid": str(uuid.uuid5(uuid.NAMESPACE_URL, parent["job"]["name"]))
            if parent
            else None,
        }

    def run(self, run_id: str) -> dict[str, Any] | None:
        events = [e for e in self.events if e["run"]["runId"] == run_id]
        parents = [p for e in self.events if (p := self._parent(e))]
        if not events:  # Marquez makes a record of a parent run that only children named
            if any(p["run"]["runId"] == run_id for p in parents):
                return {"id": run_id, "state": "RUNNING", "facets": {}}
            return None
        facets = {}
        parent = next((p for e in events if (p := self._parent(e))), None)
        if parent:
            facets["parent"] = parent
        return {"id": run_id, "state": STATES[events[-1]["eventType"]], "facets": facets}

    def graph(self, node: str) -> list[dict[str, Any]]:
        in_edges, out_edges = [], []
        for event in self.events:
            job = f"job:{event['job']['namespace']}:{event['job']['name']}"
            if job != node:
                continue
            for dataset in event.get("inputs", []):
                in_edges.append(
                    {
                        "origin": f"dataset:{dataset['namespace']}:{dataset['name']}",
                        "destination": job,
                    }
                )
            for dataset in [] if self.drop_edges else event.get("outputs", []):
                out_edges.append(
                    {
                        "origin": job,
                        "destination": f"dataset:{dataset['namespace']}:{dataset['name']}",
                    }
                )
        return [{"id": node, "type": "JOB", "inEdges": in_edges, "outEdges": out_edges}]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeMarquez]:
    server = FakeMarquez()
    yield server
    server.close()


def _event(
    kind: str,
    run_id: str,
    *,
    outputs: bool = False,
    job: str = "ingest",
    parent: tuple[str, str] | None = None,
) -> dict[str, Any]:
    run: dict[str, Any] = {"runId": run_id}
    if parent is not None:
        parent_job, parent_run = parent
        ref = {"job": {"namespace": "kfm-test", "name": parent_job}, "run": {"runId": parent_run}}
        run["facets"] = {"parent": {**ref, "root": ref}}
    return {
        "eventType": kind,
        "eventTime": datetime.now(UTC).isoformat(),
        "run": run,
        "job": {"namespace": "kfm-test", "name": job},
        "inputs": [{"namespace": "http://127.0.0.1:8080", "name": "/data.json"}],
        "outputs": [{"namespace": "file", "name": "/srv/out/data.parquet"}] if outputs else [],
        "producer": "urn:kfm:test",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/definitions/RunEvent",
    }


def _send_run(fake: FakeMarquez, events: list[dict[str, Any]]) -> list[Any]:
    """Post the events to a LineageSink that tees to the fake; return the run's records."""
    sink = LineageSink(forward_to=fake.url)
    try:
        since = sink.mark()
        for event in events:
            response = requests.post(sink.endpoint, json=event, timeout=10)
            assert response.status_code == 201  # the sink answers as Marquez would
        assert sink.wait_forwarded(10)
        return sink.records(since=since)
    finally:
        sink.close()


def _by_check(findings: list[Any]) -> dict[str, bool]:
    return {f.check: f.ok for f in findings}


def test_a_good_run_passes_every_marquez_check(fake: FakeMarquez) -> None:
    run_id = str(uuid.uuid4())
    records = _send_run(fake, [_event("START", run_id), _event("COMPLETE", run_id, outputs=True)])
    findings, evidence = judge_marquez_run(
        records, exit_ok=True, client=MarquezClient(fake.url), wait_s=1
    )
    assert _by_check(findings) == {
        "marquez.accepted": True,
        "marquez.run-state": True,
        "marquez.lineage-graph": True,
    }
    assert [f["status"] for f in evidence["forwarded"]] == [201, 201]
    assert [r["state"] for r in evidence["runs"]] == ["COMPLETED"]


def test_a_4xx_from_marquez_is_a_finding_against_the_pipeline(fake: FakeMarquez) -> None:
    fake.refuse_types = {"COMPLETE"}
    run_id = str(uuid.uuid4())
    records = _send_run(fake, [_event("START", run_id), _event("COMPLETE", run_id)])
    findings, _ = judge_marquez_run(records, exit_ok=True, client=MarquezClient(fake.url), wait_s=1)
    accepted = next(f for f in findings if f.check == "marquez.accepted")
    assert not accepted.ok
    assert "refused 1 of the run's 2 events" in accepted.message
    # Marquez's own error text is the evidence, in the message and in what was observed.
    assert "producer must not be null" in accepted.message
    assert accepted.observed == ["COMPLETE: 422 producer must not be null"]


def test_a_failed_run_shown_as_completed_is_a_finding(fake: FakeMarquez) -> None:
    run_id = str(uuid.uuid4())
    records = _send_run(fake, [_event("START", run_id), _event("COMPLETE", run_id)])
    findings, _ = judge_marquez_run(
        records, exit_ok=False, client=MarquezClient(fake.url), wait_s=0.5
    )
    state = next(f for f in findings if f.check == "marquez.run-state")
    assert not state.ok and state.expected == "FAILED" and state.observed == "COMPLETED"


class CountingClient(MarquezClient):
    """A client that counts how often the run list was read."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.run_reads = 0

    def runs(self, namespace: str, job: str) -> list[dict[str, Any]] | None:
        self.run_reads += 1
        return super().runs(namespace, job)


@pytest.mark.parametrize(
    ("kinds", "exit_ok", "shown"),
    [
        (["START", "COMPLETE"], False, "COMPLETED"),
        (["START"], True, "RUNNING"),
        (["START", "FAIL", "COMPLETE"], False, "COMPLETED"),
    ],
    ids=["complete-after-a-failure", "no-terminal-event", "complete-last"],
)
def test_a_wrong_state_that_matches_the_last_event_is_judged_without_polling_again(
    fake: FakeMarquez, kinds: list[str], exit_ok: bool, shown: str
) -> None:
    """Marquez shows the state the run's last event sets: it has taken the whole run, so the
    wrong state is judged at the first read, not polled for until the deadline."""
    run_id = str(uuid.uuid4())
    records = _send_run(fake, [_event(kind, run_id) for kind in kinds])
    client = CountingClient(fake.url)
    findings, evidence = judge_marquez_run(
        records, exit_ok=exit_ok, client=client, wait_s=30, poll_s=0.05
    )
    assert _by_check(findings)["marquez.run-state"] is False
    assert [r["state"] for r in evidence["runs"]] == [shown]
    assert client.run_reads == 1


def test_a_state_that_matches_neither_is_polled_for_until_the_deadline(
    fake: FakeMarquez, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Marquez that shows neither the expected state nor the last event's (it has not taken
    the run yet, or it is wrong) is read again until the deadline."""
    run_id = str(uuid.uuid4())
    records = _send_run(fake, [_event("START", run_id), _event("COMPLETE", run_id)])
    monkeypatch.setattr(
        fake, "runs", lambda ns, job: [{"id": run_id, "state": "NEW"}], raising=False
    )
    client = CountingClient(fake.url)
    findings, evidence = judge_marquez_run(
        records, exit_ok=True, client=client, wait_s=0.3, poll_s=0.05
    )
    assert _by_check(findings)["marquez.run-state"] is False
    assert [r["state"] for r in evidence["runs"]] == ["NEW"]
    assert client.run_reads > 1


def test_a_run_that_never_terminates_is_not_completed(fake: FakeMarquez) -> None:
    run_id = str(uuid.uuid4())
    records = _send_run(fake, [_event("START", run_id)])
    findings, _ = judge_marquez_run(
        records, exit_ok=True, client=MarquezClient(fake.url), wait_s=0.5
    )
    assert _by_check(findings)["marquez.run-state"] is False


def test_a_missing_output_edge_in_the_graph_is_a_finding(fake: FakeMarquez) -> None:
    fake.drop_edges = True
    run_id = str(uuid.uuid4())
    records = _send_run(fake, [_event("START", run_id), _event("COMPLETE", run_id, outputs=True)])
    findings, _ = judge_marquez_run(
        records, exit_ok=True, client=MarquezClient(fake.url), wait_s=0.5
    )
    graph = next(f for f in findings if f.check == "marquez.lineage-graph")
    assert not graph.ok
    assert graph.observed == {
        "missing": [("job:kfm-test:ingest", "dataset:file:/srv/out/data.parquet")]
    }


def test_a_5xx_or_no_answer_from_marquez_is_a_harness_error(fake: FakeMarquez) -> None:
    fake.fail_status = 503
    run_id = str(uuid.uuid4())
    records = _send_run(fake, [_event("START", run_id)])
    with pytest.raises(HarnessError, match="Marquez did not take an event"):
        judge_marquez_run(records, exit_ok=True, client=MarquezClient(fake.url))
    fake.close()
    records = _send_run(fake, [_event("START", run_id)])  # nobody listens any more
    assert records[0].forward_error
    with pytest.raises(HarnessError):
        judge_marquez_run(records, exit_ok=True, client=MarquezClient(fake.url))


def test_no_events_means_nothing_to_check(fake: FakeMarquez) -> None:
    findings, evidence = judge_marquez_run([], exit_ok=True, client=MarquezClient(fake.url))
    assert findings == [] and evidence == {"forwarded": []}


def test_a_5xx_that_carries_a_client_error_is_marquez_refusing_the_event(fake: FakeMarquez) -> None:
    """Marquez answers an event it cannot deserialize with HTTP 500 and a 400 body."""
    fake.fail_status = 500
    fake.fail_body = {"code": 400, "message": "Cannot deserialize value of type `ZonedDateTime`"}
    run_id = str(uuid.uuid4())
    records = _send_run(fake, [_event("START", run_id)])
    findings, _ = judge_marquez_run(records, exit_ok=True, client=MarquezClient(fake.url))
    accepted = next(f for f in findings if f.check == "marquez.accepted")
    assert not accepted.ok
    assert "Cannot deserialize value" in accepted.message


def _dag_run(*, task_state: str = "COMPLETE", dag_state: str = "COMPLETE") -> list[dict[str, Any]]:
    """An Airflow-shaped pipeline run: a DAG run, two task runs naming it as their parent."""
    dag, extract, load = (str(uuid.uuid4()) for _ in range(3))
    parent = ("kfm_dag", dag)
    return [
        _event("START", dag, job="kfm_dag"),
        _event("START", extract, job="kfm_dag.extract", parent=parent),
        _event("COMPLETE", extract, job="kfm_dag.extract", parent=parent),
        _event("START", load, job="kfm_dag.load", parent=parent, outputs=True),
        _event(task_state, load, job="kfm_dag.load", parent=parent, outputs=True),
        _event(dag_state, dag, job="kfm_dag"),
    ]


def test_a_run_hierarchy_is_judged_per_run_and_each_child_is_linked_to_its_parent(
    fake: FakeMarquez,
) -> None:
    records = _send_run(fake, _dag_run())
    findings, evidence = judge_marquez_run(
        records, exit_ok=True, client=MarquezClient(fake.url), wait_s=1
    )
    assert _by_check(findings) == {
        "marquez.accepted": True,
        "marquez.run-state": True,
        "marquez.parent-run": True,
        "marquez.lineage-graph": True,
    }
    assert [r["job"] for r in evidence["runs"]] == ["kfm_dag", "kfm_dag.extract", "kfm_dag.load"]
    assert {p["job"] for p in evidence["parents"]} == {"kfm_dag.extract", "kfm_dag.load"}
    graph = next(f for f in findings if f.check == "marquez.lineage-graph")
    assert (
        "job:kfm-test:kfm_dag.load",
        "dataset:file:/srv/out/data.parquet",
    ) in graph.expected


def test_a_child_run_marquez_does_not_link_to_its_parent_is_a_finding(fake: FakeMarquez) -> None:
    fake.drop_parents = True
    records = _send_run(fake, _dag_run())
    findings, _ = judge_marquez_run(
        records, exit_ok=True, client=MarquezClient(fake.url), wait_s=0.5
    )
    parent = next(f for f in findings if f.check == "marquez.parent-run")
    assert not parent.ok
    assert "names parent run None" in parent.message


def test_the_root_run_carries_the_exit_and_each_task_its_own_terminal_event(
    fake: FakeMarquez,
) -> None:
    """A failed DAG run: the root must be FAILED; a task that FAILed is FAILED, one that
    COMPLETEd is COMPLETED. A DAG run that reports COMPLETE while the pipeline failed is a
    finding, whatever its tasks say."""
    records = _send_run(fake, _dag_run(task_state="FAIL", dag_state="FAIL"))
    findings, evidence = judge_marquez_run(
        records, exit_ok=False, client=MarquezClient(fake.url), wait_s=0.5
    )
    assert _by_check(findings)["marquez.run-state"] is True
    assert [r["expected"] for r in evidence["runs"]] == ["FAILED", "COMPLETED", "FAILED"]

    records = _send_run(fake, _dag_run(task_state="FAIL", dag_state="COMPLETE"))
    findings, _ = judge_marquez_run(
        records, exit_ok=False, client=MarquezClient(fake.url), wait_s=0.5
    )
    state = next(f for f in findings if f.check == "marquez.run-state")
    assert not state.ok
    assert "of job kfm_dag: Marquez shows it as COMPLETED, expected FAILED" in state.message


def test_events_are_grouped_per_run_with_their_parent() -> None:
    events = _dag_run()
    runs = lineage_runs(events)
    assert [r.job for r in runs] == [
        ("kfm-test", "kfm_dag"),
        ("kfm-test", "kfm_dag.extract"),
        ("kfm-test", "kfm_dag.load"),
    ]
    dag = runs[0].run_id
    assert [r.parent for r in runs] == [None, (dag, "kfm_dag"), (dag, "kfm_dag")]
    assert [r.terminal_state for r in runs] == ["COMPLETED", "COMPLETED", "COMPLETED"]
    assert runs[2].datasets("outputs") == ["dataset:file:/srv/out/data.parquet"]
    assert runs[1].datasets("outputs") == []


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (
            '{"errors":["producer must not be null","eventTime must not be null"]}',
            "producer must not be null; eventTime must not be null",
        ),
        ('{"code":400,"message":"Cannot deserialize\\n at [Source]"}', "Cannot deserialize"),
        ("plain text", "plain text"),
        ("", ""),
    ],
)
def test_marquez_error_text(body: str, text: str) -> None:
    assert marquez_error(body) == text
