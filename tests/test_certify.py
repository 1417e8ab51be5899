"""The reference pipeline and a stranger's compliant pipeline are certified; the CLI's reports
follow their schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import FIXTURES, REFERENCE_PROFILE, certify, load_report
from kfm_conformance.report.writers import validate_report

HTTP_AND_DATA = [
    "change-detection",
    "empty-rejection",
    "invalid-input",
    "exit-codes",
    "idempotency",
    "deterministic-output",
    "atomic-publication",
]


def _assert_certified(report_dir: Path, code: int, out: str, err: str) -> dict:
    report = load_report(report_dir)
    validate_report(report)
    failing = [
        (s["check_id"], s["verdict"], s["message"])
        for g in report["guarantees"]
        for s in g["scenarios"]
        if s["verdict"] in ("fail", "error")
    ]
    assert code == 0, (failing, out, err[-3000:])
    assert report["verdict"] == "certified"
    assert report["counts"]["pass"] > 0
    for row in report["guarantees"]:
        assert row["scenarios"], f"{row['id']} ran no scenario"
    return report


@pytest.mark.skipif(not REFERENCE_PROFILE.exists(), reason="reference pipeline not present")
def test_reference_pipeline_is_certified(tmp_path: Path) -> None:
    report_dir = tmp_path / "report"
    code, out, err = certify(
        "certify", "--profile", str(REFERENCE_PROFILE), "--report-dir", str(report_dir),
        "--only", *HTTP_AND_DATA, "-j", "2", "--strict",
    )
    report = _assert_certified(report_dir, code, out, err)
    assert report["level"] == "strict"
    # The reference declares its limits, so nothing is skipped.
    assert report["counts"]["skip"] == 0, report["counts"]
    assert (report_dir / "junit.xml").is_file() and (report_dir / "report.md").is_file()


def test_stranger_pipeline_is_certified(tmp_path: Path) -> None:
    """fixtures/kfm_fixture.py is a plain, correct pipeline written without the harness in mind."""
    report_dir = tmp_path / "report"
    code, out, err = certify(
        "certify", "--profile", str(FIXTURES / "profile.toml"), "--report-dir", str(report_dir),
        "--only", *HTTP_AND_DATA, "-j", "2",
    )
    _assert_certified(report_dir, code, out, err)
    assert "CERTIFIED (core)" in out
