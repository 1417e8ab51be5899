"""The capture services of one test session, and each run's slice of what they received.

:class:`CaptureServices` starts the embedded :class:`~kfm_conformance.capture.LineageSink` and
:class:`~kfm_conformance.capture.OTLPReceiver` once per pytest session (so once per xdist
worker) and knows how events are validated: against the OpenLineage JSON Schema cache when one
is given, else against the model of openlineage-python. Within a worker, scenarios run one at
a time, so the sequence numbers the sinks hand out are a clock: a :class:`CaptureObserver`
takes a mark just before and just after every run of its scenario (it is installed as a
:class:`~kfm_conformance.scenario.RunObserver`), and everything that arrived in between is that
run's :class:`RunCapture`.

Nothing here judges: :mod:`kfm_conformance.steps.observability` hands the slices to
:mod:`kfm_conformance.capture.checks`.

Real services (``--services``): with a real Collector (``collector``, a
:class:`~kfm_conformance.services.collector_tap.CollectorTap`) the pipeline exports to it
instead of the embedded receiver, and each run's spans are read back from its file exporter
(between byte-offset marks, filtered by the scenario's resource attribute); with a real
Marquez the lineage sink tees every event to it (``forward_lineage_to``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfm_conformance.capture.hierarchy import hierarchies
from kfm_conformance.capture.lineage import LineageRecord, LineageSink, run_id_of
from kfm_conformance.capture.olmodel import OpenLineageModel, default_model
from kfm_conformance.capture.olschema import ENV_VAR, OpenLineageSchemas
from kfm_conformance.capture.otlp import (
    OTLPReceiver,
    OTLPRecord,
    SpanRecord,
    metric_names_from_otlp_json,
    spans_from_otlp_json,
)
from kfm_conformance.sandbox import FileState
from kfm_conformance.verdict import ConfigurationError, HarnessError

if TYPE_CHECKING:
    from kfm_conformance.sandbox import RunResult
    from kfm_conformance.scenario import ScenarioContext
    from kfm_conformance.services.collector_tap import CollectorTap, TapMark

#: The OpenLineage job namespace every run is given (``OPENLINEAGE_NAMESPACE``).
LINEAGE_NAMESPACE = "kfm-conformance"

#: Something that validates one OpenLineage event: the JSON Schema cache or the model.
LineageValidator = OpenLineageSchemas | OpenLineageModel


def schema_location(option: str | None) -> tuple[Path | None, str | None]:
    """The schema cache directory named by the option, else by the environment, and which."""
    if option:
        return Path(option).expanduser(), "option"
    value = os.environ.get(ENV_VAR)
    if value:
        return Path(value).expanduser(), ENV_VAR
    return None, None


class CaptureServices:
    """The session's lineage sink and OTLP receiver, and the OpenLineage validator."""

    def __init__(
        self,
        *,
        schemas_option: str | None = None,
        forward_lineage_to: str | None = None,
        collector: CollectorTap | None = None,
        collector_endpoint: str | None = None,
    ) -> None:
        self.collector = collector if collector_endpoint else None
        self.collector_endpoint = collector_endpoint if collector else None
        self.schemas_path, self.schemas_source = schema_location(schemas_option)
        if self.schemas_path is not None and not self.schemas_path.is_dir():
            raise ConfigurationError(
                f"OpenLineage schema cache ({self.schemas_source}) is not a directory: "
                f"{self.schemas_path}"
            )
        try:
            self.lineage = LineageSink(forward_to=forward_lineage_to)
        except OSError as exc:
            raise HarnessError(f"the lineage capture sink failed to start: {exc}") from exc
        try:
            self.otlp = OTLPReceiver()
        except OSError as exc:
            self.lineage.close()
            raise HarnessError(f"the OTLP capture receiver failed to start: {exc}") from exc

    def env(self, *, scenario_id: str, service_name: str) -> dict[str, str]:
        """The standard variables that point a pipeline at both sinks."""
        env = {
            **self.lineage.env(LINEAGE_NAMESPACE),
            **self.otlp.env(service_name, scenario_id),
        }
        if self.collector_endpoint:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = self.collector_endpoint
        return env

    def validator(self) -> LineageValidator:
        """The JSON Schema cache when one is given, else the model of openlineage-python.

        A given cache that cannot be used is a :class:`HarnessError` ("schema unavailable").
        """
        if self.schemas_path is None:
            return default_model()
        try:
            schemas = OpenLineageSchemas.from_env_or_option(str(self.schemas_path))
        except ConfigurationError as exc:
            raise HarnessError(f"schema unavailable: {exc}") from exc
        if schemas is None:  # pragma: no cover - the path was given
            return default_model()
        return schemas

    def close(self) -> None:
        self.lineage.close()
        self.otlp.close()


