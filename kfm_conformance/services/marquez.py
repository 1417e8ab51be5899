"""Lineage re-verified through a real Marquez: what it accepted, the run state, the graph.

When the session runs Marquez, the embedded lineage sink tees every event to it
(``LineageSink(forward_to=...)``) and records Marquez's answer on each record. After a run,
:func:`judge_marquez_run` checks, from the outside, that Marquez understood the run:

* ``marquez.accepted``: every event the sink accepted was accepted by Marquez with a 2xx.
  A 4xx is Marquez saying the event is invalid: a finding against the pipeline. A 5xx, or
  no answer at all, is the service's fault: :class:`~kfm_conformance.verdict.HarnessError`.
* ``marquez.run-state``: the run is listed at ``/api/v1/namespaces/{ns}/jobs/{job}/runs``
  in the state its exit calls for (``COMPLETED`` on success, ``FAILED`` on failure).
* ``marquez.lineage-graph``: for a run whose terminal event names inputs and outputs, the
  graph at ``/api/v1/lineage?nodeId=job:{ns}:{job}`` links each input dataset to the job
  and the job to each output dataset.

Marquez processes events as they arrive, but reads are polled for a few seconds to be safe.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import requests

from kfm_conformance.verdict import Finding, HarnessError, required

__all__ = ["MarquezClient", "judge_marquez_run"]

TERMINAL_STATES = {"COMPLETE": "COMPLETED", "FAIL": "FAILED", "ABORT": "ABORTED"}


class MarquezClient:
    """The few read endpoints of Marquez's API that the checks use."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.http = requests.Session()

    def _get(self, path: str, **params: str) -> requests.Response:
        try:
            return self.http.get(f"{self.url}{path}", params=params, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise HarnessError(f"Marquez did not answer GET {path}: {exc}") from exc

    def runs(self, namespace: str, job: str) -> list[dict[str, Any]] | None:
        """The job's runs (newest first), or None when Marquez does not know the job."""
        ns, name = (urllib.parse.quote(v, safe="") for v in (namespace, job))
        response = self._get(f"/api/v1/namespaces/{ns}/jobs/{name}/runs", limit="100")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise HarnessError(f"Marquez answered {response.status_code} listing runs of {job}")
        runs = response.json().get("runs", [])
        return [r for r in runs if isinstance(r, dict)]

    def lineage(self, node_id: str, depth: int = 2) -> list[dict[str, Any]]:
        """The lineage graph's nodes around ``node_id`` (``job:ns:name``)."""
        response = self._get("/api/v1/lineage", nodeId=node_id, depth=str(depth))
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise HarnessError(f"Marquez answered {response.status_code} for the lineage graph")
        graph = response.json().get("graph", [])
        return [n for n in graph if isinstance(n, dict)]


def _job(events: Sequence[dict[str, Any]]) -> tuple[str, str] | None:
    for event in events:
        job = event.get("job")
        if isinstance(job, dict) and job.get("namespace") and job.get("name"):
            return str(job["namespace"]), str(job["name"])
    return None


def _datasets(event: dict[str, Any], side: str) -> list[str]:
    found = []
    for dataset in event.get(side) or []:
        if isinstance(dataset, dict) and dataset.get("namespace") and dataset.get("name"):
            found.append(f"dataset:{dataset['namespace']}:{dataset['name']}")
    return found


def _edges(graph: list[dict[str, Any]]) -> set[tuple[str, str]]:
    edges: set[tuple[str, str]] = set()
    for node in graph:
        for key in ("inEdges", "outEdges"):
            for edge in node.get(key) or []:
                if isinstance(edge, dict):
                    edges.add((str(edge.get("origin")), str(edge.get("destination"))))
    return edges


def judge_marquez_run(
    records: Sequence[Any],
    *,
    exit_ok: bool,
    client: MarquezClient,
    run_id: str | None,
    wait_s: float = 5.0,
    poll_s: float = 0.2,
) -> tuple[list[Finding], dict[str, Any]]:
    """Judge one run as Marquez saw it; return the findings and the evidence gathered.

    ``records`` are the run's :class:`~kfm_conformance.capture.lineage.LineageRecord` objects
    after forwarding (each with ``forward_status``/``forward_error``).
    """
    forwarded = [r for r in records if r.accepted and r.event is not None]
    evidence: dict[str, Any] = {
        "forwarded": [
            {
                "eventType": (r.event or {}).get("eventType"),
                "status": r.forward_status,
                "body": (r.forward_body or "")[:500],
                "error": r.forward_error,
            }
            for r in forwarded
        ]
    }
    findings: list[Finding] = []
    if not forwarded:
        return findings, evidence
    broken = [r for r in forwarded if r.forward_status is None or r.forward_status >= 500]
    if broken:
        first = broken[0]
        raise HarnessError(
            "Marquez did not take an event: "
            + (first.forward_error or f"it answered {first.forward_status}: {first.forward_body}")
        )
    refused = [r for r in forwarded if not 200 <= int(r.forward_status) < 300]
    findings.append(
        required(
            "marquez.accepted",
            not refused,
            f"Marquez refused {len(refused)} of the run's {len(forwarded)} events as invalid"
            if refused
            else f"Marquez accepted all {len(forwarded)} events of the run",
            expected="2xx for every event",
            observed=[
                f"{(r.event or {}).get('eventType')}: {r.forward_status} "
                f"{(r.forward_body or '')[:200]}".strip()
                for r in (refused or forwarded)
            ],
        )
    )
    events = [r.event for r in forwarded]
    job = _job(events)
    if refused or job is None or run_id is None:
        return findings, evidence
    namespace, name = job
    terminal = next((e for e in reversed(events) if e.get("eventType") in TERMINAL_STATES), None)
    expected_state = "COMPLETED" if exit_ok else "FAILED"
    deadline = time.monotonic() + wait_s
    state: str | None = None
    while True:
        runs = client.runs(namespace, name) or []
        state = next((str(r.get("state")) for r in runs if r.get("id") == run_id), None)
        if state == expected_state or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    evidence["run"] = {"namespace": namespace, "job": name, "run_id": run_id, "state": state}
    findings.append(
        required(
            "marquez.run-state",
            state == expected_state,
            f"Marquez shows the run as {state}"
            if state
            else f"Marquez does not list the run {run_id} under job {namespace}/{name}",
            expected=expected_state,
            observed=state or "run not listed",
        )
    )
    if terminal is None:
        return findings, evidence
    inputs, outputs = _datasets(terminal, "inputs"), _datasets(terminal, "outputs")
    if not inputs or not outputs:
        return findings, evidence
    node = f"job:{namespace}:{name}"
    wanted = {(i, node) for i in inputs} | {(node, o) for o in outputs}
    edges: set[tuple[str, str]] = set()
    while True:
        edges = _edges(client.lineage(node))
        if wanted <= edges or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    missing = sorted(wanted - edges)
    evidence["lineage_graph"] = {"node": node, "edges": sorted(edges)[:50]}
    findings.append(
        required(
            "marquez.lineage-graph",
            not missing,
            "Marquez's lineage graph links the upstream to the job and the job to the output"
            if not missing
            else f"Marquez's lineage graph lacks {len(missing)} edge(s) the events describe",
            expected=sorted(wanted),
            observed={"missing": missing},
        )
    )
    return findings, evidence
