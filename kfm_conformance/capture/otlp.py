"""The embedded OTLP/HTTP receiver, and flattening of OTLP JSON into span records.

:class:`OTLPReceiver` answers ``POST /v1/traces``, ``/v1/metrics`` and ``/v1/logs`` like an
OpenTelemetry Collector: ``application/x-protobuf`` bodies are decoded with the
``opentelemetry-proto`` messages (``application/json`` is accepted too), ``gzip`` and
``deflate`` are undone, and the answer is a valid empty ``Export*ServiceResponse`` in the
request's encoding. Bodies are parsed on arrival (so garbage gets a ``400``) but converted to
OTLP JSON only when read, which keeps each request cheap.

Evidence is OTLP JSON, as a Collector's file exporter writes it: ``traceId``/``spanId``/
``parentSpanId`` as hex, enums as integers, 64-bit integers as strings.
:func:`spans_from_otlp_json` flattens such documents (ours, or a real Collector's JSON lines)
into :class:`SpanRecord` dicts with one code path.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from kfm_conformance.capture.httpsink import CaptureServer, Limits, SinkRequest, SinkResponse

SCENARIO_ATTRIBUTE = "kfm.scenario.id"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"

_SIGNALS: dict[str, tuple[str, type[Message], type[Message]]] = {
    "/v1/traces": (
        "traces",
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "/v1/metrics": (
        "metrics",
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "/v1/logs": (
        "logs",
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
}
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})
_KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
_STATUS = ("UNSET", "OK", "ERROR")


class SpanRecord(TypedDict):
    """One span, flattened: ids as hex, attributes and resource attributes as plain dicts."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    status_code: str
    status_message: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    start_ns: int
    end_ns: int
    events: list[dict[str, Any]]


@dataclass
class OTLPRecord:
    """One export request as received."""

    seq: int
    arrival: float
    signal: str
    path: str
    content_type: str
    content_encoding: str | None
    size: int
    status: int
    error: str | None = None
    decoded_size: int = 0
    limit: str | None = None
    """The cap the request broke (it was refused with 413), or None."""
    _message: Message | None = field(default=None, repr=False)
    _document: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def accepted(self) -> bool:
        parsed = self._message is not None or self._document is not None
        return 200 <= self.status < 300 and parsed

    @property
    def document(self) -> dict[str, Any] | None:
        """The request as OTLP JSON (converted on first use)."""
        if self._document is None and self._message is not None:
            self._document = protobuf_to_otlp_json(self._message)
        return self._document

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "arrival": self.arrival,
            "signal": self.signal,
            "path": self.path,
            "content_type": self.content_type,
            "content_encoding": self.content_encoding,
            "size": self.size,
            "status": self.status,
            "error": self.error,
            "decoded_size": self.decoded_size,
            "limit": self.limit,
            "document": self.document,
        }