@dataclass
class RunCapture:
    """What the sinks received during one run, with the run's outside view."""

    label: str
    exit_code: int | None
    timed_out: bool
    success: bool
    output_before: FileState | None
    output_after: FileState | None
    lineage_records: list[LineageRecord] = field(default_factory=list)
    otlp_records: list[OTLPRecord] = field(default_factory=list)
    collector_documents: dict[str, list[dict[str, Any]]] | None = None
    """With a real Collector: its exporter's documents per signal (else None)."""

    @property
    def events(self) -> list[dict[str, Any]]:
        """The accepted OpenLineage events, in arrival order."""
        return [r.event for r in self.lineage_records if r.accepted and r.event is not None]

    @property
    def published(self) -> bool:
        """The run left a new output (bytes that differ from those before it)."""
        after, before = self.output_after, self.output_before
        return after is not None and (before is None or after.sha256 != before.sha256)

    def documents(self, signal: str) -> list[dict[str, Any]]:
        """The accepted OTLP export requests of one signal, as OTLP JSON (hex ids)."""
        if self.collector_documents is not None:
            return list(self.collector_documents.get(signal, []))
        return [
            r.document
            for r in self.otlp_records
            if r.accepted and r.signal == signal and r.document is not None
        ]

    @property
    def spans(self) -> list[SpanRecord]:
        return spans_from_otlp_json(self.documents("traces"))

    @property
    def metric_names(self) -> list[str]:
        return metric_names_from_otlp_json(self.documents("metrics"))

    @property
    def run_ids(self) -> list[str]:
        return list(dict.fromkeys(i for e in self.events if (i := run_id_of(e)) is not None))

    @property
    def lineage_over_limits(self) -> list[str]:
        """The lineage requests of this run that a cap of the sink refused (413)."""
        return [f"request {r.seq}: {r.limit}" for r in self.lineage_records if r.limit]

    @property
    def otlp_over_limits(self) -> list[str]:
        """The OTLP export requests of this run that a cap of the receiver refused (413)."""
        return [f"{r.signal} request {r.seq}: {r.limit}" for r in self.otlp_records if r.limit]

    @property
    def root_run_id(self) -> str | None:
        """The run id of the root of the run's (first) OpenLineage run hierarchy."""
        groups = hierarchies(self.events)
        return groups[0].root_id if groups else None

    def summary(self) -> dict[str, Any]:
        """A compact account: what kinds of events and spans arrived."""
        spans = self.spans
        refused = [r for r in self.lineage_records if not r.accepted]
        return {
            "label": self.label,
            "exit_code": self.exit_code,
            "lineage_events": [str(e.get("eventType")) for e in self.events],
            "lineage_run_ids": self.run_ids,
            "lineage_refused": len(refused),
            "lineage_over_limits": self.lineage_over_limits,
            "otlp_over_limits": self.otlp_over_limits,
            "spans": [s["name"] for s in spans],
            "otlp_requests": {
                signal: len(self.documents(signal)) for signal in ("traces", "metrics", "logs")
            },
        }

    def to_evidence(self) -> dict[str, Any]:
        """Everything received: the events as received, the spans as OTLP JSON (hex ids)."""
        return {
            **self.summary(),
            "lineage": [r.to_json() for r in self.lineage_records],
            "traces": self.documents("traces"),
            "metric_names": self.metric_names,
            "otlp": [
                {k: v for k, v in r.to_json().items() if k != "document"} for r in self.otlp_records
            ],
        }


