"""Writers for ``report.json`` (checked against ``report.schema.json``), ``report.md`` and
``report.html``, and the provenance properties added to pytest's ``junit.xml``."""

from __future__ import annotations

import html
import json
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema

from kfm_conformance.report.html import render_html
from kfm_conformance.report.model import provenance_rows

if TYPE_CHECKING:
    from kfm_conformance.redact import Redactor

VERDICT_MARK = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP", "error": "ERROR"}


def report_schema() -> dict[str, Any]:
    text = resources.files("kfm_conformance.schemas").joinpath("report.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_report(data: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` when a report does not follow the schema."""
    jsonschema.Draft202012Validator(report_schema()).validate(data)


def write_reports(data: dict[str, Any], report_dir: Path) -> None:
    """Write a (redacted) report as ``report.json``, checked against its schema,
    ``report.md`` and ``report.html``; add the provenance to ``junit.xml`` when it is there."""
    validate_report(data)
    (report_dir / "report.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (report_dir / "report.md").write_text(render_markdown(data))
    (report_dir / "report.html").write_text(render_html(data), encoding="utf-8")
    junit = report_dir / "junit.xml"
    if junit.is_file():
        add_junit_properties(junit, data)


def redact_file(path: Path, redactor: Redactor) -> None:
    """Mask secrets in a text file written by someone else (pytest's JUnit XML, the cucumber
    JSON, the pytest log): as they are, and in their JSON- and XML-escaped forms."""
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8", errors="replace")
    masked = redactor.redact_text(text)
    for secret in redactor.secrets:
        for form in {html.escape(secret, quote=True), html.escape(secret, quote=False)}:
            if form != secret:
                masked = masked.replace(form, "***")
    if masked != text:
        path.write_text(masked, encoding="utf-8")


def add_junit_properties(path: Path, data: dict[str, Any]) -> None:
    """Add the report's verdict and provenance as ``<properties>`` of every JUnit test suite,
    so CI tools that only read JUnit still see which harness judged what."""
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError):
        return
    root = tree.getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    prov = data.get("provenance", {})
    values = {
        "kfm.verdict": data.get("verdict"),
        "kfm.level": data.get("level") or "",
        "kfm.harness_version": data.get("harness_version"),
        "kfm.git_commit": prov.get("git_commit", ""),
        "kfm.blueprint_version": data.get("blueprint_version"),
        "kfm.inventory_sha256": prov.get("inventory_sha256", ""),
        "kfm.pipeline": data.get("pipeline", {}).get("name", ""),
        "kfm.profile_sha256": data.get("pipeline", {}).get("profile_sha256", ""),
        "kfm.seed": prov.get("seed", ""),
        "kfm.run_id": prov.get("run_id", ""),
    }
    for suite in suites:
        existing = suite.find("properties")
        if existing is not None:
            suite.remove(existing)
        properties = ET.Element("properties")
        for name, value in values.items():
            ET.SubElement(properties, "property", name=name, value=str(value))
        suite.insert(0, properties)
    tree.write(path, encoding="utf-8", xml_declaration=True)


def _cell(text: Any) -> str:
    """A Markdown table cell: no pipes or newlines, and no live HTML (job summaries render
    HTML, and the text may come from the pipeline)."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def render_markdown(data: dict[str, Any]) -> str:
    pipeline = data["pipeline"]
    if data["verdict"] == "certified":
        headline = f"**CERTIFIED, level `{data.get('level') or 'core'}`**"
    else:
        headline = f"**NOT CERTIFIED**: {len(data.get('blocking', []))} blocking checks"
    lines = [
        f"# kfm-conformance report: {_cell(pipeline.get('name'))}",
        "",
        headline,
        "",
        "Counts: " + ", ".join(f"{k} {v}" for k, v in data["counts"].items()),
        "",
        "| Provenance | |",
        "|---|---|",
        *(f"| {_cell(label)} | {_cell(value)} |" for label, value in provenance_rows(data)),
        "",
    ]
    gate = data.get("gate")
    if isinstance(gate, dict):
        lines += [
            f"## CI gate: {'passed' if gate.get('ok') else 'FAILED'}",
            "",
            f"Baseline `{_cell(gate.get('baseline'))}`: {gate.get('known', 0)} known results "
            "as expected.",
            "",
        ]
        for key, title in (
            ("unexpected", "Unexpected results (fail the gate)"),
            ("unexpected_passes", "Unexpected passes (update the baseline)"),
            ("stale", "Baseline entries with no result in this run"),
        ):
            if gate.get(key):
                lines += [f"**{title}**", ""]
                lines += [
                    f"- `{_cell(r['check_id'])}`: expected {_cell(r.get('expected'))}, "
                    f"observed {_cell(r.get('observed'))}"
                    + (f" ({_cell(r['reason'])})" if r.get("reason") else "")
                    for r in gate[key]
                ]
                lines.append("")
    if data.get("problems"):
        lines += ["## Problems", ""] + [f"- {_cell(p)}" for p in data["problems"]] + [""]
    if data.get("blocking"):
        lines += ["## Blocking checks", ""]
        lines += [f"- `{_cell(c)}`" for c in data["blocking"][:100]] + [""]
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
            lines.append(
                f"- **{mark}** `{_cell(scenario['check_id'])}` ({scenario['kind']}){message}"
            )
        lines.append("")
    lines.append("Evidence for every check: `report.html` (open it in a browser) or `report.json`.")
    lines.append("")
    return "\n".join(lines)
