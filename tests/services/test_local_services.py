"""The `local` provider against the real services, started as processes on loopback.

The services come from ``scripts/build-services.sh``. A service whose build is missing
makes its tests FAIL when ``CI`` is set and skip (with the reason) otherwise, except a service
marked blocked in ``blocked.py`` (Marquez), which skips with the recorded reason even in CI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from blocked import require_service

from kfm_conformance.services import get_provider, otlp_spans, read_otlp_json_lines
from kfm_conformance.services.base import SERVICE_NAMES, Endpoints, ServiceError
from kfm_conformance.services.external import ExternalServices
from kfm_conformance.services.local import LocalServices, missing_builds, reap_stale_sessions

REPO = Path(__file__).resolve().parents[2]


def _require(service: str) -> None:
    """Fail (under CI) or skip (elsewhere) when ``service`` cannot be started here; a service
    the lead marked blocked (blocked.py: Marquez) skips with its reason even under CI."""
    require_service(service)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat[stat.rfind(")") + 2 :].startswith("Z")


_START_ERRORS: dict[str, ServiceError] = {}


@pytest.fixture(scope="module")
def local() -> Iterator[tuple[LocalServices, Endpoints]]:
    """All services that are built, started once for the module.

    If Marquez is built but fails to start, the others still start; the Marquez test
    then reports the error.
    """
    available = set(SERVICE_NAMES - missing_builds().keys())
    provider = LocalServices()
    if not available:
        yield provider, Endpoints()
        return
    started = time.monotonic()
    try:
        endpoints = provider.start(available)
    except ServiceError as exc:
        if exc.service != "marquez" or available == {"marquez"}:
            raise
        _START_ERRORS["marquez"] = exc
        endpoints = provider.start(available - {"marquez"})
    print(f"local services started in {time.monotonic() - started:.1f}s: {provider.timings}")
    try:
        yield provider, endpoints
    finally:
        provider.stop()


# --------------------------------------------------------------------------- Marquez


def _ol_event(event_type: str, run_id: str, namespace: str, job: str) -> dict[str, Any]:
    return {
        "eventType": event_type,
        "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "run": {"runId": run_id},
        "job": {"namespace": namespace, "name": job},
        "inputs": [],
        "outputs": [],
        "producer": "https://github.com/kfm/kfm-conformance/tests",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/definitions/RunEvent",
    }


def test_marquez_accepts_lineage_and_reports_completed_run(
    local: tuple[LocalServices, Endpoints],
) -> None:
    _require("marquez")
    if "marquez" in _START_ERRORS:
        pytest.fail(f"Marquez did not start: {_START_ERRORS['marquez']}")
    _, endpoints = local
    assert endpoints.marquez_url
    namespace, job = f"kfm-test-{uuid.uuid4().hex[:8]}", "ingest-orders"
    run_id = str(uuid.uuid4())
    for event_type in ("START", "COMPLETE"):
        response = requests.post(
            f"{endpoints.marquez_url}/api/v1/lineage",
            json=_ol_event(event_type, run_id, namespace, job),
            timeout=30,
        )
        assert response.status_code == 201, response.text

    deadline = time.monotonic() + 15
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        response = requests.get(
            f"{endpoints.marquez_url}/api/v1/namespaces/{namespace}/jobs/{job}/runs", timeout=30
        )
        if response.status_code == 200:
            runs = response.json().get("runs", [])
            if runs and runs[0].get("state") == "COMPLETED":
                break
        time.sleep(0.3)
    assert [(r["id"], r["state"]) for r in runs] == [(run_id, "COMPLETED")]


# --------------------------------------------------------------------------- lakeFS


def test_lakefs_branch_commit_merge_and_read_back(local: tuple[LocalServices, Endpoints]) -> None:
    _require("lakefs")
    _, endpoints = local
    access = endpoints.lakefs
    assert access is not None
    api = access.api_base
    http = requests.Session()
    http.auth = (access.access_key_id, access.secret_access_key)
    repo = f"kfm-test-repo-{uuid.uuid4().hex[:6]}"

    response = http.post(
        f"{api}/repositories",
        json={"name": repo, "storage_namespace": f"local://{repo}", "default_branch": "main"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    response = http.post(
        f"{api}/repositories/{repo}/branches",
        json={"name": "staging", "source": "main"},
        timeout=30,
    )
    assert response.status_code == 201, response.text

    payload = b"order_id,amount\n1,9.99\n"
    response = http.post(
        f"{api}/repositories/{repo}/branches/staging/objects",
        params={"path": "orders/part-0.csv"},
        files={"content": ("part-0.csv", payload)},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    response = http.post(
        f"{api}/repositories/{repo}/branches/staging/commits",
        json={"message": "kfm: land orders", "metadata": {"run_id": "test"}},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    commit_id = response.json()["id"]

    # Not visible on main before the merge.
    response = http.get(
        f"{api}/repositories/{repo}/refs/main/objects",
        params={"path": "orders/part-0.csv"},
        timeout=30,
    )
    assert response.status_code == 404

    response = http.post(f"{api}/repositories/{repo}/refs/staging/merge/main", json={}, timeout=30)
    assert response.status_code == 200, response.text

    response = http.get(
        f"{api}/repositories/{repo}/refs/main/objects",
        params={"path": "orders/part-0.csv"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.content == payload

    response = http.get(f"{api}/repositories/{repo}/refs/main/commits", timeout=30)
    assert response.status_code == 200
    commits = response.json()["results"]
    assert commit_id in {c["id"] for c in commits} | {p for c in commits for p in c["parents"]}

    # Wrong credentials are refused.
    response = requests.get(f"{api}/user", auth=(access.access_key_id, "wrong"), timeout=30)
    assert response.status_code == 401


# --------------------------------------------------------------------------- Collector


def test_collector_writes_otlp_http_spans_to_file(local: tuple[LocalServices, Endpoints]) -> None:
    _require("collector")
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    export = pytest.importorskip("opentelemetry.sdk.trace.export")
    otlp_http = pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    resources = pytest.importorskip("opentelemetry.sdk.resources")

    _, endpoints = local
    assert endpoints.otlp_http_endpoint and endpoints.span_files
    provider = sdk_trace.TracerProvider(
        resource=resources.Resource.create({"service.name": "kfm-test-pipeline"})
    )
    exporter = otlp_http.OTLPSpanExporter(endpoint=f"{endpoints.otlp_http_endpoint}/v1/traces")
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("kfm.tests")
    name = f"kfm-test-span-{uuid.uuid4().hex[:8]}"
    with tracer.start_as_current_span(name) as span:
        span.set_attribute("kfm.rows", 3)
        context = span.get_span_context()
    provider.force_flush()
    provider.shutdown()

    trace_hex, span_hex = f"{context.trace_id:032x}", f"{context.span_id:016x}"
    deadline = time.monotonic() + 20
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not found:
        records = [r for path in endpoints.span_files for r in read_otlp_json_lines(path)]
        found = [s for s in otlp_spans(records) if s.get("name") == name]
        time.sleep(0.2)
    assert found, f"span {name} never reached {endpoints.span_files}"
    span_json = found[0]
    assert span_json["traceId"] == trace_hex
    assert span_json["spanId"] == span_hex
    attributes = {a["key"]: a["value"] for a in span_json.get("attributes", [])}
    assert attributes["kfm.rows"] == {"intValue": "3"}  # int64 as a string in OTLP JSON
    resource = {a["key"]: a["value"] for a in span_json["resource"]}
    assert resource["service.name"] == {"stringValue": "kfm-test-pipeline"}


# --------------------------------------------------------------------------- provider


def test_health_versions_logs_and_external_view(local: tuple[LocalServices, Endpoints]) -> None:
    provider, endpoints = local
    started = set(provider.pids())
    if not started:
        _require("lakefs")  # nothing is built: fail or skip with the reason
    health = provider.health()
    assert health == dict.fromkeys(started, True)
    versions = provider.versions()
    assert set(started) <= set(versions)
    for service in started:
        assert provider.log_tail(service, 20).strip(), f"{service} wrote no log"
    assert provider.log_tail("no-such-service") == ""

    external = ExternalServices(
        marquez_url=endpoints.marquez_url,
        otlp_http_endpoint=endpoints.otlp_http_endpoint,
        lakefs=endpoints.lakefs,
        span_files=endpoints.span_files,
    )
    again = external.start(started)
    assert again.lakefs == (endpoints.lakefs if "lakefs" in started else None)
    assert external.health() == dict.fromkeys(started, True)
    external.stop()


def test_zz_stop_leaves_no_processes(local: tuple[LocalServices, Endpoints]) -> None:
    """The last test that uses the module's services: stop them and check nothing is left."""
    provider, _ = local
    pids = provider.pids()
    if not pids:
        _require("lakefs")
    workdir = provider.workdir
    assert workdir is not None and workdir.exists()
    provider.stop()
    for service, pid in pids.items():
        assert not _alive(pid), f"{service} (pid {pid}) survived stop()"
    assert not workdir.exists()
    assert provider.health() == {}
    assert not list(provider.paths.run_dir.glob(f"local-{os.getpid()}.json"))
    if "marquez" in pids:
        assert not _pg_online(), "the kfm PostgreSQL cluster is still running after stop()"
    provider.stop()  # idempotent


