"""The report as data: scenario results folded into guarantees, then into a certification verdict.

A run is certified when no scenario failed or errored and no required scenario was skipped
for a reason other than "not declared" (a tool or service that was unavailable means the
guarantee was not checked, and an unchecked guarantee is not certified — Sonobuoy's rule).
"""

from __future__ import annotations

import json
import platform
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kfm_conformance import BLUEPRINT_VERSION, __version__, guarantees
from kfm_conformance.verdict import SkipKind, Verdict

REPORT_FORMAT = 1


@dataclass
class GuaranteeResult:
    id: str
    title: str
    clause: str
    verdict: Verdict
    scenarios: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "clause": self.clause,
            "verdict": str(self.verdict),
            "counts": dict(Counter(s["verdict"] for s in self.scenarios)),
            "scenarios": self.scenarios,
        }


@dataclass
class Report:
    pipeline: dict[str, Any]
    guarantees: list[GuaranteeResult]
    provenance: dict[str, Any]
    strict: bool
    selected: list[str]
    problems: list[str] = field(default_factory=list)

    @property
    def scenarios(self) -> list[dict[str, Any]]:
        return [s for g in self.guarantees for s in g.scenarios]

    @property
    def counts(self) -> dict[str, int]:
        counts = Counter(s["verdict"] for s in self.scenarios)
        return {str(v): counts.get(str(v), 0) for v in Verdict}

    @property
    def blocking(self) -> list[dict[str, Any]]:
        """Scenarios that stand between this run and a certificate."""
        blockers = []
        for scenario in self.scenarios:
            verdict = scenario["verdict"]
            if verdict in ("fail", "error") or (
                verdict == "skip"
                and scenario.get("kind") == "required"
                and scenario.get("skip_kind") != str(SkipKind.NOT_DECLARED)
            ):
                blockers.append(scenario)
        return blockers

    @property
    def certified(self) -> bool:
        return not self.blocking and not self.problems and bool(self.scenarios)

    @property
    def level(self) -> str | None:
        """The certificate's level: ``strict`` (SHOULDs too) or ``core`` (MUSTs)."""
        if not self.certified:
            return None
        return "strict" if self.strict else "core"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "verdict": "certified" if self.certified else "not-certified",
            "level": self.level,
            "harness_version": __version__,
            "blueprint_version": BLUEPRINT_VERSION,
            "pipeline": self.pipeline,
            "provenance": self.provenance,
            "strict": self.strict,
            "selected_guarantees": self.selected,
            "counts": self.counts,
            "blocking": [s["check_id"] for s in self.blocking],
            "problems": self.problems,
            "guarantees": [g.to_json() for g in self.guarantees],
        }


def fold(
    scenario_results: list[dict[str, Any]],
    *,
    pipeline: dict[str, Any],
    provenance: dict[str, Any],
    strict: bool,
    selected: list[str],
    problems: list[str] | None = None,
) -> Report:
    """Group scenario results by guarantee, in catalogue order."""
    by_guarantee: dict[str, list[dict[str, Any]]] = {}
    for result in sorted(scenario_results, key=lambda r: r["check_id"]):
        by_guarantee.setdefault(result["guarantee"], []).append(result)
    rows = []
    for guarantee in guarantees.CATALOGUE:
        if guarantee.id not in selected:
            continue
        scenarios = by_guarantee.pop(guarantee.id, [])
        verdict = Verdict.worst(Verdict(s["verdict"]) for s in scenarios)
        rows.append(
            GuaranteeResult(guarantee.id, guarantee.title, guarantee.anchor, verdict, scenarios)
        )
    leftover = [s for group in by_guarantee.values() for s in group]
    for scenario in leftover:
        scenario["verdict"] = "error"
        scenario["message"] = "harness error: scenario belongs to no known guarantee"
    if leftover:
        rows.append(GuaranteeResult("unknown", "Unclassified", "", Verdict.ERROR, leftover))
    return Report(
        pipeline=pipeline,
        guarantees=rows,
        provenance=provenance,
        strict=strict,
        selected=selected,
        problems=list(problems or []),
    )


def read_scenario_results(directory: Path) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for path in sorted(directory.glob("scenarios-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                results.append(json.loads(line))
    return results


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def base_provenance() -> dict[str, Any]:
    return {
        "harness_version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(terse=True),
    }
