"""Outcomes become the right verdicts: undefined steps and harness exceptions are errors,
never passes or fails; a broken requirement is a fail; a SHOULD is a warn."""

from __future__ import annotations

import pytest
from conftest import scenario_records

from kfm_conformance.report.model import fold
from kfm_conformance.verdict import GuaranteeViolation, Judge, Verdict

PROFILE = """
[pipeline]
name = "p"
command = ["{python}", "-c", "pass"]
output = "out/data.parquet"
"""


def _run(pytester: pytest.Pytester, feature: str, steps: str) -> list[dict]:
    pytester.makefile(".feature", probe=feature)
    pytester.makepyfile(
        test_probe=f"from pytest_bdd import scenarios\n{steps}\nscenarios('probe.feature')\n"
    )
    profile = pytester.path / "profile.toml"
    profile.write_text(PROFILE)
    results = pytester.path / "results"
    pytester.runpytest_subprocess(
        "test_probe.py", "--kfm-profile", str(profile), "--kfm-results", str(results)
    )
    return scenario_records(results)


FEATURE = """
@exit-codes
Feature: probe
  @id:probe
  Scenario: probe
    Given {step}
"""


def test_undefined_step_is_an_error(pytester: pytest.Pytester) -> None:
    results = _run(pytester, FEATURE.format(step="a step nobody defined"), "")
    assert results[0]["verdict"] == "error"
    assert "StepDefinitionNotFound" in results[0]["message"]
    assert results[0]["steps"][-1]["status"] == "undefined"


def test_harness_exception_is_an_error_not_a_fail(pytester: pytest.Pytester) -> None:
    steps = (
        "from pytest_bdd import given\n"
        "@given('the harness breaks')\n"
        "def _(kfm):\n    raise RuntimeError('disk on fire')\n"
    )
    results = _run(pytester, FEATURE.format(step="the harness breaks"), steps)
    assert results[0]["verdict"] == "error"
    assert "disk on fire" in results[0]["message"]
    assert "harness_traceback" in results[0]["evidence"]


def test_a_bare_assert_in_harness_code_is_an_error(pytester: pytest.Pytester) -> None:
    steps = (
        "from pytest_bdd import given\n"
        "@given('the harness asserts')\n"
        "def _(kfm):\n    assert 1 == 2\n"
    )
    results = _run(pytester, FEATURE.format(step="the harness asserts"), steps)
    assert results[0]["verdict"] == "error"


def test_guarantee_violation_is_a_fail_and_should_is_a_warn(pytester: pytest.Pytester) -> None:
    steps = (
        "from pytest_bdd import given, then\n"
        "@given('a requirement breaks')\n"
        "def _(kfm):\n    kfm.judge.require('x', False, 'broken promise')\n"
        "@then('a requirement breaks')\n"
        "def _(kfm):\n    kfm.judge.require('x', False, 'broken promise')\n"
        "@then('an independent check breaks')\n"
        "def _(kfm):\n    kfm.judge.check('z', False, 'first defect')\n"
        "@given('a recommendation is missed')\n"
        "def _(kfm):\n    kfm.judge.require('telemetry.step-spans', False, 'missed should')\n"
        "@given('a limit is undeclared')\n"
        "def _(kfm):\n    kfm.require_declared('max_body_bytes')\n"
    )
    feature = (
        "@exit-codes\nFeature: probe\n"
        "  @id:one\n  Scenario: one\n    Given a requirement breaks\n"
        "  @id:two\n  Scenario: two\n    Given a recommendation is missed\n"
        "  @id:three\n  Scenario: three\n    Given a limit is undeclared\n"
        "  @id:five\n  Scenario: five\n    Then an independent check breaks\n"
        "    And a requirement breaks\n"
        "  Scenario: six without an id\n    Then a requirement breaks\n"
    )
    results = {r["name"]: r for r in _run(pytester, feature, steps)}
    # A broken Given is a failed precondition, not yet the guarantee's own checks.
    assert results["one"]["verdict"] == "fail"
    assert results["one"]["message"] == "precondition failed: broken promise"
    assert results["one"]["precondition_failed"] is True
    # An independent check does not stop the scenario: both defects are reported.
    assert results["five"]["verdict"] == "fail"
    assert results["five"]["message"] == "first defect; broken promise"
    assert results["five"]["precondition_failed"] is False
    assert results["five"]["check_id"] == "exit-codes/five"
    # A scenario without a declared check ID is a harness error.
    assert results["six without an id"]["verdict"] == "error"
    assert "declares no @id" in results["six without an id"]["message"]
    assert results["two"]["verdict"] == "warn"
    assert results["three"]["verdict"] == "skip"
    assert results["three"]["skip_kind"] == "not-declared"
    assert results["three"]["message"].startswith("not declared")


