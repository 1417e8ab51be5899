"""Every lineage and telemetry check passes on a good run and fails on a bad one made for it.

Good evidence is made by the real tools: events by the openlineage-python client's classes,
spans by the OpenTelemetry SDK encoded with the OTLP exporter's own encoder, the Parquet schema
by pyarrow. Each bad case changes one thing, and the test asserts that the check it targets
reports it; a meta test asserts that every check id has such a case.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    dataset_version_dataset,
    output_statistics_output_dataset,
    schema_dataset,
)
from openlineage.client.serde import Serde
from openlineage.client.uuid import generate_new_uuid
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from kfm_conformance.capture.checks import (
    ALL_CHECKS,
    LINEAGE_RUN_CHECKS,
    TELEMETRY_CHECKS,
    judge_lineage_across_runs,
    judge_lineage_run,
    judge_telemetry_run,
    output_version,
    types_compatible,
)
from kfm_conformance.capture.lineage import LineageSink
from kfm_conformance.capture.olschema import OpenLineageSchemas
from kfm_conformance.capture.otlp import (
    OTLPReceiver,
    SpanRecord,
    protobuf_to_otlp_json,
    spans_from_otlp_json,
)
from kfm_conformance.verdict import Finding, HarnessError, Level

UPSTREAM = "http://127.0.0.1:8080/data/stations.csv"
OUTPUT = "out/data.parquet"
NAMESPACE = "kfm-test"
JOB = "kfm.ingest"


@pytest.fixture(scope="module")
def schemas(openlineage_schema_dir: Path) -> OpenLineageSchemas:
    return OpenLineageSchemas(openlineage_schema_dir)


@pytest.fixture(scope="module")
def parquet_columns(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    """(name, Arrow type) of a Parquet file really written by pyarrow."""
    table = pa.table(
        {
            "station_id": pa.array([1, 2], pa.int64()),
            "name": pa.array(["a", "b"], pa.string()),
            "observed_at": pa.array(
                [datetime(2024, 1, 1, tzinfo=UTC)] * 2, pa.timestamp("us", tz="UTC")
            ),
            "value": pa.array([1.5, 2.5], pa.float64()),
        }
    )
    path = tmp_path_factory.mktemp("parquet") / "data.parquet"
    pq.write_table(table, path)
    return [(field.name, str(field.type)) for field in pq.read_schema(path)]


# -- good evidence, made by the real client and SDK -------------------------------------------

FACET_FIELDS = [("station_id", "BIGINT"), ("name", "VARCHAR"), ("observed_at", "TIMESTAMP")]
FACET_FIELDS.append(("value", "DOUBLE"))


def lineage_run(
    kinds: tuple[str, ...] = ("START", "COMPLETE"),
    *,
    publish: bool = True,
    run_id: str | None = None,
    job_name: str = JOB,
    version: str = "v2",
    rows: int = 2,
) -> list[dict[str, Any]]:
    """One run's events as the openlineage-python client serialises them."""
    run_id = run_id or str(generate_new_uuid())
    start = datetime.now(UTC)
    inputs = [InputDataset(namespace="http://127.0.0.1:8080", name="/data/stations.csv")]
    events = []
    for index, kind in enumerate(kinds):
        outputs = []
        if publish and kind == "COMPLETE":
            outputs = [
                OutputDataset(
                    namespace="file",
                    name=f"/srv/kfm/{OUTPUT}",
                    facets={
                        "schema": schema_dataset.SchemaDatasetFacet(
                            fields=[
                                schema_dataset.SchemaDatasetFacetFields(name=n, type=t)
                                for n, t in FACET_FIELDS
                            ]
                        ),
                        "version": dataset_version_dataset.DatasetVersionDatasetFacet(
                            datasetVersion=version
                        ),
                    },
                    outputFacets={
                        "outputStatistics": (
                            output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                                rowCount=rows
                            )
                        )
                    },
                )
            ]
        event = RunEvent(
            eventType=RunState[kind],
            eventTime=(start + timedelta(milliseconds=10 * index)).isoformat(),
            run=Run(runId=run_id),
            job=Job(namespace=NAMESPACE, name=job_name),
            inputs=inputs,
            outputs=outputs,
        )
        events.append(Serde.to_dict(event))
    return events


