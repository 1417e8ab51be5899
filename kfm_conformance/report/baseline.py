"""CI gating against a baseline: known failures are expected, only surprises fail the build.

A baseline lists the checks a pipeline is known not to pass, each with the verdict expected
and a reason (ideally a link to the issue that tracks it), as web-platform-tests' expectation
files do. Every check it does not list is expected not to block a certificate. The file is
TOML (or JSON with the same structure, when its name ends in ``.json``), checked against
``schemas/baseline.schema.json``::

    format = 1
    pipeline = "my-ingester"

    [checks."change-detection/the-entity-tag-is-sent-back-as-if-none-match"]
    expected = "fail"
    reason = "https://example.org/my-ingester/issues/12"

:func:`gate` compares a report with a baseline. Unexpected results (a new failure or error, an
error where a failure was known, a required check now skipped as unavailable, a problem with
the run itself) fail the gate; checks the baseline expects to fail that no longer block are
listed as unexpected passes, so the baseline gets updated, but do not fail it.
"""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from kfm_conformance.features import chosen_by
from kfm_conformance.verdict import ConfigurationError

BASELINE_FORMAT = 1
#: Verdicts a baseline may expect (a pass needs no entry).
EXPECTABLE = ("fail", "error", "skip", "warn")


def baseline_schema() -> dict[str, Any]:
    text = resources.files("kfm_conformance.schemas").joinpath("baseline.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_baseline(data: dict[str, Any], origin: str = "baseline") -> None:
    """Raise :class:`ConfigurationError` (one line) when ``data`` is not a valid baseline."""
    validator = jsonschema.Draft202012Validator(baseline_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ConfigurationError(f"{origin}: {where}: {error.message}")


def load_baseline(path: str | Path) -> dict[str, Any]:
    """Read and validate a baseline file (TOML, or JSON when it ends in ``.json``)."""
    location = Path(path)
    try:
        text = location.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"--baseline: {location}: not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"--baseline: {location}: cannot read ({exc})") from None
    try:
        data = json.loads(text) if location.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"--baseline: {location}: cannot parse ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"--baseline: {location}: not a baseline object")
    validate_baseline(data, f"--baseline: {location}")
    return data


def baseline_from_report(report: dict[str, Any]) -> dict[str, Any]:
    """A baseline that expects exactly what blocked this report, reasons taken from it."""
    index = {
        s["check_id"]: s for row in report.get("guarantees", []) for s in row.get("scenarios", [])
    }
    when = report.get("provenance", {}).get("ended_at", "")
    checks: dict[str, dict[str, str]] = {}
    for check_id in report.get("blocking", []):
        scenario = index.get(check_id, {})
        message = str(scenario.get("message", "")).strip().splitlines()
        reason = f"known {scenario.get('verdict', 'failure')} at {when}".strip()
        if message:
            reason += f": {message[0][:200]}"
        checks[check_id] = {"expected": str(scenario.get("verdict", "fail")), "reason": reason}
    data = {
        "format": BASELINE_FORMAT,
        "pipeline": str(report.get("pipeline", {}).get("name", "")),
        "harness_version": str(report.get("harness_version", "")),
        "inventory_sha256": str(report.get("provenance", {}).get("inventory_sha256", "")),
        "created_from": str(report.get("provenance", {}).get("run_id", "")),
        "checks": checks,
    }
    validate_baseline(data)
    return data


def _toml_string(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's, except that DEL must be escaped)."""
    return json.dumps(value).replace("\x7f", "\\u007f")


def dump_toml(data: dict[str, Any]) -> str:
    lines = [
        "# kfm-conformance baseline: the checks this pipeline is known not to pass.",
        "# Each entry needs a reason; put a link to the issue that tracks it there.",
        "# Checks not listed must not block (pass, warn, or skip as not declared).",
        "# Schema: schemas/baseline.schema.json. Made by: kfm-conformance baseline REPORT.json",
        "",
    ]
    for key in ("format", "pipeline", "harness_version", "inventory_sha256", "created_from"):
        if key in data:
            value = data[key]
            lines.append(
                f"{key} = {value}" if isinstance(value, int) else f"{key} = {_toml_string(value)}"
            )
    for check_id, entry in data.get("checks", {}).items():
        lines += ["", f"[checks.{_toml_string(check_id)}]"]
        lines.append(f"expected = {_toml_string(entry['expected'])}")
        lines.append(f"reason = {_toml_string(entry['reason'])}")
    return "\n".join(lines) + "\n"


def dump(data: dict[str, Any], path: str | Path | None = None) -> str:
    """The baseline as text: JSON when ``path`` ends in ``.json``, TOML otherwise."""
    if path is not None and str(path).endswith(".json"):
        return json.dumps(data, indent=2) + "\n"
    return dump_toml(data)


def gate(report: dict[str, Any], baseline: dict[str, Any], name: str) -> dict[str, Any]:
    """Judge a report against a baseline; ``ok`` is False only for unexpected results."""
    expected: dict[str, dict[str, str]] = baseline.get("checks", {})
    blocking = set(report.get("blocking", []))
    selected = set(report.get("selected_guarantees", []))
    unexpected: list[dict[str, Any]] = []
    unexpected_passes: list[dict[str, Any]] = []
    known = 0
    seen: set[str] = set()
    for row in report.get("guarantees", []):
        for scenario in row.get("scenarios", []):
            check_id = scenario["check_id"]
            seen.add(check_id)
            observed = scenario["verdict"]
            if observed == "skip" and scenario.get("skip_kind"):
                observed_text = f"skip ({scenario['skip_kind']})"
            else:
                observed_text = observed
            entry = expected.get(check_id)
            record = {
                "check_id": check_id,
                "expected": entry["expected"] if entry else "no blocking result",
                "observed": observed_text,
                "reason": entry["reason"] if entry else "",
                "message": str(scenario.get("message", ""))[:500],
            }
            if check_id in blocking:
                if entry and entry["expected"] == observed:
                    known += 1
                else:
                    unexpected.append(record)
            elif entry:
                if entry["expected"] == observed:
                    known += 1
                else:
                    unexpected_passes.append(record)
    for problem in report.get("problems", []):
        unexpected.append(
            {
                "check_id": "(run)",
                "expected": "no problem with the run",
                "observed": str(problem),
                "reason": "",
                "message": str(problem),
            }
        )
    if not seen:
        unexpected.append(
            {
                "check_id": "(run)",
                "expected": "some checks ran",
                "observed": "no scenario produced a result",
                "reason": "",
                "message": "",
            }
        )
    stale = [
        {
            "check_id": check_id,
            "expected": entry["expected"],
            "observed": "no result",
            "reason": entry["reason"],
        }
        for check_id, entry in expected.items()
        if check_id not in seen
        and check_id.split("/", 1)[0] in selected
        and chosen_by(check_id, report.get("selected_checks") or [])
    ]
    return {
        "baseline": name,
        "ok": not unexpected,
        "known": known,
        "unexpected": unexpected,
        "unexpected_passes": unexpected_passes,
        "stale": stale,
    }


def gate_lines(result: dict[str, Any]) -> list[str]:
    """What the CLI prints about the gate."""
    lines = [
        f"gate {'passed' if result['ok'] else 'FAILED'} against {result['baseline']}: "
        f"{result['known']} known, {len(result['unexpected'])} unexpected, "
        f"{len(result['unexpected_passes'])} unexpected passes"
    ]
    for record in result["unexpected"][:30]:
        lines.append(
            f"  unexpected: {record['check_id']}: expected {record['expected']}, "
            f"observed {record['observed']}"
        )
    for record in result["unexpected_passes"][:30]:
        lines.append(
            f"  unexpected pass (update the baseline): {record['check_id']}: expected "
            f"{record['expected']}, observed {record['observed']}"
        )
    for record in result["stale"][:30]:
        lines.append(f"  stale baseline entry (no such check ran): {record['check_id']}")
    return lines
