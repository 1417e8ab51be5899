"""The report as data: scenario results folded into guarantees, then into a certification verdict.

A run is certified when no scenario failed or errored and no required scenario was skipped
for a reason other than "not declared" (a tool or service that was unavailable means the
guarantee was not checked, and an unchecked guarantee is not certified — Sonobuoy's rule).
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import shlex
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from kfm_conformance import BLUEPRINT_VERSION, __version__, guarantees
from kfm_conformance.verdict import SkipKind, Verdict

REPORT_FORMAT = 1


class MalformedResult(ValueError):
    """A scenario result that does not match ``$defs/scenario`` of the report schema."""


@functools.cache
def _scenario_validator() -> Any:
    import jsonschema
    from referencing import Registry, Resource

    schema = json.loads(
        resources.files("kfm_conformance.schemas").joinpath("report.schema.json").read_text()
    )
    registry: Registry[Any] = Registry().with_resource(
        schema["$id"], Resource.from_contents(schema)
    )
    return jsonschema.Draft202012Validator(
        {"$ref": schema["$id"] + "#/$defs/scenario"}, registry=registry
    )


#: The most evidence one scenario's result may carry (serialized JSON); beyond it the largest
#: items are cut, each with a visible note.
EVIDENCE_CAP_BYTES = 4 * 1024 * 1024
_KEEP_CHARS = 4000


def cap_evidence(evidence: dict[str, Any], cap: int = EVIDENCE_CAP_BYTES) -> dict[str, Any]:
    """The evidence, within ``cap`` bytes of JSON: while it is larger, its largest top-level
    item is replaced by a note saying it was truncated, how large it was, and how it began."""
    sizes = {k: len(json.dumps(v, default=str)) for k, v in evidence.items()}
    if sum(sizes.values()) <= cap:
        return evidence
    capped = dict(evidence)
    truncated: list[str] = []
    for key in sorted(sizes, key=sizes.__getitem__, reverse=True):
        if sum(sizes.values()) <= cap:
            break
        text = json.dumps(capped[key], default=str)
        capped[key] = {
            "truncated": True,
            "note": f"evidence item {key!r} was {len(text)} bytes of JSON, over the "
            f"{cap}-byte cap of one scenario's evidence; its first {_KEEP_CHARS} characters:",
            "original_bytes": len(text),
            "head": text[:_KEEP_CHARS],
        }
        sizes[key] = len(json.dumps(capped[key]))
        truncated.append(key)
    capped["evidence_truncated"] = truncated
    return capped


@dataclass
class ScenarioResult:
    """One scenario's result, as the plugin makes it and the CLI reads it back."""

    check_id: str
    guarantee: str
    name: str
    verdict: str
    message: str
    kind: str
    nodeid: str
    feature_file: str | None = None
    example: dict[str, str] | None = None
    skip_kind: str | None = None
    precondition_failed: bool = False
    duration_s: float = 0.0
    steps: list[dict[str, Any]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "check_id": self.check_id,
            "guarantee": self.guarantee,
            "feature_file": self.feature_file,
            "name": self.name,
            "example": self.example,
            "kind": self.kind,
            "verdict": self.verdict,
            "message": self.message,
            "skip_kind": self.skip_kind,
            "precondition_failed": self.precondition_failed,
            "duration_s": self.duration_s,
            "steps": self.steps,
            "findings": self.findings,
            "evidence": self.evidence,
            "nodeid": self.nodeid,
        }

    @classmethod
    def from_json(cls, data: Any) -> ScenarioResult:
        """Read a result back, validated against the report schema's ``$defs/scenario``."""
        errors = sorted(_scenario_validator().iter_errors(data), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "(top level)"
            raise MalformedResult(f"{where}: {errors[0].message[:200]}")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


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
    #: Scenarios chosen by check ID (``--only GUARANTEE/SLUG``); their guarantees' rows hold
    #: only them.
    selected_checks: list[str] = field(default_factory=list)

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
            "selected_checks": self.selected_checks,
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
    selected_checks: list[str] | None = None,
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
        selected_checks=list(selected_checks or []),
    )


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def base_provenance() -> dict[str, Any]:
    return {
        "harness_version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(terse=True),
    }


#: Python distributions whose versions decide how the checks behave (shown in the provenance).
TOOL_DISTRIBUTIONS = (
    "pytest",
    "pytest-bdd",
    "pytest-xdist",
    "pytest-httpserver",
    "werkzeug",
    "jsonschema",
    "pyarrow",
)


def harness_commit() -> tuple[str, bool | None]:
    """The harness's git commit (12 hex digits) and whether its tracked files differ from it.

    ``("unknown", None)`` for an installed copy without a git checkout.
    """
    here = Path(__file__).resolve().parent

    def git(*args: str) -> subprocess.CompletedProcess[str] | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=here, capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None

    head = git("rev-parse", "--short=12", "HEAD")
    if head is None or head.returncode != 0 or not head.stdout.strip():
        return "unknown", None
    status = git("status", "--porcelain", "--untracked-files=no", "--", str(here.parent))
    dirty = None if status is None or status.returncode != 0 else bool(status.stdout.strip())
    return head.stdout.strip(), dirty