def make_spans(
    *,
    fail: bool = False,
    run_id: str | None = "RUN",
    steps: bool = True,
    service: str | None = "kfm-pipeline",
) -> list[SpanRecord]:
    """Spans from the real SDK, encoded by the OTLP exporter's encoder, flattened by us."""
    attributes = {"kfm.scenario.id": "s-1"}
    if service is not None:
        attributes["service.name"] = service
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("kfm.pipeline")
    with tracer.start_as_current_span("ingest") as root:
        if run_id is not None:
            root.set_attribute("openlineage.run.id", run_id)
        if steps:
            with tracer.start_as_current_span("fetch", kind=SpanKind.CLIENT) as span:
                span.set_attribute("http.request.method", "GET")
                span.set_attribute("url.full", UPSTREAM)
                span.set_attribute("http.response.status_code", 200)
            with tracer.start_as_current_span("transform"):
                pass
            with tracer.start_as_current_span("publish"):
                pass
        if fail:
            root.set_status(Status(StatusCode.ERROR, "publish failed"))
    provider.shutdown()
    document = protobuf_to_otlp_json(encode_spans(exporter.get_finished_spans()))
    return spans_from_otlp_json([document])


def judge_good_published(
    events: list[dict[str, Any]],
    parquet_columns: list[tuple[str, str]],
    schemas: OpenLineageSchemas | None,
    **overrides: Any,
) -> list[Finding]:
    options: dict[str, Any] = {
        "exit_ok": True,
        "published": True,
        "upstream_url": UPSTREAM,
        "output_relpath": OUTPUT,
        "parquet_columns": parquet_columns,
        "schemas": schemas,
    }
    options.update(overrides)
    return judge_lineage_run(events, **options)


def _assert_readable(findings: list[Finding]) -> None:
    for finding in findings:
        assert isinstance(finding.expected, str) and finding.expected, finding
        assert isinstance(finding.observed, str) and finding.observed, finding
        assert finding.message
        json.dumps(finding.to_json())


def _all_ok(findings: list[Finding]) -> None:
    _assert_readable(findings)
    broken = [f for f in findings if not f.ok]
    assert not broken, [f"{f.check}: {f.message} / {f.observed}" for f in broken]


# -- good runs pass ----------------------------------------------------------------------------


def test_good_published_run_passes_every_lineage_check(
    parquet_columns: list[tuple[str, str]], schemas: OpenLineageSchemas
) -> None:
    findings = judge_good_published(lineage_run(), parquet_columns, schemas)
    _all_ok(findings)
    assert {f.check for f in findings} == set(LINEAGE_RUN_CHECKS) - {
        "lineage.not-modified-no-version",
        "lineage.within-limits",  # only judged when a cap refused a request
    }


def test_good_not_modified_and_failed_runs_pass(
    parquet_columns: list[tuple[str, str]], schemas: OpenLineageSchemas
) -> None:
    published = lineage_run(version="v7")
    not_modified = judge_good_published(
        lineage_run(publish=False),
        parquet_columns,
        schemas,
        published=False,
        previous_output_version=output_version(published, OUTPUT),
    )
    _all_ok(not_modified)
    assert "lineage.not-modified-no-version" in {f.check for f in not_modified}
    # restating the published version with zero rows is no new-version claim either
    same = lineage_run(version="v7", rows=0)
    _all_ok(
        judge_good_published(
            same, parquet_columns, schemas, published=False, previous_output_version="v7"
        )
    )
    failed = judge_good_published(
        lineage_run(("START", "RUNNING", "FAIL"), publish=False),
        parquet_columns,
        schemas,
        exit_ok=False,
        published=False,
    )
    _all_ok(failed)


def test_good_runs_keep_their_job(parquet_columns: list[tuple[str, str]]) -> None:
    findings = judge_lineage_across_runs([lineage_run(), lineage_run(publish=False)])
    _all_ok(findings)
    assert [f.check for f in findings] == ["lineage.job-stable"]


def test_good_telemetry_passes_every_check() -> None:
    findings = judge_telemetry_run(make_spans(), exit_ok=True, run_id="RUN")
    _all_ok(findings)
    assert {f.check for f in findings} == set(TELEMETRY_CHECKS) - {"telemetry.within-limits"}
    _all_ok(judge_telemetry_run(make_spans(fail=True), exit_ok=False, run_id="RUN"))
    _all_ok(
        judge_telemetry_run(
            make_spans(), exit_ok=True, run_id="RUN", expected_service_name="kfm-pipeline"
        )
    )
    # The status the step names, when it fits the exit.
    _all_ok(judge_telemetry_run(make_spans(), exit_ok=True, run_id="RUN", expect_error=False))
    _all_ok(
        judge_telemetry_run(make_spans(fail=True), exit_ok=False, run_id="RUN", expect_error=True)
    )
    # Any run id of the run's hierarchy correlates.
    _all_ok(judge_telemetry_run(make_spans(), exit_ok=True, run_id="ROOT", run_ids=["TASK", "RUN"]))


