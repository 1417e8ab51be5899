"""Capture of the pipeline's OpenLineage events and OpenTelemetry exports, and their judging.

- :class:`LineageSink`: the embedded ``POST /api/v1/lineage`` endpoint (``OPENLINEAGE_URL``).
- :class:`OTLPReceiver`: the embedded OTLP/HTTP receiver (``OTEL_EXPORTER_OTLP_ENDPOINT``).
- :class:`OpenLineageModel`: validation against openlineage-python's model (the default).
- :class:`OpenLineageSchemas`: offline validation against the official OpenLineage schemas.
- :func:`hierarchies`: a run's OpenLineage runs grouped by the root of their hierarchy.
- :func:`match`: a strict expected-vs-actual matcher for JSON documents.
- :mod:`kfm_conformance.capture.checks`: the ``lineage.*`` and ``telemetry.*`` checks.

Start the servers once per session and :meth:`~httpsink.CaptureServer.mark` /
``since=`` (or :meth:`LineageSink.scenario`) to take one run's evidence.
"""

from kfm_conformance.capture.checks import (
    ALL_CHECKS,
    judge_lineage_across_runs,
    judge_lineage_run,
    judge_telemetry_run,
    output_version,
)
from kfm_conformance.capture.hierarchy import LineageRun, RunHierarchy, hierarchies
from kfm_conformance.capture.httpsink import CaptureServer, FaultMode, Limits
from kfm_conformance.capture.lineage import (
    LineageRecord,
    LineageSink,
    events_by_run,
    events_by_scenario,
    runs_of_scenario,
)
from kfm_conformance.capture.matcher import ANY, Mismatch, match
from kfm_conformance.capture.olmodel import OpenLineageModel
from kfm_conformance.capture.olschema import OpenLineageSchemas
from kfm_conformance.capture.otlp import OTLPReceiver, SpanRecord, spans_from_otlp_json

__all__ = [
    "ALL_CHECKS",
    "ANY",
    "CaptureServer",
    "FaultMode",
    "Limits",
    "LineageRecord",
    "LineageRun",
    "LineageSink",
    "Mismatch",
    "OTLPReceiver",
    "OpenLineageModel",
    "OpenLineageSchemas",
    "RunHierarchy",
    "SpanRecord",
    "events_by_run",
    "events_by_scenario",
    "hierarchies",
    "judge_lineage_across_runs",
    "judge_lineage_run",
    "judge_telemetry_run",
    "match",
    "output_version",
    "runs_of_scenario",
    "spans_from_otlp_json",
]
