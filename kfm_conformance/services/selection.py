"""Which provider runs each service: ``--services`` and the profile's ``[services]`` table.

A selection maps each of the three services (``marquez``, ``lakefs``, ``collector``) to a
provider: ``embedded`` (the in-process capture endpoints; there is no embedded lakeFS),
``local`` (cached builds as processes on loopback), ``containers`` (testcontainers) or
``external`` (services the user already runs). The spec is a comma-separated list:

* a bare provider name applies to every service not named otherwise
  (``local`` = all three local; ``auto`` = ``containers`` when a Docker engine answers, else
  ``local``);
* ``service=provider`` names one service (``lakefs=local,collector=local,marquez=embedded``).

Services the spec does not name use the profile's ``[services] provider`` (else
``embedded``). A bad spec is a :class:`~kfm_conformance.verdict.ConfigurationError` (one line,
the CLI exits 2).

``external`` takes its URLs from the profile's ``[services]`` keys (``marquez_url``,
``otlp_endpoint``, ``lakefs_endpoint``), each overridden by an environment variable
(``KFM_MARQUEZ_URL``, ``KFM_OTLP_ENDPOINT``, ``KFM_LAKEFS_ENDPOINT``); credentials and the
Collector's file-exporter output only from the environment (``KFM_LAKEFS_ACCESS_KEY_ID``,
``KFM_LAKEFS_SECRET_ACCESS_KEY``, ``KFM_COLLECTOR_SPAN_FILES``, os.pathsep-separated), never
from a file that could be committed. Credentials read here are registered as secrets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from kfm_conformance.redact import register_secret
from kfm_conformance.verdict import ConfigurationError

from .base import SERVICE_NAMES, LakeFSAccess

__all__ = [
    "ENV_LAKEFS_ACCESS_KEY_ID",
    "ENV_LAKEFS_SECRET_ACCESS_KEY",
    "PROVIDERS",
    "ExternalSettings",
    "ServiceSelection",
    "parse_services",
]

#: Providers a service can be given to (``auto`` is resolved when the spec is parsed).
PROVIDERS = ("embedded", "local", "containers", "external")
ORDER = ("lakefs", "collector", "marquez")

ENV_MARQUEZ_URL = "KFM_MARQUEZ_URL"
ENV_OTLP_ENDPOINT = "KFM_OTLP_ENDPOINT"
ENV_LAKEFS_ENDPOINT = "KFM_LAKEFS_ENDPOINT"
ENV_LAKEFS_ACCESS_KEY_ID = "KFM_LAKEFS_ACCESS_KEY_ID"
ENV_LAKEFS_SECRET_ACCESS_KEY = "KFM_LAKEFS_SECRET_ACCESS_KEY"
ENV_COLLECTOR_SPAN_FILES = "KFM_COLLECTOR_SPAN_FILES"
ENV_LAKEFS_NAMESPACE_PREFIX = "KFM_LAKEFS_STORAGE_NAMESPACE_PREFIX"


@dataclass(frozen=True)
class ServiceSelection:
    """The provider of each service (``choice``), and the spec it came from."""

    choice: Mapping[str, str]
    spec: str = "embedded"

    def provider_of(self, service: str) -> str:
        return self.choice.get(service, "embedded")

    def real(self) -> dict[str, str]:
        """The services given to a provider that runs a real service (not ``embedded``)."""
        return {s: p for s, p in self.choice.items() if p != "embedded"}

    def describe(self) -> str:
        """``embedded`` / ``local`` when one provider runs all, else ``svc=provider,...``."""
        providers = {self.provider_of(s) for s in ORDER}
        if len(providers) == 1:
            return providers.pop()
        return ",".join(f"{s}={self.provider_of(s)}" for s in ORDER)


def _resolve(provider: str, where: str) -> str:
    name = provider.strip().lower()
    if name == "auto":
        from .containers import docker_available

        return "containers" if docker_available() else "local"
    if name not in PROVIDERS:
        raise ConfigurationError(
            f"{where}: unknown provider {provider!r}; expected one of "
            f"{', '.join((*PROVIDERS, 'auto'))}"
        )
    return name


def parse_services(spec: str | None, profile_provider: str | None = None) -> ServiceSelection:
    """Parse a ``--services`` spec (see the module docstring) into a selection."""
    default = _resolve(profile_provider, "[services] provider") if profile_provider else None
    choice: dict[str, str] = {}
    bare_seen = False
    text = (spec or "").strip()
    for raw in (part.strip() for part in text.split(",")) if text else ():
        if not raw:
            raise ConfigurationError(f"--services: empty item in {spec!r}")
        if "=" in raw:
            service, _, provider = (p.strip() for p in raw.partition("="))
            service = service.lower()
            if service not in SERVICE_NAMES:
                raise ConfigurationError(
                    f"--services: unknown service {service!r}; expected "
                    f"{', '.join(sorted(SERVICE_NAMES))}"
                )
            if service in choice:
                raise ConfigurationError(f"--services: {service} is named twice")
            choice[service] = _resolve(provider, "--services")
        else:
            if bare_seen:
                raise ConfigurationError(f"--services: more than one default provider in {spec!r}")
            bare_seen = True
            default = _resolve(raw, "--services")
    for service in SERVICE_NAMES:
        choice.setdefault(service, default or "embedded")
    selection = ServiceSelection(choice=dict(sorted(choice.items())))
    return ServiceSelection(choice=selection.choice, spec=selection.describe())


@dataclass(frozen=True)
class ExternalSettings:
    """Where the ``external`` provider finds the user's services."""

    marquez_url: str | None = None
    otlp_endpoint: str | None = None
    lakefs: LakeFSAccess | None = None
    span_files: tuple[str, ...] = ()
    lakefs_namespace_prefix: str = "local://"
    problems: tuple[str, ...] = field(default=())

    @classmethod
    def from_sources(
        cls, profile_services: Mapping[str, str] | None, environ: Mapping[str, str] | None = None
    ) -> ExternalSettings:
        env = os.environ if environ is None else environ
        keys = dict(profile_services or {})
        marquez = env.get(ENV_MARQUEZ_URL) or keys.get("marquez_url")
        otlp = env.get(ENV_OTLP_ENDPOINT) or keys.get("otlp_endpoint")
        lakefs_url = env.get(ENV_LAKEFS_ENDPOINT) or keys.get("lakefs_endpoint")
        key_id = env.get(ENV_LAKEFS_ACCESS_KEY_ID, "")
        secret = env.get(ENV_LAKEFS_SECRET_ACCESS_KEY, "")
        register_secret(key_id)
        register_secret(secret)
        problems: list[str] = []
        access = None
        if lakefs_url:
            if key_id and secret:
                access = LakeFSAccess(lakefs_url.rstrip("/"), key_id, secret)
            else:
                problems.append(
                    f"lakeFS at {lakefs_url} needs {ENV_LAKEFS_ACCESS_KEY_ID} and "
                    f"{ENV_LAKEFS_SECRET_ACCESS_KEY} in the environment"
                )
        spans = tuple(p for p in env.get(ENV_COLLECTOR_SPAN_FILES, "").split(os.pathsep) if p)
        if otlp and not spans:
            problems.append(
                f"the Collector at {otlp} needs {ENV_COLLECTOR_SPAN_FILES} (its file exporter's "
                "output, which the harness reads)"
            )
        return cls(
            marquez_url=marquez,
            otlp_endpoint=otlp,
            lakefs=access,
            span_files=spans,
            lakefs_namespace_prefix=env.get(ENV_LAKEFS_NAMESPACE_PREFIX, "local://"),
            problems=tuple(problems),
        )
