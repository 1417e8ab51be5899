"""The service-provider interface shared by every way of running the real services.

A *service provider* brings up some of the three backing services the harness talks to
(Marquez for lineage, lakeFS for branch-based promotion, an OpenTelemetry Collector for
traces) and hands back their :class:`Endpoints`. Providers differ only in *how* the
services run: as local processes (:mod:`.local`), as containers (:mod:`.containers`), or
somewhere the user already runs them (:mod:`.external`).

Anything that goes wrong while starting or talking to a service is a :class:`ServiceError`:
an infrastructure error, never the pipeline's fault.

This module also holds the pieces the providers share: the service names, the pinned
versions, configuration builders for Marquez and the Collector, small HTTP/log helpers,
and :func:`read_otlp_json_lines`, which reads what the Collector's file exporter wrote.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "COLLECTOR_READY_LINE",
    "COLLECTOR_VERSION",
    "LAKEFS_VERSION",
    "MARQUEZ_VERSION",
    "SERVICE_NAMES",
    "Endpoints",
    "LakeFSAccess",
    "ServiceError",
    "ServiceProvider",
    "check_wanted",
    "collector_config",
    "default_cache_dir",
    "http_status",
    "marquez_config",
    "otlp_spans",
    "read_otlp_json_lines",
    "tail_text_file",
]

#: The services a provider can be asked for.
SERVICE_NAMES: frozenset[str] = frozenset({"marquez", "lakefs", "collector"})

#: Pinned versions. Keep in step with scripts/build-services.sh and services/VERSIONS.
MARQUEZ_VERSION = "0.51.1"
LAKEFS_VERSION = "1.84.0"
COLLECTOR_VERSION = "0.161.0"


class ServiceError(Exception):
    """A service failed to start, became unhealthy, or died.

    Carries ``service`` (its name) and ``log_tail`` (the last lines of its log, possibly
    empty). Always an infrastructure error, never the pipeline's fault.
    """

    def __init__(self, message: str, *, service: str, log_tail: str = "") -> None:
        self.service = service
        self.log_tail = log_tail
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        text = f"[{self.service}] {self.message}"
        if self.log_tail.strip():
            text += f"\n--- last log lines of {self.service} ---\n{self.log_tail.rstrip()}"
        return text


@dataclass(frozen=True)
class LakeFSAccess:
    """Where lakeFS listens and the credentials to use (HTTP basic auth on the API).

    ``endpoint`` looks like ``http://127.0.0.1:PORT``; the API base is
    ``endpoint + "/api/v1"``.
    """

    endpoint: str
    access_key_id: str
    secret_access_key: str

    @property
    def api_base(self) -> str:
        """The REST API base URL (``endpoint/api/v1``)."""
        return self.endpoint.rstrip("/") + "/api/v1"

    def __repr__(self) -> str:  # never print the secret
        return (
            f"LakeFSAccess(endpoint={self.endpoint!r}, "
            f"access_key_id={self.access_key_id!r}, secret_access_key='***')"
        )


@dataclass(frozen=True)
class Endpoints:
    """What a provider started, as URLs the harness and the pipeline use."""

    marquez_url: str | None = None
    """e.g. ``http://127.0.0.1:PORT`` (API at ``/api/v1/...``)."""
    otlp_http_endpoint: str | None = None
    """e.g. ``http://127.0.0.1:PORT`` (the pipeline posts ``/v1/traces``)."""
    lakefs: LakeFSAccess | None = None
    span_files: tuple[str, ...] = ()
    """File-exporter output files the harness reads (OTLP JSON lines)."""


@runtime_checkable
class ServiceProvider(Protocol):
    """One way of running the services; see the module docstring."""

    name: str
    """``"embedded"`` | ``"local"`` | ``"containers"`` | ``"external"``."""

    def start(self, wanted: set[str]) -> Endpoints:
        """Start the ``wanted`` services (a subset of :data:`SERVICE_NAMES`)."""
        ...

    def health(self) -> dict[str, bool]:
        """Whether each started service answers its health check now."""
        ...

    def log_tail(self, service: str, lines: int = 50) -> str:
        """The last ``lines`` lines of a service's log ("" when there is none)."""
        ...

    def versions(self) -> dict[str, str]:
        """Versions of the services (and their helpers, e.g. PostgreSQL) in use."""
        ...

    def stop(self) -> None:
        """Stop everything this provider started. Idempotent."""
        ...


def check_wanted(wanted: Iterable[str]) -> set[str]:
    """Return ``wanted`` as a set, raising ``ValueError`` on an unknown service name."""
    wanted_set = set(wanted)
    unknown = wanted_set - SERVICE_NAMES
    if unknown:
        raise ValueError(
            f"unknown service(s) {sorted(unknown)}; expected a subset of {sorted(SERVICE_NAMES)}"
        )
    return wanted_set


