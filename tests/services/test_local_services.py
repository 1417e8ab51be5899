"""The `local` provider against the real services, started as processes on loopback.

The services come from ``scripts/build-services.sh`` (Marquez built from its source, see
services/README.md). A service whose build is missing makes its tests FAIL when ``CI`` is set
and skip (with the reason) otherwise (service_builds.py).

The Marquez checks the harness applies to every lineage run (kfm_conformance.services.marquez)
are run here against the real Marquez too: a plain run, an Airflow-shaped run hierarchy, and
the ways a pipeline's events can be wrong that Marquez itself notices.
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
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from service_builds import require_service

from kfm_conformance.capture.lineage import LineageSink
from kfm_conformance.services import get_provider, otlp_spans, read_otlp_json_lines
from kfm_conformance.services.base import SERVICE_NAMES, Endpoints, ServiceError
from kfm_conformance.services.external import ExternalServices
from kfm_conformance.services.local import LocalServices, missing_builds, reap_stale_sessions
from kfm_conformance.services.marquez import MarquezClient, judge_marquez_run

REPO = Path(__file__).resolve().parents[2]


def _require(service: str) -> None:
    """Fail (under CI) or skip (elsewhere) when ``service`` cannot be started here."""
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


def _marquez_url(local: tuple[LocalServices, Endpoints]) -> str:
    _require("marquez")
    if "marquez" in _START_ERRORS:
        pytest.fail(f"Marquez did not start: {_START_ERRORS['marquez']}")
    url = local[1].marquez_url
    assert url
    return url


def _through_marquez(
    url: str, events: list[dict[str, Any]], *, exit_ok: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send the events through a lineage sink that tees them to Marquez, as a lineage
    scenario does; judge them; return ({check: finding}, evidence)."""
    sink = LineageSink(forward_to=url, forward_timeout_s=30)
    try:
        since = sink.mark()
        for event in events:
            response = requests.post(sink.endpoint, json=event, timeout=30)
            assert response.status_code == 201
        assert sink.wait_forwarded(60)
        records = sink.records(since=since)
    finally:
        sink.close()
    findings, evidence = judge_marquez_run(
        records, exit_ok=exit_ok, client=MarquezClient(url), wait_s=2
    )
    return {f.check: f for f in findings}, evidence


def _ns() -> str:
    return f"kfm-test-{uuid.uuid4().hex[:8]}"


def test_the_marquez_checks_pass_a_good_run_on_the_real_marquez(
    local: tuple[LocalServices, Endpoints],
) -> None:
    url = _marquez_url(local)
    namespace, run_id = _ns(), str(uuid.uuid4())
    upstream = {"namespace": "http://127.0.0.1:8080", "name": "/data.json"}
    output = {"namespace": "file", "name": "/srv/out/data.parquet"}
    events = [_ol_event(kind, run_id, namespace, "ingest") for kind in ("START", "COMPLETE")]
    for event in events:
        event["inputs"], event["outputs"] = [upstream], [output]
    checks, evidence = _through_marquez(url, events)
    assert {c: f.ok for c, f in checks.items()} == {
        "marquez.accepted": True,
        "marquez.run-state": True,
        "marquez.lineage-graph": True,
    }, {c: f.message for c, f in checks.items()}
    assert [f["status"] for f in evidence["forwarded"]] == [201, 201]
    node = f"job:{namespace}:ingest"
    assert (f"dataset:{upstream['namespace']}:{upstream['name']}", node) in checks[
        "marquez.lineage-graph"
    ].expected

    # The same events said the run failed: Marquez shows COMPLETED, the check refuses it.
    checks, _ = _through_marquez(url, events, exit_ok=False)
    state = checks["marquez.run-state"]
    assert not state.ok and state.expected == "FAILED" and state.observed == "COMPLETED"


