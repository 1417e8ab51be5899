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
        "certify",
        "--profile",
        str(REFERENCE_PROFILE),
        "--report-dir",
        str(report_dir),
        "--only",
        *HTTP_AND_DATA,
        "-j",
        "2",
        "--strict",
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
        "certify",
        "--profile",
        str(FIXTURES / "profile.toml"),
        "--report-dir",
        str(report_dir),
        "--only",
        *HTTP_AND_DATA,
        "-j",
        "2",
    )
    _assert_certified(report_dir, code, out, err)
    assert "CERTIFIED (core)" in out


SEED = Path(__file__).resolve().parents[1] / "benchmarks" / "seed_http_change_detection.py"


def test_the_blueprints_own_seed_is_refused(tmp_path: Path) -> None:
    """The seed the blueprint calls compliant breaks several of the blueprint's own promises:
    it exits 1 for every failure, ignores ETags, trusts its state when the output is gone and
    publishes a JSON object as columns."""
    profile = tmp_path / "seed.toml"
    profile.write_text(
        '[pipeline]\nname = "blueprint-seed"\n'
        f'command = ["{{python}}", "{SEED}", "{{src}}"]\n'
        'output = "out/data.parquet"\ntimeout_s = 60\n'
    )
    report_dir = tmp_path / "report"
    code, _, err = certify(
        "certify",
        "--profile",
        str(profile),
        "--report-dir",
        str(report_dir),
        "--only",
        "change-detection",
        "invalid-input",
        "exit-codes",
        "-j",
        "2",
    )
    assert code == 1, err[-2000:]
    report = load_report(report_dir)
    verdicts = {row["id"]: row["verdict"] for row in report["guarantees"]}
    assert verdicts == {
        "change-detection": "fail",
        "invalid-input": "fail",
        "exit-codes": "fail",
    }, verdicts
    failed = {
        s["check_id"]
        for g in report["guarantees"]
        for s in g["scenarios"]
        if s["verdict"] == "fail"
    }
    deleted_output = (
        "change-detection/a-deleted-output-is-fetched-again-without-validators-and-republished"
    )
    assert deleted_output in failed
    assert any(c.startswith("exit-codes/each-upstream-answer-maps") for c in failed)


def test_only_a_check_id_runs_that_scenario_alone(tmp_path: Path) -> None:
    """``--only GUARANTEE/SLUG`` runs one scenario of that guarantee (beside whole guarantees
    named with it); the report and the summary line say what was checked."""
    one = "atomic-publication/nothing-temporary-is-left-beside-the-output-after-a-publication"
    report_dir = tmp_path / "report"
    code, out, err = certify(
        "certify",
        "--profile",
        str(REFERENCE_PROFILE),
        "--report-dir",
        str(report_dir),
        "--only",
        one,
        "empty-rejection",
    )
    report = _assert_certified(report_dir, code, out, err)
    rows = {g["id"]: [s["check_id"] for s in g["scenarios"]] for g in report["guarantees"]}
    assert rows["atomic-publication"] == [one]
    assert len(rows["empty-rejection"]) > 1
    assert set(rows) == {"atomic-publication", "empty-rejection"}
    assert report["selected_checks"] == [one]
    assert f"checked only: empty-rejection, {one}" in out