def default_cache_dir() -> Path:
    """``$KFM_CACHE_DIR``, else ``$HOME/.cache/kfm-conformance`` (as the build script)."""
    env = os.environ.get("KFM_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "kfm-conformance"


# --------------------------------------------------------------------------- OTLP JSON


def read_otlp_json_lines(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read the Collector file exporter's output: one OTLP-JSON export request per line.

    Each line is one ``ExportTraceServiceRequest`` (or metrics/logs request) in OTLP JSON.
    A missing file reads as no records. The exporter may be mid-write when this is called,
    so an unparsable *last* line without its newline is ignored; an unparsable complete
    line raises ``ValueError``.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")
    complete_last = text.endswith("\n")
    records: list[dict[str, Any]] = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            continue
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as exc:
            is_last = index == len(lines) - 1 and not complete_last
            if is_last:
                break
            raise ValueError(f"{p}: line {index + 1} is not valid OTLP JSON: {exc}") from exc
        if isinstance(value, dict):
            records.append(value)
    return records


def otlp_spans(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Flatten export requests into their spans.

    Each returned span dict is the OTLP-JSON span with two extra keys: ``"resource"``
    (the resource's attributes list) and ``"scope"`` (the instrumentation scope dict).
    """
    spans: list[dict[str, Any]] = []
    for record in records:
        for rs in record.get("resourceSpans", []) or []:
            resource_attrs = (rs.get("resource") or {}).get("attributes", [])
            for ss in rs.get("scopeSpans", []) or []:
                scope = ss.get("scope") or {}
                for span in ss.get("spans", []) or []:
                    spans.append({**span, "resource": resource_attrs, "scope": scope})
    return spans


# --------------------------------------------------------------------------- helpers


def http_status(
    url: str,
    *,
    timeout: float = 2.0,
    auth: tuple[str, str] | None = None,
) -> int | None:
    """GET ``url`` and return the HTTP status, or ``None`` if nothing answered."""
    request = urllib.request.Request(url, method="GET")
    if auth is not None:
        import base64

        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def tail_text_file(path: str | os.PathLike[str] | None, lines: int = 50) -> str:
    """The last ``lines`` lines of a text file ("" if it does not exist)."""
    if path is None or lines <= 0:
        return ""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines))
    except OSError:
        return ""


# --------------------------------------------------------------------------- configs


def marquez_config(
    *,
    port: int,
    admin_port: int,
    db_url: str,
    db_user: str,
    db_password: str,
    bind_host: str = "127.0.0.1",
) -> dict[str, Any]:
    """A Marquez (Dropwizard) server config, as a dict to dump to JSON (a YAML subset).

    GraphQL and search are off: the harness reads the REST API only, and search would need
    an OpenSearch. Mirrors services/marquez/marquez.yml.tmpl.
    """
    return {
        "server": {
            "applicationConnectors": [
                {
                    "type": "http",
                    "port": port,
                    "bindHost": bind_host,
                    "httpCompliance": "RFC7230_LEGACY",
                }
            ],
            "adminConnectors": [{"type": "http", "port": admin_port, "bindHost": bind_host}],
        },
        "db": {
            "driverClass": "org.postgresql.Driver",
            "url": db_url,
            "user": db_user,
            "password": db_password,
        },
        "migrateOnStartup": True,
        "graphql": {"enabled": False},
        "search": {"enabled": False},
        "logging": {"level": "INFO", "appenders": [{"type": "console"}]},
    }


def collector_config(
    *,
    http_endpoint: str,
    grpc_endpoint: str,
    traces_path: str,
    metrics_path: str,
    flush_interval: str = "200ms",
) -> dict[str, Any]:
    """An OpenTelemetry Collector config with the otlp receiver and file exporters.

    Traces and metrics are each written as OTLP JSON, one export request per line, to
    ``traces_path`` / ``metrics_path``. The Collector's own metrics endpoint is off so it
    takes no fixed port. Mirrors services/collector/config.yaml.tmpl.
    """
    return {
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": grpc_endpoint},
                    "http": {"endpoint": http_endpoint},
                }
            }
        },
        "processors": {"batch": {"timeout": "200ms"}},
        "exporters": {
            "debug": {"verbosity": "basic"},
            "file/traces": {
                "path": traces_path,
                "format": "json",
                "flush_interval": flush_interval,
            },
            "file/metrics": {
                "path": metrics_path,
                "format": "json",
                "flush_interval": flush_interval,
            },
        },
        "service": {
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "info"}},
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["file/traces", "debug"],
                },
                "metrics": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["file/metrics", "debug"],
                },
            },
        },
    }


#: The line the Collector logs once every pipeline is running.
COLLECTOR_READY_LINE = "Everything is ready"