def _airflow_events(namespace: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """A DAG run and two task runs, shaped as the Airflow OpenLineage provider sends them: the
    tasks' jobs are named ``<dag>.<task>`` and carry a parent run facet naming the DAG run."""
    ids = {name: str(uuid.uuid4()) for name in ("dag", "extract", "publish")}
    dag_job = "kfm_ingest"
    ref = {"job": {"namespace": namespace, "name": dag_job}, "run": {"runId": ids["dag"]}}
    parent = {
        "parent": {
            **ref,
            "root": ref,
            "_producer": "https://github.com/apache/airflow",
            "_schemaURL": "https://openlineage.io/spec/facets/1-1-0/ParentRunFacet.json"
            "#/$defs/ParentRunFacet",
        }
    }
    upstream = [{"namespace": "http://127.0.0.1:8080", "name": "/data.json"}]
    output = [{"namespace": "file", "name": "/srv/out/data.parquet"}]

    def task(kind: str, name: str, **sides: list[dict[str, str]]) -> dict[str, Any]:
        event = _ol_event(kind, ids[name], namespace, f"{dag_job}.{name}")
        event["run"]["facets"] = parent
        event.update(sides)
        return event

    events = [
        _ol_event("START", ids["dag"], namespace, dag_job),
        task("START", "extract", inputs=upstream),
        task("COMPLETE", "extract", inputs=upstream),
        task("START", "publish", outputs=output),
        task("COMPLETE", "publish", outputs=output),
        _ol_event("COMPLETE", ids["dag"], namespace, dag_job),
    ]
    return events, ids


def test_the_real_marquez_links_each_task_run_to_its_dag_run(
    local: tuple[LocalServices, Endpoints],
) -> None:
    url = _marquez_url(local)
    namespace = _ns()
    events, ids = _airflow_events(namespace)
    checks, evidence = _through_marquez(url, events)
    assert {c: f.ok for c, f in checks.items()} == {
        "marquez.accepted": True,
        "marquez.run-state": True,
        "marquez.parent-run": True,
        "marquez.lineage-graph": True,
    }, {c: f.message for c, f in checks.items()}
    parents = {p["job"]: p for p in evidence["parents"]}
    assert set(parents) == {"kfm_ingest.extract", "kfm_ingest.publish"}
    for row in parents.values():
        assert row["marquez_parent_run_id"] == ids["dag"]
        assert row["marquez_knows_parent_run"] is True
        assert row["marquez_parent_job"] == "kfm_ingest"
    graph = checks["marquez.lineage-graph"].expected
    assert ("dataset:http://127.0.0.1:8080:/data.json", f"job:{namespace}:kfm_ingest.extract") in (
        graph
    )
    assert (
        f"job:{namespace}:kfm_ingest.publish",
        "dataset:file:/srv/out/data.parquet",
    ) in graph

    # The DAG run says COMPLETE although the pipeline failed: the root run is refused.
    events, _ = _airflow_events(_ns())
    checks, _ = _through_marquez(url, events, exit_ok=False)
    assert not checks["marquez.run-state"].ok
    assert "of job kfm_ingest: Marquez shows it as COMPLETED, expected FAILED" in (
        checks["marquez.run-state"].message
    )


@pytest.mark.parametrize(
    ("breakage", "marquez_says"),
    [
        ("no-producer", "producer must not be null"),
        ("no-job-namespace", "job.namespace must not be null"),
        ("unparsable-event-time", "Cannot deserialize value of type `java.time.ZonedDateTime`"),
    ],
)
def test_an_event_the_real_marquez_refuses_is_a_finding_with_its_error_text(
    local: tuple[LocalServices, Endpoints], breakage: str, marquez_says: str
) -> None:
    url = _marquez_url(local)
    run_id = str(uuid.uuid4())
    events = [_ol_event(kind, run_id, _ns(), "ingest") for kind in ("START", "COMPLETE")]
    broken = events[1]
    if breakage == "no-producer":
        del broken["producer"]
    elif breakage == "no-job-namespace":
        del broken["job"]["namespace"]
    else:
        broken["eventTime"] = "yesterday at noon"
    checks, evidence = _through_marquez(url, events)
    accepted = checks["marquez.accepted"]
    assert not accepted.ok
    assert marquez_says in accepted.message, accepted.message
    assert accepted.observed[0].startswith("COMPLETE: ")
    statuses = [f["status"] for f in evidence["forwarded"]]
    assert statuses[0] == 201 and statuses[1] in (422, 500), statuses


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
    started = set(provider.pids()) & SERVICE_NAMES
    if not started:
        _require("lakefs")  # nothing is built: fail or skip with the reason
    health = provider.health()
    assert health == dict.fromkeys(started, True)
    versions = provider.versions()
    assert set(started) <= set(versions)
    for service in started | ({"postgresql"} if "marquez" in started else set()):
        assert provider.log_tail(service, 20).strip(), f"{service} wrote no log"
    if "marquez" in started:
        assert versions["postgresql"] == provider.versions()["postgresql"]
        assert "database system is ready to accept connections" in provider.log_tail(
            "postgresql", 400
        )
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
        assert "postgresql" in pids  # Marquez's own cluster, stopped with it
        assert not _processes_mentioning(str(workdir)), "a process still uses the temp dir"
    provider.stop()  # idempotent


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line mentions ``text`` (e.g. a PostgreSQL backend's data dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _children_of(pids: Iterable[int]) -> list[int]:
    wanted = set(pids)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2 :].split()[1]) in wanted:
            found.append(int(entry.name))
    return found


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


