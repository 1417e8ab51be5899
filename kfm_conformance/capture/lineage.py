"""The embedded OpenLineage capture endpoint, and helpers to group what it received.

:class:`LineageSink` answers ``POST /api/v1/lineage`` the way Marquez does (``201``), keeps every
request as a :class:`LineageRecord` (arrival time, size on the wire, the parsed event or the
parse error, the status it answered) and can tee each event to a real Marquez
(``forward_to``), recording Marquez's status and body. Forwarding runs on one background thread
in arrival order, after the pipeline has had its answer, so it never slows the pipeline down.

Records are tagged with the scenario that was current when they arrived (:meth:`LineageSink.
scenario`), because an OpenLineage event carries no scenario id of its own.
"""

from __future__ import annotations

import json
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

from kfm_conformance.capture.httpsink import CaptureServer, Limits, SinkRequest, SinkResponse

LINEAGE_PATH = "/api/v1/lineage"
_FORWARD_BODY_LIMIT = 4096

RunFilter = str | Callable[[dict[str, Any]], bool] | None


@dataclass(frozen=True)
class LineageRecord:
    """One POST to the lineage endpoint, as received."""

    seq: int
    arrival: float
    path: str
    content_type: str
    content_encoding: str | None
    size: int
    status: int
    event: dict[str, Any] | None = None
    error: str | None = None
    scenario: str | None = None
    forward_status: int | None = None
    forward_body: str | None = None
    forward_error: str | None = None
    decoded_size: int = 0
    limit: str | None = None
    """The cap the request broke (it was refused with 413), or None."""

    @property
    def accepted(self) -> bool:
        """The sink answered 2xx and the body was a JSON object."""
        return 200 <= self.status < 300 and self.event is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_id_of(event: dict[str, Any]) -> str | None:
    """The ``run.runId`` of an event, or None for a dataset or job event."""
    run = event.get("run")
    if isinstance(run, dict) and isinstance(run.get("runId"), str):
        return str(run["runId"])
    return None


