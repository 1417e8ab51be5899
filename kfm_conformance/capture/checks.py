"""Judging captured lineage and telemetry: pure functions from evidence to findings.

Each function returns ``list[Finding]`` (see :mod:`kfm_conformance.verdict`); nothing here
raises on a broken guarantee, except :class:`~kfm_conformance.verdict.HarnessError` from the
schema validation when the schema cache lacks a version. A check that does not apply to the
run (say, the output check on a run that did not publish) produces no finding at all.

Every finding says, in words a non-coder can read, what was ``expected`` and what was
``observed``.

Lineage (per run): ``lineage.start-event``, ``lineage.terminal-event``, ``lineage.run-id``,
``lineage.event-time-order``, ``lineage.inputs``, ``lineage.outputs``,
``lineage.schema-facet`` (recommended), ``lineage.not-modified-no-version``,
``lineage.spec-valid`` (against the JSON Schema cache when given, else openlineage-python's
model), ``lineage.within-limits`` (only when a cap of the sink refused a request); across runs:
``lineage.job-stable``. A run's events may form a run hierarchy (a root run and runs that name
it in their ParentRunFacet, as Airflow's provider sends): START and terminal events are judged
per OpenLineage run id, the outcome by the root's terminal event, job stability per job name.

Telemetry (per run): ``telemetry.trace-exported``, ``telemetry.root-span``,
``telemetry.root-status``, ``telemetry.service-name``, and, recommended,
``telemetry.step-spans``, ``telemetry.http-semconv``, ``telemetry.runid-correlation``; and
``telemetry.within-limits`` (only when a cap of the receiver refused a request).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from kfm_conformance.capture.hierarchy import (
    TERMINAL_TYPES,
    LineageRun,
    RunHierarchy,
    hierarchies,
)
from kfm_conformance.verdict import Finding, fact

if TYPE_CHECKING:
    from kfm_conformance.capture.otlp import SpanRecord

LINEAGE_RUN_CHECKS = (
    "lineage.start-event",
    "lineage.terminal-event",
    "lineage.run-id",
    "lineage.event-time-order",
    "lineage.inputs",
    "lineage.outputs",
    "lineage.schema-facet",
    "lineage.not-modified-no-version",
    "lineage.spec-valid",
    "lineage.within-limits",
)
LINEAGE_ACROSS_RUNS_CHECKS = ("lineage.job-stable",)
TELEMETRY_CHECKS = (
    "telemetry.trace-exported",
    "telemetry.root-span",
    "telemetry.root-status",
    "telemetry.service-name",
    "telemetry.step-spans",
    "telemetry.http-semconv",
    "telemetry.runid-correlation",
    "telemetry.within-limits",
)
ALL_CHECKS = LINEAGE_RUN_CHECKS + LINEAGE_ACROSS_RUNS_CHECKS + TELEMETRY_CHECKS

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}
_WRITE_STATES = {"CREATE", "OVERWRITE", "ALTER", "TRUNCATE"}
_HTTP_NEW = ("http.request.method", "url.full", "http.response.status_code")
_HTTP_OLD = ("http.method", "http.url", "http.status_code", "http.target", "http.host")


# -- small readers -------------------------------------------------------------------------


def _run_id(event: dict[str, Any]) -> Any:
    run = event.get("run")
    return run.get("runId") if isinstance(run, dict) else None


def _event_type(event: dict[str, Any]) -> str:
    return str(event.get("eventType") or "(no eventType)")


def _sequence(events: Sequence[dict[str, Any]]) -> str:
    return " then ".join(_event_type(e) for e in events) if events else "no events at all"


def _datasets(event: dict[str, Any], side: str) -> list[dict[str, Any]]:
    found = event.get(side)
    return [d for d in found if isinstance(d, dict)] if isinstance(found, list) else []


def _dataset_label(dataset: dict[str, Any]) -> str:
    return f"{dataset.get('namespace')} {dataset.get('name')}"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python before 3.12 takes at most 6 fractional digits.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _relpath(output_relpath: str) -> str:
    rel = output_relpath.replace("\\", "/")
    while rel.startswith("./"):
        rel = rel[2:]
    return rel.lstrip("/")


def _names_output(name: Any, output_relpath: str) -> bool:
    if not isinstance(name, str):
        return False
    rel = _relpath(output_relpath)
    clean = name.replace("\\", "/")
    return clean == rel or clean.endswith("/" + rel)


def output_dataset(
    events: Sequence[dict[str, Any]], output_relpath: str, *, event_type: str | None = "COMPLETE"
) -> dict[str, Any] | None:
    """The output dataset naming ``output_relpath`` in the last event of ``event_type``."""
    for event in reversed(events):
        if event_type is not None and event.get("eventType") != event_type:
            continue
        for dataset in _datasets(event, "outputs"):
            if _names_output(dataset.get("name"), output_relpath):
                return dataset
    return None


def output_version(events: Sequence[dict[str, Any]], output_relpath: str) -> str | None:
    """The ``version`` facet's datasetVersion of the output in a run's COMPLETE, if any."""
    dataset = output_dataset(events, output_relpath)
    facets = (dataset or {}).get("facets") or {}
    version = facets.get("version") if isinstance(facets, dict) else None
    value = version.get("datasetVersion") if isinstance(version, dict) else None
    return str(value) if value is not None else None


# -- schema compatibility ------------------------------------------------------------------

_FAMILY_WORDS: dict[str, str] = {
    "bool": "boolean",
    "boolean": "boolean",
    "int": "integer",
    "uint": "integer",
    "integer": "integer",
    "long": "integer",
    "short": "integer",
    "byte": "integer",
    "bigint": "integer",
    "smallint": "integer",
    "tinyint": "integer",
    "int_": "integer",
    "number_integer": "integer",
    "float": "float",
    "double": "float",
    "real": "float",
    "halffloat": "float",
    "decimal": "decimal",
    "numeric": "decimal",
    "number": "decimal",
    "string": "string",
    "str": "string",
    "utf": "string",
    "large_string": "string",
    "large_utf": "string",
    "varchar": "string",
    "char": "string",
    "text": "string",
    "string_view": "string",
    "nvarchar": "string",
    "timestamp": "timestamp",
    "datetime": "timestamp",
    "timestamptz": "timestamp",
    "timestamp_ntz": "timestamp",
    "timestamp_ltz": "timestamp",
    "date": "date",
    "time": "time",
    "duration": "duration",
    "interval": "duration",
    "binary": "binary",
    "bytes": "binary",
    "blob": "binary",
    "large_binary": "binary",
    "fixed_size_binary": "binary",
    "binary_view": "binary",
    "list": "list",
    "array": "list",
    "large_list": "list",
    "fixed_size_list": "list",
    "list_view": "list",
    "struct": "struct",
    "record": "struct",
    "row": "struct",
    "object": "struct",
    "map": "map",
    "null": "null",
}


def type_family(type_name: Any) -> str:
    """A coarse family (integer, float, string, timestamp, ...) for an Arrow/SQL type name."""
    if not isinstance(type_name, str) or not type_name.strip():
        return ""
    text = type_name.strip().lower()
    dictionary = re.match(r"dictionary<values=([^,>]+)", text)
    if dictionary:
        return type_family(dictionary.group(1))
    word = re.match(r"[a-z_]+", text)
    token = word.group(0) if word else text
    if token in _FAMILY_WORDS:
        return _FAMILY_WORDS[token]
    return "other:" + text


def types_compatible(parquet_type: str, facet_type: Any) -> bool:
    """Whether a schema-facet type states the same kind of data as the Parquet column type."""
    left, right = type_family(parquet_type), type_family(facet_type)
    if not left or not right:
        return False
    if left.startswith("other:") or right.startswith("other:"):
        return str(parquet_type).strip().lower() == str(facet_type).strip().lower()
    return left == right


# -- lineage per run -----------------------------------------------------------------------


class EventValidator(Protocol):
    """Validates one OpenLineage event: the JSON Schema cache, or the model (the default)."""

    def check(self, event: dict[str, Any]) -> tuple[list[Finding], list[str]]: ...

    def describe(self) -> str: ...


def judge_lineage_run(
    events: Sequence[dict[str, Any]],
    *,
    exit_ok: bool,
    published: bool,
    upstream_url: str,
    output_relpath: str,
    parquet_columns: list[tuple[str, str]] | None,
    schemas: EventValidator | None,
    previous_output_version: str | None = None,
    expected_terminal: str | None = None,
    over_limits: Sequence[str] = (),
) -> list[Finding]:
    """Judge one pipeline run's OpenLineage events (in arrival order).

    The events may be one OpenLineage run, or a run hierarchy (a root run and the runs that
    name it as parent, see :mod:`~kfm_conformance.capture.hierarchy`): START and terminal
    events are judged per run id, the outcome by the root run's terminal event.

    ``exit_ok``: the pipeline exited with success. ``published``: it wrote a new output (False
    on a not-modified run). ``parquet_columns``: (name, Arrow type) of the written Parquet file,
    or None when unknown. ``schemas``: the validator (the JSON Schema cache or the model), or
    None to leave ``lineage.spec-valid`` out. ``previous_output_version``: the output's
    ``version`` facet from the last publishing run, so a not-modified run that states another
    version is caught. ``expected_terminal``: the root's terminal event the scenario names
    (COMPLETE or FAIL); by default the one the exit calls for. ``over_limits``: the run's
    requests that a cap of the sink refused (each a failure of the pipeline; it comes first).
    """
    events = [e for e in events if isinstance(e, dict)]
    groups = hierarchies(events)
    findings = _within_limits("lineage.within-limits", "lineage endpoint", over_limits)
    findings.append(_check_start(events, groups))
    findings.append(_check_terminal(events, groups, exit_ok, expected_terminal))
    if not events:
        return findings
    findings.append(_check_run_id(events, groups))
    findings.append(_check_time_order(events, groups))
    findings.append(_check_inputs(events, upstream_url))
    if published:
        findings.append(_check_outputs(events, output_relpath))
        if parquet_columns is not None:
            findings.append(_check_schema_facet(events, output_relpath, parquet_columns))
    elif exit_ok:
        findings.append(_check_not_modified(events, previous_output_version))
    if schemas is not None:
        findings.extend(_check_spec(events, schemas))
    return findings


def _within_limits(check: str, endpoint: str, over_limits: Sequence[str]) -> list[Finding]:
    """A failed finding when the run broke a cap of the capture endpoint, else none."""
    if not over_limits:
        return []
    return [
        fact(
            check,
            False,
            f"the run sent {len(over_limits)} request(s) beyond the {endpoint}'s limits, which "
            f"refused them: {over_limits[0]}",
            expected="every request within the endpoint's limits on size (on the wire and "
            "decompressed), on the number of requests and on the bytes of a scenario",
            observed="; ".join(over_limits[:10])
            + (f"; and {len(over_limits) - 10} more" if len(over_limits) > 10 else ""),
        )
    ]


def _single(groups: list[RunHierarchy]) -> bool:
    """One OpenLineage run and nothing else: the plain case, described in plain words."""
    return len(groups) == 1 and len(groups[0].runs) == 1


def _hierarchy_sequence(events: list[dict[str, Any]], groups: list[RunHierarchy]) -> str:
    if not groups or _single(groups):
        return f"events in the order received: {_sequence(events)}"
    parts = []
    for group in groups:
        root = group.root
        if root is None:
            parts.append(f"root {group.root_label}")
        for run in group.runs:
            where = "root " if run is root else "beneath the root: "
            parts.append(f"{where}{run.label()}: {_sequence(run.events)}")
    return "; ".join(parts)


def _missing_root_start_accepted(group: RunHierarchy, run: LineageRun) -> bool:
    """A root run with runs beneath it may lack a START: a producer that creates the root
    already running (Airflow's ``dag.test()``) cannot send one."""
    return run is group.root and bool(group.children(run))


def _check_start(events: list[dict[str, Any]], groups: list[RunHierarchy]) -> Finding:
    problems: list[str] = []
    accepted: list[str] = []
    single = _single(groups)
    if not events:
        problems.append("no OpenLineage event arrived for this run")
    elif not groups:
        problems.append("no event of the run carries a run id")
    for group in groups:
        for run in group.runs:
            who = "the run" if single else run.label()
            starts = [i for i, kind in enumerate(run.kinds) if kind == "START"]
            if not starts:
                if _missing_root_start_accepted(group, run):
                    accepted.append(
                        f"the root {run.label()} sent no START; accepted, as a producer that "
                        "creates its root run already running (Airflow's dag.test()) cannot "
                        f"send one, and the {len(group.children(run))} run(s) beneath it opened "
                        "with their own START"
                    )
                else:
                    problems.append(f"{who} sent no START event")
            elif len(starts) > 1:
                problems.append(f"{who} sent {len(starts)} START events")
            elif starts[0] != 0:
                problems.append(f"the START event was not the first event of {who}")
    problem = "; ".join(problems)
    if problem:
        message = problem
    elif single:
        message = "the run began with one START event"
    else:
        message = "every OpenLineage run of the run began with one START event"
    if accepted and not problem:
        message += " (" + "; ".join(accepted) + ")"
    return fact(
        "lineage.start-event",
        not problem,
        message,
        expected="exactly one START event per OpenLineage run, sent before any other event of "
        "that run (a root run with runs beneath it may lack one)",
        observed=_hierarchy_sequence(events, groups)
        + ("; " + "; ".join(accepted) if accepted else ""),
    )


def _latest_per_job(runs: list[LineageRun]) -> dict[str, LineageRun]:
    """The last run (in arrival order) of each job: a retried task's last try."""
    latest: dict[str, LineageRun] = {}
    for run in runs:
        latest[run.job] = run
    return latest


def _check_terminal(
    events: list[dict[str, Any]],
    groups: list[RunHierarchy],
    exit_ok: bool,
    expected_terminal: str | None,
) -> Finding:
    want = expected_terminal or ("COMPLETE" if exit_ok else "FAIL")
    outcome = "succeeded" if exit_ok else "failed (non-zero exit code)"
    single = _single(groups)
    problems: list[str] = []
    if expected_terminal is not None and expected_terminal != ("COMPLETE" if exit_ok else "FAIL"):
        problems.append(f"the run {outcome}, so it cannot close with {expected_terminal}")
    if not events:
        problems.append("the run never sent a terminal event (COMPLETE, FAIL or ABORT)")
    for group in groups:
        for run in group.runs:
            who = "the run" if single else run.label()
            terminals = [(i, k) for i, k in enumerate(run.kinds) if k in TERMINAL_TYPES]
            starts = [i for i, k in enumerate(run.kinds) if k == "START"]
            if not terminals:
                problems.append(f"{who} never sent a terminal event (COMPLETE, FAIL or ABORT)")
            elif len(terminals) > 1:
                kinds = ", ".join(k for _, k in terminals)
                problems.append(
                    f"{who} sent {len(terminals)} terminal events ({kinds}); exactly one is allowed"
                )
            elif starts and terminals[0][0] < starts[0]:
                problems.append(f"the terminal event of {who} came before its START event")
        problems.extend(_outcome_problems(group, want, outcome, single))
    problem = "; ".join(dict.fromkeys(problems))
    if single:
        ok_message = f"the run {outcome} and ended with exactly one {want} event"
    else:
        ok_message = (
            f"the run {outcome}; its root run ended with {want} and every OpenLineage run "
            "of it with exactly one terminal event that fits"
        )
    return fact(
        "lineage.terminal-event",
        not problem,
        problem or ok_message,
        expected=f"exactly one terminal event per OpenLineage run, after its START; the root "
        f"run's is {want}, since the run {outcome}, and the runs beneath it agree",
        observed=_hierarchy_sequence(events, groups),
    )


def _outcome_problems(group: RunHierarchy, want: str, outcome: str, single: bool) -> list[str]:
    """The root's terminal must be ``want``; the runs beneath it must not contradict it."""
    problems: list[str] = []
    root = group.root
    below = group.below_root
    if root is not None:
        terminal = root.terminal
        if terminal is not None and terminal != want:
            if single:
                problems.append(f"the run {outcome} but its terminal event is {terminal}")
            else:
                problems.append(
                    f"the run {outcome} but the root {root.label()} ended with {terminal}"
                )
    latest = _latest_per_job(below)
    if not below:
        return problems
    if want == "COMPLETE":
        for job, run in latest.items():
            if run.terminal is not None and run.terminal != "COMPLETE":
                problems.append(
                    f"the run {outcome}, but {run.label()} ended with {run.terminal} and no later "
                    f"run of the job {job} completed"
                )
    else:
        ended = [r.terminal for r in below if r.terminal is not None]
        if ended and all(t == "COMPLETE" for t in ended):
            problems.append(
                f"the run {outcome}, but every run beneath the root "
                f"({', '.join(r.label() for r in below)}) ended with COMPLETE: the lineage "
                "does not show what failed"
            )
    return problems


def _check_run_id(events: list[dict[str, Any]], groups: list[RunHierarchy]) -> Finding:
    ids = [_run_id(e) for e in events]
    distinct = list(dict.fromkeys(str(i) for i in ids))
    bad = [i for i in ids if not isinstance(i, str) or not _UUID.match(i)]
    if bad:
        problem = f"run id {bad[0]!r} is not a UUID"
    elif len(groups) > 1 and all(len(g.runs) == 1 for g in groups):
        problem = f"the run's events carry {len(distinct)} different run ids"
    elif len(groups) > 1:
        problem = (
            f"the run's events form {len(groups)} separate run hierarchies that no "
            "ParentRunFacet links (roots: " + ", ".join(g.root_label for g in groups) + ")"
        )
    else:
        problem = ""
    if _single(groups) or not groups:
        ok_message = "every event carries the same UUID run id"
        shape = ""
    else:
        group = groups[0]
        ok_message = (
            f"every event carries a UUID run id, and the {len(group.runs)} OpenLineage runs "
            f"form one hierarchy under the root {group.root_label}"
        )
        shape = "; hierarchy: " + "; ".join(
            f"{r.label()}" + (f" beneath {r.parent_id}" if r.parent_id else " (root)")
            for g in groups
            for r in g.runs
        )
    return fact(
        "lineage.run-id",
        not problem,
        problem or ok_message,
        expected="a UUID run id (like 0190d3a2-6c4e-7b8f-9a1b-2c3d4e5f6a7b) on every event; "
        "one run id for the run, or one root run with runs that name it as parent",
        observed="run ids seen: " + ", ".join(distinct) + shape,
    )


def _check_time_order(events: list[dict[str, Any]], groups: list[RunHierarchy]) -> Finding:
    problem = ""
    for index, event in enumerate(events):
        raw = event.get("eventTime")
        if _parse_time(raw) is None:
            problem = f"event {index + 1} has an eventTime that is not a date-time: {raw!r}"
            break
    single = _single(groups)
    for group in groups if not problem else []:
        for run in group.runs:
            times = [e.get("eventTime") for e in run.events]
            parsed = [_parse_time(t) for t in times]
            for index in range(1, len(parsed)):
                previous, when = parsed[index - 1], parsed[index]
                if previous is not None and when is not None and when < previous:
                    who = "" if single else f" of {run.label()}"
                    problem = (
                        f"event {index + 1}{who} ({_event_type(run.events[index])}) is dated "
                        f"{times[index]}, earlier than the event sent before it "
                        f"({times[index - 1]})"
                    )
                    break
            if problem:
                break
        if problem:
            break
    observed = ", ".join(f"{_event_type(e)} at {e.get('eventTime')}" for e in events)
    return fact(
        "lineage.event-time-order",
        not problem,
        problem or "event times never go backwards",
        expected="each event's eventTime is the same as or later than the one its OpenLineage "
        "run sent before it",
        observed=observed,
    )


def _upstream_identity(upstream_url: str) -> tuple[set[str], str]:
    parts = urlsplit(upstream_url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or _DEFAULT_PORTS.get(scheme)
    namespaces = {f"{scheme}://{host}:{port}"} if port else {f"{scheme}://{host}"}
    if parts.port is None:
        namespaces.add(f"{scheme}://{host}")
    return namespaces, parts.path or "/"


def _check_inputs(events: list[dict[str, Any]], upstream_url: str) -> Finding:
    namespaces, path = _upstream_identity(upstream_url)
    inputs = [d for e in events for d in _datasets(e, "inputs")]
    labels = list(dict.fromkeys(_dataset_label(d) for d in inputs))
    ok = any(
        str(d.get("namespace", "")).lower().rstrip("/") in namespaces and d.get("name") == path
        for d in inputs
    )
    namespace = sorted(namespaces, key=len)[-1]
    return fact(
        "lineage.inputs",
        ok,
        "the run names its upstream as an input"
        if ok
        else "no event of the run names the upstream as an input dataset",
        expected=f"an input dataset with namespace {namespace} and name {path}",
        observed="input datasets: " + ("; ".join(labels) if labels else "none"),
    )


def _check_outputs(events: list[dict[str, Any]], output_relpath: str) -> Finding:
    completes = [e for e in events if e.get("eventType") == "COMPLETE"]
    outputs = [d for e in completes for d in _datasets(e, "outputs")]
    labels = list(dict.fromkeys(_dataset_label(d) for d in outputs))
    ok = output_dataset(events, output_relpath) is not None
    if not completes:
        problem = "the run published but sent no COMPLETE event to name its output"
    elif not ok:
        problem = f"the COMPLETE event does not name the output {_relpath(output_relpath)}"
    else:
        problem = ""
    return fact(
        "lineage.outputs",
        ok,
        problem or "the COMPLETE event names the published output dataset",
        expected=f"the COMPLETE event lists an output dataset whose name ends with "
        f"{_relpath(output_relpath)}",
        observed="output datasets on COMPLETE: " + ("; ".join(labels) if labels else "none"),
    )


def _schema_facet_of(events: list[dict[str, Any]], output_relpath: str) -> Any:
    found = output_dataset(events, output_relpath)
    candidates = [found] if found is not None else []
    candidates += [
        d
        for e in reversed(events)
        for d in _datasets(e, "outputs")
        if _names_output(d.get("name"), output_relpath)
    ]
    for dataset in candidates:
        facets = dataset.get("facets")
        if isinstance(facets, dict) and "schema" in facets:
            return facets["schema"]
    return None


def _check_schema_facet(
    events: list[dict[str, Any]], output_relpath: str, parquet_columns: list[tuple[str, str]]
) -> Finding:
    expected = ", ".join(f"{n} ({t})" for n, t in parquet_columns) or "no columns"
    facet = _schema_facet_of(events, output_relpath)
    fields = facet.get("fields") if isinstance(facet, dict) else None
    problem = ""
    observed = "no schema facet on the output dataset"
    if facet is None:
        problem = "the output dataset carries no schema facet"
    elif not isinstance(fields, list):
        problem = "the output's schema facet has no list of fields"
        observed = f"schema facet: {facet!r}"
    else:
        stated = [(f.get("name"), f.get("type")) for f in fields if isinstance(f, dict)]
        observed = ", ".join(f"{n} ({t})" for n, t in stated) or "no fields"
        names = [n for n, _ in stated]
        want_names = [n for n, _ in parquet_columns]
        if names != want_names:
            problem = "the schema facet's column names (in order) differ from the Parquet file's"
        else:
            wrong = [
                f"{n}: {t!r} vs Parquet {pt}"
                for (n, t), (_, pt) in zip(stated, parquet_columns, strict=True)
                if not types_compatible(pt, t)
            ]
            if wrong:
                problem = "the schema facet states incompatible types: " + "; ".join(wrong)
    return fact(
        "lineage.schema-facet",
        not problem,
        problem or "the output's schema facet matches the written Parquet schema",
        expected=f"a schema facet on the output listing, in order: {expected}",
        observed=observed,
    )


def _check_not_modified(events: list[dict[str, Any]], previous_version: str | None) -> Finding:
    claims: list[str] = []
    for event in events:
        for dataset in _datasets(event, "outputs"):
            label = f"{_event_type(event)} output {dataset.get('name')}"
            output_facets = dataset.get("outputFacets")
            output_facets = output_facets if isinstance(output_facets, dict) else {}
            facets = dataset.get("facets")
            facets = facets if isinstance(facets, dict) else {}
            stats = output_facets.get("outputStatistics")
            rows = stats.get("rowCount") if isinstance(stats, dict) else None
            if isinstance(rows, int | float) and rows > 0:
                claims.append(f"{label} reports {rows} rows written")
            version = facets.get("version")
            stated = version.get("datasetVersion") if isinstance(version, dict) else None
            changed = previous_version is not None and str(stated) != previous_version
            if stated is not None and changed:
                claims.append(
                    f"{label} states version {stated} (the published version is {previous_version})"
                )
            lifecycle = facets.get("lifecycleStateChange")
            change = lifecycle.get("lifecycleStateChange") if isinstance(lifecycle, dict) else None
            if change in _WRITE_STATES:
                claims.append(f"{label} reports the dataset lifecycle change {change}")
    return fact(
        "lineage.not-modified-no-version",
        not claims,
        "the not-modified run claims a new output version: " + "; ".join(claims)
        if claims
        else "the not-modified run claims no new output version",
        expected="no output, or outputs with no sign of a new version (no rows written, "
        "the same version, no create/overwrite)",
        observed="; ".join(claims) if claims else "no new-version claim",
    )


def _check_spec(events: list[dict[str, Any]], validator: EventValidator) -> list[Finding]:
    findings: list[Finding] = []
    versions: list[str] = []
    notes: list[str] = []
    for index, event in enumerate(events):
        versions.append(str(event.get("schemaURL")))
        problems, event_notes = validator.check(event)
        notes.extend(f"event {index + 1}: {note}" for note in event_notes)
        for finding in problems:
            findings.append(
                dataclasses.replace(
                    finding, message=f"event {index + 1} ({_event_type(event)}): {finding.message}"
                )
            )
    if findings:
        return findings
    observed = "schemas named: " + ", ".join(dict.fromkeys(versions))
    if notes:
        observed += "; checked in part: " + "; ".join(notes)
    return [
        fact(
            "lineage.spec-valid",
            True,
            f"all {len(events)} events follow the OpenLineage spec",
            expected=f"every event and facet valid against {validator.describe()}",
            observed=observed,
        )
    ]


# -- lineage across runs -------------------------------------------------------------------


def judge_lineage_across_runs(runs: list[list[dict[str, Any]]]) -> list[Finding]:
    """``lineage.job-stable``, over the pipeline runs (each a list of its events).

    Each OpenLineage run names one job; the root of each pipeline run's hierarchy names the
    same job on every run; and a job name keeps its namespace from run to run.
    """
    problems: list[str] = []
    described: list[str] = []
    root_jobs: list[str] = []
    namespaces: dict[str, list[str]] = {}
    for number, events in enumerate(runs, 1):
        groups = hierarchies([e for e in events if isinstance(e, dict)])
        if not groups:
            continue
        for group in groups:
            for run in group.runs:
                if len(run.jobs) > 1:
                    problems.append(
                        f"run {number}: {run.label()} names more than one job: "
                        + ", ".join(run.jobs)
                    )
                for event in run.events:
                    job = event.get("job")
                    if isinstance(job, dict):
                        found = namespaces.setdefault(str(job.get("name")), [])
                        if str(job.get("namespace")) not in found:
                            found.append(str(job.get("namespace")))
        roots = list(dict.fromkeys(g.root_job or "(job unknown)" for g in groups))
        if len(roots) > 1:
            problems.append(f"run {number} names more than one job: {', '.join(roots)}")
        root_jobs.extend(r for r in roots if r not in root_jobs)
        beneath = list(dict.fromkeys(r.job for g in groups for r in g.below_root))
        described.append(
            f"run {number}: {', '.join(roots)}"
            + (f" (beneath it: {', '.join(beneath)})" if beneath else "")
        )
    if not problems and len(root_jobs) > 1:
        problems.append(f"the runs name {len(root_jobs)} different jobs")
    for name, found in namespaces.items():
        if len(found) > 1:
            problems.append(
                f"the job {name} appears under {len(found)} namespaces: " + ", ".join(found)
            )
    problem = "; ".join(problems)
    return [
        fact(
            "lineage.job-stable",
            not problem,
            problem or f"all {len(described)} runs name the same job",
            expected="the same job namespace and name on every run (the root job, where a run "
            "reports a hierarchy), and one job per OpenLineage run",
            observed="; ".join(described) or "no runs",
        )
    ]


# -- telemetry per run ---------------------------------------------------------------------


def judge_telemetry_run(
    spans: Sequence[SpanRecord],
    *,
    exit_ok: bool,
    run_id: str | None,
    expected_service_name: str | None = None,
    run_ids: Sequence[str] = (),
    expect_error: bool | None = None,
    over_limits: Sequence[str] = (),
) -> list[Finding]:
    """Judge one run's spans (flattened records, see :func:`otlp.spans_from_otlp_json`).

    ``run_id``: the run's OpenLineage runId (its root run's, for a hierarchy), or None to
    leave ``telemetry.runid-correlation`` out; ``run_ids``: the other run ids of the run's
    hierarchy, any of which a span may carry. ``expected_service_name``: the
    ``OTEL_SERVICE_NAME`` the harness passed, if it should be checked exactly.
    ``expect_error``: whether the scenario names the root status ERROR (True) or not ERROR
    (False); by default the exit decides. ``over_limits``: the run's export requests that a cap
    of the receiver refused (each a failure of the pipeline; it comes first).
    """
    traces = list(dict.fromkeys(s["trace_id"] for s in spans))
    findings = _within_limits("telemetry.within-limits", "OTLP endpoint", over_limits)
    findings += [
        fact(
            "telemetry.trace-exported",
            bool(spans),
            f"the run exported {len(spans)} spans in {len(traces)} trace(s)"
            if spans
            else "the run exported no trace",
            expected="at least one trace exported to the OTLP endpoint",
            observed=f"{len(spans)} spans in {len(traces)} trace(s)",
        )
    ]
    if not spans:
        return findings
    ids = {s["span_id"] for s in spans}
    roots = [s for s in spans if not s["parent_span_id"]]
    orphans = [s for s in spans if s["parent_span_id"] and s["parent_span_id"] not in ids]
    findings.append(
        fact(
            "telemetry.root-span",
            len(roots) == 1,
            "the run has exactly one root span"
            if len(roots) == 1
            else f"the run has {len(roots)} root spans (spans without a parent)",
            expected="exactly one root span (a span without a parent) for the run",
            observed="root spans: "
            + (", ".join(f"{r['name']!r} in trace {r['trace_id']}" for r in roots) or "none")
            + (f"; {len(orphans)} span(s) whose parent was never exported" if orphans else ""),
        )
    )
    if roots:
        root = min(roots, key=lambda s: s["start_ns"])
        status = root["status_code"]
        want_error = (not exit_ok) if expect_error is None else expect_error
        ok = status == "ERROR" if want_error else status != "ERROR"
        outcome = "failed" if not exit_ok else "succeeded"
        message = (
            f"the root span's status fits a run that {outcome}"
            if ok
            else f"the run {outcome} but the root span's status is {status}"
        )
        if want_error == exit_ok:
            ok = False
            wanted = "ERROR" if want_error else "not ERROR"
            message = f"the run {outcome}, so its root span's status cannot be {wanted}"
        findings.append(
            fact(
                "telemetry.root-status",
                ok,
                message,
                expected="root span status ERROR" if want_error else "root span status not ERROR",
                observed=f"root span {root['name']!r} has status {status}"
                + (f" ({root['status_message']})" if root["status_message"] else ""),
            )
        )
    findings.append(_check_service_name(spans, expected_service_name))
    names = list(dict.fromkeys(s["name"] for s in spans))
    steps = [w for w in ("fetch", "transform", "publish") if any(w in n.lower() for n in names)]
    findings.append(
        fact(
            "telemetry.step-spans",
            len(spans) > 1,
            "the run's trace has step spans"
            if len(spans) > 1
            else "the run's trace is a single span, with no step spans",
            expected="step spans (fetch, transform, publish) under the root span",
            observed=f"span names: {', '.join(names)}"
            + (f" (steps recognised: {', '.join(steps)})" if steps else ""),
        )
    )
    findings.append(_check_http_semconv(spans))
    if run_id is not None:
        wanted_ids = {run_id, *run_ids}
        holders = [
            f"{s['name']!r} attribute {k}"
            for s in spans
            for k, v in s["attributes"].items()
            if (isinstance(v, str) and v in wanted_ids)
            or (isinstance(v, list) and wanted_ids & {x for x in v if isinstance(x, str)})
        ]
        findings.append(
            fact(
                "telemetry.runid-correlation",
                bool(holders),
                "the trace carries the OpenLineage run id"
                if holders
                else "no span attribute carries the OpenLineage run id",
                expected=f"a span attribute whose value is the run id {run_id}",
                observed=", ".join(holders) if holders else "no span attribute has that value",
            )
        )
    return findings


def _check_service_name(spans: Sequence[SpanRecord], expected: str | None) -> Finding:
    names = list(dict.fromkeys(str(s["resource"].get("service.name", "")) for s in spans))
    bad = [n for n in names if not n or n.startswith("unknown_service")]
    problem = ""
    if bad:
        problem = "spans were exported without a service.name resource attribute"
    elif expected is not None and names != [expected]:
        problem = f"service.name is {', '.join(names)}, not {expected}"
    return fact(
        "telemetry.service-name",
        not problem,
        problem or f"service.name is set ({', '.join(names)})",
        expected=f"service.name = {expected}" if expected else "a service.name resource attribute",
        observed="service.name: "
        + ", ".join(n if n else "(missing)" for n in names)
        + (" (unknown_service is the SDK's default when none is set)" if bad else ""),
    )


def _check_http_semconv(spans: Sequence[SpanRecord]) -> Finding:
    http_spans = [
        s
        for s in spans
        if s["kind"] != "SERVER" and any(k.startswith(("http.", "url.")) for k in s["attributes"])
    ]
    problems: list[str] = []
    for span in http_spans:
        attrs = span["attributes"]
        wanted = list(_HTTP_NEW)
        if "error.type" in attrs and "http.response.status_code" not in attrs:
            wanted.remove("http.response.status_code")  # no response was received
        missing = [k for k in wanted if k not in attrs]
        old = [k for k in _HTTP_OLD if k in attrs]
        if missing:
            text = f"{span['name']!r} lacks {', '.join(missing)}"
            if old:
                text += f" (has old names {', '.join(old)})"
            problems.append(text)
    problem = "; ".join(problems) if http_spans else "no HTTP client span was exported"
    shown = "; ".join(
        f"{s['name']!r} ({s['kind']}): "
        + ", ".join(k for k in s["attributes"] if k.startswith(("http.", "url.", "error.")))
        for s in http_spans
    )
    return fact(
        "telemetry.http-semconv",
        not problem,
        problem or "HTTP client spans use the current semantic conventions",
        expected="HTTP client spans with http.request.method, url.full and "
        "http.response.status_code",
        observed=shown or "no span with HTTP attributes",
    )


def run_id_per_run(run_ids: dict[str, list[str]]) -> Finding:
    """Every run (by label) sent a run id, and no two runs share one."""
    owners: dict[str, list[str]] = {}
    for label, ids in run_ids.items():
        for run_id in ids:
            owners.setdefault(run_id, []).append(label)
    shared = {i: labels for i, labels in owners.items() if len(labels) > 1}
    missing = [label for label, ids in run_ids.items() if not ids]
    if missing:
        problem = f"no run id arrived for {', '.join(missing)}"
    elif shared:
        problem = "; ".join(
            f"{', '.join(labels)} share the run id {i}" for i, labels in shared.items()
        )
    else:
        problem = ""
    return fact(
        "lineage.run-id-per-run",
        not problem,
        problem or f"each of the {len(run_ids)} runs has a run id of its own",
        expected="a new run id for every run",
        observed=run_ids,
    )
