"""Choosing providers (``--services``), the external settings, and the Collector tap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REFERENCE_PROFILE, certify

from kfm_conformance.redact import _RUNTIME_SECRETS
from kfm_conformance.services.collector_tap import CollectorTap, scenario_documents
from kfm_conformance.services.runtime import ServiceSession
from kfm_conformance.services.selection import ExternalSettings, parse_services
from kfm_conformance.verdict import ConfigurationError


def test_one_provider_for_all_and_per_service_choices() -> None:
    assert parse_services(None).choice == dict.fromkeys(
        ["collector", "lakefs", "marquez"], "embedded"
    )
    assert parse_services("local").describe() == "local"
    mixed = parse_services("lakefs=local,collector=local,marquez=embedded")
    assert mixed.choice == {"collector": "local", "lakefs": "local", "marquez": "embedded"}
    assert mixed.real() == {"collector": "local", "lakefs": "local"}
    assert mixed.describe() == "lakefs=local,collector=local,marquez=embedded"
    # A bare provider is the default for the services not named.
    assert parse_services("local,marquez=embedded").choice["lakefs"] == "local"
    # Unnamed services follow the profile's [services] provider.
    assert parse_services("lakefs=external", "local").choice == {
        "collector": "local",
        "lakefs": "external",
        "marquez": "local",
    }
    assert parse_services(None, "local").describe() == "local"


@pytest.mark.parametrize(
    "spec",
    ["kafka=local", "lakefs=cloud", "nope", "local,containers", "lakefs=local,lakefs=local", "a,"],
)
def test_bad_specs_are_configuration_errors(spec: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_services(spec)


def test_a_bad_spec_is_one_line_and_exit_2(tmp_path: Path) -> None:
    code, out, err = certify(
        "certify",
        "--profile",
        str(REFERENCE_PROFILE),
        "--services",
        "lakefs=cloud",
        "--report-dir",
        str(tmp_path / "r"),
    )
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "unknown provider 'cloud'" in err


def test_external_settings_come_from_env_and_register_secrets() -> None:
    env = {
        "KFM_LAKEFS_ENDPOINT": "http://127.0.0.1:1/",
        "KFM_LAKEFS_ACCESS_KEY_ID": "AKIAEXTERNALTEST1",
        "KFM_LAKEFS_SECRET_ACCESS_KEY": "external-secret-value-1",
    }
    settings = ExternalSettings.from_sources({"otlp_endpoint": "http://127.0.0.1:2"}, env)
    assert settings.lakefs is not None and settings.lakefs.endpoint == "http://127.0.0.1:1"
    assert "KFM_COLLECTOR_SPAN_FILES" in settings.problems[0]
    # Registered: every Redactor (reports, bundles) masks them from now on.
    assert {"AKIAEXTERNALTEST1", "external-secret-value-1"} <= _RUNTIME_SECRETS
    missing = ExternalSettings.from_sources({"lakefs_endpoint": "http://x"}, {})
    assert missing.lakefs is None and "KFM_LAKEFS_ACCESS_KEY_ID" in missing.problems[0]


def test_an_external_service_that_does_not_answer_is_unavailable_not_raised() -> None:
    session = ServiceSession(
        parse_services("marquez=external"),
        ExternalSettings(marquez_url="http://127.0.0.1:9"),
        start_timeout=0.5,
    )
    session.providers.clear()
    from kfm_conformance.services.external import ExternalServices

    provider = ExternalServices(marquez_url="http://127.0.0.1:9", start_timeout=0.5)
    session._make_provider = lambda name: provider  # type: ignore[method-assign]
    session.start()
    problem = session.unavailable("marquez")
    assert problem is not None and str(problem).startswith("Marquez unavailable:")
    assert session.versions() == {}
    session.stop()


def _export(scenario: str, name: str) -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "kfm.scenario.id", "value": {"stringValue": scenario}}]
                },
                "scopeSpans": [{"spans": [{"name": name, "traceId": "ab", "spanId": "01"}]}],
            }
        ]
    }


def test_collector_tap_slices_by_offset_and_scenario(tmp_path: Path) -> None:
    traces = tmp_path / "traces.jsonl"
    traces.write_text(json.dumps(_export("s1", "old")) + "\n")
    tap = CollectorTap([str(traces)], quiet_s=0.05, poll_s=0.01, wait_s=1)
    mark = tap.mark()
    with traces.open("a") as handle:
        handle.write(json.dumps(_export("s1", "new")) + "\n")
        handle.write(json.dumps(_export("s2", "other")) + "\n")
        handle.write('{"resourceSpans": [')  # the exporter is mid-write
    docs, metrics, waited = tap.collect(mark, "s1")
    assert [d["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"] for d in docs] == ["new"]
    assert metrics == [] and waited < 1
    # A run that exported nothing waits the whole bound, then reports nothing.
    docs, _, waited = tap.collect(tap.mark(), "s3")
    assert docs == [] and waited >= 1
    assert scenario_documents([_export("a", "x"), _export("b", "y")], "b")[0]["resourceSpans"]
