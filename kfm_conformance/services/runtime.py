"""The real services of one test session: started once (per xdist worker), checked, stopped.

:class:`ServiceSession` takes a :class:`~.selection.ServiceSelection`, starts every service
given to a real provider (one provider instance per provider name), and remembers which
ones failed to start and why (the :class:`~.base.ServiceError`, with the tail of the
service's log). A failure of one service does not stop the others: the provider is asked
again without it.

Scenarios then ask for what they need:

* :meth:`ServiceSession.require` raises :class:`~kfm_conformance.verdict.HarnessError`
  ("lakeFS unavailable: ...") for a service whose provider failed to start it or that has
  died since: an ``error`` verdict, never a ``fail``;
* :meth:`ServiceSession.dead` names the used services that no longer answer their health
  check (the plugin turns a scenario that "failed" while one of them died into an error).

:meth:`ServiceSession.versions` is what each scenario records under its evidence key
``services`` (``{name: version}``), which the report's provenance reads.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from kfm_conformance.redact import register_secret
from kfm_conformance.verdict import HarnessError

from .base import (
    COLLECTOR_VERSION,
    LAKEFS_VERSION,
    MARQUEZ_VERSION,
    Endpoints,
    ServiceError,
    ServiceProvider,
)
from .selection import ORDER, ExternalSettings, ServiceSelection

__all__ = ["DISPLAY", "ServiceSession", "ServiceUnavailable"]

log = logging.getLogger(__name__)

#: How each service is named in messages and evidence.
DISPLAY = {"lakefs": "lakeFS", "collector": "OpenTelemetry Collector", "marquez": "Marquez"}
_VERSIONS = {"lakefs": LAKEFS_VERSION, "collector": COLLECTOR_VERSION, "marquez": MARQUEZ_VERSION}
LOG_TAIL_LINES = 40


class ServiceUnavailable(HarnessError):
    """A service the scenario needs did not start or has died; carries the log tail."""

    def __init__(self, service: str, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.service = service
        self.log_tail = log_tail

    def evidence(self) -> dict[str, Any]:
        return {"service": self.service, "message": str(self), "log_tail": self.log_tail}


@dataclass
class ServiceSession:
    """The session's real services (see the module docstring)."""

    selection: ServiceSelection
    external: ExternalSettings = field(default_factory=ExternalSettings)
    start_timeout: float | None = None
    providers: dict[str, ServiceProvider] = field(default_factory=dict)
    endpoints: Endpoints = field(default_factory=Endpoints)
    running: dict[str, str] = field(default_factory=dict)
    """service -> provider name, for every service that started."""
    failures: dict[str, ServiceError] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    reported: dict[str, str] = field(default_factory=dict)
    """Versions the services report themselves (an external lakeFS's /config/version)."""
    _started: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> ServiceSession:
        """Start every service the selection gives to a real provider (once)."""
        with self._lock:
            if self._started:
                return self
            self._started = True
            groups: dict[str, set[str]] = {}
            for service, provider in self.selection.real().items():
                groups.setdefault(provider, set()).add(service)
            for provider_name, wanted in sorted(groups.items()):
                self._start_group(provider_name, wanted)
        return self

    def _start_group(self, provider_name: str, wanted: set[str]) -> None:
        try:
            provider = self._make_provider(provider_name)
        except (ValueError, ImportError, ServiceError) as exc:
            for service in wanted:
                self.failures[service] = (
                    exc
                    if isinstance(exc, ServiceError)
                    else ServiceError(f"the {provider_name} provider: {exc}", service=service)
                )
            return
        remaining = set(wanted)
        t0 = time.monotonic()
        while remaining:
            try:
                endpoints = provider.start(set(remaining))
            except ServiceError as exc:
                failed = exc.service if exc.service in remaining else sorted(remaining)[0]
                self.failures[failed] = exc
                remaining.discard(failed)
                with contextlib.suppress(Exception):
                    provider.stop()
                continue
            self.providers[provider_name] = provider
            self._merge(endpoints, remaining)
            for service in remaining:
                self.running[service] = provider_name
            break
        self.timings[provider_name] = round(time.monotonic() - t0, 3)
        if provider_name == "external" and self.running.get("lakefs") == "external":
            from .lakefs_api import LakeFSAPI

            with contextlib.suppress(ServiceError, ValueError, KeyError):
                assert self.endpoints.lakefs is not None
                self.reported["lakefs"] = LakeFSAPI(self.endpoints.lakefs).version()
        if self.endpoints.lakefs is not None:
            register_secret(self.endpoints.lakefs.access_key_id)
            register_secret(self.endpoints.lakefs.secret_access_key)

    def _make_provider(self, name: str) -> ServiceProvider:
        from . import get_provider

        kw: dict[str, Any] = {}
        if name == "external":
            ext = self.external
            kw = {
                "marquez_url": ext.marquez_url,
                "otlp_http_endpoint": ext.otlp_endpoint,
                "lakefs": ext.lakefs,
                "span_files": ext.span_files,
            }
            wanted = {s for s, p in self.selection.real().items() if p == "external"}
            for problem in ext.problems:
                service = "lakefs" if "lakeFS" in problem else "collector"
                if service in wanted:
                    raise ServiceError(problem, service=service)
        elif self.start_timeout is not None:
            kw["start_timeout"] = self.start_timeout
        return get_provider(name, **kw)

    def _merge(self, endpoints: Endpoints, services: set[str]) -> None:
        changes: dict[str, Any] = {}
        if "marquez" in services:
            changes["marquez_url"] = endpoints.marquez_url
        if "collector" in services:
            changes["otlp_http_endpoint"] = endpoints.otlp_http_endpoint
            changes["span_files"] = endpoints.span_files
        if "lakefs" in services:
            changes["lakefs"] = endpoints.lakefs
        self.endpoints = replace(self.endpoints, **changes)

    def stop(self) -> None:
        for provider in self.providers.values():
            try:
                provider.stop()
            except Exception as exc:  # noqa: BLE001 - stopping must go on for the others
                log.warning("stopping the %s provider failed: %s", provider.name, exc)
        self.providers.clear()
        self.running.clear()

    # -- what scenarios ask ------------------------------------------------------------------
    def provider_of(self, service: str) -> str:
        return self.selection.provider_of(service)

    def is_running(self, service: str) -> bool:
        return service in self.running

    def log_tail(self, service: str, lines: int = LOG_TAIL_LINES) -> str:
        provider = self.providers.get(self.running.get(service, ""))
        if provider is None:
            return ""
        try:
            return provider.log_tail(service, lines)
        except Exception:  # noqa: BLE001 - a tail is a courtesy
            return ""

    def unavailable(self, service: str) -> ServiceUnavailable | None:
        """Why ``service`` (given to a real provider) cannot be used now, or None."""
        name = DISPLAY[service]
        provider = self.provider_of(service)
        failure = self.failures.get(service)
        if failure is not None:
            first = failure.message.strip().splitlines()[0] if failure.message.strip() else ""
            return ServiceUnavailable(
                service,
                f"{name} unavailable: the {provider} provider could not start it: {first}",
                failure.log_tail,
            )
        if service not in self.running:
            return ServiceUnavailable(service, f"{name} unavailable: it was never started")
        dead = self.dead({service})
        if dead:
            return ServiceUnavailable(
                service,
                f"{name} ({provider}) stopped answering its health check during the session",
                self.log_tail(service),
            )
        return None

    def require(self, service: str) -> None:
        """Raise :class:`ServiceUnavailable` unless ``service`` is running and healthy."""
        problem = self.unavailable(service)
        if problem is not None:
            raise problem

    def dead(self, services: set[str]) -> list[str]:
        """Which of ``services`` (among the running ones) fail their health check now."""
        out: list[str] = []
        for provider_name in sorted({self.running[s] for s in services if s in self.running}):
            provider = self.providers.get(provider_name)
            if provider is None:
                continue
            try:
                health = provider.health()
            except Exception:  # noqa: BLE001 - a probe that breaks means unhealthy
                health = {}
            out += [
                s
                for s in sorted(services)
                if self.running.get(s) == provider_name and not health.get(s, False)
            ]
        return out

    def versions(self, services: set[str] | None = None) -> dict[str, str]:
        """``{service: "version (provider)"}`` of the running services (or of ``services``)."""
        out: dict[str, str] = {}
        for service in ORDER:
            if service not in self.running or (services is not None and service not in services):
                continue
            provider = self.running[service]
            version = _VERSIONS[service]
            if provider == "external":
                reported = self.reported.get(service) or self.providers[provider].versions().get(
                    service
                )
                out[service] = f"{reported} (external)" if reported else "external (unreported)"
            else:
                out[service] = f"{version} ({provider})"
        return out
