"""Reading one run's spans back from a real OpenTelemetry Collector's file exporter.

When the session runs a real Collector, every pipeline run exports to it and the Collector
writes OTLP JSON lines (one export request per line) to its file exporter's output. A
:class:`CollectorTap` marks the byte offset of each file before a run; after the run it
polls the files (the batch processor and the exporter each flush on an interval) until the
scenario's spans have arrived and the files have stopped growing, then returns the export
requests written since the mark that belong to the scenario (resource attribute
``kfm.scenario.id``, which the harness sets through ``OTEL_RESOURCE_ATTRIBUTES``). The spans
are then judged exactly as those the embedded receiver got.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CollectorTap", "TapMark", "scenario_documents"]

SCENARIO_ATTRIBUTE = "kfm.scenario.id"
_RESOURCE_KEYS = ("resourceSpans", "resourceMetrics", "resourceLogs")


@dataclass(frozen=True)
class TapMark:
    """Byte offsets of each exporter file at one moment."""

    offsets: dict[str, int] = field(default_factory=dict)


def _size(path: str) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


def _scenario_of(resource: dict[str, Any]) -> Any:
    for attribute in (resource.get("resource") or {}).get("attributes", []) or []:
        if attribute.get("key") == SCENARIO_ATTRIBUTE:
            value = attribute.get("value") or {}
            return value.get("stringValue")
    return None


def scenario_documents(docs: Iterable[dict[str, Any]], scenario_id: str) -> list[dict[str, Any]]:
    """Keep, in each export request, only the resources of ``scenario_id`` (drop empty ones)."""
    out: list[dict[str, Any]] = []
    for doc in docs:
        kept: dict[str, Any] = {}
        for key in _RESOURCE_KEYS:
            items = [r for r in doc.get(key, []) or [] if _scenario_of(r) == scenario_id]
            if items:
                kept[key] = items
        if kept:
            out.append(kept)
    return out


class CollectorTap:
    """The Collector's exporter files (``traces``; ``metrics`` when it sits beside them)."""

    def __init__(
        self,
        span_files: Iterable[str],
        *,
        quiet_s: float = 0.6,
        poll_s: float = 0.1,
        wait_s: float = 6.0,
    ) -> None:
        self.span_files = tuple(span_files)
        metrics = [str(Path(p).with_name("metrics.jsonl")) for p in self.span_files]
        self.metric_files = tuple(m for m in metrics if m not in self.span_files)
        self.quiet_s = quiet_s
        self.poll_s = poll_s
        self.wait_s = wait_s

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.span_files, *self.metric_files)

    def mark(self) -> TapMark:
        return TapMark({path: _size(path) for path in self.files})

    def _read_since(self, path: str, offset: int) -> list[dict[str, Any]]:
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except OSError:
            return []
        end = data.rfind(b"\n")
        records: list[dict[str, Any]] = []
        for line in data[: end + 1].splitlines():
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                records.append(value)
        return records

    def collect(
        self, since: TapMark, scenario_id: str, *, wait: bool = True
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
        """(trace documents, metric documents, seconds waited) written since ``since``.

        With ``wait``, poll until the scenario's spans have arrived and no file has grown for
        ``quiet_s`` seconds, or ``wait_s`` seconds pass (a run that exported nothing waits the
        whole bound).
        """
        t0 = time.monotonic()
        deadline = t0 + (self.wait_s if wait else 0.0)
        last_sizes: dict[str, int] | None = None
        quiet_since = t0
        while True:
            sizes = {path: _size(path) for path in self.files}
            if sizes != last_sizes:
                last_sizes, quiet_since = sizes, time.monotonic()
            traces = scenario_documents(self._docs(self.span_files, since), scenario_id)
            now = time.monotonic()
            if not wait or now >= deadline or (traces and now - quiet_since >= self.quiet_s):
                metrics = scenario_documents(self._docs(self.metric_files, since), scenario_id)
                return traces, metrics, round(now - t0, 3)
            time.sleep(self.poll_s)

    def _docs(self, paths: Iterable[str], since: TapMark) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = []
        for path in paths:
            docs += self._read_since(path, since.offsets.get(path, 0))
        return docs
