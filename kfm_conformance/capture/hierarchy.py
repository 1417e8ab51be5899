"""The OpenLineage runs of one pipeline run, grouped by the root of their run hierarchy.

A pipeline run may report itself as one OpenLineage run, or as a root run with runs beneath it:
Airflow's OpenLineage provider sends a DAG-run run (job ``<dag_id>``) and one run per task
(job ``<dag_id>.<task_id>``), and every task run names the DAG run in its ``ParentRunFacet``
(``run.facets.parent``: the parent's ``run.runId`` and ``job``, and, where given, the ``root``
run and job of the whole hierarchy).

:func:`hierarchies` groups the events of one pipeline run by OpenLineage run id, links each run
to its parent, and groups the runs by their root: the ``root`` the facet names where given,
else the top of the parent chain. The root may be a run that sent no events here (an external
scheduler's run named as parent, or a DAG run whose events are switched off); it is then known
only by the id and the job the children name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

TERMINAL_TYPES = ("COMPLETE", "FAIL", "ABORT")


def _run_id(event: dict[str, Any]) -> str | None:
    run = event.get("run")
    value = run.get("runId") if isinstance(run, dict) else None
    return value if isinstance(value, str) else None


def job_label(job: Any) -> str:
    """``namespace / name`` of a job object, or ``(no job)``."""
    if not isinstance(job, dict):
        return "(no job)"
    return f"{job.get('namespace')} / {job.get('name')}"


def _parent_facet(event: dict[str, Any]) -> dict[str, Any] | None:
    run = event.get("run")
    facets = run.get("facets") if isinstance(run, dict) else None
    parent = facets.get("parent") if isinstance(facets, dict) else None
    return parent if isinstance(parent, dict) else None


def _linked_id(node: Any) -> str | None:
    run = node.get("run") if isinstance(node, dict) else None
    value = run.get("runId") if isinstance(run, dict) else None
    return value if isinstance(value, str) and value else None


@dataclass
class LineageRun:
    """One OpenLineage run (one run id) of a pipeline run, and its place in the hierarchy."""

    run_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    parent_id: str | None = None
    parent_job: str | None = None
    root_id: str | None = None
    root_job: str | None = None

    @property
    def jobs(self) -> list[str]:
        """Every job (``namespace / name``) its events name, in order."""
        return list(dict.fromkeys(job_label(e.get("job")) for e in self.events))

    @property
    def job(self) -> str:
        return self.jobs[0] if self.jobs else "(no job)"

    @property
    def kinds(self) -> list[str]:
        return [str(e.get("eventType") or "(no eventType)") for e in self.events]

    @property
    def terminals(self) -> list[str]:
        return [k for k in self.kinds if k in TERMINAL_TYPES]

    @property
    def terminal(self) -> str | None:
        """The run's terminal event type when it sent exactly one, else None."""
        terminals = self.terminals
        return terminals[0] if len(terminals) == 1 else None

    def label(self) -> str:
        return f"run {self.run_id} ({self.job})"


@dataclass
class RunHierarchy:
    """The runs that share one root; ``root`` is None when the root sent no events here."""

    root_id: str
    root_job: str | None
    runs: list[LineageRun]

    @property
    def root(self) -> LineageRun | None:
        return next((r for r in self.runs if r.run_id == self.root_id), None)

    @property
    def top(self) -> list[LineageRun]:
        """The root when it sent events, else the runs directly beneath the absent root."""
        root = self.root
        if root is not None:
            return [root]
        present = {r.run_id for r in self.runs}
        return [r for r in self.runs if r.parent_id is None or r.parent_id not in present]

    def children(self, run: LineageRun) -> list[LineageRun]:
        return [r for r in self.runs if r.parent_id == run.run_id and r is not run]

    @property
    def below_root(self) -> list[LineageRun]:
        """Every run except the root (all runs when the root sent no events)."""
        return [r for r in self.runs if r.run_id != self.root_id]

    @property
    def root_label(self) -> str:
        root = self.root
        if root is not None:
            return root.label()
        return f"run {self.root_id} ({self.root_job or 'job unknown'}, sent no events here)"


def lineage_runs(events: Sequence[dict[str, Any]]) -> list[LineageRun]:
    """The events grouped by run id (runs in order of first event), with their parent links."""
    runs: dict[str, LineageRun] = {}
    for event in events:
        if not isinstance(event, dict):
            continue
        run_id = _run_id(event)
        if run_id is None:
            continue
        run = runs.setdefault(run_id, LineageRun(run_id))
        run.events.append(event)
        parent = _parent_facet(event)
        if parent is None or run.parent_id is not None:
            continue
        parent_id = _linked_id(parent)
        if parent_id is not None and parent_id != run_id:
            run.parent_id = parent_id
            run.parent_job = job_label(parent.get("job"))
            root = parent.get("root")
            root_id = _linked_id(root)
            if root_id is not None and root_id != run_id:
                run.root_id = root_id
                run.root_job = job_label(root.get("job") if isinstance(root, dict) else None)
    return list(runs.values())


def hierarchies(events: Sequence[dict[str, Any]]) -> list[RunHierarchy]:
    """The pipeline run's OpenLineage runs grouped by root, in order of first event.

    Runs linked by a parent or a root reference, directly or through other runs, form one
    hierarchy. Its root is the run that sent events here and names no parent (the one most
    runs name as parent, should there be several); when every run that sent events names a
    parent, it is the absent run at the top of their chains.
    """
    runs = lineage_runs(events)
    by_id = {r.run_id: r for r in runs}
    leader: dict[str, str] = {}

    def find(node: str) -> str:
        leader.setdefault(node, node)
        while leader[node] != node:
            leader[node] = leader[leader[node]]
            node = leader[node]
        return node

    def union(left: str, right: str) -> None:
        a, b = find(left), find(right)
        if a != b:
            leader[b] = a

    jobs_named: dict[str, str] = {}
    for run in runs:
        find(run.run_id)
        for linked, job in ((run.parent_id, run.parent_job), (run.root_id, run.root_job)):
            if linked is not None:
                union(run.run_id, linked)
                if job is not None:
                    jobs_named.setdefault(linked, job)
    members: dict[str, list[str]] = {}
    for node in list(leader):
        members.setdefault(find(node), []).append(node)
    groups: dict[str, RunHierarchy] = {}
    for run in runs:
        component = find(run.run_id)
        if component in groups:
            groups[component].runs.append(run)
            continue
        nodes = members[component]
        present_tops = [n for n in nodes if n in by_id and by_id[n].parent_id is None]
        if present_tops:
            named = [r.parent_id for r in runs if r.parent_id is not None]
            root_id = max(present_tops, key=lambda n: (named.count(n), -nodes.index(n)))
            root_job: str | None = by_id[root_id].job
        else:
            root_id = _absent_top(run, by_id)
            root_job = jobs_named.get(root_id)
        groups[component] = RunHierarchy(root_id, root_job, [run])
    return list(groups.values())


def _absent_top(run: LineageRun, by_id: dict[str, LineageRun]) -> str:
    """The named root of ``run``'s chain, else the first id up its parent chain that sent
    no events here."""
    current, seen = run, {run.run_id}
    while True:
        if current.root_id is not None and current.root_id not in by_id:
            return current.root_id
        parent_id = current.parent_id
        if parent_id is None or parent_id in seen:
            return current.run_id
        if parent_id not in by_id:
            return parent_id
        seen.add(parent_id)
        current = by_id[parent_id]