def test_strict_judge_fails_on_a_missed_should() -> None:
    """A check's level comes from kfm_conformance.levels alone, whoever judges it."""
    with pytest.raises(GuaranteeViolation):
        Judge(strict=True).require("telemetry.step-spans", False, "missed should")
    lenient = Judge(strict=False)
    lenient.require("telemetry.step-spans", False, "missed should")
    assert [f.check for f in lenient.warnings] == ["telemetry.step-spans"]
    with pytest.raises(GuaranteeViolation):
        Judge(strict=False).require("telemetry.root-span", False, "a MUST")


def test_every_level_is_declared_in_one_place() -> None:
    """The SHOULDs are kfm_conformance.levels' tables: every recommended scenario is a declared
    check ID, no feature file tags a level, no shape carries one, and a finding's level cannot
    be chosen where it is made."""
    import dataclasses

    from kfm_conformance import levels
    from kfm_conformance.features import declared_check_ids, feature_files
    from kfm_conformance.shapes import shapes_text
    from kfm_conformance.verdict import Finding, Level, fact

    assert set(levels.RECOMMENDED_SCENARIOS) <= set(declared_check_ids())
    assert all(levels.RECOMMENDED_SCENARIOS.values())
    assert all(levels.RECOMMENDED_FINDINGS.values())
    assert not [p.name for p in feature_files() if "@recommended" in p.read_text()]
    assert not [k for k in ("prov", "dcat") if "kfmc:level" in shapes_text(k)]
    level = next(f for f in dataclasses.fields(Finding) if f.name == "level")
    assert level.init is False
    assert fact("lineage.schema-facet", False, "m").level is Level.RECOMMENDED
    assert fact("lineage.one-terminal", False, "m").level is Level.REQUIRED
    assert levels.scenario_is_recommended(
        "provenance/the-pipeline-declares-all-three-provenance-sidecars"
    )
    assert not levels.scenario_is_recommended("provenance/a-publication-writes-sidecars")


def _scenario(check: str, verdict: str, kind: str = "required", skip_kind=None) -> dict:
    return {
        "check_id": check,
        "guarantee": check.split("/")[0],
        "name": check,
        "verdict": verdict,
        "message": "",
        "kind": kind,
        "skip_kind": skip_kind,
        "evidence": {},
    }


def test_unavailable_required_skip_blocks_certification() -> None:
    base = dict(
        pipeline={"name": "p", "command": []}, provenance={}, strict=False, selected=["exit-codes"]
    )
    ok = fold(
        [
            _scenario("exit-codes/a", "pass"),
            _scenario("exit-codes/b", "skip", skip_kind="not-declared"),
        ],
        **base,
    )
    assert ok.certified and ok.level == "core"
    blocked = fold(
        [
            _scenario("exit-codes/a", "pass"),
            _scenario("exit-codes/b", "skip", skip_kind="unavailable"),
        ],
        **base,
    )
    assert not blocked.certified
    warned = fold([_scenario("exit-codes/a", "warn")], **base)
    assert warned.certified
    assert Verdict.worst([Verdict.PASS, Verdict.WARN, Verdict.SKIP]) is Verdict.WARN
    failed = fold([_scenario("exit-codes/a", "pass"), _scenario("exit-codes/c", "error")], **base)
    assert not failed.certified and failed.blocking[0]["check_id"] == "exit-codes/c"