def events_by_run(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Group run events by runId, keeping arrival order (runs in order of first event)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        run_id = run_id_of(event)
        if run_id is not None:
            grouped.setdefault(run_id, []).append(event)
    return grouped


def events_by_scenario(records: list[LineageRecord]) -> dict[str | None, list[dict[str, Any]]]:
    """Group accepted events by the scenario that was current when they arrived."""
    grouped: dict[str | None, list[dict[str, Any]]] = {}
    for record in records:
        if record.accepted and record.event is not None:
            grouped.setdefault(record.scenario, []).append(record.event)
    return grouped


def runs_of_scenario(records: list[LineageRecord], scenario: str) -> list[list[dict[str, Any]]]:
    """The runs (each a list of events in arrival order) seen while ``scenario`` was current."""
    return list(events_by_run(events_by_scenario(records).get(scenario, [])).values())


class LineageSink(CaptureServer):
    """Captures OpenLineage events. Put :attr:`url` into ``OPENLINEAGE_URL``."""

    name = "lineage"

    def __init__(
        self,
        *,
        forward_to: str | None = None,
        forward_timeout_s: float = 20.0,
        limits: Limits | None = None,
    ) -> None:
        self._records: list[LineageRecord] = []
        self._records_lock = threading.Lock()
        self.forward_to = forward_to.rstrip("/") if forward_to else None
        self.forward_timeout_s = forward_timeout_s
        self._forward_queue: queue.Queue[tuple[int, bytes] | None] = queue.Queue()
        self._forward_thread: threading.Thread | None = None
        super().__init__(limits=limits)
        if self.forward_to:
            self._forward_thread = threading.Thread(
                target=self._forward_loop, name=f"kfm-lineage-forward-{self.port}", daemon=True
            )
            self._forward_thread.start()

    @property
    def url(self) -> str:
        """Base URL for ``OPENLINEAGE_URL`` (the client appends ``/api/v1/lineage``)."""
        return self.base_url

    @property
    def endpoint(self) -> str:
        return self.base_url + LINEAGE_PATH

    def env(self, namespace: str) -> dict[str, str]:
        """The standard OPENLINEAGE_* variables that point a pipeline at this sink."""
        return {"OPENLINEAGE_URL": self.url, "OPENLINEAGE_NAMESPACE": namespace}

    # -- scenarios -------------------------------------------------------------------------

    @contextmanager
    def scenario(self, scenario: str) -> Iterator[None]:
        """Tag records with ``scenario`` inside the ``with`` block."""
        previous = self._scenario
        self._scenario = scenario
        try:
            yield
        finally:
            self._scenario = previous

    # -- handling --------------------------------------------------------------------------

    def handle(self, request: SinkRequest, fault_status: int | None) -> SinkResponse:
        event: dict[str, Any] | None = None
        error = request.decode_error
        status = 201
        if request.limit is not None:
            status, error = 413, f"refused: {request.limit}"
        elif request.method != "POST" or request.path.rstrip("/") != LINEAGE_PATH:
            status = 404 if request.method == "POST" else 405
            error = f"unexpected {request.method} {request.path} (expected POST {LINEAGE_PATH})"
        elif error is None:
            try:
                parsed = json.loads(request.body)
            except (ValueError, UnicodeDecodeError) as exc:
                error = f"body is not JSON: {exc}"
            else:
                if isinstance(parsed, dict):
                    event = parsed
                else:
                    error = f"body is JSON but not an object: {type(parsed).__name__}"
        if error is not None and status == 201:
            status = 400
        if fault_status is not None and request.limit is None:
            status = fault_status
        record = LineageRecord(
            seq=request.seq,
            arrival=request.arrival,
            path=request.path,
            content_type=request.content_type,
            content_encoding=request.content_encoding,
            size=request.raw_size,
            status=status,
            event=event,
            error=error,
            scenario=self._scenario,
            decoded_size=request.decoded_size,
            limit=request.limit,
        )
        with self._records_lock:
            self._records.append(record)
        if self.forward_to and event is not None and 200 <= status < 300:
            self._forward_queue.put((request.seq, request.body))
        body = b"" if status < 300 else json.dumps({"error": error or "fault"}).encode()
        return SinkResponse(status=status, body=body)

    # -- forwarding to Marquez -------------------------------------------------------------

    def _forward_loop(self) -> None:
        while True:
            item = self._forward_queue.get()
            try:
                if item is None:
                    return
                seq, body = item
                self._update(seq, **self._forward(body))
            finally:
                self._forward_queue.task_done()

    def _forward(self, body: bytes) -> dict[str, Any]:
        assert self.forward_to is not None
        request = urllib.request.Request(
            self.forward_to + LINEAGE_PATH,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.forward_timeout_s) as resp:  # noqa: S310
                text = resp.read(_FORWARD_BODY_LIMIT).decode("utf-8", "replace")
                return {"forward_status": resp.status, "forward_body": text}
        except urllib.error.HTTPError as exc:
            text = exc.read(_FORWARD_BODY_LIMIT).decode("utf-8", "replace")
            return {"forward_status": exc.code, "forward_body": text}
        except (OSError, ValueError) as exc:
            return {"forward_error": f"{type(exc).__name__}: {exc}"}

    def _update(self, seq: int, **changes: Any) -> None:
        with self._records_lock:
            for index in range(len(self._records) - 1, -1, -1):
                if self._records[index].seq == seq:
                    self._records[index] = replace(self._records[index], **changes)
                    return

    def wait_forwarded(self, timeout: float = 10.0) -> bool:
        """Wait until every event so far has been forwarded. True if done within ``timeout``."""
        if not self.forward_to:
            return True
        done = threading.Event()

        def waiter() -> None:
            self._forward_queue.join()
            done.set()

        threading.Thread(target=waiter, daemon=True).start()
        return done.wait(timeout)

    # -- reading ---------------------------------------------------------------------------

    def records(self, *, since: int = 0, scenario: str | None = None) -> list[LineageRecord]:
        """Every request after sequence number ``since``, in arrival order."""
        with self._records_lock:
            found = [r for r in self._records if r.seq > since]
        if scenario is not None:
            found = [r for r in found if r.scenario == scenario]
        return found

    def events(
        self, run_filter: RunFilter = None, *, since: int = 0, scenario: str | None = None
    ) -> list[dict[str, Any]]:
        """Accepted events in arrival order.

        ``run_filter`` is a runId, or a predicate over the event, or None for every event.
        Requests the sink refused (a fault status, a parse error) are not events: a client
        retries those, and they stay visible in :meth:`records`.
        """
        found = [
            r.event
            for r in self.records(since=since, scenario=scenario)
            if r.accepted and r.event is not None
        ]
        if run_filter is None:
            return found
        if isinstance(run_filter, str):
            return [e for e in found if run_id_of(e) == run_filter]
        return [e for e in found if run_filter(e)]

    def runs(self, *, since: int = 0, scenario: str | None = None) -> list[list[dict[str, Any]]]:
        """Accepted run events grouped by runId, each run in arrival order."""
        return list(events_by_run(self.events(since=since, scenario=scenario)).values())

    def clear(self) -> None:
        """Forget every record (sequence numbers keep counting)."""
        with self._records_lock:
            self._records.clear()

    def close(self) -> None:
        super().close()
        if self._forward_thread is not None:
            self._forward_queue.put(None)
            self._forward_thread = None
