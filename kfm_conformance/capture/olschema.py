"""Offline validation of OpenLineage events against the official JSON Schemas.

This is the full validation that ``--openlineage-schemas DIR`` turns on; without it, events are
validated against the model of openlineage-python (:mod:`kfm_conformance.capture.olmodel`).

The schemas come from a local cache directory (the OpenLineage project's ``spec/`` folder: the
core ``OpenLineage.json`` and ``facets/*.json``), given by the ``--openlineage-schemas`` option
or the ``KFM_OPENLINEAGE_SCHEMAS`` environment variable; the project ships none of them.

Every file is registered under its ``$id`` in a :class:`referencing.Registry`. An event is
validated against ``{"$ref": "<core $id>#/$defs/RunEvent"}`` (or ``DatasetEvent`` /
``JobEvent``), the core being the one its ``schemaURL`` names; each facet is validated against
``{"$ref": facet["_schemaURL"]}``. Nothing is fetched from the network: a schema version the
cache lacks is a harness error (``schema unavailable: <url>``), never a pipeline failure.

A custom facet (one whose ``_schemaURL`` is neither an OpenLineage project address, such as
``https://openlineage.io/spec/...``, nor in the cache) cannot be checked against anything but
the core ``BaseFacet`` rules, which the core validation already applies; it is not an error.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import referencing.exceptions
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from kfm_conformance.verdict import ConfigurationError, Finding, HarnessError, fact

ENV_VAR = "KFM_OPENLINEAGE_SCHEMAS"
CHECK = "lineage.spec-valid"
_OFFICIAL_MARKERS = (
    "openlineage.io/spec/",
    "github.com/OpenLineage/OpenLineage/",
    "githubusercontent.com/OpenLineage/OpenLineage/",
)
_EVENT_DEFS = ("RunEvent", "DatasetEvent", "JobEvent")


def _base(url: str) -> str:
    return url.split("#", 1)[0]


def _event_kind(event: dict[str, Any], schema_url: str) -> str:
    fragment = schema_url.partition("#")[2]
    name = fragment.rsplit("/", 1)[-1]
    if fragment.startswith("/$defs/") and name in _EVENT_DEFS:
        return name
    if "eventType" in event or "run" in event:
        return "RunEvent"
    if "dataset" in event:
        return "DatasetEvent"
    if "job" in event:
        return "JobEvent"
    return "RunEvent"


def _json_path(prefix: str, error: ValidationError) -> str:
    path = prefix
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _facet_sites(event: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """Yield (json path, facet name, facet) for every facet in an event."""

    def facets_in(
        container: Any, path: str, keys: tuple[str, ...]
    ) -> Iterator[tuple[str, str, Any]]:
        if not isinstance(container, dict):
            return
        for key in keys:
            facets = container.get(key)
            if isinstance(facets, dict):
                for name, facet in facets.items():
                    yield f"{path}.{key}.{name}", name, facet

    yield from facets_in(event.get("run"), "$.run", ("facets",))
    yield from facets_in(event.get("job"), "$.job", ("facets",))
    yield from facets_in(event.get("dataset"), "$.dataset", ("facets",))
    for side, extra in (("inputs", "inputFacets"), ("outputs", "outputFacets")):
        datasets = event.get(side)
        if isinstance(datasets, list):
            for index, dataset in enumerate(datasets):
                yield from facets_in(dataset, f"$.{side}[{index}]", ("facets", extra))


class OpenLineageSchemas:
    """The OpenLineage schema cache, loaded once; validates events into findings."""

    name = "json-schema"

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)
        if not self.cache_dir.is_dir():
            raise HarnessError(f"schema unavailable: no schema cache directory at {cache_dir}")
        resources: list[tuple[str, Resource[Any]]] = []
        self.ids: dict[str, Path] = {}
        for path in sorted(self.cache_dir.rglob("*.json")):
            try:
                contents = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise HarnessError(f"schema cache file {path.name} is unreadable: {exc}") from exc
            schema_id = contents.get("$id") if isinstance(contents, dict) else None
            if not isinstance(schema_id, str):
                continue
            schema_id = _base(schema_id)
            self.ids[schema_id] = path
            resources.append(
                (schema_id, Resource.from_contents(contents, default_specification=DRAFT202012))
            )
        if not self.ids:
            raise HarnessError(f"schema unavailable: no JSON Schema with an $id in {cache_dir}")
        self.registry: Registry[Any] = Registry().with_resources(resources)
        self._validators: dict[str, Draft202012Validator] = {}
        self._format_checker = FormatChecker()

    def describe(self) -> str:
        """What events are validated against, for a finding's ``expected``."""
        return "the official OpenLineage JSON Schema (" + ", ".join(self.core_versions) + ")"

    def provenance(self) -> dict[str, Any]:
        """Which validator, for the report's provenance (never the cache's location)."""
        return cache_provenance(self.cache_dir)

    def check(self, event: dict[str, Any]) -> tuple[list[Finding], list[str]]:
        """(findings, notes), like :meth:`OpenLineageModel.check`; notes name custom facets."""
        notes = [
            f"{path}: custom facet {facet.get('_schemaURL')}; only the core BaseFacet rules apply"
            for path, _name, facet in _facet_sites(event)
            if isinstance(event, dict)
            and isinstance(facet, dict)
            and isinstance(facet.get("_schemaURL"), str)
            and not self.has(facet["_schemaURL"])
        ]
        return self.validate(event), notes

    def has(self, url: str) -> bool:
        """Whether the cache holds the schema document ``url`` names (a #fragment is ignored)."""
        return _base(url) in self.ids

    @property
    def core_versions(self) -> list[str]:
        """The ``$id`` of every core spec document in the cache."""
        return sorted(i for i in self.ids if i.endswith("/OpenLineage.json"))

    def _validator(self, ref: str) -> Draft202012Validator:
        validator = self._validators.get(ref)
        if validator is None:
            validator = Draft202012Validator(
                {"$ref": ref}, registry=self.registry, format_checker=self._format_checker
            )
            self._validators[ref] = validator
        return validator

    def _errors(self, ref: str, instance: Any, prefix: str) -> list[tuple[str, str]]:
        try:
            errors = list(self._validator(ref).iter_errors(instance))
        except referencing.exceptions.Unresolvable as exc:
            raise HarnessError(f"schema unavailable: {exc}") from exc
        found: list[tuple[str, str]] = []
        for error in errors:
            deepest = best_match(error.context) if error.context else error
            found.append((_json_path(prefix, deepest), deepest.message))
        return found

    def validate(self, event: dict[str, Any]) -> list[Finding]:
        """One failed ``lineage.spec-valid`` finding per schema error; [] for a valid event.

        Raises :class:`HarnessError` ("schema unavailable: <url>") when the event's
        ``schemaURL`` or an official facet's ``_schemaURL`` names a schema the cache lacks.
        """
        if not isinstance(event, dict):
            return [self._finding("$", "the event is not a JSON object", "")]
        schema_url = event.get("schemaURL")
        if not isinstance(schema_url, str) or not schema_url:
            return [
                self._finding(
                    "$.schemaURL",
                    "the event has no schemaURL, so no spec version can be checked",
                    "",
                )
            ]
        core = _base(schema_url)
        if core not in self.ids:
            raise HarnessError(f"schema unavailable: {schema_url}")
        core_ref = f"{core}#/$defs/{_event_kind(event, schema_url)}"
        problems = [(*p, core_ref) for p in self._errors(core_ref, event, "$")]
        for path, _name, facet in _facet_sites(event):
            if not isinstance(facet, dict):
                continue
            facet_url = facet.get("_schemaURL")
            if not isinstance(facet_url, str) or not facet_url:
                continue  # the core validation reports the missing _schemaURL
            if not self.has(facet_url):
                if any(marker in facet_url for marker in _OFFICIAL_MARKERS):
                    raise HarnessError(f"schema unavailable: {facet_url}")
                continue  # a custom facet: only the core BaseFacet rules apply
            problems.extend((*p, facet_url) for p in self._errors(facet_url, facet, path))
        findings: list[Finding] = []
        seen: set[tuple[str, str]] = set()
        for path, message, ref in problems:
            if (path, message) in seen:
                continue
            seen.add((path, message))
            findings.append(self._finding(path, message, ref))
        return findings

    @staticmethod
    def _finding(path: str, message: str, ref: str) -> Finding:
        return fact(
            CHECK,
            False,
            f"event does not follow the OpenLineage spec at {path}: {message}",
            expected=f"valid according to {ref}" if ref else "a valid OpenLineage event",
            observed=f"at {path}: {message}",
        )

    @staticmethod
    def from_env_or_option(option: str | None) -> OpenLineageSchemas | None:
        """The cache named by the option, else by ``KFM_OPENLINEAGE_SCHEMAS``, else None.

        A named directory that does not exist is a :class:`ConfigurationError`.
        """
        source = "option" if option else ENV_VAR
        location = option or os.environ.get(ENV_VAR)
        if not location:
            return None
        path = Path(location).expanduser()
        if not path.is_dir():
            raise ConfigurationError(
                f"OpenLineage schema cache ({source}) is not a directory: {path}"
            )
        return _load(str(path.resolve()))


