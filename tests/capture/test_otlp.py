"""The OTLP receiver, fed by the real OpenTelemetry SDK and OTLP/HTTP exporter configured by env.

The SDK runs in a subprocess and configures itself from ``OTEL_*`` variables alone (the SDK's
own env configurator, as ``opentelemetry-instrument`` uses it), so endpoint, protocol,
compression, service name and resource attributes all come from the environment.
"""

from __future__ import annotations

import gzip
import json
import os
import re
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
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from kfm_conformance.capture.otlp import OTLPReceiver, protobuf_to_otlp_json, spans_from_otlp_json

RUN_ID = "0190d3a2-6c4e-7b8f-9a1b-2c3d4e5f6a7b"

PIPELINE = r"""
import json, sys, time
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
_OTelSDKConfigurator().configure()
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

fail = sys.argv[1] == "fail"
tracer = trace.get_tracer("kfm.pipeline")
rows = metrics.get_meter("kfm.pipeline").create_counter("kfm.rows.written")
started = time.monotonic()
with tracer.start_as_current_span("ingest") as root:
    root.set_attribute("openlineage.run.id", sys.argv[2])
    with tracer.start_as_current_span("fetch", kind=SpanKind.CLIENT) as span:
        span.set_attribute("http.request.method", "GET")
        span.set_attribute("url.full", "http://127.0.0.1:8080/data/stations.csv")
        span.set_attribute("http.response.status_code", 200)
    with tracer.start_as_current_span("transform") as span:
        span.set_attribute("kfm.rows", 3)
        span.set_attribute("kfm.columns", ["id", "name"])
    with tracer.start_as_current_span("publish") as span:
        rows.add(3)
        if fail:
            span.record_exception(RuntimeError("disk full"))
            span.set_status(Status(StatusCode.ERROR, "disk full"))
    if fail:
        root.set_status(Status(StatusCode.ERROR, "publish failed"))
trace.get_tracer_provider().shutdown()
metrics.get_meter_provider().shutdown()
print(json.dumps({"elapsed": time.monotonic() - started}))
"""


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENLINEAGE"))}
    env["HOME"] = str(tmp_path)
    env.update(extra)
    return env


def run_pipeline(env: dict[str, str], outcome: str = "ok", timeout: float = 60) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", PIPELINE, outcome, RUN_ID],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["stderr"] = done.stderr
    return result


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    server = OTLPReceiver()
    yield server
    server.close()


HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def test_sdk_configured_by_env_only(receiver: OTLPReceiver, tmp_path: Path) -> None:
    env = _clean_env(
        tmp_path, OTEL_EXPORTER_OTLP_COMPRESSION="gzip", **receiver.env("kfm-pipeline", "s-1")
    )
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == "kfm.scenario.id=s-1"

    run_pipeline(env, "fail")

    records = receiver.records()
    assert {r.signal for r in records} == {"traces", "metrics"}
    for record in records:
        assert record.status == 200
        assert record.content_type == "application/x-protobuf"
        assert record.content_encoding == "gzip"
        assert record.size > 0
    spans = receiver.spans()
    by_name = {s["name"]: s for s in spans}
    assert set(by_name) == {"ingest", "fetch", "transform", "publish"}
    root = by_name["ingest"]
    assert root["parent_span_id"] is None
    assert root["status_code"] == "ERROR"
    assert root["status_message"] == "publish failed"
    assert root["attributes"] == {"openlineage.run.id": RUN_ID}
    for span in spans:
        assert HEX32.match(span["trace_id"]) and span["trace_id"] == root["trace_id"]
        assert HEX16.match(span["span_id"])
        assert span["resource"]["service.name"] == "kfm-pipeline"
        assert span["resource"]["kfm.scenario.id"] == "s-1"
        assert span["scope"] == "kfm.pipeline"
        assert 0 < span["start_ns"] <= span["end_ns"]
        if span is not root:
            assert span["parent_span_id"] == root["span_id"]
    assert by_name["fetch"]["kind"] == "CLIENT"
    assert by_name["fetch"]["attributes"]["http.response.status_code"] == 200
    assert by_name["transform"]["kind"] == "INTERNAL"
    assert by_name["transform"]["attributes"] == {"kfm.rows": 3, "kfm.columns": ["id", "name"]}
    assert by_name["publish"]["events"][0]["name"] == "exception"
    assert receiver.metric_names() == ["kfm.rows.written"]
    assert receiver.spans(scenario="s-1") == spans
    assert receiver.spans(scenario="other") == []


def test_evidence_is_otlp_json_with_hex_ids(receiver: OTLPReceiver, tmp_path: Path) -> None:
    run_pipeline(_clean_env(tmp_path, **receiver.env("kfm-pipeline", "s-1")))
    docs = receiver.requests("traces")
    assert len(docs) == 1
    span = docs[0]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert HEX32.match(span["traceId"]) and HEX16.match(span["spanId"])
    assert isinstance(span["kind"], int)
    assert isinstance(span["startTimeUnixNano"], str)  # 64-bit integers as strings
    json.dumps(receiver.records()[0].to_json())  # the whole record is JSON evidence
    assert receiver.requests("metrics")[0]["resourceMetrics"]


