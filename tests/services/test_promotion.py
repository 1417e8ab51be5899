"""The promotion guarantee and the real-service path, end to end through the CLI.

- the reference pipeline, with its lakeFS profile, is certified under --strict on promotion,
  telemetry and lineage through all three real services (``--services local``: lakeFS, the
  Collector and Marquez);
- a service that dies in the middle of a session gives ``error`` with its log tail, never
  ``fail``;
- lakeFS credentials never appear in anything the harness writes, even when the pipeline
  prints them.

The known-bad lakeFS pipelines are in fixtures/catalogue.toml (tests/test_known_bad.py).
Each CLI run starts its own services once (a session of the child pytest), so these tests
run under xdist without sharing or duplicating services within a run.
"""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    FIXTURES,
    REPO,
    certify,
    fixture_profile,
    guarantee_row,
    load_report,
    openlineage_spec,
)
from service_builds import require_service

from kfm_conformance.services.base import (
    COLLECTOR_VERSION,
    LAKEFS_VERSION,
    MARQUEZ_VERSION,
    Endpoints,
)
from kfm_conformance.services.local import LocalServices, missing_builds

LAKEFS_PROFILE = REPO / "reference" / "profile-lakefs.toml"
REFERENCE_PROFILE = REPO / "reference" / "profile.toml"


def _scenarios(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for row in report["guarantees"] for s in row["scenarios"]]


def test_reference_is_certified_through_all_three_real_services(tmp_path: Path) -> None:
    require_service("lakefs")
    require_service("collector")
    require_service("marquez")
    report_dir = tmp_path / "report"
    started = time.monotonic()
    code, out, err = certify(
        "certify",
        "--profile",
        str(LAKEFS_PROFILE),
        "--services",
        "local",
        "--only",
        "promotion",
        "telemetry",
        "lineage",
        "--strict",
        "--openlineage-schemas",
        str(openlineage_spec()),
        "--report-dir",
        str(report_dir),
    )
    elapsed = time.monotonic() - started
    report = load_report(report_dir)
    verdicts = {s["check_id"]: (s["verdict"], s["message"][:200]) for s in _scenarios(report)}
    assert code == 0, (verdicts, err[-2000:])
    assert report["verdict"] == "certified" and report["level"] == "strict"
    assert out.startswith("CERTIFIED (strict)")
    promotion = guarantee_row(report, "promotion")
    assert promotion["verdict"] == "pass"
    assert len(promotion["scenarios"]) == 8
    services = report["provenance"]["services"]
    assert services["provider"] == "local"
    assert services["versions"]["lakefs"] == f"{LAKEFS_VERSION} (local)"
    assert services["versions"]["collector"] == f"{COLLECTOR_VERSION} (local)"
    assert services["versions"]["marquez"] == f"{MARQUEZ_VERSION} (local)"
    for scenario in promotion["scenarios"]:
        evidence = scenario["evidence"]
        assert evidence["services"]["lakefs"] == "1.84.0 (local)"
        assert evidence["promotion"]["runs"], scenario["check_id"]
        assert evidence["promotion"]["lakefs_version"] == "1.84.0"
    # Telemetry was read back from the real Collector's file exporter.
    telemetry = guarantee_row(report, "telemetry")
    assert all(s["evidence"]["services"]["collector"] for s in telemetry["scenarios"])
    notes = [n for s in telemetry["scenarios"] for n in s["evidence"].get("notes", [])]
    assert any("read back from the OpenTelemetry Collector" in n for n in notes)
    # Every lineage run was re-verified through the real Marquez, and Marquez agreed.
    lineage = guarantee_row(report, "lineage")
    assert lineage["verdict"] == "pass"
    for scenario in lineage["scenarios"]:
        assert scenario["evidence"]["services"]["marquez"] == f"{MARQUEZ_VERSION} (local)"
        checks = {f["check"] for f in scenario["findings"] if f["check"].startswith("marquez.")}
        assert {"marquez.accepted", "marquez.run-state"} <= checks, scenario["check_id"]
        assert all(f["ok"] for f in scenario["findings"] if f["check"].startswith("marquez."))
        runs = scenario["evidence"]["marquez"]
        assert runs and all(f["status"] == 201 for r in runs for f in r["forwarded"])
    durations = {s["check_id"]: s["duration_s"] for s in promotion["scenarios"]}
    print(f"certify took {elapsed:.1f}s; promotion scenarios: {durations}")


