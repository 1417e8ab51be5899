"""Writers for ``report.json`` (checked against ``report.schema.json``) and ``report.md``."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

VERDICT_MARK = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP", "error": "ERROR"}


def report_schema() -> dict[str, Any]:
    text = resources.files("kfm_conformance.schemas").joinpath("report.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_report(data: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` when a report does not follow the schema."""
    jsonschema.Draft202012Validator(report_schema()).validate(data)


def write_reports(data: dict[str, Any], report_dir: Path) -> None:
    """Write a (redacted) report as ``report.json``, checked against its schema, and
    ``report.md``."""
    validate_report(data)
    (report_dir / "report.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (report_dir / "report.md").write_text(render_markdown(data))


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(data: dict[str, Any]) -> str:
    provenance = data.get("provenance", {})
    pipeline = data["pipeline"]
    lines = [
        f"# kfm-conformance report: {_cell(pipeline.get('name'))}",
        "",
        f"**Verdict: {data['verdict']}**"
        + (f" (level `{data['level']}`)" if data.get("level") else ""),
        "",
        "| | |",
        "|---|---|",
        f"| Harness | kfm-conformance {data['harness_version']}"
        f" ({_cell(provenance.get('git_commit', 'unknown commit'))}) |",
        f"| Blueprint | KFM {data['blueprint_version']} |",
        f"| Check inventory | `{_cell(provenance.get('inventory_sha256', ''))}` |",
        f"| Pipeline command | `{_cell(' '.join(pipeline.get('command', [])))}` |",
        f"| Profile | `{_cell(pipeline.get('profile'))}` sha256 "
        f"`{_cell(pipeline.get('profile_sha256', ''))}` |",
        f"| Python / OS | {_cell(provenance.get('python'))} / "
        f"{_cell(provenance.get('platform'))} |",
        f"| Started / ended | {_cell(provenance.get('started_at'))} / "
        f"{_cell(provenance.get('ended_at'))} |",
        f"| Services | {_cell(provenance.get('services', {}))} |",
        f"| Seed | {_cell(provenance.get('seed'))} |",
        f"| Strict | {data['strict']} |",
        "",
        "Counts: " + ", ".join(f"{k} {v}" for k, v in data["counts"].items()),
        "",
    ]
    if data.get("problems"):
        lines += ["## Problems", ""] + [f"- {_cell(p)}" for p in data["problems"]] + [""]
    lines += ["## Guarantees", "", "| Guarantee | Verdict | Scenarios |", "|---|---|---|"]
    for row in data["guarantees"]:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(row["counts"].items()))
        lines.append(
            f"| `{row['id']}` {_cell(row['title'])} | "
            f"{VERDICT_MARK.get(row['verdict'], row['verdict'])} | {counts} |"
        )
    lines.append("")
    for row in data["guarantees"]:
        lines += [
            f"### `{row['id']}`: {_cell(row['title'])}",
            "",
            f"Blueprint: {_cell(row['clause'])}",
            "",
        ]
        for scenario in row["scenarios"]:
            mark = VERDICT_MARK.get(scenario["verdict"], scenario["verdict"])
            message = f": {_cell(scenario['message'])}" if scenario.get("message") else ""
            lines.append(f"- **{mark}** `{scenario['check_id']}` ({scenario['kind']}){message}")
        lines.append("")
    return "\n".join(lines)
