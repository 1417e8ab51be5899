"""Compliant pipelines written by strangers are certified.

Each directory in ``fixtures/compliant/`` holds a pipeline written from the blueprint alone, in
its own style (language, HTTP client, run-state store, publication protocol, output format,
lock or none, lineage, traces), its ``profile.toml``, and a ``corpus.toml`` that says which
guarantees it implements (``guarantees``), which tools it needs on PATH (``needs``) and whether
it must be built first (``build = "go"``). Each is certified with the real CLI on exactly
those guarantees; a refusal prints every blocking finding.

A missing toolchain skips the example, except in CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, certify, load_report, openlineage_spec

from kfm_conformance.report.writers import validate_report

COMPLIANT = FIXTURES / "compliant"
EXAMPLES = sorted(p.parent for p in COMPLIANT.glob("*/profile.toml"))


def _corpus_entry(example: Path) -> dict[str, Any]:
    entry: dict[str, Any] = tomllib.loads((example / "corpus.toml").read_text())
    return entry


def _require_tool(tool: str) -> str:
    found = shutil.which(tool)
    if found:
        return found
    message = f"{tool} is not on PATH"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _go_build(example: Path, into: Path) -> Path:
    """Copy the Go example to ``into`` and build its binary to ``bin/`` there; return the
    copy's directory (its profile names ``{profile_dir}/bin/...``)."""
    go = _require_tool("go")
    copy = into / example.name
    shutil.copytree(example, copy)
    entry = _corpus_entry(example)
    binary = copy / entry.get("binary", f"bin/{example.name}")
    env = {**os.environ, "CGO_ENABLED": "0"}
    done = subprocess.run(
        [go, "build", "-trimpath", "-o", str(binary), "."],
        cwd=copy,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"go build failed:\n{done.stderr[-3000:]}"
    return copy


def _blocking(report: dict[str, Any]) -> list[str]:
    lines = []
    for row in report["guarantees"]:
        for scenario in row["scenarios"]:
            verdict = scenario["verdict"]
            unavailable = verdict == "skip" and scenario.get("skip_kind") == "unavailable"
            if verdict in ("fail", "error") or unavailable:
                lines.append(f"{verdict.upper()} {scenario['check_id']}: {scenario['message']}")
    return lines


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_compliant_example_is_certified(example: Path, tmp_path: Path) -> None:
    entry = _corpus_entry(example)
    guarantees: list[str] = entry["guarantees"]
    for tool in entry.get("needs", []):
        _require_tool(tool)
    where = _go_build(example, tmp_path / "build") if entry.get("build") == "go" else example
    report_dir = tmp_path / "report"
    args = [
        "certify",
        "--profile",
        str(where / "profile.toml"),
        "--report-dir",
        str(report_dir),
        "--only",
        *guarantees,
        "-j",
        "2",
    ]
    if "lineage" in guarantees:
        args += ["--openlineage-schemas", str(openlineage_spec())]
    code, out, err = certify(*args, timeout=2400)
    assert (report_dir / "report.json").is_file(), f"no report (exit {code}):\n{err[-3000:]}"
    report = load_report(report_dir)
    validate_report(report)
    blocking = _blocking(report)
    summary = "\n".join(blocking) or out[-2000:] + err[-2000:]
    assert code == 0, f"{example.name} was not certified (exit {code}):\n{summary}"
    assert report["verdict"] == "certified", summary
    assert not blocking, summary
    ran = {row["id"]: len(row["scenarios"]) for row in report["guarantees"]}
    assert set(ran) == set(guarantees), ran
    assert all(ran.values()), f"a guarantee ran no scenario: {ran}"
    assert report["counts"]["pass"] > 0


def test_every_compliant_example_says_what_it_implements() -> None:
    """Each example declares its style and a known set of guarantees, and the set is varied."""
    from kfm_conformance.guarantees import IDS

    known = set(IDS)
    assert len(EXAMPLES) >= 8, [p.name for p in EXAMPLES]
    styles = set()
    for example in EXAMPLES:
        entry = _corpus_entry(example)
        assert entry.get("style"), f"{example.name}: corpus.toml names no style"
        styles.add(entry["style"])
        unknown = set(entry["guarantees"]) - known
        assert not unknown, f"{example.name}: unknown guarantees {unknown}"
    assert len(styles) == len(EXAMPLES)