def test_collector_file_exporter_lines_flatten_the_same(
    receiver: OTLPReceiver, tmp_path: Path
) -> None:
    run_pipeline(_clean_env(tmp_path, **receiver.env("kfm-pipeline", "s-1")), "fail")
    lines = tmp_path / "traces.jsonl"
    lines.write_text("\n".join(json.dumps(d) for d in receiver.requests("traces")) + "\n")

    assert spans_from_otlp_json(lines.read_text().splitlines()) == receiver.spans()

    # a Collector may also write enums by name: they normalise the same way
    named = lines.read_text().replace('"kind": 3', '"kind": "SPAN_KIND_CLIENT"')
    named = named.replace('"code": 2', '"code": "STATUS_CODE_ERROR"')
    assert spans_from_otlp_json(named.splitlines()) == receiver.spans()


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.headers["Content-Type"], exc.read()


def test_answers_are_valid_export_responses_and_json_is_accepted(
    receiver: OTLPReceiver, tmp_path: Path
) -> None:
    run_pipeline(_clean_env(tmp_path, **receiver.env("kfm-pipeline", "s-1")))
    from_protobuf = receiver.spans()
    document = receiver.requests("traces")[0]
    message = trace_service_pb2.ExportTraceServiceRequest()
    message.ParseFromString(_protobuf_of(document))
    receiver.clear()

    status, content_type, body = _post(
        receiver.url + "/v1/traces",
        gzip.compress(message.SerializeToString()),
        {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    assert (status, content_type) == (200, "application/x-protobuf")
    trace_service_pb2.ExportTraceServiceResponse().ParseFromString(body)

    status, content_type, body = _post(
        receiver.url + "/v1/traces",
        json.dumps(document).encode(),
        {"Content-Type": "application/json"},
    )
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == {}
    assert receiver.spans() == from_protobuf + from_protobuf


def _protobuf_of(document: dict[str, Any]) -> bytes:
    """OTLP JSON back to protobuf (hex ids to base64, as the proto3 JSON mapping wants)."""
    import base64

    from google.protobuf import json_format

    def to_b64(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: base64.b64encode(bytes.fromhex(v)).decode()
                if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str)
                else to_b64(v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [to_b64(v) for v in node]
        return node

    message = json_format.ParseDict(to_b64(document), trace_service_pb2.ExportTraceServiceRequest())
    assert protobuf_to_otlp_json(message) == document
    return message.SerializeToString()


def test_bad_requests_are_refused(receiver: OTLPReceiver) -> None:
    url = receiver.url
    assert (
        _post(url + "/v1/traces", b"\xff\xff\xff", {"Content-Type": "application/x-protobuf"})[0]
        == 400
    )
    assert _post(url + "/v1/traces", b"{", {"Content-Type": "application/json"})[0] == 400
    assert _post(url + "/v1/traces", b"x", {"Content-Type": "text/plain"})[0] == 415
    assert _post(url + "/v1/other", b"", {"Content-Type": "application/x-protobuf"})[0] == 404
    assert _post(url + "/v1/logs", b"", {"Content-Type": "application/x-protobuf"})[0] == 200
    assert [r.status for r in receiver.records()] == [400, 400, 415, 404, 200]
    assert all(r.error for r in receiver.records()[:4])
    assert receiver.spans() == []
    assert receiver.requests("traces") == []


# -- fault modes: the exporter gives up within its own timeout ------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    "fault",
    [
        {"latency_s": 30.0},
        {"status": 503},  # retryable: backoff until the deadline
        {"status": 500},  # not retryable: gives up at once
        {"down": True},  # connection refused: retried until the deadline
    ],
    ids=["latency", "503", "500", "down"],
)
def test_faults_do_not_hang_the_pipeline(
    receiver: OTLPReceiver, tmp_path: Path, fault: dict[str, Any]
) -> None:
    receiver.set_fault(**fault)
    # the exporter's own timeout (this SDK reads OTEL_EXPORTER_OTLP_TIMEOUT in seconds)
    env = _clean_env(tmp_path, OTEL_EXPORTER_OTLP_TIMEOUT="1", **receiver.env("kfm", "s-1"))
    started = time.monotonic()
    run_pipeline(env, timeout=30)
    # One export of traces and one of metrics, each bounded by the 1 s deadline, plus start-up
    # (about 3 s on a quiet machine). The bound only tells "bounded" from "hung on the sink"
    # (the exporters' default would wait 10 s per export and retry); it is no benchmark, and
    # it is generous because the machine may be loaded.
    assert time.monotonic() - started < 20
    if fault.get("down"):
        assert receiver.records() == []
    elif fault.get("status"):
        assert receiver.records()
        assert receiver.spans() == []  # nothing was accepted
    else:
        assert receiver.spans()  # a slow receiver stores what it got, then answers late
    started = time.monotonic()
    receiver.close()
    assert time.monotonic() - started < 2


def test_down_then_up_on_the_same_port(receiver: OTLPReceiver, tmp_path: Path) -> None:
    port = receiver.port
    receiver.set_fault(down=True)
    receiver.clear_fault()
    assert receiver.port == port
    run_pipeline(_clean_env(tmp_path, **receiver.env("kfm", "s-1")))
    assert len(receiver.spans()) == 4


def test_unreachable_endpoint_is_bounded_too(tmp_path: Path) -> None:
    env = _clean_env(
        tmp_path,
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{_closed_port()}",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
        OTEL_SERVICE_NAME="kfm",
    )
    started = time.monotonic()
    run_pipeline(env, timeout=30)
    assert time.monotonic() - started < 20  # bounded, not hung (see above); no benchmark