@pytest.fixture
def kills_lakefs(tmp_path: Path) -> Path:
    """A pipeline that kills the session's lakeFS (its sibling process) during its first run."""
    script = tmp_path / "kills_lakefs.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal, sys
            sys.path.insert(0, {str(FIXTURES)!r})
            from kfm_lakefs_fixture import LakeFSPipeline

            class KillsLakeFS(LakeFSPipeline):
                def promote(self, data):
                    # lakeFS and this run descend from the certification's test session:
                    # lakeFS is a child of the nearest of this run's ancestors that has one
                    # (the run's own init stands between the run and its worker).
                    def parent(pid):
                        return int(open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[1])
                    lakefs = {{}}
                    for entry in os.listdir("/proc"):
                        if not entry.isdigit():
                            continue
                        try:
                            argv0 = open(f"/proc/{{entry}}/cmdline", "rb").read().split(b"\\0")[0]
                            if argv0.endswith(b"/lakefs"):
                                lakefs.setdefault(parent(entry), []).append(int(entry))
                        except (OSError, ValueError, IndexError):
                            continue
                    pid = os.getppid()
                    while pid > 1 and pid not in lakefs:
                        pid = parent(pid)
                    for victim in lakefs.get(pid, []):
                        os.kill(victim, signal.SIGKILL)
                    super().promote(data)

            if __name__ == "__main__":
                KillsLakeFS().main()
            """
        )
    )
    return script


def test_a_service_that_dies_mid_session_is_an_error_with_its_log_never_a_fail(
    tmp_path: Path, kills_lakefs: Path
) -> None:
    require_service("lakefs")
    profile = fixture_profile(tmp_path, str(kills_lakefs), base="lakefs_profile.toml")
    report_dir = tmp_path / "report"
    code, out, err = certify(
        "certify",
        "--profile",
        str(profile),
        "--services",
        "lakefs=local",
        "--only",
        "promotion",
        "--report-dir",
        str(report_dir),
        # The stand-in for a service dying is a pipeline that kills lakeFS: it must be able to
        # see it, which a contained run cannot (its own PID namespace).
        "--isolation",
        "none",
    )
    report = load_report(report_dir)
    scenarios = guarantee_row(report, "promotion")["scenarios"]
    verdicts = [s["verdict"] for s in scenarios]
    assert code == 1, (out, err[-2000:])
    assert "fail" not in verdicts and "pass" not in verdicts, verdicts
    assert set(verdicts) == {"error"}, verdicts
    failures = [s["evidence"].get("service_failure") for s in scenarios]
    assert all(f and f["service"] == "lakefs" for f in failures), failures
    assert any("lakeFS" in s["message"] for s in scenarios)
    # The dying service's own log is in the evidence.
    assert any(f["log_tail"].strip() for f in failures if f), failures


@pytest.fixture(scope="module")
def running_lakefs() -> Iterator[Endpoints]:
    """One lakeFS for the module (started by this test process, handed over as `external`)."""
    require_service("lakefs")
    provider = LocalServices()
    try:
        yield provider.start({"lakefs"})
    finally:
        provider.stop()


@pytest.fixture
def prints_its_credentials(tmp_path: Path) -> Path:
    script = tmp_path / "prints_credentials.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys
            sys.path.insert(0, {str(FIXTURES)!r})
            from kfm_lakefs_fixture import LakeFSPipeline

            # A careless pipeline: it logs its lakeFS credentials (the harness must mask them).
            print("key", os.environ.get("LAKEFS_ACCESS_KEY_ID"), file=sys.stderr)
            print("secret", os.environ.get("LAKEFS_SECRET_ACCESS_KEY"))
            LakeFSPipeline().main()
            """
        )
    )
    return script


def test_lakefs_credentials_never_reach_reports_or_logs(
    tmp_path: Path,
    running_lakefs: Endpoints,
    prints_its_credentials: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    access = running_lakefs.lakefs
    assert access is not None
    monkeypatch.setenv("KFM_LAKEFS_ENDPOINT", access.endpoint)
    monkeypatch.setenv("KFM_LAKEFS_ACCESS_KEY_ID", access.access_key_id)
    monkeypatch.setenv("KFM_LAKEFS_SECRET_ACCESS_KEY", access.secret_access_key)
    profile = fixture_profile(tmp_path, str(prints_its_credentials), base="lakefs_profile.toml")
    report_dir = tmp_path / "report"
    bundle = tmp_path / "bundle"
    code, out, err = certify(
        "certify",
        "--profile",
        str(profile),
        "--services",
        "lakefs=external",
        "--only",
        "promotion",
        "--report-dir",
        str(report_dir),
        "--bundle",
        str(bundle),
    )
    report = load_report(report_dir)
    verdicts = {s["check_id"]: s["verdict"] for s in _scenarios(report)}
    assert code == 0, (verdicts, err[-2000:])
    assert report["provenance"]["services"]["provider"].startswith("lakefs=external")
    assert report["provenance"]["services"]["versions"]["lakefs"] == "1.84.0 (external)"
    leaked = []
    written = [p for root in (report_dir, bundle) for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "pytest.log" for p in written)
    for path in written:
        data = path.read_bytes()
        for secret in (access.access_key_id, access.secret_access_key):
            if secret.encode() in data:
                leaked.append(path.name)
    assert not leaked, leaked
    assert access.secret_access_key not in out + err
    # The pipeline did print them: the masks show where.
    runs = [r for s in _scenarios(report) for r in s["evidence"]["runs"]]
    assert any("secret ***" in r["stdout_tail"] for r in runs)
    assert os.environ.get("KFM_LAKEFS_SECRET_ACCESS_KEY") == access.secret_access_key


def test_lineage_is_an_error_when_the_chosen_marquez_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--services local` without a Marquez build: lineage scenarios are errors, not fails."""
    monkeypatch.setenv("KFM_CACHE_DIR", str(tmp_path / "empty-cache"))  # no builds at all
    assert missing_builds(wanted={"marquez"})
    report_dir = tmp_path / "report"
    code, out, err = certify(
        "certify",
        "--profile",
        str(REFERENCE_PROFILE),
        "--services",
        "local",
        "--only",
        "lineage",
        "--openlineage-schemas",
        str(openlineage_spec()),
        "--report-dir",
        str(report_dir),
    )
    report = load_report(report_dir)
    scenarios = guarantee_row(report, "lineage")["scenarios"]
    assert code == 1, (out, err[-2000:])
    assert {s["verdict"] for s in scenarios} == {"error"}
    assert all("Marquez unavailable: " in s["message"] for s in scenarios), scenarios[0]["message"]
    assert scenarios[0]["evidence"]["service_failure"]["service"] == "marquez"
    assert report["provenance"]["services"]["provider"] == "local"
