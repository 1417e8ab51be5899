"""Services the user already runs: the ``external`` provider only health-checks them.

Nothing is started or stopped. ``start()`` checks that every wanted service was given
(and answers), then returns the given endpoints unchanged.

Health checks: Marquez ``GET {url}/api/v1/namespaces`` is 200; lakeFS ``GET /_health``
is 2xx; the Collector's OTLP/HTTP endpoint answers HTTP at all (a ``GET`` on
``/v1/traces`` is refused with 405, which still proves it listens).
"""

from __future__ import annotations

import time

from .base import Endpoints, LakeFSAccess, ServiceError, check_wanted, http_status

__all__ = ["ExternalServices"]


class ExternalServices:
    """The ``external`` provider (see the module docstring)."""

    name = "external"

    def __init__(
        self,
        *,
        marquez_url: str | None = None,
        otlp_http_endpoint: str | None = None,
        lakefs: LakeFSAccess | None = None,
        span_files: tuple[str, ...] = (),
        start_timeout: float = 30.0,
        versions: dict[str, str] | None = None,
    ) -> None:
        self.endpoints = Endpoints(
            marquez_url=marquez_url.rstrip("/") if marquez_url else None,
            otlp_http_endpoint=otlp_http_endpoint.rstrip("/") if otlp_http_endpoint else None,
            lakefs=lakefs,
            span_files=tuple(span_files),
        )
        self.start_timeout = start_timeout
        self._versions = dict(versions or {})
        self._started: set[str] = set()

    def start(self, wanted: set[str]) -> Endpoints:
        wanted = check_wanted(wanted)
        given = self._given()
        for service in sorted(wanted - given):
            raise ServiceError(
                f"{service} was wanted but no endpoint was given to the external provider",
                service=service,
            )
        deadline = time.monotonic() + self.start_timeout
        pending = set(wanted)
        while pending:
            pending = {s for s in pending if not self._check(s)}
            if not pending:
                break
            if time.monotonic() > deadline:
                service = sorted(pending)[0]
                raise ServiceError(
                    f"{service} at {self._where(service)} did not answer its health check "
                    f"within {self.start_timeout:.0f}s",
                    service=service,
                )
            time.sleep(0.5)
        self._started = wanted
        return Endpoints(
            marquez_url=self.endpoints.marquez_url if "marquez" in wanted else None,
            otlp_http_endpoint=(
                self.endpoints.otlp_http_endpoint if "collector" in wanted else None
            ),
            lakefs=self.endpoints.lakefs if "lakefs" in wanted else None,
            span_files=self.endpoints.span_files if "collector" in wanted else (),
        )

    def health(self) -> dict[str, bool]:
        services = self._started or self._given()
        return {service: self._check(service) for service in sorted(services)}

    def log_tail(self, service: str, lines: int = 50) -> str:
        return ""  # logs of services we do not run are not ours to read

    def versions(self) -> dict[str, str]:
        return dict(self._versions)

    def stop(self) -> None:
        self._started = set()

    # ------------------------------------------------------------------ internals

    def _given(self) -> set[str]:
        ep = self.endpoints
        given = set()
        if ep.marquez_url:
            given.add("marquez")
        if ep.lakefs is not None:
            given.add("lakefs")
        if ep.otlp_http_endpoint:
            given.add("collector")
        return given

    def _where(self, service: str) -> str:
        ep = self.endpoints
        if service == "marquez":
            return str(ep.marquez_url)
        if service == "lakefs":
            return ep.lakefs.endpoint if ep.lakefs else "?"
        return str(ep.otlp_http_endpoint)

    def _check(self, service: str) -> bool:
        ep = self.endpoints
        if service == "marquez" and ep.marquez_url:
            return http_status(f"{ep.marquez_url}/api/v1/namespaces") == 200
        if service == "lakefs" and ep.lakefs is not None:
            status = http_status(f"{ep.lakefs.endpoint.rstrip('/')}/_health")
            return status is not None and 200 <= status < 300
        if service == "collector" and ep.otlp_http_endpoint:
            status = http_status(f"{ep.otlp_http_endpoint}/v1/traces")
            return status is not None and status < 500
        return False
