"""Service providers: Marquez, lakeFS and an OpenTelemetry Collector behind one interface.

``get_provider(name)`` returns a :class:`ServiceProvider`:

* ``"local"``      real services as local processes from cached builds
  (``scripts/build-services.sh``), see :mod:`.local`;
* ``"containers"`` the same services as containers via testcontainers, see :mod:`.containers`;
* ``"external"``   services the user already runs (only health-checked), see :mod:`.external`;
* ``"embedded"``   in-process stand-ins, if :mod:`.embedded` is present;
* ``"auto"``       ``containers`` when a Docker engine answers, else ``local``.
"""

from __future__ import annotations

import importlib
from typing import Any, cast

from .base import (
    SERVICE_NAMES,
    Endpoints,
    LakeFSAccess,
    ServiceError,
    ServiceProvider,
    otlp_spans,
    read_otlp_json_lines,
)
from .containers import docker_available

__all__ = [
    "PROVIDER_NAMES",
    "SERVICE_NAMES",
    "Endpoints",
    "LakeFSAccess",
    "ServiceError",
    "ServiceProvider",
    "docker_available",
    "get_provider",
    "otlp_spans",
    "read_otlp_json_lines",
]

PROVIDER_NAMES = ("auto", "local", "containers", "external", "embedded")


def get_provider(name: str, **kw: Any) -> ServiceProvider:
    """Build the provider called ``name`` (see the module docstring) with ``kw``."""
    if name == "auto":
        name = "containers" if docker_available() else "local"
    if name == "local":
        from .local import LocalServices

        return LocalServices(**kw)
    if name == "containers":
        from .containers import ContainerServices

        return ContainerServices(**kw)
    if name == "external":
        from .external import ExternalServices

        return ExternalServices(**kw)
    if name == "embedded":
        try:
            module = importlib.import_module(f"{__name__}.embedded")
        except ModuleNotFoundError as exc:
            raise ValueError("the embedded provider is not available in this build") from exc
        return cast(ServiceProvider, module.EmbeddedServices(**kw))
    raise ValueError(f"unknown service provider {name!r}; expected one of {PROVIDER_NAMES}")