def test_without_schemas_spec_check_is_left_out(parquet_columns: list[tuple[str, str]]) -> None:
    findings = judge_good_published(lineage_run(), parquet_columns, None)
    assert "lineage.spec-valid" not in {f.check for f in findings}


def test_unavailable_schema_version_is_a_harness_error(
    parquet_columns: list[tuple[str, str]], schemas: OpenLineageSchemas
) -> None:
    events = lineage_run()
    events[0]["schemaURL"] = "https://openlineage.io/spec/9-9-9/OpenLineage.json#/$defs/RunEvent"
    with pytest.raises(HarnessError, match="schema unavailable"):
        judge_good_published(events, parquet_columns, schemas)


# -- one bad case per check --------------------------------------------------------------------

Events = list[dict[str, Any]]


@dataclass(frozen=True)
class Case:
    check: str
    name: str
    lineage: Callable[[Events, dict[str, Any]], Events] | None = None
    across: Callable[[], list[Events]] | None = None
    telemetry: Callable[[dict[str, Any]], list[SpanRecord]] | None = None


def _drop(kind: str) -> Callable[[Events, dict[str, Any]], Events]:
    return lambda events, _: [e for e in events if e["eventType"] != kind]


def _set(path: str, value: Any, which: int = -1) -> Callable[[Events, dict[str, Any]], Events]:
    def mutate(events: Events, _: dict[str, Any]) -> Events:
        node: Any = events[which]
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node[key]
        node[keys[-1]] = value
        return events

    return mutate


def _with(**options: Any) -> Callable[[Events, dict[str, Any]], Events]:
    def mutate(events: Events, kwargs: dict[str, Any]) -> Events:
        kwargs.update(options)
        return events

    return mutate


def _then(*steps: Callable[[Events, dict[str, Any]], Events]) -> Callable[..., Events]:
    def mutate(events: Events, kwargs: dict[str, Any]) -> Events:
        for step in steps:
            events = step(events, kwargs)
        return events

    return mutate


def _reverse(events: Events, _: dict[str, Any]) -> Events:
    return list(reversed(events))


def _duplicate_start(events: Events, _: dict[str, Any]) -> Events:
    return [events[0], copy.deepcopy(events[0]), *events[1:]]


def _two_terminals(events: Events, _: dict[str, Any]) -> Events:
    extra = copy.deepcopy(events[-1])
    extra["eventType"] = "FAIL"
    return [*events, extra]


def _time_backwards(events: Events, _: dict[str, Any]) -> Events:
    events[-1]["eventTime"] = "2000-01-01T00:00:00Z"
    return events


def _rename_output(name: str) -> Callable[[Events, dict[str, Any]], Events]:
    return _set("outputs.0.name", name)


def _facet_fields(fields: list[dict[str, Any]]) -> Callable[[Events, dict[str, Any]], Events]:
    return _set("outputs.0.facets.schema.fields", fields)


def _drop_schema_facet(events: Events, _: dict[str, Any]) -> Events:
    del events[-1]["outputs"][0]["facets"]["schema"]
    return events


def _lifecycle(events: Events, _: dict[str, Any]) -> Events:
    events[-1]["outputs"] = [
        {
            "namespace": "file",
            "name": "/srv/kfm/out/data.parquet",
            "facets": {
                "lifecycleStateChange": {
                    "_producer": "https://example.invalid/p",
                    "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/"
                    "LifecycleStateChangeDatasetFacet.json#/$defs/LifecycleStateChangeDatasetFacet",
                    "lifecycleStateChange": "OVERWRITE",
                }
            },
        }
    ]
    return events


def _published_output_on_not_modified(events: Events, kwargs: dict[str, Any]) -> Events:
    kwargs.update(published=False)
    return events  # the run's COMPLETE still carries outputStatistics with rows


def _spans(**options: Any) -> Callable[[dict[str, Any]], list[SpanRecord]]:
    return lambda kwargs: make_spans(**options)