def inventory_files() -> list[dict[str, str]]:
    """Each packaged feature file with its sha256: the inventory the digest is made of."""
    from kfm_conformance.features import feature_files

    return [
        {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        for path in feature_files()
    ]


def tool_versions() -> dict[str, str]:
    versions = {}
    for name in TOOL_DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def services_used(
    results: Iterable[dict[str, Any]], base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The services the run talked to, with their versions.

    ``base`` is what the CLI knows (the provider); scenarios add what they saw through an
    evidence key ``services`` (``{name: version}``). The scripted origin is always used.
    """
    services: dict[str, Any] = {"provider": "embedded", **(base or {})}
    versions: dict[str, str] = {}
    try:
        versions["scripted-origin"] = (
            f"pytest-httpserver {metadata.version('pytest-httpserver')}"
            f" / werkzeug {metadata.version('werkzeug')}"
        )
    except metadata.PackageNotFoundError:
        versions["scripted-origin"] = "pytest-httpserver"
    for result in results:
        seen = result.get("evidence", {}).get("services")
        if isinstance(seen, dict):
            versions.update({str(k): str(v) for k, v in seen.items()})
        if "observability" in result.get("evidence", {}):
            versions.setdefault(
                "capture (OpenLineage sink, OTLP receiver)", f"kfm-conformance {__version__}"
            )
    services["versions"] = {**versions, **services.get("versions", {})}
    return services


def replay_command(profile: str, seed: int, selected: list[str] | None, strict: bool) -> str:
    """The command line that replays a run's randomised choices."""
    argv = ["kfm-conformance", "certify", "--profile", profile, "--seed", str(seed)]
    if selected and set(selected) != set(guarantees.IDS):
        argv += ["--only", *selected]
    if strict:
        argv.append("--strict")
    return shlex.join(argv)


def build_provenance(
    *,
    pipeline: dict[str, Any],
    seed: int,
    seed_given: bool,
    started_at: str,
    ended_at: str,
    duration_s: float,
    services: dict[str, Any],
    jobs: int,
    strict: bool,
    selected: list[str],
    profile_arg: str,
    inventory_sha256: str,
) -> dict[str, Any]:
    """Everything a reviewer needs to know how a report was made, and to make it again."""
    commit, dirty = harness_commit()
    return {
        **base_provenance(),
        "run_id": str(uuid.uuid4()),
        "blueprint_version": BLUEPRINT_VERSION,
        "git_commit": commit,
        "git_dirty": dirty,
        "inventory_sha256": inventory_sha256,
        "inventory": inventory_files(),
        "pipeline_command": list(pipeline.get("command", [])),
        "profile": pipeline.get("profile"),
        "profile_sha256": pipeline.get("profile_sha256", ""),
        "python_implementation": platform.python_implementation(),
        "os": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
        },
        "started_at": started_at,
        "ended_at": ended_at,
        "duration_s": duration_s,
        "seed": seed,
        "seed_source": "given" if seed_given else "random",
        "replay": replay_command(profile_arg, seed, selected, strict),
        "services": services,
        "tools": tool_versions(),
        "jobs": jobs,
    }


def shell_text(words: Iterable[Any]) -> str:
    """A command as a reader expects it: words quoted only when they hold spaces or quotes."""
    return " ".join(
        shlex.quote(w) if any(c in w for c in " \t\n'\"\\$`") or not w else w
        for w in (str(word) for word in words)
    )


def provenance_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The provenance header as (label, text) rows, shared by the Markdown and HTML reports."""
    prov = data.get("provenance", {})
    pipeline = data.get("pipeline", {})
    commit = str(prov.get("git_commit", "unknown"))
    if prov.get("git_dirty"):
        commit += " (with local changes)"
    services = prov.get("services", {})
    service_text = str(services.get("provider", "")) if isinstance(services, dict) else ""
    versions = services.get("versions", {}) if isinstance(services, dict) else {}
    if versions:
        service_text += ": " + "; ".join(f"{k} {v}" for k, v in versions.items())
    os_info = prov.get("os", {})
    os_text = (
        f"{os_info.get('system', '')} {os_info.get('release', '')} {os_info.get('machine', '')}"
        if isinstance(os_info, dict) and os_info
        else ""
    ).strip() or str(prov.get("platform", ""))
    command = prov.get("pipeline_command", pipeline.get("command", []))
    seed = f"{prov.get('seed', '')}"
    if prov.get("seed_source"):
        seed += f" ({prov['seed_source']})"
    tools = prov.get("tools", {})
    return [
        (
            "Harness",
            f"kfm-conformance {data.get('harness_version', prov.get('harness_version', ''))}"
            f", commit {commit}",
        ),
        ("Blueprint", f"KFM {data.get('blueprint_version', prov.get('blueprint_version', ''))}"),
        ("Check inventory", f"sha256 {prov.get('inventory_sha256', '')}"),
        ("Pipeline", str(pipeline.get("name", ""))),
        ("Pipeline command", shell_text(command)),
        (
            "Profile",
            f"{pipeline.get('profile', prov.get('profile', ''))} sha256 "
            f"{pipeline.get('profile_sha256', prov.get('profile_sha256', ''))}",
        ),
        (
            "Python / OS",
            f"{prov.get('python_implementation', 'Python')} {prov.get('python', '')} / {os_text}",
        ),
        (
            "Started / ended",
            f"{prov.get('started_at', '')} / {prov.get('ended_at', '')}"
            + (f" ({prov['duration_s']} s)" if "duration_s" in prov else ""),
        ),
        ("Services", service_text),
        ("Tools", ", ".join(f"{k} {v}" for k, v in tools.items()) if tools else ""),
        ("Seed", seed),
        ("Replay", str(prov.get("replay", ""))),
        ("Level asked", "strict (SHOULDs too)" if data.get("strict") else "core (MUSTs)"),
        ("Run ID", str(prov.get("run_id", ""))),
    ] + (
        [("OpenLineage schemas", json.dumps(prov["openlineage_schemas"], sort_keys=True))]
        if prov.get("openlineage_schemas")
        else []
    )
