"""One scenario's use of the session's real services, as a run observer.

:class:`ServiceObserver` is installed on every scenario's context (after the capture
observer). It knows which real services the scenario uses and:

* before each run, requires the services the scenario's guarantee needs (``lineage`` needs
  Marquez, ``telemetry`` the Collector, when they were given to a real provider): one that
  did not start or has died is an ``error`` ("Marquez unavailable: ..."), its log tail in the
  evidence under ``service_failure``;
* after each run, checks the used services are still healthy (a service that died is an
  error, never a failure of the pipeline), and, in lineage scenarios with a real Marquez,
  re-verifies the run through Marquez (:func:`~.marquez.judge_marquez_run`: every event
  accepted, each OpenLineage run in the right state, child runs linked to their parent run,
  the lineage graph);
* keeps the scenario's evidence key ``services`` (``{name: version}``) up to date.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .marquez import MarquezClient, judge_marquez_run
from .runtime import ServiceSession, ServiceUnavailable

if TYPE_CHECKING:
    from kfm_conformance.capture.session import CaptureObserver
    from kfm_conformance.sandbox import RunResult
    from kfm_conformance.scenario import ScenarioContext

__all__ = ["NEEDS", "ServiceObserver"]

#: The real service each guarantee is re-verified through.
NEEDS = {"lineage": "marquez", "telemetry": "collector"}


class ServiceObserver:
    """See the module docstring."""

    def __init__(
        self,
        session: ServiceSession | None,
        capture: CaptureObserver | None,
        markers: set[str],
    ) -> None:
        self.session = session
        self.capture = capture
        self.markers = set(markers)
        self.needed: set[str] = set()
        self.used: set[str] = set()
        if session is not None:
            for marker, service in NEEDS.items():
                if marker in self.markers and session.provider_of(service) != "embedded":
                    self.needed.add(service)
            # Every run exports to a running Collector and is teed to a running Marquez.
            self.used = {s for s in ("collector", "marquez") if session.is_running(s)}
            self.used |= self.needed
        self.marquez = (
            MarquezClient(session.endpoints.marquez_url)
            if session is not None and session.endpoints.marquez_url
            else None
        )

    # -- evidence ------------------------------------------------------------------------------
    def versions(self) -> dict[str, str]:
        if self.session is None:
            return {}
        return self.session.versions(self.used)

    def record(self, context: ScenarioContext) -> None:
        versions = self.versions()
        if versions:
            context.evidence["services"] = versions

    def fail_with(self, context: ScenarioContext, problem: ServiceUnavailable) -> None:
        context.evidence["service_failure"] = problem.evidence()
        raise problem

    def use(self, context: ScenarioContext, service: str) -> None:
        """The scenario uses ``service`` from now on (the promotion steps call this)."""
        self.used.add(service)
        self.record(context)

    def dead_services(self) -> list[ServiceUnavailable]:
        if self.session is None:
            return []
        return [
            p
            for s in self.session.dead(self.used)
            if (p := self.session.unavailable(s)) is not None
        ]

    # -- RunObserver ---------------------------------------------------------------------------
    def before_run(self, context: ScenarioContext, label: str | None) -> None:
        self.record(context)
        if self.session is None:
            return
        for service in sorted(self.needed | self.used):
            if service in self.needed or self.session.is_running(service):
                problem = self.session.unavailable(service)
                if problem is not None:
                    self.fail_with(context, problem)

    def after_run(self, context: ScenarioContext, result: RunResult) -> None:
        if self.session is None:
            return
        for problem in self.dead_services():
            self.fail_with(context, problem)
        if (
            "lineage" in self.markers
            and "marquez" in self.needed
            and self.marquez is not None
            and self.capture is not None
        ):
            self._judge_marquez(context)

    def _judge_marquez(self, context: ScenarioContext) -> None:
        assert self.capture is not None and self.marquez is not None
        run = self.capture.last
        sink = self.capture.services.lineage
        sink.wait_forwarded(timeout=60.0)  # a loaded CI machine: each forward may take 20 s
        seqs = {r.seq for r in run.lineage_records}
        records = [r for r in sink.records(since=min(seqs) - 1) if r.seq in seqs] if seqs else []
        findings, evidence = judge_marquez_run(records, exit_ok=run.success, client=self.marquez)
        marquez: list[Any] = context.evidence.setdefault("marquez", [])
        marquez.append({"run": run.label, **evidence})
        context.judge.apply(findings, independent=True)