def _spans_and(
    kwargs_update: dict[str, Any], **options: Any
) -> Callable[[dict[str, Any]], list[SpanRecord]]:
    def make(kwargs: dict[str, Any]) -> list[SpanRecord]:
        kwargs.update(kwargs_update)
        return make_spans(**options)

    return make


def _two_roots(kwargs: dict[str, Any]) -> list[SpanRecord]:
    return make_spans() + make_spans()


def _no_root(kwargs: dict[str, Any]) -> list[SpanRecord]:
    return [s for s in make_spans() if s["parent_span_id"]]


def _old_semconv(kwargs: dict[str, Any]) -> list[SpanRecord]:
    spans = make_spans()
    for span in spans:
        if span["name"] == "fetch":
            span["attributes"] = {
                "http.method": "GET",
                "http.url": UPSTREAM,
                "http.status_code": 200,
            }
    return spans


def _no_http(kwargs: dict[str, Any]) -> list[SpanRecord]:
    spans = make_spans()
    for span in spans:
        span["attributes"] = {}
    return spans


def _unknown_service(kwargs: dict[str, Any]) -> list[SpanRecord]:
    return make_spans(service=None)  # the SDK falls back to unknown_service


CASES = [
    Case("lineage.start-event", "no-start", lineage=_drop("START")),
    Case("lineage.start-event", "start-not-first", lineage=_reverse),
    Case("lineage.start-event", "two-starts", lineage=_duplicate_start),
    Case("lineage.start-event", "no-events", lineage=lambda events, _: []),
    Case("lineage.terminal-event", "no-terminal", lineage=_drop("COMPLETE")),
    Case("lineage.terminal-event", "complete-on-failure", lineage=_with(exit_ok=False)),
    Case("lineage.terminal-event", "two-terminals", lineage=_two_terminals),
    Case("lineage.terminal-event", "fail-on-success", lineage=_set("eventType", "FAIL")),
    Case("lineage.run-id", "not-uuid", lineage=_set("run.runId", "run-42")),
    Case(
        "lineage.run-id",
        "changes-within-run",
        lineage=_set("run.runId", "0190d3a2-6c4e-7b8f-9a1b-2c3d4e5f6a7b"),
    ),
    Case("lineage.event-time-order", "backwards", lineage=_time_backwards),
    Case("lineage.event-time-order", "not-a-date", lineage=_set("eventTime", "yesterday")),
    Case("lineage.inputs", "wrong-path", lineage=_with(upstream_url="http://127.0.0.1:8080/x.csv")),
    Case(
        "lineage.inputs",
        "wrong-port",
        lineage=_with(upstream_url="http://127.0.0.1:9/data/stations.csv"),
    ),
    Case(
        "lineage.inputs",
        "no-inputs",
        lineage=_then(_set("inputs", [], 0), _set("inputs", [], -1)),
    ),
    Case("lineage.outputs", "no-outputs", lineage=_set("outputs", [])),
    Case("lineage.outputs", "wrong-name", lineage=_rename_output("/srv/kfm/xout/data.parquet")),
    Case("lineage.outputs", "no-complete", lineage=_then(_drop("COMPLETE"), _with(exit_ok=True))),
    Case("lineage.schema-facet", "absent", lineage=_drop_schema_facet),
    Case(
        "lineage.schema-facet",
        "wrong-order",
        lineage=_facet_fields([{"name": n, "type": t} for n, t in reversed(FACET_FIELDS)]),
    ),
    Case(
        "lineage.schema-facet",
        "wrong-type",
        lineage=_facet_fields([{"name": n, "type": "STRING"} for n, _ in FACET_FIELDS]),
    ),
    Case(
        "lineage.not-modified-no-version", "rows-written", lineage=_published_output_on_not_modified
    ),
    Case(
        "lineage.not-modified-no-version",
        "new-version",
        lineage=_then(
            _set("outputs.0.outputFacets", {}),
            _with(published=False, previous_output_version="v1"),
        ),
    ),
    Case(
        "lineage.not-modified-no-version",
        "overwrite",
        lineage=_then(_lifecycle, _with(published=False)),
    ),
    Case("lineage.spec-valid", "producer-not-a-string", lineage=_set("producer", 42, 0)),
    Case(
        "lineage.spec-valid",
        "bad-facet",
        lineage=_set("outputs.0.outputFacets.outputStatistics.rowCount", "two"),
    ),
    Case(
        "lineage.job-stable",
        "job-renamed",
        across=lambda: [lineage_run(), lineage_run(job_name="kfm.ingest.v2")],
    ),
    Case(
        "lineage.job-stable",
        "job-changes-within-run",
        across=lambda: [lineage_run()[:1] + lineage_run(job_name="other")[1:]],
    ),
    Case(
        "lineage.within-limits",
        "gzip-bomb",
        lineage=_with(over_limits=["request 3: the request body inflates to more than 16 MiB"]),
    ),
    Case(
        "lineage.terminal-event",
        "step-names-fail-on-success",
        lineage=_with(expected_terminal="FAIL"),
    ),
    Case("telemetry.trace-exported", "no-spans", telemetry=lambda kwargs: []),
    Case(
        "telemetry.within-limits",
        "over-the-request-cap",
        telemetry=_spans_and({"over_limits": ["traces request 9: more than 20000 requests"]}),
    ),
    Case(
        "telemetry.root-status",
        "step-names-error-on-success",
        telemetry=_spans_and({"expect_error": True}),
    ),
    Case(
        "telemetry.root-status",
        "step-names-not-error-on-failure",
        telemetry=_spans_and({"exit_ok": False, "expect_error": False}, fail=True),
    ),
    Case("telemetry.root-span", "two-roots", telemetry=_two_roots),
    Case("telemetry.root-span", "no-root", telemetry=_no_root),
    Case("telemetry.root-status", "ok-on-failure", telemetry=_spans_and({"exit_ok": False})),
    Case("telemetry.root-status", "error-on-success", telemetry=_spans(fail=True)),
    Case("telemetry.service-name", "unknown-service", telemetry=_unknown_service),
    Case(
        "telemetry.service-name",
        "not-the-given-name",
        telemetry=_spans_and({"expected_service_name": "kfm-other"}),
    ),
    Case("telemetry.step-spans", "single-span", telemetry=_spans(steps=False)),
    Case("telemetry.http-semconv", "old-names", telemetry=_old_semconv),
    Case("telemetry.http-semconv", "no-http-span", telemetry=_no_http),
    Case("telemetry.runid-correlation", "no-run-id", telemetry=_spans(run_id=None)),
    Case(
        "telemetry.runid-correlation",
        "another-run-id",
        telemetry=_spans_and({"run_id": "0190d3a2-0000-7000-8000-000000000000"}),
    ),
]

