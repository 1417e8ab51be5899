"""Lineage and telemetry: a conventionally written pipeline is certified unchanged, lineage is
validated out of the box (openlineage-python's model) and across a run hierarchy, and a dead
capture sink cannot hang a run."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    FIXTURES,
    certify,
    fixture_profile,
    guarantee_row,
    load_report,
    openlineage_spec,
    scenario_records,
)

from kfm_conformance.capture.olschema import OpenLineageSchemas
from kfm_conformance.capture.session import CaptureServices
from kfm_conformance.features import FEATURES_DIR
from kfm_conformance.report.writers import validate_report

OBSERVED_PROFILE = FIXTURES / "observed_profile.toml"
HEX_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def _scenarios(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for g in report["guarantees"] for s in g["scenarios"]]


def test_observed_pipeline_is_certified_strictly_on_lineage_and_telemetry(tmp_path: Path) -> None:
    """fixtures/kfm_observed_fixture.py configures openlineage-python and the OTel SDK from the
    environment alone, as their documentation says; it is certified without changes."""
    spec = openlineage_spec()
    report_dir = tmp_path / "report"
    code, out, err = certify(
        "certify",
        "--profile",
        str(OBSERVED_PROFILE),
        "--report-dir",
        str(report_dir),
        "--only",
        "lineage",
        "telemetry",
        "--strict",
        "--openlineage-schemas",
        str(spec),
        "-j",
        "2",
    )
    report = load_report(report_dir)
    validate_report(report)
    not_passed = [
        (s["check_id"], s["verdict"], s["message"])
        for s in _scenarios(report)
        if s["verdict"] != "pass"
    ]
    assert code == 0, (not_passed, out, err[-3000:])
    assert report["verdict"] == "certified" and report["level"] == "strict"
    assert not not_passed
    for guarantee in ("lineage", "telemetry"):
        assert guarantee_row(report, guarantee)["scenarios"]
    # Which schema cache was used, without saying where it is on this machine.
    cache = report["provenance"]["openlineage_schemas"]
    assert cache["given_by"] == "option" and cache["files"] > 0
    assert re.fullmatch(r"[0-9a-f]{64}", cache["sha256"])
    assert str(spec.resolve()) not in json.dumps(cache)
    # The evidence: the events as received and the spans as OTLP JSON with hex ids.
    publishing = next(
        s
        for s in _scenarios(report)
        if s["check_id"] == "lineage/a-publishing-run-names-its-upstream-and-its-output"
    )
    (run,) = publishing["evidence"]["observability"]["runs"]
    assert [r["event"]["eventType"] for r in run["lineage"]] == ["START", "COMPLETE"]
    spans = [
        span
        for doc in run["traces"]
        for resource in doc["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    ]
    assert {"ingest", "fetch", "transform", "publish"} <= {s["name"] for s in spans}
    assert all(HEX_TRACE_ID.match(s["traceId"]) for s in spans)


def _certify_lineage_without_schemas(
    tmp_path: Path, script: str
) -> tuple[int, str, dict[str, Any]]:
    """Certify a fixture on lineage with no schema option: (exit code, stderr, report)."""
    profile = fixture_profile(tmp_path, script, base="observed_profile.toml")
    report_dir = tmp_path / "report"
    code, _out, err = certify(
        "certify",
        "--profile",
        str(profile),
        "--report-dir",
        str(report_dir),
        "--only",
        "lineage",
        "-j",
        "2",
    )
    return code, err, load_report(report_dir)


def test_airflow_shaped_lineage_is_certified_without_a_schema_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Airflow OpenLineage provider's default shape (task runs beneath a DAG run that sends
    no START) is certified on lineage, validated against openlineage-python's model: nothing
    outside the installed packages is needed."""
    monkeypatch.delenv("KFM_OPENLINEAGE_SCHEMAS", raising=False)
    code, err, report = _certify_lineage_without_schemas(tmp_path, "airflow_shaped_lineage.py")
    scenarios = guarantee_row(report, "lineage")["scenarios"]
    not_passed = [
        (s["check_id"], s["verdict"], s["message"]) for s in scenarios if s["verdict"] != "pass"
    ]
    assert code == 0 and not not_passed, (not_passed, err[-2000:])
    provenance = report["provenance"]["openlineage_schemas"]
    assert provenance["given_by"] is None
    assert provenance["validator"] == "openlineage-python" and provenance["version"]
    publishing = next(
        s for s in scenarios if s["check_id"].endswith("names-its-upstream-and-its-output")
    )
    start = next(f for f in publishing["findings"] if f["check"] == "lineage.start-event")
    assert "sent no START; accepted" in start["message"]


