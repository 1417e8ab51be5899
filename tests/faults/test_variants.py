"""Compliant variants of the small correct pipeline, one style each, that the fault layer once
refused: each is certified on ``atomic-publication`` and ``idempotency`` (marker ``faults``).

- ``wal_directory``: the temp file in a separate ``.wal/`` directory (the blueprint's seed);
- ``tmpfile_linkat``: an anonymous ``O_TMPFILE`` inode, ``linkat`` to a temp name, rename;
- ``sqlite_state``: the run-state in SQLite, locked at start, committed after the data;
- ``scratch_and_pid_lock``: a pid lock file and a scratch download in the state directory;
- ``curl_then_convert``: two processes, curl then the converter.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import certify, fixture_profile, guarantee_row, load_report

from kfm_conformance.faults import strace

VARIANTS = [
    "wal_directory",
    "tmpfile_linkat",
    "sqlite_state",
    "scratch_and_pid_lock",
    "curl_then_convert",
]
GUARANTEES = ("atomic-publication", "idempotency")


@pytest.mark.faults
@pytest.mark.parametrize("variant", VARIANTS)
def test_a_compliant_variant_is_certified(variant: str, tmp_path: Path) -> None:
    if not strace.probe().ok:
        pytest.skip(f"strace unavailable: {strace.probe().reason}")
    if variant == "curl_then_convert" and shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    profile = fixture_profile(tmp_path, f"variants/{variant}.py")
    report_dir = tmp_path / "report"
    code, out, err = certify(
        "certify", "--profile", str(profile), "--report-dir", str(report_dir),
        "--only", *GUARANTEES, "-j", "2",
    )  # fmt: skip
    report = load_report(report_dir)
    for guarantee in GUARANTEES:
        row = guarantee_row(report, guarantee)
        bad = [
            (s["check_id"], s["verdict"], s["message"])
            for s in row["scenarios"]
            if s["verdict"] not in ("pass", "skip")
        ]
        assert row["verdict"] == "pass", bad
    assert code == 0 and report["verdict"] == "certified", (out, err[-2000:])