RECOMMENDED = {
    "lineage.schema-facet",
    "telemetry.step-spans",
    "telemetry.http-semconv",
    "telemetry.runid-correlation",
}


def test_every_check_has_a_bad_case() -> None:
    assert {case.check for case in CASES} == set(ALL_CHECKS)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.check}:{c.name}" for c in CASES])
def test_bad_case_fails_its_check(
    case: Case, parquet_columns: list[tuple[str, str]], schemas: OpenLineageSchemas
) -> None:
    if case.lineage is not None:
        kwargs: dict[str, Any] = {}
        events = case.lineage(lineage_run(), kwargs)
        findings = judge_good_published(events, parquet_columns, schemas, **kwargs)
    elif case.across is not None:
        findings = judge_lineage_across_runs(case.across())
    else:
        assert case.telemetry is not None
        kwargs = {"exit_ok": True, "run_id": "RUN"}
        spans = case.telemetry(kwargs)
        findings = judge_telemetry_run(spans, **kwargs)
    _assert_readable(findings)
    failed = [f for f in findings if f.check == case.check and not f.ok]
    assert failed, [(f.check, f.ok, f.message) for f in findings]
    level = Level.RECOMMENDED if case.check in RECOMMENDED else Level.REQUIRED
    assert all(f.level is level for f in failed)


@pytest.mark.parametrize(
    ("parquet", "facet", "ok"),
    [
        ("int64", "BIGINT", True),
        ("int32", "integer", True),
        ("string", "VARCHAR(20)", True),
        ("large_string", "string", True),
        ("timestamp[us, tz=UTC]", "TIMESTAMP", True),
        ("timestamp[ms]", "timestamp_ntz", True),
        ("date32[day]", "DATE", True),
        ("double", "FLOAT64", True),
        ("decimal128(10, 2)", "DECIMAL(10,2)", True),
        ("bool", "BOOLEAN", True),
        ("dictionary<values=string, indices=int32, ordered=0>", "STRING", True),
        ("int64", "DOUBLE", False),
        ("string", "INTEGER", False),
        ("date32[day]", "TIMESTAMP", False),
        ("int64", "", False),
        ("int64", None, False),
    ],
)
def test_type_compatibility(parquet: str, facet: Any, ok: bool) -> None:
    assert types_compatible(parquet, facet) is ok


