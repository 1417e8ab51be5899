"""The pipeline-under-test contract: a TOML profile, checked against ``profile.schema.json``.

A profile says how to run a pipeline (an argv, never a shell), where it publishes, and what it
declares: its exit-code table and the optional limits the harness may test. Anything the
profile does not declare and the blueprint does not require is never failed.

Loading is strict. Every problem becomes a :class:`~kfm_conformance.verdict.ConfigurationError`
whose message is one line naming the file and the offending key, which the CLI prints before
exiting 2.

Loading is also bounded, because a profile is input the harness must survive: only a regular
file of at most :data:`MAX_PROFILE_BYTES` is read (never a FIFO or a device), its nesting and
dotted keys are bounded before the TOML parser sees it (the standard parser recurses, and is
quadratic in the parts of a dotted key), no value may hold a NUL byte or be a NaN or infinity,
placeholders are expanded by a strict parser of our own (never ``str.format``), and the
environment and arguments must fit what ``exec`` accepts.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import stat
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import jsonschema

from kfm_conformance.redact import is_maskable, sensitive_values
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

#: The largest profile read, in bytes. Real profiles are a few hundred bytes.
MAX_PROFILE_BYTES = 1 << 20
#: How deep tables and arrays may nest, and how many parts a dotted key may have.
MAX_NESTING = 32

#: The placeholders of ``pipeline.command``; ``{{`` and ``}}`` are literal braces.
PLACEHOLDERS = ("python", "profile_dir", "src", "workdir")

#: A pipeline name: letters, digits, ``.``, ``_``, ``-``; checked with ``fullmatch`` (a ``$``
#: in a Python pattern also matches before a trailing newline).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NAME_RULE = "letters, digits, '.', '_' and '-' only, starting with a letter or digit"


def exec_limits() -> tuple[int, int]:
    """What this kernel's ``exec`` accepts: (bytes of one argument or ``NAME=value`` string,
    bytes of arguments and environment together, pointers included). Linux caps one string at
    32 pages (``MAX_ARG_STRLEN``) and the whole at ``ARG_MAX``."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        page = 4096
    try:
        arg_max = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError):
        arg_max = -1
    if arg_max <= 0:
        arg_max = 128 * 1024
    return 32 * page, arg_max


def profile_exec_budget() -> int:
    """The share of ``ARG_MAX`` a profile's command and environment may take: a quarter, the
    rest is room for the harness's own variables, the capture endpoints, the wrapper (strace,
    the sandbox) and the expanded placeholders."""
    return exec_limits()[1] // 4


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
    """The declared exit code of each outcome; the defaults are :data:`BLUEPRINT_EXIT_CODES`."""

    published: int = BLUEPRINT_EXIT_CODES["published"]
    not_modified: int = BLUEPRINT_EXIT_CODES["not_modified"]
    usage: int = BLUEPRINT_EXIT_CODES["usage"]
    invalid_upstream: int = BLUEPRINT_EXIT_CODES["invalid_upstream"]
    upstream_refused: int = BLUEPRINT_EXIT_CODES["upstream_refused"]
    upstream_transient: int = BLUEPRINT_EXIT_CODES["upstream_transient"]
    io_error: int = BLUEPRINT_EXIT_CODES["io_error"]

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
    #: ``"serialized"``: two runs may be started at once in one working directory, and the
    #: pipeline keeps every guarantee (a lock, a wait, or a declared failure code).
    concurrent_runs: str | None = None


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
        """The command with its placeholders filled in (see :func:`expand_placeholders`; for
        ``[airflow]``, the DAG runner's)."""
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
        argv = []
        for index, part in enumerate(self.command):
            try:
                argv.append(expand_placeholders(part, values))
            except ValueError as exc:
                raise ConfigurationError(
                    f"{self.path}: pipeline.command[{index}]: bad placeholder ({exc})"
                ) from None
        return argv

    def writable_paths(self) -> list[str]:
        """Paths outside the working directory that the profile declares its runs may write
        (``[pipeline] writable``, relative to the profile's directory); nothing else is."""
        declared = self.raw.get("pipeline", {}).get("writable", [])
        return [str((self.profile_dir / p).resolve()) for p in declared]

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
        """Values that reports must never show, from the harness's ``environ`` and from
        ``[pipeline.env]``: declared secrets, known credentials (the lakeFS ones under the
        names the profile gives them too), variables whose name looks sensitive, and strings
        in a known token format (see :mod:`kfm_conformance.redact`)."""
        names = self.secret_env | KNOWN_SECRET_ENV
        names |= {self.lakefs_env[k] for k in ("access_key_id_env", "secret_access_key_env")}
        values = [environ.get(n, "") for n in names] + [self.env.get(n, "") for n in names]
        values += sensitive_values(environ) + sensitive_values(self.env)
        return sorted({v for v in values if v and is_maskable(v)})

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


