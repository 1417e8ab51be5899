"""CI gating: a baseline of known failures turns them into expected results, so the exit code
is non-zero only on surprises; ``baseline`` writes one from a report; ``diff`` lists Added,
Removed and Changed checks by their stable IDs."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from kfm_conformance.report.baseline import (
    baseline_from_report,
    dump_toml,
    gate,
    load_baseline,
    validate_baseline,
)
from kfm_conformance.report.diff import diff_reports, render_text
from kfm_conformance.verdict import ConfigurationError

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"


def cli(*args: str, timeout: float = 600) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "kfm_conformance.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def scenario(check_id: str, verdict: str, skip_kind: str | None = None) -> dict[str, Any]:
    return {
        "check_id": check_id,
        "name": check_id,
        "verdict": verdict,
        "message": f"{verdict} message",
        "kind": "required",
        "skip_kind": skip_kind,
        "evidence": {},
    }


def report(*scenarios: dict[str, Any], problems: list[str] | None = None) -> dict[str, Any]:
    blocking = [
        s["check_id"]
        for s in scenarios
        if s["verdict"] in ("fail", "error")
        or (s["verdict"] == "skip" and s["skip_kind"] == "unavailable")
    ]
    return {
        "format": 1,
        "verdict": "not-certified" if blocking or problems else "certified",
        "level": None,
        "harness_version": "0.1.0",
        "pipeline": {"name": "p", "command": []},
        "provenance": {"ended_at": "2026-01-01T00:00:00+00:00", "inventory_sha256": "ab" * 32},
        "selected_guarantees": ["exit-codes", "idempotency"],
        "blocking": blocking,
        "problems": problems or [],
        "guarantees": [{"id": "exit-codes", "scenarios": list(scenarios)}],
    }


BASE = report(
    scenario("exit-codes/a", "pass"),
    scenario("exit-codes/b", "fail"),
    scenario("exit-codes/c", "error"),
    scenario("exit-codes/d", "skip", "not-declared"),
)


def test_baseline_from_report_expects_exactly_the_blockers() -> None:
    data = baseline_from_report(BASE)
    assert set(data["checks"]) == {"exit-codes/b", "exit-codes/c"}
    assert data["checks"]["exit-codes/b"]["expected"] == "fail"
    assert "fail message" in data["checks"]["exit-codes/b"]["reason"]
    assert tomllib.loads(dump_toml(data)) == data
    assert gate(BASE, data, "b.toml")["ok"]


def test_gate_fails_only_on_unexpected_results() -> None:
    expected = baseline_from_report(BASE)
    cases = {
        "new failure": (scenario("exit-codes/a", "fail"), False),
        "fail became error": (scenario("exit-codes/b", "error"), False),
        "now unavailable": (scenario("exit-codes/a", "skip", "unavailable"), False),
        "known failure fixed": (scenario("exit-codes/b", "pass"), True),
        "warn is not blocking": (scenario("exit-codes/a", "warn"), True),
    }
    for name, (changed, ok) in cases.items():
        scenarios = [
            s for s in BASE["guarantees"][0]["scenarios"] if s["check_id"] != changed["check_id"]
        ]
        result = gate(report(*scenarios, changed), expected, "b.toml")
        assert result["ok"] is ok, (name, result)
        if name == "known failure fixed":
            assert [r["check_id"] for r in result["unexpected_passes"]] == ["exit-codes/b"]
    problem = gate(
        report(*BASE["guarantees"][0]["scenarios"], problems=["harness error"]), expected, "b"
    )
    assert not problem["ok"] and problem["unexpected"][0]["check_id"] == "(run)"
    stale = copy.deepcopy(expected)
    stale["checks"]["idempotency/gone"] = {"expected": "fail", "reason": "x"}
    stale["checks"]["lineage/not-selected"] = {"expected": "fail", "reason": "x"}
    result = gate(BASE, stale, "b")
    assert result["ok"] and [r["check_id"] for r in result["stale"]] == ["idempotency/gone"]
    # A guarantee chosen through one of its scenarios (--only GUARANTEE/SLUG): its other
    # checks were not run, so they are not stale; the chosen one is.
    narrowed = {**BASE, "selected_checks": ["idempotency/kept"]}
    stale["checks"]["idempotency/kept"] = {"expected": "fail", "reason": "x"}
    result = gate(narrowed, stale, "b")
    assert [r["check_id"] for r in result["stale"]] == ["idempotency/kept"]


def test_baseline_schema_requires_a_reason(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="reason"):
        validate_baseline({"format": 1, "checks": {"exit-codes/b": {"expected": "fail"}}})
    with pytest.raises(ConfigurationError):
        validate_baseline(
            {"format": 1, "checks": {"exit-codes/b": {"expected": "pass", "reason": "x"}}}
        )
    path = tmp_path / "b.json"
    path.write_text(
        json.dumps({"format": 1, "checks": {"Not An ID": {"expected": "fail", "reason": "x"}}})
    )
    with pytest.raises(ConfigurationError):
        load_baseline(path)
    path.write_text(
        json.dumps(
            {"format": 1, "checks": {"exit-codes/b": {"expected": "fail", "reason": "https://x/1"}}}
        )
    )
    assert load_baseline(path)["checks"]["exit-codes/b"]["reason"] == "https://x/1"


def test_diff_lists_added_removed_changed() -> None:
    after = report(
        scenario("exit-codes/a", "fail"),
        scenario("exit-codes/b", "fail"),
        scenario("exit-codes/d", "skip", "unavailable"),
        scenario("exit-codes/e", "pass"),
    )
    result = diff_reports(BASE, after, "a.json", "b.json")
    assert [r["check_id"] for r in result["added"]] == ["exit-codes/e"]
    assert [r["check_id"] for r in result["removed"]] == ["exit-codes/c"]
    assert [(r["check_id"], r["from"], r["to"]) for r in result["changed"]] == [
        ("exit-codes/a", "pass", "fail"),
        ("exit-codes/d", "skip (not-declared)", "skip (unavailable)"),
    ]
    assert result["unchanged"] == 1
    text = render_text(result)
    assert "+ exit-codes/e" in text and "- exit-codes/c" in text and "~ exit-codes/a" in text


def test_diff_and_baseline_commands(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(BASE))
    b.write_text(json.dumps(report(scenario("exit-codes/a", "fail"))))
    assert cli("diff", str(a), str(a))[0] == 0
    code, out, _ = cli("diff", str(a), str(b), "--format", "json")
    assert code == 1 and json.loads(out)["changed"][0]["check_id"] == "exit-codes/a"
    assert cli("diff", str(a), str(tmp_path / "missing.json"))[0] == 2
    code, out, _ = cli("baseline", str(a))
    assert code == 0 and tomllib.loads(out)["checks"]["exit-codes/b"]["expected"] == "fail"
    assert cli("baseline", str(a), "-o", str(tmp_path / "base.json"))[0] == 0
    assert load_baseline(tmp_path / "base.json")["checks"].keys() == {
        "exit-codes/b",
        "exit-codes/c",
    }


def test_certify_with_a_baseline_gates_on_unexpected_results_only(tmp_path: Path) -> None:
    """A known-bad pipeline (exits 0 on 5xx) fails exit-codes; with a baseline made from that
    report it exits 0; with that baseline minus one entry it exits 1 and names the check."""
    profile = tomllib.loads((FIXTURES / "profile.toml").read_text())
    profile["pipeline"]["command"] = ["{python}", str(FIXTURES / "exits_zero_on_5xx.py"), "{src}"]
    profile_path = tmp_path / "profile.toml"
    profile_path.write_text(tomli_w.dumps(profile))
    first = tmp_path / "first"
    args = ["certify", "--profile", str(profile_path), "--only", "exit-codes", "-j", "2"]
    code, out, err = cli(*args, "--seed", "7", "--report-dir", str(first))
    assert code == 1, (out, err[-2000:])
    base = tmp_path / "baseline.toml"
    assert cli("baseline", str(first / "report.json"), "-o", str(base))[0] == 0
    known = tomllib.loads(base.read_text())["checks"]
    assert known and all(e["expected"] == "fail" for e in known.values())

    second = tmp_path / "second"
    code, out, err = cli(*args, "--seed", "7", "--report-dir", str(second), "--baseline", str(base))
    assert code == 0, (out, err[-2000:])
    assert "NOT CERTIFIED" in out and "gate passed" in out
    data = json.loads((second / "report.json").read_text())
    assert data["gate"]["ok"] and data["gate"]["known"] == len(known)
    assert "CI gate: passed" in (second / "report.md").read_text()

    # The same run judged against a baseline missing one known failure: unexpected.
    dropped = sorted(known)[0]
    partial = {"format": 1, "checks": {k: v for k, v in known.items() if k != dropped}}
    result = gate(data, partial, "partial.toml")
    assert not result["ok"] and [r["check_id"] for r in result["unexpected"]] == [dropped]
    assert cli("diff", str(first / "report.json"), str(second / "report.json"))[0] == 0