# -- end to end: a pipeline using both real clients, configured by env only -------------------

PIPELINE = r"""
import json, os, sys
from datetime import datetime, timezone
import pyarrow as pa, pyarrow.parquet as pq
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import schema_dataset
from openlineage.client.uuid import generate_new_uuid
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
_OTelSDKConfigurator().configure()
from opentelemetry import trace
from opentelemetry.trace import SpanKind

client = OpenLineageClient()
tracer = trace.get_tracer("kfm.pipeline")
run_id = str(generate_new_uuid())
job = Job(namespace=os.environ["OPENLINEAGE_NAMESPACE"], name="kfm.ingest")
inputs = [InputDataset(namespace="http://127.0.0.1:8080", name="/data/stations.csv")]
now = lambda: datetime.now(timezone.utc).isoformat()
with tracer.start_as_current_span("ingest") as root:
    root.set_attribute("openlineage.run.id", run_id)
    client.emit(RunEvent(eventType=RunState.START, eventTime=now(), run=Run(runId=run_id),
                         job=job, inputs=inputs))
    with tracer.start_as_current_span("fetch", kind=SpanKind.CLIENT) as span:
        span.set_attribute("http.request.method", "GET")
        span.set_attribute("url.full", "http://127.0.0.1:8080/data/stations.csv")
        span.set_attribute("http.response.status_code", 200)
    with tracer.start_as_current_span("transform"):
        table = pa.table({"station_id": pa.array([1, 2], pa.int64()), "name": ["a", "b"]})
    with tracer.start_as_current_span("publish"):
        os.makedirs("out", exist_ok=True)
        pq.write_table(table, "out/data.parquet")
    fields = [schema_dataset.SchemaDatasetFacetFields(name=f.name, type=str(f.type))
              for f in table.schema]
    output = OutputDataset(namespace="file", name=os.path.abspath("out/data.parquet"),
                           facets={"schema": schema_dataset.SchemaDatasetFacet(fields=fields)})
    client.emit(RunEvent(eventType=RunState.COMPLETE, eventTime=now(), run=Run(runId=run_id),
                         job=job, inputs=inputs, outputs=[output]))
trace.get_tracer_provider().shutdown()
print(json.dumps({"run_id": run_id}))
"""


@pytest.fixture
def servers() -> Iterator[tuple[LineageSink, OTLPReceiver]]:
    sink, receiver = LineageSink(), OTLPReceiver()
    yield sink, receiver
    sink.close()
    receiver.close()


def test_end_to_end_with_real_clients(
    servers: tuple[LineageSink, OTLPReceiver], tmp_path: Path, schemas: OpenLineageSchemas
) -> None:
    sink, receiver = servers
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENLINEAGE"))}
    env.update(sink.env(NAMESPACE))
    env.update(receiver.env("kfm-pipeline", "e2e"))
    env["HOME"] = str(tmp_path)
    runs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", PIPELINE],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1])["run_id"])

    columns = [(f.name, str(f.type)) for f in pq.read_schema(tmp_path / OUTPUT)]
    for run_id in runs:
        events = sink.events(run_id)
        lineage = judge_lineage_run(
            events,
            exit_ok=True,
            published=True,
            upstream_url=UPSTREAM,
            output_relpath=OUTPUT,
            parquet_columns=columns,
            schemas=schemas,
        )
        _all_ok(lineage)
        spans = [
            s
            for s in receiver.spans(scenario="e2e")
            if any(
                r["attributes"].get("openlineage.run.id") == run_id
                and r["trace_id"] == s["trace_id"]
                for r in receiver.spans()
            )
        ]
        telemetry = judge_telemetry_run(
            spans, exit_ok=True, run_id=run_id, expected_service_name="kfm-pipeline"
        )
        _all_ok(telemetry)
    _all_ok(judge_lineage_across_runs(sink.runs()))


def test_every_run_needs_a_run_id_of_its_own() -> None:
    from kfm_conformance.capture.checks import run_id_per_run

    assert run_id_per_run({"run 1": ["a"], "run 2": ["b", "c"]}).ok
    shared = run_id_per_run({"run 1": ["a"], "run 2": ["a"]})
    assert not shared.ok and shared.message == "run 1, run 2 share the run id a"
    missing = run_id_per_run({"run 1": ["a"], "run 2": []})
    assert not missing.ok and missing.message == "no run id arrived for run 2"
