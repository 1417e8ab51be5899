"""The lineage sink, fed by the real openlineage-python client configured only by environment.

The client runs in a subprocess whose environment holds no OpenLineage setting but the ones a
test gives it (``OPENLINEAGE_URL`` and ``OPENLINEAGE_NAMESPACE``, plus transport options for
the gzip and fault cases), so the env-based configuration is the genuine one.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from kfm_conformance.capture.lineage import (
    LineageSink,
    events_by_run,
    events_by_scenario,
    runs_of_scenario,
)

CLIENT = r"""
import json, os, sys, time
from datetime import datetime, timezone
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.uuid import generate_new_uuid

plan = json.loads(sys.argv[1])
client = OpenLineageClient()
run_id = str(generate_new_uuid())
job = Job(namespace=os.environ.get("OPENLINEAGE_NAMESPACE", "default"), name="kfm.ingest")
inputs = [InputDataset(namespace="http://127.0.0.1:8080", name="/data/stations.csv")]
errors = []
started = time.monotonic()
for kind in plan["events"]:
    done = kind == "COMPLETE"
    outputs = [OutputDataset(namespace="file", name="/w/out/data.parquet")] if done else []
    event = RunEvent(
        eventType=RunState[kind], eventTime=datetime.now(timezone.utc).isoformat(),
        run=Run(runId=run_id), job=job, inputs=inputs, outputs=outputs,
    )
    try:
        client.emit(event)
    except Exception as exc:
        errors.append(type(exc).__name__)
