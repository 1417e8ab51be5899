"""The Marquez re-verification checks (kfm_conformance.services.marquez), against a FAKE Marquez.

The real Marquez cannot be built on this project's machines (services/README.md), so these unit
tests use ``FakeMarquez``: a few dozen lines that answer the three endpoints the checks read
(POST /api/v1/lineage, GET .../jobs/{job}/runs, GET /api/v1/lineage?nodeId=...) the way the
Marquez API documents them. It is a test double for the checks, NOT the real service: nothing
here says anything about Marquez itself. The real-service test is in test_local_services.py
(skipped while Marquez is blocked, see blocked.py).
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
from kfm_conformance.services.marquez import MarquezClient, judge_marquez_run
from kfm_conformance.verdict import HarnessError

STATES = {"START": "RUNNING", "COMPLETE": "COMPLETED", "FAIL": "FAILED", "ABORT": "ABORTED"}


class FakeMarquez:
    """A FAKE Marquez for unit tests (see the module docstring).

    ``refuse_types``: event types answered 400 (an "invalid event"); ``fail_status``: answer
    every POST with this status; ``drop_edges``: build the graph without output edges.
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.refuse_types: set[str] = set()
        self.fail_status: int | None = None
        self.drop_edges = False
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
                    return self._send(fake.fail_status, {"error": "fake failure"})
                if event.get("eventType") in fake.refuse_types:
                    return self._send(400, {"code": 400, "message": "fake: invalid event"})
                fake.events.append(event)
                return self._send(201, {})

            def do_GET(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                parts = [unquote(p) for p in url.path.split("/")]
                if url.path.startswith("/api/v1/namespaces/") and parts[-1] == "runs":
                    return self._send(200, {"runs": fake.runs(parts[4], parts[6])})
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


def _event(kind: str, run_id: str, *, outputs: bool = False) -> dict[str, Any]:
    return {
        "eventType": kind,
        "eventTime": datetime.now(UTC).isoformat(),
        "run": {"runId": run_id},
        "job": {"namespace": "kfm-test", "name": "ingest"},
        "inputs": [{"namespace": "http://127.0.0.1:8080", "name": "/data.json"}],
        "outputs": [{"namespace": "file", "name": "/work/out/data.parquet"}] if outputs else [],
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
        records, exit_ok=True, client=MarquezClient(fake.url), run_id=run_id, wait_s=1
    )
    assert _by_check(findings) == {
        "marquez.accepted": True,
        "marquez.run-state": True,
        "marquez.lineage-graph": True,
    }
    assert [f["status"] for f in evidence["forwarded"]] == [201, 201]
    assert evidence["run"]["state"] == "COMPLETED"


def test_a_4xx_from_marquez_is_a_finding_against_the_pipeline(fake: FakeMarquez) -> None:
    fake.refuse_types = {"COMPLETE"}
    run_id = str(uuid.uuid4())
    records = _send_run(fake, [_event("START", run_id), _event("COMPLETE", run_id)])
    findings, _ = judge_marquez_run(
        records, exit_ok=True, client=MarquezClient(fake.url), run_id=run_id, wait_s=1
    )
    accepted = next(f for f in findings if f.check == "marquez.accepted")
    assert not accepted.ok
    assert "refused 1 of the run's 2 events" in accepted.message
    assert "COMPLETE: 400" in accepted.observed[0]


def test_a_failed_run_shown_as_completed_is_a_finding(fake: FakeMarquez) -> None:
    run_id = str(uuid.uuid4())
    records = _send_run(fake, [_event("START", run_id), _event("COMPLETE", run_id)])
    findings, _ = judge_marquez_run(
        records, exit_ok=False, client=MarquezClient(fake.url), run_id=run_id, wait_s=0.5
    )
    state = next(f for f in findings if f.check == "marquez.run-state")
    assert not state.ok and state.expected == "FAILED" and state.observed == "COMPLETED"


def test_a_run_that_never_terminates_is_not_completed(fake: FakeMarquez) -> None:
    run_id = str(uuid.uuid4())
    records = _send_run(fake, [_event("START", run_id)])
    findings, _ = judge_marquez_run(
        records, exit_ok=True, client=MarquezClient(fake.url), run_id=run_id, wait_s=0.5
    )
    assert _by_check(findings)["marquez.run-state"] is False


def test_a_missing_output_edge_in_the_graph_is_a_finding(fake: FakeMarquez) -> None:
    fake.drop_edges = True
    run_id = str(uuid.uuid4())
    records = _send_run(fake, [_event("START", run_id), _event("COMPLETE", run_id, outputs=True)])
    findings, _ = judge_marquez_run(
        records, exit_ok=True, client=MarquezClient(fake.url), run_id=run_id, wait_s=0.5
    )
    graph = next(f for f in findings if f.check == "marquez.lineage-graph")
    assert not graph.ok
    assert graph.observed == {
        "missing": [("job:kfm-test:ingest", "dataset:file:/work/out/data.parquet")]
    }


def test_a_5xx_or_no_answer_from_marquez_is_a_harness_error(fake: FakeMarquez) -> None:
    fake.fail_status = 503
    run_id = str(uuid.uuid4())
    records = _send_run(fake, [_event("START", run_id)])
    with pytest.raises(HarnessError, match="Marquez did not take an event"):
        judge_marquez_run(records, exit_ok=True, client=MarquezClient(fake.url), run_id=run_id)
    fake.close()
    records = _send_run(fake, [_event("START", run_id)])  # nobody listens any more
    assert records[0].forward_error
    with pytest.raises(HarnessError):
        judge_marquez_run(records, exit_ok=True, client=MarquezClient(fake.url), run_id=run_id)


def test_no_events_means_nothing_to_check(fake: FakeMarquez) -> None:
    findings, evidence = judge_marquez_run(
        [], exit_ok=True, client=MarquezClient(fake.url), run_id=None
    )
    assert findings == [] and evidence == {"forwarded": []}
