"""Shared pieces of the governance tests: a report whose every pipeline-controlled channel
carries hostile HTML and JavaScript, an HTML inspector, and where Chromium is."""

from __future__ import annotations

import os
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from kfm_conformance.report.model import build_provenance, fold, services_used

#: Payloads that would run, load or break out of their context if printed raw.
HOSTILE = [
    "<script>window.__kfm_pwned = 'script'</script>",
    '"><img src=x onerror="window.__kfm_pwned=\'img\'">',
    "'><svg onload=window.__kfm_pwned='svg'>",
    "javascript:window.__kfm_pwned='href'",
    "</details></div></section><script>window.__kfm_pwned='close'</script>",
    "</style><script>window.__kfm_pwned='style'</script>",
    "<a href=\"javascript:window.__kfm_pwned='a'\">click</a>",
    '<iframe src="https://attacker.invalid/"></iframe>',
    '<!-- <base href="https://attacker.invalid/"> -->',
    '<meta http-equiv="refresh" content="0;url=https://attacker.invalid/">',
]

#: One payload per channel, so a test can tell which channel leaked.
_CHANNELS = [
    "stdout",
    "stderr",
    "header-name",
    "header-value",
    "path",
    "event-job",
    "event-type",
    "event-dataset",
    "span-name",
    "crash-point",
    "finding-message",
    "finding-observed",
    "file-name",
    "scenario-message",
    "pipeline-name",
    "command",
    "problem",
    "example",
    "step",
    "generic-evidence",
    "argv",
]


def payload(channel: str) -> str:
    """The hostile text planted in ``channel`` (a different payload per channel)."""
    index = _CHANNELS.index(channel)
    return f"[{channel}]" + HOSTILE[index % len(HOSTILE)]


def all_payloads() -> dict[str, str]:
    return {channel: payload(channel) for channel in _CHANNELS}


def _scenario(check_id: str, verdict: str, **extra: Any) -> dict[str, Any]:
    guarantee = check_id.split("/", 1)[0]
    return {
        "check_id": check_id,
        "guarantee": guarantee,
        "feature_file": f"{guarantee.replace('-', '_')}.feature",
        "name": check_id.split("/", 1)[1],
        "example": None,
        "kind": "required",
        "verdict": verdict,
        "message": "",
        "skip_kind": None,
        "duration_s": 0.5,
        "steps": [{"keyword": "Given", "text": "the upstream serves 25 rows", "status": "passed"}],
        "findings": [],
        "evidence": {},
        "nodeid": f"test_guarantees.py::test_{check_id.split('/', 1)[1].replace('-', '_')}",
        **extra,
    }


