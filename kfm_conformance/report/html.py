"""``report.html``: the compliance report as one self-contained page for a governance reviewer.

One file, no network: the CSS is inline, there are no scripts, fonts or images, and a
Content-Security-Policy forbids them anyway (defence in depth). It reads offline and prints
(the print style sheet opens every scenario). Each scenario is a ``<details>`` element, so it
expands and collapses without JavaScript.

Everything in a report that the pipeline controls (its stdout and stderr, the headers it sent,
the events and spans it emitted, file names, finding messages) is untrusted. Every string goes
through :func:`html.escape` (quotes too) before it reaches the page, and no attribute is ever
built from untrusted text: element ids and links are derived from a slug of harness-made check
IDs plus a digest, so they contain only ``[a-z0-9-]``.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Iterable
from typing import Any

from kfm_conformance.report.model import provenance_rows, shell_text

#: The policy in the page's meta tag: nothing may load or run; only the inline style sheet.
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

VERDICTS = ("pass", "warn", "fail", "skip", "error")
VERDICT_LABEL = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP", "error": "ERROR"}
VERDICT_MEANING = {
    "pass": "every check held",
    "warn": "a recommended check (SHOULD) did not hold",
    "fail": "the pipeline broke a guarantee",
    "skip": "the check did not run (not declared, or a tool was unavailable)",
    "error": "the harness or its infrastructure broke; not the pipeline's fault",
}

#: How much of one JSON value a ``<pre>`` block shows before it says what it left out.
MAX_PRE_CHARS = 200_000

CSS = """
:root { --pass:#1a7f37; --warn:#9a6700; --fail:#cf222e; --skip:#6e7781; --error:#8250df;
  --line:#d0d7de; --muted:#57606a; --bg-soft:#f6f8fa; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  margin: 0 auto; max-width: 1200px; padding: 1.5rem; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; }
h2 { font-size: 1.25rem; margin: 2rem 0 .5rem; border-bottom: 1px solid var(--line);
  padding-bottom: .25rem; }
h3 { font-size: 1rem; margin: 1rem 0 .4rem; }
h4 { font-size: .95rem; margin: .9rem 0 .3rem; }
code, pre, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  font-size: .85em; }
pre { background: var(--bg-soft); border: 1px solid var(--line); border-radius: 4px;
  padding: .5rem .75rem; overflow-x: auto; white-space: pre-wrap; word-break: break-word;
  max-height: 32rem; margin: .3rem 0; }
table { border-collapse: collapse; width: 100%; margin: .3rem 0 .8rem; }
th, td { border: 1px solid var(--line); padding: .25rem .5rem; text-align: left;
  vertical-align: top; word-break: break-word; }
