"""Every check can fail: each known-bad pipeline in fixtures/ is refused on its guarantee.

The catalogue (fixtures/catalogue.toml) is data; this test runs the real CLI against each
fixture, restricted to the guarantee it breaks (or to the scenarios of it that the catalogue
names), and checks the verdict, the failing check (and,
where the catalogue names one, its check ID) and its evidence.
"""

from __future__ import annotations

import tomllib
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

CATALOGUE: list[dict[str, Any]] = tomllib.loads((FIXTURES / "catalogue.toml").read_text())[
    "fixture"
]


@pytest.mark.parametrize("entry", CATALOGUE, ids=[e["script"] for e in CATALOGUE])
def test_known_bad_pipeline_is_refused_on_its_guarantee(entry: dict[str, Any], tmp_path: Path):
    assert (FIXTURES / entry["script"]).is_file()
    profile = fixture_profile(tmp_path, entry["script"], base=entry.get("profile", "profile.toml"))
    report_dir = tmp_path / "report"
    extra = list(entry.get("args", []))
    if entry["guarantee"] in ("lineage", "telemetry"):
        extra += ["--openlineage-schemas", str(openlineage_spec())]
    code, out, err = certify(
        "certify",
        "--profile",
        str(profile),
        "--report-dir",
        str(report_dir),
        "--only",
        *entry.get("scenarios", [entry["guarantee"]]),
        *extra,
    )
    report = load_report(report_dir)
    row = guarantee_row(report, entry["guarantee"])
    verdicts = [s["verdict"] for s in row["scenarios"]]
    if "scenarios" in entry:  # exactly the scenarios named, every one of them run
        ran = sorted({s["check_id"].split("[", 1)[0] for s in row["scenarios"]})
        assert ran == sorted(entry["scenarios"]), ran
    assert row["verdict"] == entry["verdict"], (row["verdict"], out, err[-2000:])
    errors = [s["message"] for s in row["scenarios"] if s["verdict"] == "error"]
    assert "error" not in verdicts, errors
    refused = [s for s in row["scenarios"] if s["verdict"] == entry["verdict"]]
    assert refused, verdicts
    for scenario in refused:
        assert scenario["message"], scenario["check_id"]
        assert scenario["evidence"]["runs"], "a refusal must carry the runs as evidence"
        broken = [f for f in scenario["findings"] if not f["ok"]]
        assert any(f["message"] in scenario["message"] for f in broken)
    if "check" in entry:
        broken_checks = {f["check"] for s in refused for f in s["findings"] if not f["ok"]}
        assert entry["check"] in broken_checks, (entry["check"], sorted(broken_checks))
    if entry["verdict"] == "fail":
        assert code == 1
        assert report["verdict"] == "not-certified"
        assert any(c.startswith(entry["guarantee"] + "/") for c in report["blocking"])
