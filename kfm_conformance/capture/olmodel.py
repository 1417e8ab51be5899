"""Validation of OpenLineage events against the model that ships with openlineage-python.

This is the default ``lineage.spec-valid`` validator: it needs nothing but the installed
``openlineage-python`` package (a core dependency). ``--openlineage-schemas DIR`` upgrades it
to full JSON Schema validation (:mod:`kfm_conformance.capture.olschema`).

The package's ``openlineage.client.generated`` classes are generated from the OpenLineage spec.
Each class names the schema it was generated from (``_get_schema()``, for example
``https://openlineage.io/spec/facets/1-2-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet``);
its attrs fields carry the property names, their types (``str``, ``int | None``,
``list[InputDataset] | None``, an ``Enum`` such as ``EventType``, a ``Literal``, another class)
and, where the spec gives a format, a validator (``eventTime``: an ISO date-time; ``runId``: a
UUID; ``producer``/``schemaURL``: a URI). An event is walked against these classes:

- a field without a default is required; ``producer``/``schemaURL`` of an event and
  ``_producer``/``_schemaURL`` of a facet are required too (the spec requires them; the model's
  constructor always fills them, so every event it serialises carries them);
- every present value must have the field's type (JSON ``null`` is not a value of any field:
  a client leaves an unset field out);
- the model's own validator runs, and so does the strict RFC check for the format it stands
  for (the JSON Schema mode's format checker), so both modes agree on a date-time without a
  time zone or a producer that is not a URI;
- each facet is validated against the class whose schema URL its ``_schemaURL`` names. A facet
  version the model lacks is validated against the model's version of the same facet when the
  MODEL number (the first of the three) agrees (SchemaVer: a later REVISION or ADDITION keeps
  the shape), else, and for a custom facet, only against the base facet rules; the passing
  finding says so. A version the model lacks is never a harness error.

Properties the model does not know are allowed, as in the spec (``additionalProperties``).

Importing ``openlineage.client.generated`` runs ``openlineage/client/__init__.py`` first, which
imports the client and every transport it has (requests, httpx, urllib3, Kafka's and the
cloud ones where installed): about 0.4 s of CPU in each of the four processes a certification
starts, for classes that need none of it. :func:`generated_package` imports the classes with
the package's ``__init__`` deferred until something asks the package for a name it defines.
"""

from __future__ import annotations

import enum
import functools
import importlib
import importlib.util
import inspect
import pkgutil
import re
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from jsonschema import FormatChecker

from kfm_conformance.verdict import Finding, HarnessError, fact

CHECK = "lineage.spec-valid"
NAME = "openlineage-python"
_FACET_URL = re.compile(r"/(?P<version>\d+)-(?P<revision>\d+)-(?P<addition>\d+)/(?P<file>[^/#]+)")
_OFFICIAL = (
    "openlineage.io/spec/",
    "github.com/OpenLineage/",
    "githubusercontent.com/OpenLineage/",
)
#: What the model's field validators stand for, read from the names their code calls.
_FORMAT_OF_CALL = {"isoparse": "date-time", "UUID": "uuid", "urlparse": "uri"}
_SPEC_REQUIRED_EVENT = ("producer", "schemaURL")
_SPEC_REQUIRED_FACET = ("_producer", "_schemaURL")
_JSON_TYPE = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}


def _base(url: str) -> str:
    return url.split("#", 1)[0]


def _json_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _facet_key(url: str) -> tuple[str, str] | None:
    """(file name, $defs name) of an official facet URL, ignoring its version."""
    match = _FACET_URL.search(url)
    if match is None:
        return None
    return match.group("file"), url.partition("#")[2]


def _model_number(url: str) -> str | None:
    match = _FACET_URL.search(url)
    return match.group("version") if match else None


def _version_of(url: str) -> str:
    match = _FACET_URL.search(url)
    return "-".join(match.group("version", "revision", "addition")) if match else "?"


_CLIENT = "openlineage.client"


def generated_package() -> types.ModuleType:
    """``openlineage.client.generated``, imported without running ``openlineage.client``'s own
    ``__init__`` when nothing has imported that package yet.

    The package is put in place from its spec with a module ``__getattr__`` (PEP 562): the
    first lookup of a name the package does not have yet (``OpenLineageClient``, say, by
    ``from openlineage.client import OpenLineageClient`` anywhere later in the process) runs
    its ``__init__`` then, in the same module, and answers. Submodules import as usual."""
    if _CLIENT not in sys.modules:
        spec = importlib.util.find_spec(_CLIENT)
        if spec is not None and spec.loader is not None and spec.submodule_search_locations:
            package = importlib.util.module_from_spec(spec)
            loader = spec.loader

            def load_init(name: str) -> Any:
                del package.__dict__["__getattr__"]
                loader.exec_module(package)
                try:
                    return package.__dict__[name]
                except KeyError:
                    raise AttributeError(f"module {_CLIENT!r} has no attribute {name!r}") from None

            package.__dict__["__getattr__"] = load_init
            sys.modules[_CLIENT] = package
            setattr(sys.modules["openlineage"], "client", package)  # noqa: B010 (for mypy)
    return importlib.import_module(f"{_CLIENT}.generated")