def hostile_report() -> dict[str, Any]:
    """A report (as report.json holds it) with a hostile payload in every channel."""
    p = all_payloads()
    lineage_event = {
        "eventType": p["event-type"],
        "eventTime": "2026-01-01T00:00:00Z",
        "job": {"namespace": "kfm", "name": p["event-job"]},
        "run": {"runId": "0193f6a4-0000-7000-8000-000000000001"},
        "inputs": [{"namespace": "http://127.0.0.1", "name": p["event-dataset"]}],
        "outputs": [{"namespace": "file", "name": "out/data.parquet"}],
    }
    otlp = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "0af7651916cd43dd8448eb211c80319c",
                                "spanId": "b7ad6b7169203331",
                                "name": p["span-name"],
                                "kind": 1,
                                "status": {"code": 2},
                                "startTimeUnixNano": "1000000",
                                "endTimeUnixNano": "5000000",
                            }
                        ]
                    }
                ]
            }
        ]
    }
    failing = _scenario(
        "exit-codes/each-upstream-answer-maps-to-its-declared-exit-code[status-500]",
        "fail",
        message=p["scenario-message"],
        example={"answer": p["example"], "outcome": '"upstream_transient"'},
        steps=[
            {"keyword": "Given", "text": p["step"], "status": "passed"},
            {"keyword": "Then", "text": "it exits with the declared code", "status": "failed"},
        ],
        findings=[
            {
                "check": "exit-code",
                "ok": False,
                "level": "required",
                "message": p["finding-message"],
                "expected": {"upstream_transient": 75},
                "observed": p["finding-observed"],
            }
        ],
        evidence={
            "runs": [
                {
                    "label": "run 1",
                    "argv": ["python3", p["argv"], "http://127.0.0.1:1/data.json"],
                    "exit_code": 0,
                    "timed_out": False,
                    "duration_s": 0.2,
                    "stdout_tail": p["stdout"],
                    "stderr_tail": p["stderr"],
                    "files_before": {},
                    "files_after": {
                        p["file-name"]: {"sha256": "e3b0c442" + "0" * 56, "size": 0},
                        "out/data.parquet": {"sha256": "ab" * 32, "size": 1234},
                    },
                }
            ],
            "http": [
                {
                    "number": 1,
                    "method": "GET",
                    "path": "/data.json?" + p["path"],
                    "status": 500,
                    "answer": "scripted: 500",
                    "body_bytes": 0,
                    "headers": {p["header-name"]: p["header-value"]},
                    "raw_headers": [[p["header-name"], p["header-value"]], ["Host", "x"]],
                }
            ],
            "observability": {
                "scenario_id": "s-1",
                "env": {"OPENLINEAGE_URL": "http://127.0.0.1:1"},
                "runs": [
                    {
                        "label": "run 1",
                        "exit_code": 0,
                        "lineage_events": [p["event-type"]],
                        "spans": [p["span-name"]],
                        "lineage": [{"seq": 1, "status": 201, "event": lineage_event}],
                        "traces": [otlp],
                    }
                ],
            },
            "lineage_events": [lineage_event],
            "spans": [
                {
                    "trace_id": "0af7651916cd43dd8448eb211c80319c",
                    "span_id": "b7ad6b7169203331",
                    "parent_span_id": None,
                    "name": p["span-name"],
                    "kind": "SERVER",
                    "status_code": "ERROR",
                    "start_ns": 1_000_000,
                    "end_ns": 3_000_000,
                }
            ],
            "crash_points": [
                {"syscall": "rename", "path": p["crash-point"], "outcome": "old version"}
            ],
            "reader_summary": {"note": p["generic-evidence"]},
        },
    )
    passing = _scenario("exit-codes/without-an-upstream-url-the-pipeline-exits-with-usage", "pass")
    skipped = _scenario(
        "exit-codes/a-slow-upstream-is-transient[headers-sent-late]",
        "skip",
        message="not declared: limits.fetch_timeout_s",
        skip_kind="not-declared",
    )
    results = [failing, passing, skipped]
    pipeline = {
        "name": p["pipeline-name"],
        "command": ["{python}", p["command"], "{src}"],
        "output": "out/data.parquet",
        "profile": "profile.toml",
        "profile_sha256": "cd" * 32,
    }
    provenance = build_provenance(
        pipeline=pipeline,
        seed=42,
        seed_given=True,
        started_at="2026-01-01T00:00:00+00:00",
        ended_at="2026-01-01T00:01:00+00:00",
        duration_s=60.0,
        services=services_used(results, {"provider": "embedded"}),
        jobs=2,
        strict=False,
        selected=["exit-codes"],
        profile_arg="profile.toml",
        inventory_sha256="ef" * 32,
    )
    report = fold(
        results,
        pipeline=pipeline,
        provenance=provenance,
        strict=False,
        selected=["exit-codes"],
        problems=[p["problem"]],
    )
    return report.to_json()


class PageInspector(HTMLParser):
    """Collects the tags, attributes and text of a page, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str]] = []
        self.text: list[str] = []
        self.comments: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._in_style = tag == "style"
        for name, value in attrs:
            self.attributes.append((tag, name, value or ""))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if not self._in_style:
            self.text.append(data)

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)

    @property
    def all_text(self) -> str:
        return "".join(self.text)


def inspect(page: str) -> PageInspector:
    inspector = PageInspector()
    inspector.feed(page)
    inspector.close()
    return inspector


def chromium_or_skip() -> str:
    """The Chromium binary; without one the test fails under CI and is skipped elsewhere."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    message = "chromium is not installed (apt-get install -y chromium; scripts/setup.sh does)"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