def _pg_online() -> bool:
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=False)
    return any(
        line.split()[1:2] == ["kfm"] and "online" in line for line in out.stdout.splitlines()
    )


def test_missing_build_is_a_service_error(tmp_path: Path) -> None:
    provider = LocalServices(cache_dir=tmp_path)
    with pytest.raises(ServiceError) as info:
        provider.start({"lakefs"})
    assert info.value.service == "lakefs"
    assert "scripts/build-services.sh" in str(info.value)
    with pytest.raises(ValueError):
        provider.start({"kafka"})
    provider.stop()


def test_get_provider_local() -> None:
    provider = get_provider("local")
    assert provider.name == "local"
    with pytest.raises(ValueError):
        get_provider("nope")


def test_crashed_session_children_die_with_it() -> None:
    """PR_SET_PDEATHSIG: a SIGKILLed test session takes its services with it."""
    _require("collector")
    script = textwrap.dedent(
        """
        import json, os, signal, sys
        from kfm_conformance.services.local import LocalServices
        p = LocalServices()
        p.start({"collector"})
        print(json.dumps({"pids": p.pids(), "workdir": str(p.workdir)}), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    session = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    stdout, stderr = session.communicate(timeout=120)
    assert session.returncode == -signal.SIGKILL, stderr
    info = json.loads(stdout.strip().splitlines()[-1])
    pid = info["pids"]["collector"]
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "the collector outlived its crashed parent"
    # The next start (here: the reaper alone) tidies the dead session's leftovers.
    run_dir = LocalServices().paths.run_dir
    assert (run_dir / f"local-{session.pid}.json").exists()
    reap_stale_sessions(run_dir)
    assert not (run_dir / f"local-{session.pid}.json").exists()
    assert not Path(info["workdir"]).exists()


def test_reaper_kills_children_of_a_dead_owner(tmp_path: Path) -> None:
    """Without PDEATHSIG (e.g. started from a thread), the pidfile reaper cleans up."""
    sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        ticks = int(Path(f"/proc/{sleeper.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        dead_owner = subprocess.Popen(["true"])
        dead_owner.wait()
        workdir = tmp_path / "kfm-services-crashed"
        workdir.mkdir()
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        (run_dir / f"local-{dead_owner.pid}.json").write_text(
            json.dumps(
                {
                    "owner_pid": dead_owner.pid,
                    "owner_start": 1,
                    "workdir": str(workdir),
                    "children": [{"service": "lakefs", "pid": sleeper.pid, "start": ticks}],
                    "postgres": None,
                }
            )
        )
        assert reap_stale_sessions(run_dir) == [sleeper.pid]
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
        assert not workdir.exists()
        assert not list(run_dir.glob("local-*.json"))
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


# --------------------------------------------------------------------------- OTLP JSON


def test_read_otlp_json_lines_tolerates_a_partial_last_line(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    first = {"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "a", "traceId": "ab"}]}]}]}
    path.write_text(json.dumps(first) + "\n" + '{"resourceSpans": [{"scopeSp')
    assert read_otlp_json_lines(path) == [first]
    assert [s["name"] for s in otlp_spans(read_otlp_json_lines(path))] == ["a"]
    assert read_otlp_json_lines(tmp_path / "missing.jsonl") == []
    path.write_text('{"broken\n' + json.dumps(first) + "\n")
    with pytest.raises(ValueError):
        read_otlp_json_lines(path)
