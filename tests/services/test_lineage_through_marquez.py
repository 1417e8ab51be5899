"""Lineage re-verified through the real Marquez, end to end through the CLI.

Every known-bad lineage pipeline of fixtures/catalogue.toml is refused on ``lineage`` when the
events also go through a real Marquez (``--services marquez=local``), never an ``error``; where
Marquez itself can see the breakage (a run left RUNNING, a failed run shown COMPLETED), its own
check is among the refusals. The reference pipeline passing through all three real services is
in test_promotion.py; the checks against the real Marquez one by one in test_local_services.py.

The fixtures share one real Marquez (and its PostgreSQL), started once for this module by the
``local`` provider and handed to each CLI run as an ``external`` service: starting it for every
fixture cost about 45 s each. Each run keeps to its own OpenLineage namespaces, so the runs do
not see each other's jobs. That each CLI run can start its own Marquez is shown by
test_promotion.py and test_local_services.py.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
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
)
from service_builds import require_service

from kfm_conformance.services.local import LocalServices
from kfm_conformance.services.selection import ENV_MARQUEZ_URL

LINEAGE_FIXTURES: list[dict[str, Any]] = [
    entry
    for entry in tomllib.loads((FIXTURES / "catalogue.toml").read_text())["fixture"]
    if entry["guarantee"] == "lineage"
]

#: The Marquez check that refuses the fixture too, where Marquez can see what is wrong. An
#: event Marquez accepts although it breaks the spec (a string rowCount), or no event at all,
#: is refused by the harness's own lineage checks alone.
MARQUEZ_SEES = {
    "complete_on_failure.py": "marquez.run-state",  # a failed run shown COMPLETED
    "lineage_without_terminal.py": "marquez.run-state",  # the run stays RUNNING
    "run_id_per_event.py": "marquez.run-state",  # the START's run never ends
}
SERVICES = "marquez=external,lakefs=embedded,collector=embedded"


@pytest.fixture(scope="module")
def shared_marquez() -> Iterator[str]:
    """One real Marquez for every fixture of this module: its URL."""
    require_service("marquez")
    provider = LocalServices()
    endpoints = provider.start({"marquez"})
    try:
        assert endpoints.marquez_url
        yield endpoints.marquez_url
    finally:
        provider.stop()


@pytest.mark.parametrize("entry", LINEAGE_FIXTURES, ids=[e["script"] for e in LINEAGE_FIXTURES])
def test_known_bad_lineage_is_refused_through_the_real_marquez(
    entry: dict[str, Any], tmp_path: Path, shared_marquez: str
) -> None:
    profile = fixture_profile(tmp_path, entry["script"], base=entry.get("profile", "profile.toml"))
    report_dir = tmp_path / "report"
    code, out, err = certify(
        "certify",
        "--profile",
        str(profile),
        "--services",
        SERVICES,
        "--only",
        "lineage",
        "--openlineage-schemas",
        str(openlineage_spec()),
        "--report-dir",
        str(report_dir),
        env={ENV_MARQUEZ_URL: shared_marquez},
    )
    report = load_report(report_dir)
    row = guarantee_row(report, "lineage")
    scenarios = row["scenarios"]
    errors = [s["message"] for s in scenarios if s["verdict"] == "error"]
    assert not errors, errors
    assert row["verdict"] == "fail", (out, err[-2000:])
    assert code == 1 and report["verdict"] == "not-certified"
    assert report["provenance"]["services"]["provider"] == (
        "lakefs=embedded,collector=embedded,marquez=external"
    )
    # Marquez's API reports no version, and the harness does not guess one for a service it
    # did not start.
    marquez = "external (unreported)"
    assert report["provenance"]["services"]["versions"]["marquez"] == marquez
    assert all(s["evidence"]["services"]["marquez"] == marquez for s in scenarios)
    refused = [s for s in scenarios if s["verdict"] == "fail"]
    assert refused
    findings = [f for s in scenarios for f in s["findings"]]
    marquez_findings = [f for f in findings if f["check"].startswith("marquez.")]
    expected = MARQUEZ_SEES.get(entry["script"])
    if expected is not None:
        broken = [f for s in refused for f in s["findings"] if not f["ok"]]
        assert any(f["check"] == expected for f in broken), [
            (f["check"], f["message"]) for f in broken
        ]
        assert any(expected in s["message"] or "Marquez" in s["message"] for s in refused)
    elif entry["script"] != "no_lineage.py":
        # The events did go through Marquez, which took them: the harness's checks refuse.
        assert any(f["check"] == "marquez.accepted" and f["ok"] for f in marquez_findings)
    else:
        assert not marquez_findings  # nothing was sent, so nothing reached Marquez