def _b64_to_hex(value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return value


def _fix_ids(node: Any) -> Any:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                node[key] = _b64_to_hex(value)
            else:
                _fix_ids(value)
    elif isinstance(node, list):
        for item in node:
            _fix_ids(item)
    return node


def protobuf_to_otlp_json(message: Message) -> dict[str, Any]:
    """OTLP JSON for a protobuf export request: hex ids, enums as integers."""
    document = json_format.MessageToDict(message, use_integers_for_enums=True)
    return _fix_ids(document)


def any_value(value: Any) -> Any:
    """A plain Python value for an OTLP JSON ``AnyValue``."""
    if not isinstance(value, dict):
        return value
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [any_value(v) for v in (value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in value:
        return attributes_dict((value["kvlistValue"] or {}).get("values", []))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def attributes_dict(attributes: Iterable[dict[str, Any]] | None) -> dict[str, Any]:
    """``[{"key": k, "value": AnyValue}]`` as ``{k: value}``."""
    return {kv.get("key", ""): any_value(kv.get("value", {})) for kv in attributes or []}


def _enum_name(value: Any, names: tuple[str, ...], prefix: str) -> str:
    if isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    if isinstance(value, str):
        if value.isdigit() and int(value) < len(names):
            return names[int(value)]
        return value.removeprefix(prefix)
    return names[0]


def _hex_id(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return value.lower()


def spans_from_otlp_json(docs: Iterable[dict[str, Any] | str]) -> list[SpanRecord]:
    """Flatten OTLP JSON trace documents (dicts, or JSON lines as strings) into span records."""
    spans: list[SpanRecord] = []
    for doc in docs:
        if isinstance(doc, str):
            if not doc.strip():
                continue
            doc = json.loads(doc)
        for resource_spans in doc.get("resourceSpans", []) or []:
            resource = attributes_dict((resource_spans.get("resource") or {}).get("attributes"))
            scopes = resource_spans.get("scopeSpans") or resource_spans.get(
                "instrumentationLibrarySpans", []
            )
            for scope_spans in scopes or []:
                scope = scope_spans.get("scope") or scope_spans.get("instrumentationLibrary") or {}
                for span in scope_spans.get("spans", []) or []:
                    status = span.get("status") or {}
                    spans.append(
                        SpanRecord(
                            trace_id=_hex_id(span.get("traceId")) or "",
                            span_id=_hex_id(span.get("spanId")) or "",
                            parent_span_id=_hex_id(span.get("parentSpanId")),
                            name=span.get("name", ""),
                            kind=_enum_name(span.get("kind", 0), _KINDS, "SPAN_KIND_"),
                            status_code=_enum_name(status.get("code", 0), _STATUS, "STATUS_CODE_"),
                            status_message=status.get("message", ""),
                            attributes=attributes_dict(span.get("attributes")),
                            resource=dict(resource),
                            scope=scope.get("name", ""),
                            start_ns=int(span.get("startTimeUnixNano", 0) or 0),
                            end_ns=int(span.get("endTimeUnixNano", 0) or 0),
                            events=[
                                {
                                    "name": e.get("name", ""),
                                    "attributes": attributes_dict(e.get("attributes")),
                                }
                                for e in span.get("events", []) or []
                            ],
                        )
                    )
    return spans


def metric_names_from_otlp_json(docs: Iterable[dict[str, Any]]) -> list[str]:
    """The distinct metric names in OTLP JSON metrics documents, in first-seen order."""
    names: dict[str, None] = {}
    for doc in docs:
        for resource_metrics in doc.get("resourceMetrics", []) or []:
            for scope_metrics in resource_metrics.get("scopeMetrics", []) or []:
                for metric in scope_metrics.get("metrics", []) or []:
                    names.setdefault(metric.get("name", ""), None)
    return list(names)


def _resource_scenarios(doc: dict[str, Any]) -> set[Any]:
    found: set[Any] = set()
    for key in ("resourceSpans", "resourceMetrics", "resourceLogs"):
        for item in doc.get(key, []) or []:
            attrs = attributes_dict((item.get("resource") or {}).get("attributes"))
            found.add(attrs.get(SCENARIO_ATTRIBUTE))
    return found


class OTLPReceiver(CaptureServer):
    """Captures OTLP/HTTP exports. Put :attr:`url` into ``OTEL_EXPORTER_OTLP_ENDPOINT``."""

    name = "otlp"

    def __init__(self, *, limits: Limits | None = None) -> None:
        self._records: list[OTLPRecord] = []
        self._records_lock = threading.Lock()
        super().__init__(limits=limits)

    @property
    def url(self) -> str:
        """Base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the SDK appends ``/v1/<signal>``)."""
        return self.base_url

    def env(self, service_name: str, scenario_id: str) -> dict[str, str]:
        """The standard OTEL_* variables that point a pipeline at this receiver.

        ``OTEL_{TRACES,METRICS,LOGS}_EXPORTER=otlp`` are the spec's defaults, but the Python
        SDK's own env configurator (without ``opentelemetry-distro``) exports nothing unless
        they are set, so they are passed explicitly.
        """
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_LOGS_EXPORTER": "otlp",
            "OTEL_SERVICE_NAME": service_name,
            "OTEL_RESOURCE_ATTRIBUTES": f"{SCENARIO_ATTRIBUTE}={scenario_id}",
        }

    def handle(self, request: SinkRequest, fault_status: int | None) -> SinkResponse:
        known = _SIGNALS.get(request.path.rstrip("/"))
        signal = known[0] if known else "unknown"
        record = OTLPRecord(
            seq=request.seq,
            arrival=request.arrival,
            signal=signal,
            path=request.path,
            content_type=request.content_type,
            content_encoding=request.content_encoding,
            size=request.raw_size,
            status=200,
            error=request.decode_error,
            decoded_size=request.decoded_size,
            limit=request.limit,
        )
        response_type = JSON if request.content_type == JSON else PROTOBUF
        body = b"{}" if response_type == JSON else b""
        if request.limit is not None:
            record.status, record.error = 413, f"refused: {request.limit}"
        elif known is None or request.method != "POST":
            record.status, record.error = 404, f"unexpected {request.method} {request.path}"
        elif record.error is not None:
            record.status = 400
        elif request.content_type == JSON:
            try:
                document = json.loads(request.body)
                if not isinstance(document, dict):
                    raise ValueError("not a JSON object")
                record._document = document
            except (ValueError, UnicodeDecodeError) as exc:
                record.status, record.error = 400, f"body is not OTLP JSON: {exc}"
        elif request.content_type == PROTOBUF:
            message = known[1]()
            try:
                message.ParseFromString(request.body)
                record._message = message
                body = known[2]().SerializeToString()
            except DecodeError as exc:
                record.status, record.error = 400, f"body is not OTLP protobuf: {exc}"
        else:
            record.status = 415
            record.error = f"unsupported Content-Type {request.content_type!r}"
        if fault_status is not None and request.limit is None:
            record.status = fault_status
        with self._records_lock:
            self._records.append(record)
        if record.status >= 300:
            error = json.dumps({"message": record.error}).encode()
            body = b"" if response_type == PROTOBUF else error
        return SinkResponse(status=record.status, body=body, content_type=response_type)

    # -- reading ---------------------------------------------------------------------------

    def records(self, *, since: int = 0) -> list[OTLPRecord]:
        """Every export request after sequence number ``since``, in arrival order."""
        with self._records_lock:
            return [r for r in self._records if r.seq > since]

    def requests(
        self, signal: str | None = None, *, since: int = 0, scenario: str | None = None
    ) -> list[dict[str, Any]]:
        """The accepted requests as OTLP JSON documents (``signal``: traces, metrics or logs)."""
        docs: list[dict[str, Any]] = []
        for record in self.records(since=since):
            if not record.accepted or (signal is not None and record.signal != signal):
                continue
            document = record.document
            if document is None:
                continue
            if scenario is not None and scenario not in _resource_scenarios(document):
                continue
            docs.append(document)
        return docs

    def spans(self, *, since: int = 0, scenario: str | None = None) -> list[SpanRecord]:
        """Every received span, flattened; with ``scenario``, only that scenario's resource."""
        spans = spans_from_otlp_json(self.requests("traces", since=since))
        if scenario is not None:
            spans = [s for s in spans if s["resource"].get(SCENARIO_ATTRIBUTE) == scenario]
        return spans

    def metric_names(self, *, since: int = 0, scenario: str | None = None) -> list[str]:
        """Names of the metrics received (informational evidence)."""
        return metric_names_from_otlp_json(self.requests("metrics", since=since, scenario=scenario))

    def clear(self) -> None:
        """Forget every record (sequence numbers keep counting)."""
        with self._records_lock:
            self._records.clear()