def expand_placeholders(template: str, values: dict[str, str]) -> str:
    """Fill ``{name}`` placeholders in ``template`` from ``values``; ``{{`` and ``}}`` are
    literal braces. Anything else with a brace (``{src.__class__}``, ``{python[0]}``,
    ``{src!r}``, ``{}``, an unknown name, a lone brace) raises ``ValueError``: profile text is
    never given to ``str.format``."""
    out: list[str] = []
    i, n = 0, len(template)
    while i < n:
        char = template[i]
        if char == "{":
            if template.startswith("{{", i):
                out.append("{")
                i += 2
                continue
            close = template.find("}", i + 1)
            if close < 0:
                raise ValueError("a '{' with no closing '}'; write '{{' for a literal brace")
            name = template[i + 1 : close]
            if name not in values:
                shown = _shorten(name, 40)
                if any(c in name for c in ".[]!:{"):
                    problem = (
                        f"{{{shown}}}: only a bare name is allowed, no attribute, index, "
                        "conversion or format"
                    )
                else:
                    problem = f"unknown placeholder {{{shown}}}"
                raise ValueError(f"{problem}; known: " + " ".join(f"{{{k}}}" for k in values))
            out.append(values[name])
            i = close + 1
        elif char == "}":
            if not template.startswith("}}", i):
                raise ValueError("a '}' with no opening '{'; write '}}' for a literal brace")
            out.append("}")
            i += 2
        else:
            stops = [j for j in (template.find("{", i), template.find("}", i)) if j >= 0]
            end = min(stops, default=n)
            out.append(template[i:end])
            i = end
    return "".join(out)


def _shorten(text: str, limit: int = 200) -> str:
    """``text`` for a one-line message: control characters escaped, at most ``limit`` long."""
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "..."


def _render_key(part: object) -> str:
    """A key or index for a one-line message: as it is when plain, else quoted and escaped."""
    text = str(part)
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text):
        return text
    return json.dumps(text if len(text) <= 64 else text[:64] + "...")