@pytest.mark.parametrize("service", ["collector", "marquez"])
def test_crashed_session_children_die_with_it(service: str) -> None:
    """PR_SET_PDEATHSIG: a SIGKILLed test session takes its services with it (Marquez with its
    PostgreSQL, which runs as another user, and that server's own children)."""
    _require(service)
    script = textwrap.dedent(
        f"""
        import json, os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_local_services import _children_of
        from kfm_conformance.services.local import LocalServices
        p = LocalServices()
        p.start({{{service!r}}})
        pids = p.pids()
        print(json.dumps({{"pids": pids, "children": _children_of(pids.values()),
                          "workdir": str(p.workdir)}}), flush=True)
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
    stdout, stderr = session.communicate(timeout=300)
    assert session.returncode == -signal.SIGKILL, stderr
    info = json.loads(stdout.strip().splitlines()[-1])
    started = [*info["pids"].values(), *info["children"]]
    if service == "marquez":
        assert set(info["pids"]) == {"marquez", "postgresql"}
        assert info["children"], "PostgreSQL's own processes were not found"
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in started if _alive(pid)]
    assert not survivors, f"{survivors} outlived their crashed parent ({info})"
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


def test_a_postgresql_that_fails_is_a_marquez_error_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Marquez's database failing to start is a ServiceError of Marquez with the server's log
    tail, and leaves nothing behind. (Stand-in PostgreSQL binaries; no Marquez is started.)"""
    from kfm_conformance.services import local as local_module
    from kfm_conformance.services.base import MARQUEZ_VERSION

    bin_dir = tmp_path / "postgresql" / "15" / "bin"
    bin_dir.mkdir(parents=True)
    scripts = {
        "initdb": 'mkdir -p "$2"',
        "postgres": "echo 'FATAL:  could not create lock file' >&2; exit 1",
        "pg_isready": "exit 2",
        "psql": "exit 2",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    cache = tmp_path / "cache"
    jar = cache / "marquez" / MARQUEZ_VERSION / f"marquez-{MARQUEZ_VERSION}.jar"
    jar.parent.mkdir(parents=True)
    jar.write_bytes(b"")
    monkeypatch.setattr(local_module, "_postgres_bin_dir", lambda: bin_dir)
    monkeypatch.setattr(local_module.os, "geteuid", lambda: 1000)  # run the stand-ins as us
    provider = LocalServices(cache_dir=cache, start_timeout=30)
    with pytest.raises(ServiceError) as info:
        provider.start({"marquez"})
    assert info.value.service == "marquez"
    assert "PostgreSQL for Marquez" in info.value.message
    assert "could not create lock file" in info.value.log_tail
    assert provider.pids() == {} and provider.workdir is None
    assert not list((cache / "run").glob("local-*.json"))