@functools.lru_cache(maxsize=8)
def _load(path: str) -> OpenLineageSchemas:
    return OpenLineageSchemas(Path(path))


def cache_provenance(cache_dir: Path) -> dict[str, Any]:
    """What identifies a schema cache in a report, never its location on this machine.

    ``sha256`` is a digest over every JSON file's path relative to the cache and its bytes, in
    sorted order; ``core`` lists the ``$id`` of each core spec document found.
    """
    digest = hashlib.sha256()
    files = sorted(p for p in Path(cache_dir).rglob("*.json") if p.is_file())
    core: list[str] = []
    for path in files:
        data = path.read_bytes()
        digest.update(path.relative_to(cache_dir).as_posix().encode() + b"\0" + data + b"\0")
        if path.name == "OpenLineage.json":
            try:
                schema_id = json.loads(data).get("$id")
            except (ValueError, AttributeError):
                schema_id = None
            if isinstance(schema_id, str):
                core.append(_base(schema_id))
    try:
        validator_version = package_version("jsonschema")
    except PackageNotFoundError:  # pragma: no cover
        validator_version = "unknown"
    return {
        "validator": "json-schema",
        "version": f"jsonschema {validator_version}",
        "files": len(files),
        "sha256": digest.hexdigest(),
        "core": sorted(core),
    }