def _join(parts: list[object]) -> str:
    """A key path as the profile's reader sees it: ``pipeline.command[2]``."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + _render_key(part)
    return text or "(top level)"


def _key_path(error: jsonschema.ValidationError) -> str:
    parts: list[object] = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.message, str):
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        parts.append(missing)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(str(k) for k in error.instance if k not in allowed)
        if extra:
            parts.append(extra[0])
            return _join(parts) + ": unknown key"
    return _join(parts)


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key_path(error)
    if key.endswith(": unknown key"):
        return key
    if error.validator == "required":
        return f"{key}: missing required key"
    if error.validator == "not":
        return f"{key}: must be a relative path inside the working directory"
    if error.validator == "pattern" and key == "pipeline.name":
        return f"{key}: {_shorten(repr(error.instance), 80)} is not a name: {NAME_RULE}"
    return f"{key}: {_shorten(error.message)}"


# -- bounds checked before and after parsing ---------------------------------------------------
#: TOML tokens that matter to the shape scan: strings and comments (skipped whole), brackets,
#: dots and bare key text; any other character ends a dotted key.
_TOML_TOKEN = re.compile(
    r'"""(?:[^"\\]|\\[\s\S]|"(?!""))*"""'  # multi-line basic string
    r"|'''[\s\S]*?'''"  # multi-line literal string
    r'|"(?:[^"\\\n]|\\.)*"'  # basic string
    r"|'[^'\n]*'"  # literal string
    r"|#[^\n]*"  # comment
    r"|[\[\]{}.]"
    r"|[A-Za-z0-9_-]+"
    r"|[ \t]+"
    r"|[\s\S]"
)


def check_toml_shape(text: str) -> str | None:
    """Why ``text`` is too deep to give to the TOML parser, or ``None``: arrays and inline
    tables nested more than :data:`MAX_NESTING` deep, or a dotted key or table header of more
    than :data:`MAX_NESTING` parts. Whatever else is wrong with it the parser reports."""
    depth = 0
    dots = 0
    line = 1
    for match in _TOML_TOKEN.finditer(text):
        token = match.group()
        first = token[0]
        if first in "[{":
            depth += 1
            dots = 0
            if depth > MAX_NESTING:
                return f"line {line}: nested more than {MAX_NESTING} levels deep"
        elif first in "]}":
            depth = max(0, depth - 1)
            dots = 0
        elif token == ".":
            dots += 1
            if dots >= MAX_NESTING:
                return f"line {line}: a dotted key of more than {MAX_NESTING} parts"
        elif not (first.isalnum() or first in "_- \t" or (first in "\"'" and len(token) > 1)):
            dots = 0  # not a key part: '=', ',', a newline, a comment
        line += token.count("\n")
    return None


def _check_values(data: Any) -> str | None:
    """Walk parsed data without recursion: nesting depth, NUL bytes in keys and strings, and
    numbers that are not finite (TOML allows ``nan`` and ``inf``; NaN passes every bound of a
    JSON Schema, since every comparison with it is false)."""
    stack: list[tuple[list[object], Any]] = [([], data)]
    while stack:
        path, value = stack.pop()
        if len(path) > MAX_NESTING:
            return f"{_join(path[:MAX_NESTING])}: nested more than {MAX_NESTING} levels deep"
        if isinstance(value, str):
            if "\x00" in value:
                return f"{_join(path)}: contains a NUL byte"
        elif isinstance(value, float):
            if not math.isfinite(value):
                return f"{_join(path)}: must be a finite number, not {value}"
        elif isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in str(key):
                    return f"{_join([*path, key])}: the key contains a NUL byte"
                stack.append(([*path, key], item))
        elif isinstance(value, list):
            stack.extend(([*path, index], item) for index, item in enumerate(value))
    return None


def _check_exec_size(command: list[str], env: dict[str, str]) -> str | None:
    """The command and ``[pipeline.env]`` must fit what ``exec`` accepts, with room to spare
    for what the harness adds: one line naming what is too big, or ``None``."""
    per_string, arg_max = exec_limits()
    budget = profile_exec_budget()
    pointer = 8
    total = 0
    for index, part in enumerate(command):
        size = len(part.encode("utf-8", "surrogatepass")) + 1
        if size > per_string:
            return (
                f"pipeline.command[{index}]: {size} bytes; exec accepts at most {per_string} "
                "bytes per argument"
            )
        total += size + pointer
    for name, value in env.items():
        if not name or "=" in name:
            return f"pipeline.env.{_render_key(name)}: not a variable name exec can pass"
        size = len(f"{name}={value}".encode("utf-8", "surrogatepass")) + 1
        if size > per_string:
            return (
                f"pipeline.env.{_render_key(name)}: {size} bytes; exec accepts at most "
                f"{per_string} bytes per variable (NAME=value)"
            )
        total += size + pointer
    if total > budget:
        return (
            f"pipeline.env: the command and environment take {total} bytes; at most {budget} "
            f"(a quarter of this system's ARG_MAX, {arg_max}: the harness needs the rest)"
        )
    return None


def parse_profile(data: dict[str, Any], path: Path, text: bytes = b"") -> Profile:
    """Validate already-parsed TOML data and build a :class:`Profile`."""
    problem = _check_values(data)
    if problem:
        raise ConfigurationError(f"{path}: {problem}")
    validator = jsonschema.Draft202012Validator(profile_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        raise ConfigurationError(f"{path}: {_describe(errors[0])}")
    pipeline = data["pipeline"]
    if not NAME_PATTERN.fullmatch(pipeline["name"]):
        raise ConfigurationError(
            f"{path}: pipeline.name: {_shorten(repr(pipeline['name']), 80)} is not a name: "
            + NAME_RULE
        )
    paths = [("pipeline.output", pipeline["output"])]
    paths += [(f"pipeline.state[{i}]", s) for i, s in enumerate(pipeline.get("state") or [])]
    paths += [(f"provenance.{k}", v) for k, v in data.get("provenance", {}).items()]
    for key, relative in paths:
        if any(ord(c) < 32 or ord(c) == 127 for c in relative):
            raise ConfigurationError(f"{path}: {key}: a path must not hold control characters")
    known = dict.fromkeys(PLACEHOLDERS, "")
    for index, part in enumerate(pipeline.get("command", [])):
        try:
            expand_placeholders(part, known)
        except ValueError as exc:
            raise ConfigurationError(
                f"{path}: pipeline.command[{index}]: bad placeholder ({exc})"
            ) from None
    problem = _check_exec_size(pipeline.get("command", []), pipeline.get("env", {}))
    if problem:
        raise ConfigurationError(f"{path}: {problem}")
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
            concurrent_runs=limits.get("concurrent_runs"),
        ),
        lakefs_env={**DEFAULT_LAKEFS_ENV, **data.get("lakefs", {})},
        secret_env=frozenset(pipeline.get("secret_env", [])),
        services=dict(data.get("services", {})),
        provenance=dict(data.get("provenance", {})),
        digest=hashlib.sha256(text).hexdigest() if text else "",
        raw=data,
    )


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    for test, kind in _FILE_KINDS:
        if test(mode):
            return kind
    return "not a regular file"


def read_profile_bytes(location: Path, cap: int = MAX_PROFILE_BYTES) -> bytes:
    """The bytes of a profile: a regular file of at most ``cap`` bytes. A FIFO, a device or a
    directory is refused before it is opened (opening a FIFO blocks, ``/dev/zero`` never
    ends), and at most ``cap + 1`` bytes are ever read."""

    def refuse(why: str) -> NoReturn:
        raise ConfigurationError(f"{location}: {why}")

    try:
        info = os.stat(location)
    except FileNotFoundError:
        refuse("profile not found")
    except NotADirectoryError:
        refuse("profile not found (a parent is not a directory)")
    except (OSError, ValueError) as exc:
        refuse(f"cannot read profile ({getattr(exc, 'strerror', None) or exc})")
    if stat.S_ISDIR(info.st_mode):
        refuse("profile is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        refuse(f"profile is {_kind(info.st_mode)}, not a regular file")
    if info.st_size > cap:
        refuse(f"profile is {info.st_size} bytes; at most {cap} are read")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(location, flags)
    except OSError as exc:
        refuse(f"cannot read profile ({exc.strerror})")
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):  # swapped between the stat and the open
            refuse(f"profile is {_kind(opened.st_mode)}, not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= cap:
            chunk = os.read(fd, min(1 << 16, cap + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        refuse(f"cannot read profile ({exc.strerror})")
    finally:
        os.close(fd)
    if size > cap:
        refuse(f"profile is larger than {cap} bytes")
    return b"".join(chunks)


def load_profile(path: str | Path) -> Profile:
    """Load and validate a profile file. Raises :class:`ConfigurationError` with one line."""
    location = Path(path)
    text = read_profile_bytes(location)
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigurationError(f"{location}: profile is not UTF-8 text") from None
    problem = check_toml_shape(decoded)
    if problem:
        raise ConfigurationError(f"{location}: bad profile: {problem}")
    try:
        data = tomllib.loads(decoded)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{location}: bad TOML: {_shorten(str(exc))}") from None
    except RecursionError:
        raise ConfigurationError(f"{location}: bad profile: nested too deeply") from None
    except (ValueError, MemoryError) as exc:  # e.g. an integer of more than 4300 digits
        raise ConfigurationError(f"{location}: bad TOML: {_shorten(str(exc))}") from None
    return parse_profile(data, location.resolve(), text)