@dataclass
class _Walk:
    """Problems and notes found while walking one event."""

    problems: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def problem(self, path: str, message: str, where: str) -> None:
        self.problems.append((path, message, where))


class OpenLineageModel:
    """The OpenLineage model of the installed openlineage-python; validates events."""

    name = NAME

    def __init__(self) -> None:
        try:
            import attr

            generated = generated_package()
            base = importlib.import_module(f"{generated.__name__}.base")
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise HarnessError(f"the OpenLineage model is unavailable: {exc}") from exc
        try:
            self.version = package_version("openlineage-python")
        except PackageNotFoundError:  # pragma: no cover
            self.version = "unknown"
        self._attr = attr
        self._base = base
        self.by_url: dict[str, type] = {}
        for module_info in pkgutil.iter_modules(generated.__path__):
            module = importlib.import_module(f"{generated.__name__}.{module_info.name}")
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ != module.__name__ or not attr.has(cls):
                    continue
                attr.resolve_types(cls)
                schema = getattr(cls, "_get_schema", None)
                if schema is not None:
                    self.by_url.setdefault(schema(), cls)
        self.by_key: dict[tuple[str, str], str] = {}
        for url in self.by_url:
            key = _facet_key(url)
            if key is not None:
                self.by_key[key] = url
        self.core = _base(base.RunEvent._get_schema())
        self._events = {
            "RunEvent": base.RunEvent,
            "DatasetEvent": base.DatasetEvent,
            "JobEvent": base.JobEvent,
        }
        self._format_checker = FormatChecker()

    # -- describing ------------------------------------------------------------------------

    def describe(self) -> str:
        """What events are validated against, for a finding's ``expected``."""
        return f"the OpenLineage model of {NAME} {self.version} (core {self.core})"

    def provenance(self) -> dict[str, Any]:
        """Which validator, and its version, for the report's provenance."""
        return {
            "validator": NAME,
            "version": self.version,
            "core": [self.core],
            "facet_schemas": len({_base(u) for u in self.by_url} - {self.core}),
        }

    # -- validating ------------------------------------------------------------------------

    def validate(self, event: Any) -> list[Finding]:
        """One failed ``lineage.spec-valid`` finding per problem; [] for a valid event."""
        return self.check(event)[0]

    def check(self, event: Any) -> tuple[list[Finding], list[str]]:
        """(findings, notes): the problems, and what could only be checked in part."""
        walk = _Walk()
        if not isinstance(event, dict):
            walk.problem("$", "the event is not a JSON object", self.core)
        else:
            kind = self._event_class(event)
            schema_url = event.get("schemaURL")
            if isinstance(schema_url, str) and _base(schema_url) != self.core:
                walk.notes.append(
                    f"the event names core {_base(schema_url)}; it was validated against the "
                    f"model's core {self.core}"
                )
            self._object(event, kind, "$", walk)
        findings: list[Finding] = []
        seen: set[tuple[str, str]] = set()
        for path, message, where in walk.problems:
            if (path, message) not in seen:
                seen.add((path, message))
                findings.append(self._finding(path, message, where))
        return findings, list(dict.fromkeys(walk.notes))

    def _event_class(self, event: dict[str, Any]) -> type:
        fragment = str(event.get("schemaURL") or "").partition("#")[2]
        name = fragment.rsplit("/", 1)[-1]
        if fragment.startswith("/$defs/") and name in self._events:
            return self._events[name]
        if "eventType" in event or "run" in event:
            return self._events["RunEvent"]
        if "dataset" in event:
            return self._events["DatasetEvent"]
        if "job" in event:
            return self._events["JobEvent"]
        return self._events["RunEvent"]

    def _where(self, cls: type) -> str:
        schema = getattr(cls, "_get_schema", None)
        return str(schema()) if schema is not None else cls.__name__

    def _required(self, cls: type) -> set[str]:
        names = {f.name for f in self._attr.fields(cls) if f.default is self._attr.NOTHING}
        if issubclass(cls, self._base.BaseEvent):
            names.update(_SPEC_REQUIRED_EVENT)
        if issubclass(cls, self._base.BaseFacet):
            names.update(_SPEC_REQUIRED_FACET)
        return names

    def _object(self, value: Any, cls: type, path: str, walk: _Walk) -> None:
        where = self._where(cls)
        if not isinstance(value, dict):
            walk.problem(path, f"{_json_name(value)} is not an object ({cls.__name__})", where)
            return
        required_names = self._required(cls)
        for attribute in self._attr.fields(cls):
            key = attribute.name
            child = f"{path}.{key}"
            if key not in value:
                if key in required_names:
                    walk.problem(path, f"{key!r} is a required property ({cls.__name__})", where)
                continue
            if self._value(value[key], attribute.type, child, walk, where):
                self._run_validator(attribute, value[key], child, walk, where)

    def _run_validator(
        self, attribute: Any, value: Any, path: str, walk: _Walk, where: str
    ) -> None:
        validator = attribute.validator
        if validator is None or value is None:
            return
        calls = getattr(getattr(validator, "__code__", None), "co_names", ())
        formats = [name for call, name in _FORMAT_OF_CALL.items() if call in calls]
        what = f"a {formats[0]!r}" if formats else "accepted by the model"
        try:
            validator(None, attribute, value)
        except Exception as exc:  # noqa: BLE001 - the model's validators raise anything
            walk.problem(path, f"{value!r} is not {what} (the model says: {exc})", where)
            return
        for format_name in formats:
            if not self._format_checker.conforms(value, format_name):
                walk.problem(path, f"{value!r} is not a {format_name!r}", where)

    def _value(self, value: Any, annotation: Any, path: str, walk: _Walk, where: str) -> bool:
        """Check ``value`` against a field's type; True when it has the type."""
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin in (typing.Union, types.UnionType):
            options = [a for a in args if a is not type(None)]
            if value is None:
                walk.problem(path, "null is not a value (leave the property out)", where)
                return False
            if len(options) == 1:
                return self._value(value, options[0], path, walk, where)
            attempts: list[_Walk] = []
            for option in options:
                attempt = _Walk()
                if self._value(value, option, path, attempt, where) and not attempt.problems:
                    walk.notes.extend(attempt.notes)
                    return True
                attempts.append(attempt)
            best = min(attempts, key=lambda a: len(a.problems))
            walk.problems.extend(best.problems)
            return False
        if annotation is Any:
            return True
        if origin is typing.Literal:
            if value not in args:
                allowed = ", ".join(repr(a) for a in args)
                walk.problem(path, f"{value!r} is not one of {allowed}", where)
                return False
            return True
        if origin is list:
            if not isinstance(value, list):
                walk.problem(path, f"{_json_name(value)} is not an array", where)
                return False
            item = args[0] if args else Any
            for index, element in enumerate(value):
                self._value(element, item, f"{path}[{index}]", walk, where)
            return True
        if origin is dict:
            if not isinstance(value, dict):
                walk.problem(path, f"{_json_name(value)} is not an object", where)
                return False
            item = args[1] if len(args) > 1 else Any
            for key, element in value.items():
                child = f"{path}.{key}"
                if inspect.isclass(item) and issubclass(item, self._base.BaseFacet):
                    self._facet(element, item, child, walk)
                else:
                    self._value(element, item, child, walk, where)
            return True
        if inspect.isclass(annotation) and issubclass(annotation, enum.Enum):
            allowed_values = [m.value for m in annotation]
            if value not in allowed_values:
                allowed = ", ".join(str(v) for v in allowed_values)
                walk.problem(
                    path, f"{value!r} is not one of {allowed} ({annotation.__name__})", where
                )
                return False
            return True
        if inspect.isclass(annotation) and self._attr.has(annotation):
            if issubclass(annotation, self._base.BaseFacet):
                self._facet(value, annotation, path, walk)
            else:
                self._object(value, annotation, path, walk)
            return True
        if annotation in _JSON_TYPE:
            ok = isinstance(value, annotation) and not (
                annotation is not bool and isinstance(value, bool)
            )
            if annotation is float:
                ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok:
                walk.problem(
                    path,
                    f"{value!r} is not {_JSON_TYPE[annotation]} (it is {_json_name(value)})",
                    where,
                )
            return ok
        return True  # a type the model states in a way this walk does not read

    def _facet(self, value: Any, expected: type, path: str, walk: _Walk) -> None:
        """A facet, validated against the class its ``_schemaURL`` names."""
        url = value.get("_schemaURL") if isinstance(value, dict) else None
        cls = self._facet_class(url, expected, path, walk) if isinstance(url, str) else expected
        self._object(value, cls, path, walk)

    def _facet_class(self, url: str, expected: type, path: str, walk: _Walk) -> type:
        exact = self.by_url.get(url)
        if exact is not None:
            return exact
        key = _facet_key(url)
        known = self.by_key.get(key) if key is not None else None
        official = any(marker in url for marker in _OFFICIAL)
        if known is not None and _model_number(known) == _model_number(url):
            walk.notes.append(
                f"{path}: version {_version_of(url)} of {key[0] if key else url} is not in the "
                f"model; validated against its version {_version_of(known)}"
            )
            return self.by_url[known]
        if known is not None or official:
            walk.notes.append(
                f"{path}: {url} is not in the model; only the base facet rules were checked"
            )
        return expected

    def _finding(self, path: str, message: str, where: str) -> Finding:
        return fact(
            CHECK,
            False,
            f"event does not follow the OpenLineage spec at {path}: {message}",
            expected=f"valid according to {self.describe()}: {where}",
            observed=f"at {path}: {message}",
        )


@functools.lru_cache(maxsize=1)
def default_model() -> OpenLineageModel:
    """The model validator, built once per process."""
    return OpenLineageModel()


def model_provenance() -> dict[str, Any]:
    """What the report says about the default validator."""
    return default_model().provenance()


def iter_model_urls() -> Iterator[str]:
    """Every schema URL the model's classes name (for tests and documentation)."""
    yield from default_model().by_url