th { background: var(--bg-soft); font-weight: 600; }
.muted { color: var(--muted); }
.banner { border-radius: 6px; padding: 1rem 1.25rem; margin: 1rem 0; color: #fff; }
.banner.certified { background: var(--pass); }
.banner.not-certified { background: var(--fail); }
.banner .big { font-size: 1.5rem; font-weight: 700; letter-spacing: .02em; }
.banner a { color: #fff; }
.badge { display: inline-block; min-width: 3.6em; text-align: center; border-radius: 3px;
  padding: 0 .35em; font-weight: 700; font-size: .8rem; color: #fff; }
.badge.pass { background: var(--pass); } .badge.warn { background: var(--warn); }
.badge.fail { background: var(--fail); } .badge.skip { background: var(--skip); }
.badge.error { background: var(--error); }
.badge.held { background: var(--pass); } .badge.broken { background: var(--fail); }
.tag { display: inline-block; border: 1px solid var(--line); border-radius: 3px;
  padding: 0 .3em; font-size: .75rem; color: var(--muted); }
.counts { display: flex; flex-wrap: wrap; gap: .5rem; margin: .5rem 0 1rem; }
.count { border: 1px solid var(--line); border-radius: 6px; padding: .4rem .8rem;
  min-width: 7rem; }
.count .n { font-size: 1.4rem; font-weight: 700; display: block; }
.prov th { width: 11rem; }
table.guarantees td:nth-child(-n+4), table.findings td:nth-child(-n+3),
table.findings th { white-space: nowrap; }
.scenario-name { color: var(--muted); font-size: .9em; }
.prov td { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .85em; }
details { border: 1px solid var(--line); border-radius: 4px; margin: .35rem 0;
  background: #fff; }
details > summary { cursor: pointer; padding: .35rem .6rem; }
details > .body { padding: .2rem .9rem .7rem; border-top: 1px solid var(--line); }
details.scenario.v-fail, details.scenario.v-error { border-left: 4px solid var(--fail); }
details.scenario.v-warn { border-left: 4px solid var(--warn); }
details.scenario.v-pass { border-left: 4px solid var(--pass); }
details.scenario.v-skip { border-left: 4px solid var(--skip); }
details.evidence > summary { font-weight: 600; }
.message { border-left: 3px solid var(--line); padding: .2rem .6rem; margin: .4rem 0;
  background: var(--bg-soft); white-space: pre-wrap; }
ol.steps { margin: .2rem 0; padding-left: 1.6rem; }
ol.steps li.failed, ol.steps li.undefined { color: var(--fail); font-weight: 600; }
.kw { font-weight: 700; }
.controls { margin: .5rem 0 1rem; padding: .5rem .75rem; background: var(--bg-soft);
  border: 1px solid var(--line); border-radius: 6px; font-size: .9rem; }
.controls label { margin-right: 1.2rem; cursor: pointer; }
body:has(#kfm-expand-all:checked) details::details-content {
  content-visibility: visible; display: block; }
body:has(#kfm-only-problems:checked) .scenario.v-pass,
body:has(#kfm-only-problems:checked) .scenario.not-declared { display: none; }
footer { margin-top: 2rem; color: var(--muted); font-size: .85rem; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  .controls, .noprint { display: none !important; }
  details::details-content { content-visibility: visible !important; display: block; }
  details > summary { list-style: none; }
  details, .scenario { display: block !important; }
  pre { max-height: none; overflow: visible; }
  .banner { color: #000; border: 3px solid #000; background: none !important; }
  .banner a { color: #000; }
  a { color: inherit; text-decoration: none; }
  h2 { break-after: avoid-page; }
}
"""


# -- escaping and safe identifiers -----------------------------------------------------------
def esc(value: Any) -> str:
    """Escape any value for HTML text or a quoted attribute (``&<>"'``)."""
    return html.escape("" if value is None else str(value), quote=True)


def anchor(kind: str, text: str) -> str:
    """A safe element id: ``kind-slug-digest``, only ``[a-z0-9-]`` whatever ``text`` holds."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")[:60]
    digest = hashlib.sha256(str(text).encode("utf-8", "replace")).hexdigest()[:8]
    return f"{kind}-{slug}-{digest}" if slug else f"{kind}-{digest}"


def _json_text(value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=False)
    if len(text) > MAX_PRE_CHARS:
        left = len(text) - MAX_PRE_CHARS
        text = text[:MAX_PRE_CHARS] + f"\n… {left} more characters (see report.json)"
    return text


def pre(value: Any) -> str:
    """A ``<pre>`` block: strings as they are, anything else as indented JSON."""
    text = value if isinstance(value, str) else _json_text(value)
    return f"<pre>{esc(text)}</pre>"


def short(value: Any, limit: int = 300) -> str:
    """A compact, escaped rendering of a value for a table cell."""
    if value is None:
        return '<span class="muted">—</span>'
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > limit:
        text = text[:limit] + "…"
    return esc(text)


def badge(verdict: Any) -> str:
    key = str(verdict) if str(verdict) in VERDICT_LABEL else "error"
    return f'<span class="badge {key}">{esc(VERDICT_LABEL.get(str(verdict), verdict))}</span>'


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], cls: str = "") -> str:
    """A table; ``headers`` are escaped here, each cell must already be safe HTML."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    klass = f' class="{esc(cls)}"' if cls else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def details(summary_html: str, body_html: str, *, cls: str = "", open_: bool = False) -> str:
    """A ``<details>`` element; both parts must already be safe HTML."""
    klass = f' class="{esc(cls)}"' if cls else ""
    opened = " open" if open_ else ""
    return (
        f"<details{klass}{opened}><summary>{summary_html}</summary>"
        f'<div class="body">{body_html}</div></details>'
    )


# -- the page ---------------------------------------------------------------------------------
def render_html(data: dict[str, Any]) -> str:
    """The whole report as one self-contained HTML page (``data`` is a redacted report)."""
    pipeline = data.get("pipeline", {})
    name = str(pipeline.get("name", ""))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CONTENT_SECURITY_POLICY)}">',
        '<meta name="referrer" content="no-referrer">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>kfm-conformance report: {esc(name)} — {esc(data.get('verdict'))}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        "<header>",
        f"<h1>kfm-conformance report: {esc(name)}</h1>",
        f'<div class="muted">KFM {esc(data.get("blueprint_version"))} control-plane blueprint'
        f" · kfm-conformance {esc(data.get('harness_version'))}</div>",
        _banner(data),
        "</header>",
        "<main>",
        _counts(data),
        _gate(data),
        _problems(data),
        _provenance(data),
        _guarantee_table(data),
        _controls(),
        *(_guarantee_section(row) for row in data.get("guarantees", [])),
        "</main>",
        _footer(),
        "</body>",
        "</html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _scenario_index(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        str(s.get("check_id")): s
        for g in data.get("guarantees", [])
        for s in g.get("scenarios", [])
    }


def _banner(data: dict[str, Any]) -> str:
    counts = data.get("counts", {})
    ran = sum(n for v, n in counts.items() if v != "skip")
    if data.get("verdict") == "certified":
        level = str(data.get("level") or "core")
        what = "MUSTs and SHOULDs" if level == "strict" else "MUSTs"
        return (
            '<div class="banner certified"><div class="big">'
            f"CERTIFIED · level {esc(level)}</div>"
            f"<div>The pipeline kept every checked guarantee ({esc(what)}): {esc(ran)} checks "
            "ran, none failed or errored, and no required check was skipped as unavailable."
            "</div></div>"
        )
    blocking = [str(b) for b in data.get("blocking", [])]
    index = _scenario_index(data)
    items = []
    for check_id in blocking[:50]:
        scenario = index.get(check_id, {})
        items.append(
            f'<li>{badge(scenario.get("verdict", "error"))} <a href="#{anchor("c", check_id)}">'
            f"<code>{esc(check_id)}</code></a> {esc(_first_line(scenario.get('message', '')))}</li>"
        )
    more = f"<li>… and {len(blocking) - 50} more</li>" if len(blocking) > 50 else ""
    reasons = f"<ul>{''.join(items)}{more}</ul>" if items else ""
    if data.get("problems") and not blocking:
        reasons = "<div>The run itself had problems (listed below).</div>"
    return (
        '<div class="banner not-certified"><div class="big">NOT CERTIFIED</div>'
        f"<div>{esc(len(blocking))} checks stand between this run and a certificate.</div>"
        f"{reasons}</div>"
    )


def _first_line(text: Any) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0][:240] if lines else ""


def _counts(data: dict[str, Any]) -> str:
    counts = data.get("counts", {})
    cells = "".join(
        f'<div class="count">{badge(v)}<span class="n">{esc(counts.get(v, 0))}</span>'
        f'<span class="muted">{esc(VERDICT_MEANING[v])}</span></div>'
        for v in VERDICTS
    )
    return f'<section id="summary"><h2>Summary</h2><div class="counts">{cells}</div></section>'


def _gate(data: dict[str, Any]) -> str:
    gate = data.get("gate")
    if not isinstance(gate, dict):
        return ""
    status = "passed" if gate.get("ok") else "FAILED"
    parts = [
        f"<h2>CI gate: {esc(status)}</h2>",
        f"<p>Baseline <code>{esc(gate.get('baseline'))}</code>: "
        f"{esc(gate.get('known', 0))} known results matched as expected.</p>",
    ]
    for key, title in (
        ("unexpected", "Unexpected results (these fail the gate)"),
        ("unexpected_passes", "Unexpected passes (update the baseline)"),
        ("stale", "Baseline entries with no result in this run"),
    ):
        rows = gate.get(key) or []
        if rows:
            parts.append(f"<h3>{esc(title)}</h3>")
            parts.append(
                table(
                    ["Check", "Expected", "Observed", "Reason in baseline"],
                    [
                        [
                            f"<code>{esc(r.get('check_id'))}</code>",
                            esc(r.get("expected")),
                            esc(r.get("observed")),
                            esc(r.get("reason", "")),
                        ]
                        for r in rows
                    ],
                )
            )
    return f'<section id="gate">{"".join(parts)}</section>'


def _problems(data: dict[str, Any]) -> str:
    problems = data.get("problems") or []
    if not problems:
        return ""
    items = "".join(f"<li>{esc(p)}</li>" for p in problems)
    return f'<section id="problems"><h2>Problems with the run</h2><ul>{items}</ul></section>'


def _provenance(data: dict[str, Any]) -> str:
    rows = [[f"{esc(label)}", esc(value)] for label, value in provenance_rows(data)]
    prov = data.get("provenance", {})
    inventory = prov.get("inventory") or []
    extra = ""
    if inventory:
        extra = details(
            f"Check inventory: {esc(len(inventory))} feature files",
            table(
                ["Feature file", "sha256"],
                [[esc(i.get("file")), f"<code>{esc(i.get('sha256'))}</code>"] for i in inventory],
            ),
            cls="evidence",
        )
    body = "".join(f"<tr><th>{label}</th><td>{value}</td></tr>" for label, value in rows)
    return (
        '<section id="provenance"><h2>Provenance</h2>'
        '<p class="muted">How this report was made: by which harness, on which checks, '
        "against which pipeline, where and when. The seed replays the run's randomised "
        "choices.</p>"
        f'<table class="prov"><tbody>{body}</tbody></table>{extra}</section>'
    )


def _guarantee_table(data: dict[str, Any]) -> str:
    rows = []
    for row in data.get("guarantees", []):
        counts = ", ".join(f"{n} {v}" for v, n in sorted(row.get("counts", {}).items()))
        rows.append(
            [
                f'<a href="#{anchor("g", row.get("id", ""))}">'
                f"<code>{esc(row.get('id'))}</code></a>",
                esc(row.get("title")),
                badge(row.get("verdict")),
                esc(counts),
                f'<span class="muted">{esc(row.get("clause"))}</span>',
            ]
        )
    return (
        '<section id="guarantees"><h2>Guarantees</h2>'
        + table(
            ["Guarantee", "Title", "Verdict", "Scenarios", "Blueprint clause"], rows, "guarantees"
        )
        + "</section>"
    )


def _controls() -> str:
    return (
        '<div class="controls noprint">'
        '<label><input type="checkbox" id="kfm-expand-all"> Expand every scenario</label>'
        '<label><input type="checkbox" id="kfm-only-problems"> Hide passes and undeclared '
        "skips</label>"
        '<span class="muted">Click a scenario to see its evidence. Printing expands '
        "everything.</span></div>"
    )


def _guarantee_section(row: dict[str, Any]) -> str:
    scenarios = row.get("scenarios", [])
    body = "".join(_scenario(s) for s in scenarios) or '<p class="muted">No scenario ran.</p>'
    return (
        f'<section class="guarantee" id="{anchor("g", row.get("id", ""))}">'
        f"<h2>{badge(row.get('verdict'))} <code>{esc(row.get('id'))}</code>: "
        f"{esc(row.get('title'))}</h2>"
        f'<p class="muted">Blueprint: {esc(row.get("clause"))}</p>{body}</section>'
    )


# -- one scenario -----------------------------------------------------------------------------
def _scenario(scenario: dict[str, Any]) -> str:
    verdict = str(scenario.get("verdict", "error"))
    check_id = str(scenario.get("check_id", ""))
    kind = str(scenario.get("kind", "required"))
    level = "MUST" if kind == "required" else "SHOULD"
    duration = scenario.get("duration_s")
    summary = (
        f"{badge(verdict)} <code>{esc(check_id)}</code> "
        f'<span class="tag">{esc(level)}</span>'
        + (f' <span class="muted">{esc(duration)} s</span>' if duration is not None else "")
        + (
            f'<div class="muted">{esc(_first_line(scenario.get("message")))}</div>'
            if scenario.get("message")
            else ""
        )
    )
    parts = [f"<h3>{esc(scenario.get('name'))}</h3>"]
    if scenario.get("message"):
        parts.append(f'<div class="message">{esc(scenario["message"])}</div>')
    if verdict == "skip":
        parts.append(f"<p>Skipped: <b>{esc(scenario.get('skip_kind') or 'unknown reason')}</b></p>")
    parts.append(_gherkin(scenario))
    parts.append(_findings(scenario.get("findings") or []))
    parts.append(_evidence(scenario.get("evidence") or {}))
    classes = f"scenario v-{verdict}"
    if verdict == "skip" and scenario.get("skip_kind") == "not-declared":
        classes += " not-declared"
    return (
        f'<div id="{anchor("c", check_id)}">'
        + details(summary, "".join(parts), cls=classes, open_=verdict in ("fail", "error"))
        + "</div>"
    )


def _gherkin(scenario: dict[str, Any]) -> str:
    steps = scenario.get("steps") or []
    example = scenario.get("example")
    parts = ["<h4>Scenario (Gherkin)</h4>"]
    where = [f"Feature file <code>{esc(scenario.get('feature_file'))}</code>"]
    if scenario.get("nodeid"):
        where.append(f"test <code>{esc(scenario.get('nodeid'))}</code>")
    parts.append(f'<p class="muted">{" · ".join(where)}</p>')
    if isinstance(example, dict) and example:
        parts.append(
            table(
                [str(k) for k in example],
                [[esc(v) for v in example.values()]],
            )
        )
    if steps:
        items = []
        for step in steps:
            status = str(step.get("status", ""))
            mark = {"passed": "✓", "failed": "✗", "undefined": "?"}.get(status, "·")
            cls = status if status in ("passed", "failed", "undefined") else "other"
            items.append(
                f'<li class="{cls}">{esc(mark)} <span class="kw">{esc(step.get("keyword"))}</span>'
                f" {esc(step.get('text'))}"
                + (f' <span class="tag">{esc(status)}</span>' if status != "passed" else "")
                + "</li>"
            )
        parts.append(f'<ol class="steps">{"".join(items)}</ol>')
    else:
        parts.append('<p class="muted">No step ran.</p>')
    return "".join(parts)


def _findings(findings: list[dict[str, Any]]) -> str:
    if not findings:
        return ""
    rows = []
    for finding in findings:
        ok = bool(finding.get("ok"))
        level = "MUST" if finding.get("level", "required") == "required" else "SHOULD"
        rows.append(
            [
                f'<span class="badge {"held" if ok else "broken"}">'
                f"{'held' if ok else 'broken'}</span>",
                esc(level),
                f"<code>{esc(finding.get('check'))}</code>",
                short(finding.get("expected"), 600),
                short(finding.get("observed"), 600),
                esc(finding.get("message"))
                if not ok
                else f'<span class="muted">if broken: {esc(finding.get("message"))}</span>',
            ]
        )
    return "<h4>Findings: expected vs observed</h4>" + table(
        ["Result", "Level", "Check", "Expected", "Observed", "Message"], rows, "findings"
    )


# -- evidence ---------------------------------------------------------------------------------
_EVIDENCE_ORDER = (
    "runs",
    "http",
    "versions",
    "observability",
    "lineage_events",
    "spans",
    "crash_points",
)


def _evidence(evidence: dict[str, Any]) -> str:
    if not evidence:
        return ""
    keys = [k for k in _EVIDENCE_ORDER if k in evidence] + sorted(
        k for k in evidence if k not in _EVIDENCE_ORDER
    )
    parts = ["<h4>Evidence</h4>"]
    for key in keys:
        value = evidence[key]
        renderer = _RENDERERS.get(key)
        try:
            parts.append(renderer(value) if renderer else _generic(key, value))
        except Exception:  # an unexpected shape must never lose the evidence: show it raw
            parts.append(_generic(key, value))
    return "".join(parts)


def _generic(key: str, value: Any) -> str:
    title = key.replace("_", " ")
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        body = _dict_table(value) + details("as JSON", pre(value))
        return details(f"{esc(title)} ({esc(len(value))})", body, cls="evidence")
    return details(esc(title), pre(value), cls="evidence")


def _dict_table(items: list[dict[str, Any]], limit: int = 500) -> str:
    columns: list[str] = []
    for item in items[:limit]:
        for key in item:
            if key not in columns and len(columns) < 10:
                columns.append(str(key))
    rows = [[short(item.get(c), 200) for c in columns] for item in items[:limit]]
    note = (
        f'<p class="muted">{esc(len(items) - limit)} more rows in the JSON.</p>'
        if len(items) > limit
        else ""
    )
    return table(columns, rows) + note


def _runs(runs: list[dict[str, Any]]) -> str:
    overview = table(
        ["Run", "Exit code", "Timed out", "Duration (s)", "Files after"],
        [
            [
                esc(r.get("label")),
                f"<b>{esc(r.get('exit_code'))}</b>",
                esc(r.get("timed_out")),
                esc(r.get("duration_s")),
                esc(len(r.get("files_after") or {})),
            ]
            for r in runs
        ],
    )
    blocks = [overview]
    for run in runs:
        inner = []
        argv = run.get("argv")
        if isinstance(argv, list):
            inner.append(f"<p>Command: <code>{esc(shell_text(argv))}</code></p>")
        inner.append(f"<p>Exit code <b>{esc(run.get('exit_code'))}</b>")
        if run.get("timed_out"):
            inner.append(" — <b>killed at its timeout</b>")
        inner.append("</p>")
        inner.append(_files(run.get("files_before") or {}, run.get("files_after") or {}))
        for stream in ("stdout_tail", "stderr_tail"):
            text = run.get(stream)
            label = stream.replace("_tail", "") + " (tail)"
            if text:
                inner.append(f"<h4>{esc(label)}</h4>{pre(str(text))}")
            else:
                inner.append(f'<p class="muted">{esc(label)}: empty</p>')
        rest = {
            k: v
            for k, v in run.items()
            if k
            not in (
                "argv",
                "exit_code",
                "timed_out",
                "files_before",
                "files_after",
                "stdout_tail",
                "stderr_tail",
                "label",
                "duration_s",
            )
        }
        if rest:
            inner.append(details("more about this run", pre(rest)))
        blocks.append(
            details(
                f"{esc(run.get('label'))}: exit code {esc(run.get('exit_code'))}", "".join(inner)
            )
        )
    return details(f"Runs and exit codes ({esc(len(runs))})", "".join(blocks), cls="evidence")


def _files(before: dict[str, Any], after: dict[str, Any]) -> str:
    names = sorted(set(before) | set(after))
    if not names:
        return '<p class="muted">No files in the working directory before or after.</p>'
    rows = []
    for name in names:
        b, a = before.get(name), after.get(name)
        if b is None:
            change = "added"
        elif a is None:
            change = "removed"
        elif isinstance(a, dict) and isinstance(b, dict) and a.get("sha256") != b.get("sha256"):
            change = "changed"
        else:
            change = "unchanged"

        def cell(state: Any) -> str:
            if not isinstance(state, dict):
                return short(state)
            return f"<code>{esc(state.get('sha256'))}</code><br>{esc(state.get('size'))} bytes"

        rows.append([f"<code>{esc(name)}</code>", esc(change), cell(b), cell(a)])
    return "<h4>File digests</h4>" + table(["File", "Change", "Before", "After"], rows)


def _http(exchanges: list[dict[str, Any]]) -> str:
    overview = table(
        ["#", "Request", "Answer", "Status", "Conditional headers"],
        [
            [
                esc(x.get("number")),
                f"<code>{esc(x.get('method'))} {esc(x.get('path'))}</code>",
                esc(x.get("answer")),
                esc(x.get("status")),
                esc(
                    ", ".join(
                        f"{k}: {v}"
                        for k, v in (x.get("headers") or {}).items()
                        if str(k).lower().startswith("if-")
                    )
                ),
            ]
            for x in exchanges
        ],
    )
    blocks = [overview]
    for exchange in exchanges:
        raw = exchange.get("raw_headers")
        if isinstance(raw, list) and raw:
            header_rows = [
                [f"<code>{esc(h[0])}</code>", f"<code>{esc(h[1])}</code>"]
                for h in raw
                if isinstance(h, list | tuple) and len(h) == 2
            ]
        else:
            header_rows = [
                [f"<code>{esc(k)}</code>", f"<code>{esc(v)}</code>"]
                for k, v in (exchange.get("headers") or {}).items()
            ]
        inner = [
            f"<p><code>{esc(exchange.get('method'))} {esc(exchange.get('path'))}</code> → "
            f"<b>{esc(exchange.get('status'))}</b> ({esc(exchange.get('answer'))}), "
            f"{esc(exchange.get('body_bytes'))} body bytes</p>",
            "<h4>Request headers, as sent</h4>",
            table(["Header", "Value"], header_rows),
        ]
        rest = {
            k: v
            for k, v in exchange.items()
            if k
            not in (
                "number",
                "method",
                "path",
                "status",
                "answer",
                "headers",
                "raw_headers",
                "body_bytes",
            )
        }
        if rest:
            inner.append(pre(rest))
        blocks.append(
            details(
                f"request {esc(exchange.get('number'))}: {esc(exchange.get('method'))} "
                f"{esc(exchange.get('path'))} → {esc(exchange.get('status'))}",
                "".join(inner),
            )
        )
    return details(
        f"HTTP exchange ({esc(len(exchanges))} requests)", "".join(blocks), cls="evidence"
    )


def _versions(versions: list[dict[str, Any]]) -> str:
    return details(
        f"Upstream versions served ({esc(len(versions))})", _dict_table(versions), cls="evidence"
    )


def _event_of(item: Any) -> dict[str, Any] | None:
    if isinstance(item, dict) and isinstance(item.get("event"), dict):
        return dict(item["event"])
    if isinstance(item, dict) and "eventType" in item:
        return item
    return None


def _dataset_names(datasets: Any) -> str:
    if not isinstance(datasets, list):
        return ""
    return ", ".join(
        f"{d.get('namespace', '')}/{d.get('name', '')}" for d in datasets if isinstance(d, dict)
    )


def _lineage(items: list[Any], title: str = "OpenLineage events") -> str:
    rows = []
    for item in items:
        event = _event_of(item)
        if event is None:
            rows.append([short(item, 200), "", "", "", "", "", ""])
            continue
        job: dict[str, Any] = event["job"] if isinstance(event.get("job"), dict) else {}
        run: dict[str, Any] = event["run"] if isinstance(event.get("run"), dict) else {}
        status = item.get("status") if isinstance(item, dict) and "event" in item else ""
        rows.append(
            [
                esc(event.get("eventType")),
                esc(event.get("eventTime")),
                esc(f"{job.get('namespace', '')}/{job.get('name', '')}"),
                f"<code>{esc(run.get('runId'))}</code>",
                esc(_dataset_names(event.get("inputs"))),
                esc(_dataset_names(event.get("outputs"))),
                esc(status),
            ]
        )
    body = table(
        ["Type", "Time", "Job", "Run ID", "Inputs", "Outputs", "Sink status"], rows
    ) + details("events as received (JSON)", pre(items))
    return details(f"{esc(title)} ({esc(len(items))})", body, cls="evidence")


def _flatten_otlp(documents: list[Any]) -> list[dict[str, Any]]:
    spans = []
    for document in documents:
        if not isinstance(document, dict):
            continue
        for resource_spans in document.get("resourceSpans") or []:
            for scope_spans in resource_spans.get("scopeSpans") or []:
                for span in scope_spans.get("spans") or []:
                    status = span.get("status") or {}
                    spans.append(
                        {
                            "name": span.get("name"),
                            "trace_id": span.get("traceId"),
                            "span_id": span.get("spanId"),
                            "parent_span_id": span.get("parentSpanId") or None,
                            "kind": span.get("kind"),
                            "status_code": status.get("code"),
                            "start_ns": span.get("startTimeUnixNano"),
                            "end_ns": span.get("endTimeUnixNano"),
                        }
                    )
    return spans


def _spans(items: list[Any], title: str = "Trace spans") -> str:
    records = [i for i in items if isinstance(i, dict)]
    if records and all("resourceSpans" in r for r in records):
        records = _flatten_otlp(records)
    if not records:
        return _generic("spans", items)
    rows = []
    for span in records:
        duration = ""
        try:
            duration = f"{(int(span['end_ns']) - int(span['start_ns'])) / 1e6:.1f}"
        except (KeyError, TypeError, ValueError):
            duration = ""
        rows.append(
            [
                esc(span.get("name")),
                f"<code>{esc(span.get('trace_id') or span.get('traceId'))}</code>",
                f"<code>{esc(span.get('span_id') or span.get('spanId'))}</code>",
                f"<code>{esc(span.get('parent_span_id') or span.get('parentSpanId') or '')}</code>",
                esc(span.get("kind")),
                esc(span.get("status_code") or span.get("status")),
                esc(duration),
            ]
        )
    body = table(
        ["Name", "Trace", "Span", "Parent", "Kind", "Status", "Duration (ms)"], rows
    ) + details("spans as received (JSON)", pre(items))
    return details(f"{esc(title)} ({esc(len(records))})", body, cls="evidence")


def _observability(value: dict[str, Any]) -> str:
    if not isinstance(value, dict):
        return _generic("observability", value)
    parts = []
    env = value.get("env")
    if isinstance(env, dict) and env:
        parts.append(
            "<h4>Environment given to the pipeline</h4>"
            + table(
                ["Variable", "Value"],
                [[f"<code>{esc(k)}</code>", f"<code>{esc(v)}</code>"] for k, v in env.items()],
            )
        )
    for run in value.get("runs") or []:
        if not isinstance(run, dict):
            continue
        inner = [
            table(
                ["Lineage events", "Refused", "Spans", "OTLP requests"],
                [
                    [
                        esc(", ".join(str(e) for e in run.get("lineage_events") or [])),
                        esc(run.get("lineage_refused")),
                        esc(", ".join(str(s) for s in run.get("spans") or [])),
                        short(run.get("otlp_requests")),
                    ]
                ],
            )
        ]
        if run.get("lineage"):
            inner.append(_lineage(run["lineage"]))
        if run.get("traces"):
            inner.append(_spans(run["traces"]))
        rest = {
            k: v
            for k, v in run.items()
            if k not in ("lineage", "traces", "label", "exit_code", "lineage_events", "spans")
        }
        inner.append(details("more (JSON)", pre(rest)))
        parts.append(
            details(
                f"{esc(run.get('label'))}: exit code {esc(run.get('exit_code'))}", "".join(inner)
            )
        )
    return details("Lineage and telemetry captured", "".join(parts), cls="evidence")


def _crash_points(items: Any) -> str:
    if isinstance(items, list) and items and all(isinstance(i, dict) for i in items):
        body = _dict_table(items) + details("as JSON", pre(items))
        return details(f"Crash points ({esc(len(items))})", body, cls="evidence")
    return _generic("crash points", items)


def _traceback(value: Any) -> str:
    return details("Harness traceback", pre(str(value)), cls="evidence")


_RENDERERS: dict[str, Any] = {
    "runs": _runs,
    "http": _http,
    "versions": _versions,
    "observability": _observability,
    "lineage_events": _lineage,
    "spans": _spans,
    "crash_points": _crash_points,
    "harness_traceback": _traceback,
}


def _footer() -> str:
    return (
        "<footer>Made by kfm-conformance. This page loads nothing and runs no code; every "
        "value the pipeline produced is shown as text. The machine-readable report is "
        "<code>report.json</code>; a signed evidence bundle (<code>--bundle</code>) holds "
        "this page with its digests.</footer>"
    )
