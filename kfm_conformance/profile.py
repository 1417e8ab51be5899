"""The pipeline-under-test contract: a TOML profile, checked against ``profile.schema.json``.

A profile says how to run a pipeline (an argv, never a shell), where it publishes, and what it
declares: its exit-code table and the optional limits the harness may test. Anything the
profile does not declare and the blueprint does not require is never failed.

Loading is strict. Every problem becomes a :class:`~kfm_conformance.verdict.ConfigurationError`
whose message is one line naming the file and the offending key, which the CLI prints before
exiting 2.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from kfm_conformance.verdict import ConfigurationError

#: The blueprint's exit table, used for every key a profile leaves out.
BLUEPRINT_EXIT_CODES: dict[str, int] = {
    "published": 0,
    "not_modified": 0,
    "usage": 2,
    "invalid_upstream": 65,
    "upstream_refused": 69,
    "upstream_transient": 75,
    "io_error": 74,
}

#: Which outcomes are successes: only these may exit with a success code.
SUCCESS_OUTCOMES = frozenset({"published", "not_modified"})

DEFAULT_TIMEOUT_S = 120.0

DEFAULT_LAKEFS_ENV = {
    "endpoint_env": "LAKEFS_ENDPOINT",
    "access_key_id_env": "LAKEFS_ACCESS_KEY_ID",
    "secret_access_key_env": "LAKEFS_SECRET_ACCESS_KEY",
    "repository_env": "LAKEFS_REPOSITORY",
    "branch_env": "LAKEFS_BRANCH",
}

#: Credential variables that are secret whatever the profile says.
KNOWN_SECRET_ENV = frozenset(
    {
        "LAKEFS_SECRET_ACCESS_KEY",
        "LAKEFS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "PGPASSWORD",
        "OPENLINEAGE_API_KEY",
    }
)


def profile_schema() -> dict[str, Any]:
    """The JSON Schema of the profile format, as shipped in the package."""
    text = resources.files("kfm_conformance.schemas").joinpath("profile.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


@dataclass(frozen=True)
class ExitCodes:
    """The declared exit code of each outcome."""

    published: int = 0
    not_modified: int = 0
    usage: int = 2
    invalid_upstream: int = 65
    upstream_refused: int = 69
    upstream_transient: int = 75
    io_error: int = 74

    def of(self, outcome: str) -> int:
        if outcome not in BLUEPRINT_EXIT_CODES:
            raise KeyError(f"unknown outcome {outcome!r}")
        value: int = getattr(self, outcome)
        return value

    def as_dict(self) -> dict[str, int]:
        return {name: self.of(name) for name in BLUEPRINT_EXIT_CODES}

    def success_codes(self) -> frozenset[int]:
        return frozenset(self.of(o) for o in SUCCESS_OUTCOMES)


@dataclass(frozen=True)
class Limits:
    """Optional behaviours the pipeline declares; ``None`` means not declared."""

    max_body_bytes: int | None = None
    fetch_timeout_s: float | None = None
    max_redirects: int | None = None


@dataclass(frozen=True)
class Profile:
    """A loaded, validated pipeline profile."""

    path: Path
    name: str
    command: tuple[str, ...]
    output: str
    timeout_s: float
    env: dict[str, str]
    state: tuple[str, ...] | None
    exit_codes: ExitCodes
    limits: Limits
    lakefs_env: dict[str, str]
    secret_env: frozenset[str]
    services: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, str] = field(default_factory=dict)
    digest: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def profile_dir(self) -> Path:
        return self.path.parent

    def argv(self, *, src: str, workdir: Path, python: str | None = None) -> list[str]:
        """The command with its placeholders filled in (for ``[airflow]``, the DAG runner's)."""
        if "airflow" in self.raw:
            from kfm_conformance.airflow import airflow_argv

            dag_argv = airflow_argv(self, src=src, workdir=workdir)
            if dag_argv is not None:
                return dag_argv
        values = {
            "python": python or sys.executable,
            "profile_dir": str(self.profile_dir),
            "src": src,
            "workdir": str(workdir),
        }
        try:
            return [part.format_map(values) for part in self.command]
        except (KeyError, ValueError, IndexError) as exc:
            raise ConfigurationError(
                f"{self.path}: pipeline.command: bad placeholder ({exc}); "
                "known: {python} {profile_dir} {src} {workdir}"
            ) from None

    def check_command(self) -> None:
        """Fail fast with one line when the program to run does not exist."""
        program = self.argv(src="http://127.0.0.1/", workdir=self.profile_dir)[0]
        if "/" in program:
            candidate = Path(program)
            if not candidate.is_absolute():
                candidate = self.profile_dir / candidate
            if not candidate.exists():
                raise ConfigurationError(
                    f"{self.path}: pipeline.command: program not found: {program}"
                )
        elif shutil.which(program) is None:
            raise ConfigurationError(f"{self.path}: pipeline.command: program not found: {program}")

    def secret_values(self, environ: dict[str, str]) -> list[str]:
        """Values that reports must never show: declared secrets and known credentials."""
        names = self.secret_env | KNOWN_SECRET_ENV
        values = [environ.get(n, "") for n in names] + [self.env.get(n, "") for n in names]
        return sorted({v for v in values if len(v) >= 4})

    def summary(self) -> dict[str, Any]:
        """What a report says about the pipeline under test."""
        return {
            "name": self.name,
            "command": list(self.command),
            "output": self.output,
            "profile": self.path.name,
            "profile_sha256": self.digest,
            "exit_codes": self.exit_codes.as_dict(),
            "limits": {k: v for k, v in vars(self.limits).items() if v is not None},
        }


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "required" and isinstance(error.message, str):
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        parts.append(missing)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra:
            parts.append(extra[0])
            return ".".join(parts) + ": unknown key"
    return ".".join(parts) or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key_path(error)
    if key.endswith(": unknown key"):
        return key
    if error.validator == "required":
        return f"{key}: missing required key"
    if error.validator == "not":
        return f"{key}: must be a relative path inside the working directory"
    return f"{key}: {error.message}"


def parse_profile(data: dict[str, Any], path: Path, text: bytes = b"") -> Profile:
    """Validate already-parsed TOML data and build a :class:`Profile`."""
    validator = jsonschema.Draft202012Validator(profile_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        raise ConfigurationError(f"{path}: {_describe(errors[0])}")
    pipeline = data["pipeline"]
    codes = {**BLUEPRINT_EXIT_CODES, **data.get("exit_codes", {})}
    for outcome, code in codes.items():
        if outcome not in SUCCESS_OUTCOMES and code in (
            codes["published"],
            codes["not_modified"],
        ):
            raise ConfigurationError(
                f"{path}: exit_codes.{outcome}: a failure must not share a success code ({code})"
            )
    limits = data.get("limits", {})
    state = pipeline.get("state")
    return Profile(
        path=path,
        name=pipeline["name"],
        command=tuple(pipeline.get("command", ())),  # absent when [airflow] names a DAG
        output=pipeline["output"],
        timeout_s=float(pipeline.get("timeout_s", DEFAULT_TIMEOUT_S)),
        env=dict(pipeline.get("env", {})),
        state=tuple(state) if state is not None else None,
        exit_codes=ExitCodes(**codes),
        limits=Limits(
            max_body_bytes=limits.get("max_body_bytes"),
            fetch_timeout_s=limits.get("fetch_timeout_s"),
            max_redirects=limits.get("max_redirects"),
        ),
        lakefs_env={**DEFAULT_LAKEFS_ENV, **data.get("lakefs", {})},
        secret_env=frozenset(pipeline.get("secret_env", [])),
        services=dict(data.get("services", {})),
        provenance=dict(data.get("provenance", {})),
        digest=hashlib.sha256(text).hexdigest() if text else "",
        raw=data,
    )


def load_profile(path: str | Path) -> Profile:
    """Load and validate a profile file. Raises :class:`ConfigurationError` with one line."""
    location = Path(path)
    try:
        text = location.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"{location}: profile not found") from None
    except IsADirectoryError:
        raise ConfigurationError(f"{location}: profile is a directory, not a file") from None
    except OSError as exc:
        raise ConfigurationError(f"{location}: cannot read profile ({exc.strerror})") from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigurationError(f"{location}: profile is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{location}: bad TOML: {exc}") from None
    return parse_profile(data, location.resolve(), text)
