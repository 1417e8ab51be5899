"""report.html stays inert whatever the pipeline printed, sent or emitted, and shows every kind
of evidence with the provenance header; report.md and the JUnit XML carry the provenance too."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from governance_helpers import HOSTILE, all_payloads, hostile_report, inspect

from kfm_conformance.report.html import CONTENT_SECURITY_POLICY, render_html
from kfm_conformance.report.model import shell_text
from kfm_conformance.report.writers import render_markdown, validate_report, write_reports

#: Tags the page may contain: structure and text only.
ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "main", "footer", "section",
    "div", "span", "h1", "h2", "h3", "h4", "p", "ul", "ol", "li", "table", "thead", "tbody",
    "tr", "th", "td", "code", "pre", "b", "a", "details", "summary", "label", "input", "br",
}  # fmt: skip


@pytest.fixture(scope="module")
def page() -> str:
    data = hostile_report()
    validate_report(data)
    return render_html(data)


def test_the_page_has_no_active_content(page: str) -> None:
    parsed = inspect(page)
    assert set(parsed.tags) <= ALLOWED_TAGS, set(parsed.tags) - ALLOWED_TAGS
    assert "script" not in parsed.tags
    assert parsed.tags.count("style") == 1
    assert parsed.comments == [], "no comment may open: the <!-- payload must stay text"
    for tag, name, value in parsed.attributes:
        assert not name.lower().startswith("on"), (tag, name, value)
        assert name.lower() not in {"src", "srcdoc", "action", "formaction", "style", "srcset"}
        assert "javascript:" not in value.lower(), (tag, name, value)
        if name == "href":
            assert value.startswith("#"), f"only in-page links: {value!r}"
        if name == "id":
            assert all(c.isalnum() or c == "-" for c in value), value
    assert "http://" not in " ".join(v for _, n, v in parsed.attributes if n != "content")


def test_content_security_policy_forbids_scripts(page: str) -> None:
    parsed = inspect(page)
    policies = [
        v
        for t, n, v in parsed.attributes
        if t == "meta"
        and n == "content"
        and ("meta", "http-equiv", "Content-Security-Policy") in parsed.attributes
    ]
    assert CONTENT_SECURITY_POLICY in policies
    assert CONTENT_SECURITY_POLICY == "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    head = page.split("</head>", 1)[0]
    assert head.index("Content-Security-Policy") < head.index("<style>")


def test_every_hostile_string_is_shown_escaped_never_raw(page: str) -> None:
    parsed = inspect(page)
    text = parsed.all_text
    for channel, hostile in all_payloads().items():
        shown = shell_text([hostile]) if channel in ("command", "argv") else hostile
        if channel == "generic-evidence":  # shown as JSON
            shown = json.dumps(hostile)[1:-1]
        assert shown in text, f"{channel}: the payload must be shown (as text)"
    for hostile in HOSTILE:
        assert hostile not in page, f"appears raw: {hostile}"
    assert "&lt;script&gt;" in page


def test_every_kind_of_evidence_is_rendered(page: str) -> None:
    text = inspect(page).all_text
    for heading in (
        "HTTP exchange",
        "Request headers, as sent",
        "Runs and exit codes",
        "File digests",
        "stdout (tail)",
        "stderr (tail)",
        "OpenLineage events",
        "Trace spans",
        "Crash points",
        "Findings: expected vs observed",
        "Scenario (Gherkin)",
        "Lineage and telemetry captured",
        "reader summary",
    ):
        assert heading in text, heading
    assert "<details" in page and "<summary>" in page


def test_provenance_header_is_complete(page: str) -> None:
    text = inspect(page).all_text
    data = hostile_report()
    prov = data["provenance"]
    for label in (
        "Harness",
        "Check inventory",
        "Pipeline command",
        "Profile",
        "Python / OS",
        "Started / ended",
        "Services",
        "Seed",
        "Replay",
    ):
        assert label in text, label
    for value in (
        prov["inventory_sha256"],
        prov["git_commit"],
        prov["python"],
        prov["started_at"],
        prov["ended_at"],
        "42 (given)",
        "kfm-conformance certify --profile profile.toml --seed 42 --only exit-codes",
        data["pipeline"]["profile_sha256"],
    ):
        assert str(value) in text, value


def test_not_certified_banner_lists_the_blocking_checks(page: str) -> None:
    text = inspect(page).all_text
    assert "NOT CERTIFIED" in text
    assert "exit-codes/each-upstream-answer-maps-to-its-declared-exit-code[status-500]" in text
    assert "CERTIFIED · level" not in text


def test_certified_banner_names_the_level() -> None:
    data = hostile_report()
    data.update(verdict="certified", level="strict", blocking=[], problems=[])
    text = inspect(render_html(data)).all_text
    assert "CERTIFIED · level strict" in text


def test_markdown_is_escaped_and_carries_the_provenance() -> None:
    data = hostile_report()
    markdown = render_markdown(data)
    for hostile in HOSTILE:
        if "<" in hostile:
            assert hostile not in markdown
    assert "<script" not in markdown and "<img" not in markdown
    for label in ("Check inventory", "Pipeline command", "Python / OS", "Seed", "Replay"):
        assert f"| {label} |" in markdown


def test_writers_add_the_html_and_junit_properties(tmp_path: Path) -> None:
    data = hostile_report()
    (tmp_path / "junit.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="1">'
        '<testcase classname="x" name="y"/></testsuite></testsuites>'
    )
    write_reports(data, tmp_path)
    assert json.loads((tmp_path / "report.json").read_text())["provenance"]["seed"] == 42
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["kfm.verdict"] == "not-certified"
    assert properties["kfm.inventory_sha256"] == data["provenance"]["inventory_sha256"]
    assert properties["kfm.seed"] == "42"