def test_an_invalid_event_is_refused_without_a_schema_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fixtures/invalid_lineage_event.py (rowCount as a string) fails the spec scenario under
    the default validator too, not only under --openlineage-schemas (tests/test_known_bad.py)."""
    monkeypatch.delenv("KFM_OPENLINEAGE_SCHEMAS", raising=False)
    code, err, report = _certify_lineage_without_schemas(tmp_path, "invalid_lineage_event.py")
    verdicts = {s["check_id"]: s for s in guarantee_row(report, "lineage")["scenarios"]}
    spec = verdicts["lineage/every-event-the-pipeline-sends-follows-the-openlineage-specification"]
    assert code == 1 and report["verdict"] == "not-certified", err[-2000:]
    assert spec["verdict"] == "fail", spec["message"]
    assert "outputStatistics.rowCount" in spec["message"]
    assert "error" not in {s["verdict"] for s in verdicts.values()}
    assert report["provenance"]["openlineage_schemas"]["validator"] == "openlineage-python"


DOWN_CONFTEST = """
import pytest


@pytest.fixture(scope="session")
def kfm_capture(kfm_capture):
    kfm_capture.lineage.set_fault(down=True)
    kfm_capture.otlp.set_fault(down=True)
    return kfm_capture
"""


def test_a_dead_sink_cannot_hang_a_run_and_is_the_pipelines_fault(
    pytester: pytest.Pytester,
) -> None:
    """Both sinks refuse connections. A pipeline whose exporters bound their own waits still
    finishes in seconds and publishes; the scenarios fail (nothing arrived), never error."""
    pytester.makeconftest(DOWN_CONFTEST)
    pytester.makepyfile(
        test_down=textwrap.dedent(
            f"""
            from pytest_bdd import scenarios

            scenarios({str(FEATURES_DIR / "lineage.feature")!r})
            scenarios({str(FEATURES_DIR / "telemetry.feature")!r})
            """
        )
    )
    results = pytester.path / "results"
    pytester.runpytest_subprocess(
        "test_down.py",
        "--kfm-profile",
        str(OBSERVED_PROFILE),
        "--kfm-results",
        str(results),
        "-p",
        "no:cacheprovider",
        "-k",
        "publishing_run_names_its_upstream or publishing_run_is_traced_from_its_root",
    )
    found = scenario_records(results)
    assert {r["guarantee"] for r in found} == {"lineage", "telemetry"}, found
    timeout_s = 60  # observed_profile.toml
    for result in found:
        assert result["verdict"] == "fail", (result["check_id"], result["message"])
        (run,) = result["evidence"]["runs"]
        assert not run["timed_out"] and run["exit_code"] == 0, run["stderr_tail"]
        assert run["duration_s"] < timeout_s / 4, run["duration_s"]
    messages = {r["guarantee"]: r["message"] for r in found}
    assert messages["lineage"] == "no OpenLineage event arrived for this run"
    assert messages["telemetry"] == "the run exported no trace"


def test_capture_env_is_the_standard_variables() -> None:
    services = CaptureServices()
    try:
        env = services.env(scenario_id="s-1", service_name="svc")
    finally:
        services.close()
    assert env["OPENLINEAGE_URL"].startswith("http://127.0.0.1:")
    assert env["OPENLINEAGE_NAMESPACE"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://127.0.0.1:")
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert env["OTEL_SERVICE_NAME"] == "svc"
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == "kfm.scenario.id=s-1"
    assert "OPENLINEAGE_CONFIG" not in env  # nothing may point the client at a config file


def test_spec_validation_checks_the_formats_the_schema_names() -> None:
    """date-time, uri and uuid are checked (jsonschema[format-nongpl]), not just the shapes."""
    schemas = OpenLineageSchemas(openlineage_spec())
    event = {
        "eventType": "START",
        "eventTime": "2026-01-01T00:00:00Z",
        "run": {"runId": "0190d3a2-6c4e-7b8f-9a1b-2c3d4e5f6a7b"},
        "job": {"namespace": "kfm-conformance", "name": "ingest"},
        "inputs": [],
        "outputs": [],
        "producer": "https://example.com/pipeline",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
    }
    assert schemas.validate(event) == []
    for key, bad in (("eventTime", "yesterday"), ("producer", "my pipeline")):
        findings = schemas.validate({**event, key: bad})
        assert findings and all(not f.ok for f in findings), (key, findings)
        assert f"$.{key}" in findings[0].message
    findings = schemas.validate({**event, "run": {"runId": "run-1"}})
    assert findings and "$.run.runId" in findings[0].message
