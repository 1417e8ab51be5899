"""Writers for ``report.json`` (checked against ``report.schema.json``), ``report.md`` and
``report.html``, and the provenance properties added to pytest's ``junit.xml``.

The report directory is checked before a run (:func:`prepare_report_dir`: it must exist or be
creatable, and take a write), and a write that fails after the run (a full or read-only disk)
is one line naming what failed and what was kept (:class:`ReportWriteError`, exit 2). Each
report file is written beside and renamed into place, so no half-written report is left;
masking secrets in a file rewrites it in place, which never needs more space (every mask is
shorter than what it hides).
"""

from __future__ import annotations

import html
import json
import os
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema

from kfm_conformance.report.html import render_html
from kfm_conformance.report.model import provenance_rows
from kfm_conformance.verdict import ConfigurationError

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


#: Files of an earlier run's report that a new run removes before it starts, so that a run
#: that cannot write its own never leaves them looking current.
PREVIOUS_REPORT_FILES = ("report.json", "report.md", "report.html", "junit.xml", "cucumber.json")
#: Files a report directory can hold, in the order a failure message lists them as kept.
REPORT_DIR_FILES = (
    "report.json",
    "report.md",
    "report.html",
    "junit.xml",
    "cucumber.json",
    "pytest.log",
)
PROBE_BYTES = 4096


class ReportWriteError(ConfigurationError):
    """The report directory cannot take a write: one line, what failed and what was kept."""


def _kept(report_dir: Path) -> str:
    kept = [name for name in REPORT_DIR_FILES if (report_dir / name).is_file()]
    return ", ".join(kept) if kept else "nothing"


def prepare_report_dir(report_dir: Path) -> None:
    """Create the report directory, prove it takes a write (a probe file, synced and
    removed), and remove an earlier run's reports. One line when it cannot be used."""
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigurationError(f"--report-dir: {report_dir} is not a directory") from None
    except OSError as exc:
        raise ConfigurationError(
            f"--report-dir: cannot create {report_dir}: {exc.strerror or exc}"
        ) from None
    probe = report_dir / f".kfm-write-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0" * PROBE_BYTES)
            handle.flush()
            os.fsync(handle.fileno())
        for name in PREVIOUS_REPORT_FILES:
            (report_dir / name).unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"--report-dir: cannot write in {report_dir}: {exc.strerror or exc}"
        ) from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass


def _write_file(path: Path, text: str) -> None:
    """Write beside and rename into place: a failed write leaves no partial file."""
    part = path.with_name(f".{path.name}.part")
    try:
        part.write_text(text, encoding="utf-8")
        os.replace(part, path)
    except OSError as exc:
        try:
            part.unlink(missing_ok=True)
        except OSError:
            pass
        raise ReportWriteError(
            f"--report-dir: cannot write {path.name} in {path.parent}: "
            f"{exc.strerror or exc}; the run's results are not lost; kept {_kept(path.parent)}"
        ) from None


def write_reports(data: dict[str, Any], report_dir: Path) -> None:
    """Write a (redacted) report as ``report.json``, checked against its schema,
    ``report.md`` and ``report.html``; add the provenance to ``junit.xml`` when it is there.
    Raises :class:`ReportWriteError` (one line) when the directory takes no more writes."""
    validate_report(data)
    _write_file(report_dir / "report.json", json.dumps(data, indent=2, default=str) + "\n")
    _write_file(report_dir / "report.md", render_markdown(data))
    _write_file(report_dir / "report.html", render_html(data))
    junit = report_dir / "junit.xml"
    if junit.is_file():
        try:
            add_junit_properties(junit, data)
        except OSError as exc:
            raise ReportWriteError(
                f"--report-dir: cannot add the provenance to junit.xml in {report_dir}: "
                f"{exc.strerror or exc}; kept {_kept(report_dir)}"
            ) from None


def redact_file(path: Path, redactor: Redactor) -> None:
    """Mask secrets in a file written by someone else (pytest's JUnit XML, the cucumber JSON,
    the pytest log, the profile copied into a bundle), in every form the redactor knows
    (literal, JSON, XML, URL and base64). The bytes are kept as they are (undecodable ones
    too) and the file is rewritten in place: masked text is never longer, so a full disk
    cannot stop it. A file that cannot be masked is removed rather than left holding a
    secret; :class:`ReportWriteError` says so."""
    if not path.is_file():
        return
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8", errors="surrogateescape")
        masked = redactor.redact_text(text).encode("utf-8", errors="surrogateescape")
        if masked == raw:
            return
        with open(path, "r+b") as handle:
            handle.write(masked)
            handle.truncate()
    except OSError as exc:
        try:
            path.unlink(missing_ok=True)
            fate = "removed it, so that no secret stays in it"
        except OSError:
            fate = "could not remove it either: it may hold a secret"
        raise ReportWriteError(
            f"--report-dir: cannot mask secrets in {path.name} in {path.parent}: "
            f"{exc.strerror or exc}; {fate}; kept {_kept(path.parent)}"
        ) from None


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
    part = path.with_name(f".{path.name}.part")
    try:
        tree.write(part, encoding="utf-8", xml_declaration=True)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


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
