"""``kfm-conformance diff A.json B.json``: what changed between two reports, by check ID.

Check IDs are stable from run to run (``guarantee/scenario-slug[example]``), so two reports of
one pipeline, or of two harness versions, compare check by check: Added (in B only), Removed
(in A only) and Changed (the verdict, or the kind of skip, differs). Exit code as ``diff``'s:
0 nothing changed, 1 something did, 2 bad input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kfm_conformance.verdict import ConfigurationError


def load_report(path: str | Path) -> dict[str, Any]:
    location = Path(path)
    try:
        data = json.loads(location.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"{location}: not found") from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{location}: not a JSON report ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("guarantees"), list):
        raise ConfigurationError(f"{location}: not a kfm-conformance report")
    return data


def _checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        str(s["check_id"]): s
        for row in report.get("guarantees", [])
        for s in row.get("scenarios", [])
        if "check_id" in s
    }


def _verdict(scenario: dict[str, Any]) -> str:
    verdict = str(scenario.get("verdict"))
    if verdict == "skip" and scenario.get("skip_kind"):
        return f"skip ({scenario['skip_kind']})"
    return verdict


def _about(report: dict[str, Any], name: str) -> dict[str, Any]:
    prov = report.get("provenance", {})
    return {
        "file": name,
        "pipeline": report.get("pipeline", {}).get("name"),
        "verdict": report.get("verdict"),
        "level": report.get("level"),
        "harness_version": report.get("harness_version"),
        "git_commit": prov.get("git_commit"),
        "inventory_sha256": prov.get("inventory_sha256"),
        "started_at": prov.get("started_at"),
        "seed": prov.get("seed"),
    }


def diff_reports(
    a: dict[str, Any], b: dict[str, Any], a_name: str = "A", b_name: str = "B"
) -> dict[str, Any]:
    """Added, removed and changed checks between report ``a`` and report ``b``."""
    old, new = _checks(a), _checks(b)
    added = [
        {"check_id": c, "verdict": _verdict(new[c]), "message": new[c].get("message", "")}
        for c in sorted(set(new) - set(old))
    ]
    removed = [{"check_id": c, "verdict": _verdict(old[c])} for c in sorted(set(old) - set(new))]
    changed = []
    unchanged = 0
    for check_id in sorted(set(old) & set(new)):
        before, after = _verdict(old[check_id]), _verdict(new[check_id])
        if before == after:
            unchanged += 1
        else:
            changed.append(
                {
                    "check_id": check_id,
                    "from": before,
                    "to": after,
                    "message": new[check_id].get("message", ""),
                }
            )
    about_a, about_b = _about(a, a_name), _about(b, b_name)
    return {
        "a": about_a,
        "b": about_b,
        "inventory_changed": about_a["inventory_sha256"] != about_b["inventory_sha256"],
        "added": added,
        "removed": removed,
        "changed": changed,
        "unchanged": unchanged,
    }


def has_changes(result: dict[str, Any]) -> bool:
    return bool(result["added"] or result["removed"] or result["changed"])


def render_text(result: dict[str, Any]) -> str:
    a, b = result["a"], result["b"]

    def verdict(about: dict[str, Any]) -> str:
        return f"{about['verdict']}" + (f" ({about['level']})" if about.get("level") else "")

    lines = [
        f"A: {a['file']}: {a['pipeline']}, {verdict(a)}, harness {a['harness_version']} "
        f"({a['git_commit']}), {a['started_at']}",
        f"B: {b['file']}: {b['pipeline']}, {verdict(b)}, harness {b['harness_version']} "
        f"({b['git_commit']}), {b['started_at']}",
    ]
    if result["inventory_changed"]:
        lines.append("note: the check inventories differ (the feature files changed)")
    lines.append(f"Added ({len(result['added'])}):")
    lines += [f"  + {r['check_id']}  {r['verdict']}" for r in result["added"]]
    lines.append(f"Removed ({len(result['removed'])}):")
    lines += [f"  - {r['check_id']}  was {r['verdict']}" for r in result["removed"]]
    lines.append(f"Changed ({len(result['changed'])}):")
    for record in result["changed"]:
        message = str(record.get("message") or "").strip().splitlines()
        lines.append(
            f"  ~ {record['check_id']}  {record['from']} -> {record['to']}"
            + (f": {message[0][:160]}" if message else "")
        )
    lines.append(f"Unchanged: {result['unchanged']}")
    return "\n".join(lines) + "\n"