print(json.dumps({
    "run_id": run_id, "errors": errors, "elapsed": time.monotonic() - started,
    "transport": type(client.transport).__name__,
}))
"""


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENLINEAGE", "OTEL_")) and k != "PYTHONWARNINGS"
    }
    env["HOME"] = str(tmp_path)  # no ~/.openlineage/openlineage.yml
    env.update(extra)
    return env


def run_client(
    tmp_path: Path, env: dict[str, str], events: list[str], timeout: float = 60
) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, json.dumps({"events": events})],
        env=env,
        cwd=tmp_path,  # no ./openlineage.yml
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture
def sink() -> Iterator[LineageSink]:
    server = LineageSink()
    yield server
    server.close()


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_client_configured_by_env_only(sink: LineageSink, tmp_path: Path) -> None:
    env = _clean_env(tmp_path, **sink.env("kfm-test"))
    assert set(sink.env("kfm-test")) == {"OPENLINEAGE_URL", "OPENLINEAGE_NAMESPACE"}

    result = run_client(tmp_path, env, ["START", "COMPLETE"])

    assert result["errors"] == []
    records = sink.records()
    assert [r.status for r in records] == [201, 201]
    for record in records:
        assert record.path == "/api/v1/lineage"
        assert record.content_type == "application/json"
        assert record.size > 100  # bytes on the wire
        assert record.error is None
        assert record.arrival > 0
    events = sink.events()
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert {e["run"]["runId"] for e in events} == {result["run_id"]}
    assert {e["job"]["namespace"] for e in events} == {"kfm-test"}
    assert sink.events(result["run_id"]) == events
    assert sink.events(lambda e: e["eventType"] == "COMPLETE") == events[1:]
    assert sink.events("another-run") == []
    assert events_by_run(events) == {result["run_id"]: events}
    assert sink.runs() == [events]
    assert records[0].to_json()["event"] == events[0]


def test_gzip_bodies_are_decoded(sink: LineageSink, tmp_path: Path) -> None:
    env = _clean_env(
        tmp_path,
        OPENLINEAGE__TRANSPORT__TYPE="http",
        OPENLINEAGE__TRANSPORT__URL=sink.url,
        OPENLINEAGE__TRANSPORT__COMPRESSION="gzip",
    )
    result = run_client(tmp_path, env, ["START", "FAIL"])

    assert result["errors"] == []
    records = sink.records()
    assert [r.content_encoding for r in records] == ["gzip", "gzip"]
    for record in records:
        assert record.event is not None
        assert record.size < len(json.dumps(record.event).encode())
    assert [e["eventType"] for e in sink.events()] == ["START", "FAIL"]


def test_bad_requests_are_recorded_but_are_not_events(sink: LineageSink) -> None:
    endpoint = sink.endpoint
    assert _post(endpoint, b"not json", {"Content-Type": "application/json"}) == 400
    assert _post(endpoint, b"[1, 2]", {"Content-Type": "application/json"}) == 400
    assert _post(endpoint, b"garbage", {"Content-Encoding": "gzip"}) == 400
    assert _post(sink.url + "/api/v1/other", b"{}") == 404
    good = gzip.compress(json.dumps({"eventType": "START", "run": {"runId": "r"}}).encode())
    assert _post(endpoint, good, {"Content-Encoding": "gzip"}) == 201

    records = sink.records()
    assert [r.status for r in records] == [400, 400, 400, 404, 201]
    assert "not JSON" in (records[0].error or "")
    assert "not an object" in (records[1].error or "")
    assert "gzip" in (records[2].error or "")
    assert "unexpected" in (records[3].error or "")
    assert sink.events() == [{"eventType": "START", "run": {"runId": "r"}}]


def test_scenarios_marks_and_clear(sink: LineageSink, tmp_path: Path) -> None:
    env = _clean_env(tmp_path, **sink.env("kfm-test"))
    with sink.scenario("happy"):
        first = run_client(tmp_path, env, ["START", "COMPLETE"])
    mark = sink.mark()
    sink.set_scenario("rerun")
    second = run_client(tmp_path, env, ["START", "COMPLETE"])
    sink.set_scenario(None)

    grouped = events_by_scenario(sink.records())
    assert {e["run"]["runId"] for e in grouped["happy"]} == {first["run_id"]}
    assert {e["run"]["runId"] for e in grouped["rerun"]} == {second["run_id"]}
    assert [run[0]["run"]["runId"] for run in runs_of_scenario(sink.records(), "rerun")] == [
        second["run_id"]
    ]
    assert {e["run"]["runId"] for e in sink.events(since=mark)} == {second["run_id"]}
    assert len(sink.events(scenario="happy")) == 2

    sink.clear()
    assert sink.records() == []
    assert sink.mark() == mark + 2


def test_forward_to_marquez_records_its_answer(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/api/v1/lineage", method="POST").respond_with_json(
        {"stored": True}, status=201
    )
    sink = LineageSink(forward_to=httpserver.url_for("/"))
    try:
        env = _clean_env(tmp_path, **sink.env("kfm-test"))
        run_client(tmp_path, env, ["START", "COMPLETE"])
        assert sink.wait_forwarded(10)
        records = sink.records()
        assert [r.forward_status for r in records] == [201, 201]
        assert all(json.loads(r.forward_body or "{}") == {"stored": True} for r in records)
        forwarded = [json.loads(req.get_data()) for req, _ in httpserver.log]
        assert forwarded == sink.events()  # same events, same order
    finally:
        sink.close()


def test_forward_errors_are_recorded_without_slowing_the_client(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    httpserver.expect_request("/api/v1/lineage").respond_with_data("bad event", status=422)
    rejecting = LineageSink(forward_to=httpserver.url_for("/"))
    unreachable = LineageSink(forward_to=f"http://127.0.0.1:{_closed_port()}", forward_timeout_s=1)
    try:
        for sink in (rejecting, unreachable):
            env = _clean_env(tmp_path, **sink.env("kfm-test"))
            result = run_client(tmp_path, env, ["START", "COMPLETE"])
            assert result["errors"] == []
            assert sink.wait_forwarded(10)
            assert [r.status for r in sink.records()] == [201, 201]
        assert [r.forward_status for r in rejecting.records()] == [422, 422]
        assert rejecting.records()[0].forward_body == "bad event"
        assert all(r.forward_error for r in unreachable.records())
        assert all(r.forward_status is None for r in unreachable.records())
    finally:
        rejecting.close()
        unreachable.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- fault modes: the client never waits longer than its own timeout and retries allow ---------

FAST_FAIL = {
    # the client's own knobs, set by env: 0.5 s per attempt, at most 1 retry
    "OPENLINEAGE__TRANSPORT__TYPE": "http",
    "OPENLINEAGE__TRANSPORT__TIMEOUT": "0.5",
    "OPENLINEAGE__TRANSPORT__RETRY": json.dumps({"total": 1, "backoff_factor": 0.05}),
}


def _fault_env(sink: LineageSink, tmp_path: Path) -> dict[str, str]:
    return _clean_env(tmp_path, OPENLINEAGE__TRANSPORT__URL=sink.url, **FAST_FAIL)


def test_latency_below_the_client_timeout_is_waited_out(sink: LineageSink, tmp_path: Path) -> None:
    sink.set_fault(latency_s=0.2)
    env = _clean_env(tmp_path, **sink.env("kfm-test"))
    result = run_client(tmp_path, env, ["START", "COMPLETE"])
    assert result["errors"] == []
    assert 0.4 <= result["elapsed"] < 5
    assert len(sink.events()) == 2


def test_latency_beyond_the_client_timeout_does_not_hang(sink: LineageSink, tmp_path: Path) -> None:
    sink.set_fault(latency_s=30)
    result = run_client(tmp_path, _fault_env(sink, tmp_path), ["START", "COMPLETE"], timeout=30)
    # 2 events x 2 attempts x 0.5 s, plus a little
    assert result["elapsed"] < 4
    assert len(result["errors"]) == 2  # emit() raises to the caller: it does not swallow
    # the slow sink stored every attempt, as a slow Marquez would: the retry is a duplicate
    assert [r.status for r in sink.records()] == [201] * 4
    started = time.monotonic()
    sink.close()  # handlers still sleeping in the fault delay must not hold close()
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("status", [500, 503])
def test_error_status_does_not_hang(sink: LineageSink, tmp_path: Path, status: int) -> None:
    sink.set_fault(status=status)
    result = run_client(tmp_path, _fault_env(sink, tmp_path), ["START", "COMPLETE"], timeout=30)
    assert result["elapsed"] < 4
    assert len(result["errors"]) == 2
    records = sink.records()
    assert records and all(r.status == status for r in records)
    assert len(records) == 4  # each event tried twice (one retry)
    assert sink.events() == []  # refused posts are not events


def test_down_refuses_connections_then_recovers(sink: LineageSink, tmp_path: Path) -> None:
    port = sink.port
    sink.set_fault(down=True)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    result = run_client(tmp_path, _fault_env(sink, tmp_path), ["START", "COMPLETE"], timeout=30)
    assert result["elapsed"] < 4
    assert len(result["errors"]) == 2
    assert sink.records() == []

    sink.clear_fault()
    assert sink.port == port
    result = run_client(tmp_path, _fault_env(sink, tmp_path), ["START", "COMPLETE"], timeout=30)
    assert result["errors"] == []
    assert len(sink.events()) == 2