class CaptureObserver:
    """One scenario's view of the capture services: marks around each run, and the slices.

    With ``full_evidence`` (the lineage and telemetry scenarios) every run's events and spans
    go into the scenario's evidence whole; otherwise a summary per run does.
    """

    def __init__(
        self,
        services: CaptureServices,
        *,
        scenario_id: str,
        service_name: str,
        full_evidence: bool,
        wait_for_spans: bool = False,
    ) -> None:
        self.services = services
        self.scenario_id = scenario_id
        self.service_name = service_name
        self.full_evidence = full_evidence
        self.runs: list[RunCapture] = []
        self._marks: tuple[int, int] | None = None
        self.wait_for_spans = wait_for_spans
        self._tap_mark: TapMark | None = None

    def env(self) -> dict[str, str]:
        return self.services.env(scenario_id=self.scenario_id, service_name=self.service_name)

    # -- RunObserver ---------------------------------------------------------------------------
    def before_run(self, context: ScenarioContext, label: str | None) -> None:
        # Requests are charged to the scenario only while one of its runs is going on: what
        # arrives then is the pipeline's doing, caps it breaks included.
        self.services.lineage.set_scenario(self.scenario_id)
        self.services.otlp.set_scenario(self.scenario_id)
        self._marks = (self.services.lineage.mark(), self.services.otlp.mark())
        if self.services.collector is not None:
            self._tap_mark = self.services.collector.mark()

    def after_run(self, context: ScenarioContext, result: RunResult) -> None:
        if self._marks is None:
            raise HarnessError("a run ended that the capture layer never saw start")
        lineage_since, otlp_since = self._marks
        self._marks = None
        lineage_until, otlp_until = self.services.lineage.mark(), self.services.otlp.mark()
        self.services.lineage.set_scenario(None)
        self.services.otlp.set_scenario(None)
        output = context.profile.output
        capture = RunCapture(
            label=result.label,
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            success=result.exit_code in context.profile.exit_codes.success_codes(),
            output_before=result.files_before.get(output),
            output_after=result.files_after.get(output),
            lineage_records=[
                r
                for r in self.services.lineage.records(since=lineage_since)
                if r.seq <= lineage_until
            ],
            otlp_records=[
                r for r in self.services.otlp.records(since=otlp_since) if r.seq <= otlp_until
            ],
        )
        if self.services.collector is not None and self._tap_mark is not None:
            traces, metrics, waited = self.services.collector.collect(
                self._tap_mark, self.scenario_id, wait=self.wait_for_spans
            )
            capture.collector_documents = {"traces": traces, "metrics": metrics}
            if self.wait_for_spans:
                context.notes.append(
                    f"{result.label}: {len(traces)} trace export(s) read back from the "
                    f"OpenTelemetry Collector's file exporter (waited {waited:.1f} s)"
                )
            self._tap_mark = None
        self.runs.append(capture)
        evidence = context.evidence.setdefault(
            "observability",
            {"scenario_id": self.scenario_id, "env": self.env(), "runs": []},
        )
        evidence["runs"].append(capture.to_evidence() if self.full_evidence else capture.summary())

    # -- reading -------------------------------------------------------------------------------
    @property
    def last(self) -> RunCapture:
        if not self.runs:
            raise HarnessError("no run of this scenario was captured")
        return self.runs[-1]

    def last_publication_before(self, capture: RunCapture) -> RunCapture | None:
        """The latest run before ``capture`` that published an output."""
        index = self.runs.index(capture)
        for earlier in reversed(self.runs[:index]):
            if earlier.published:
                return earlier
        return None
