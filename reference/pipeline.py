#!/usr/bin/env python3
"""KFM reference ingestion pipeline: the blueprint's HTTP change-detection seed, hardened.

Usage: ``SRC=<url> python pipeline.py`` or ``python pipeline.py <url>`` (SRC wins, as in the
seed), run in the working directory that should hold ``out/`` and ``.state/``.

What it does, in order, under an exclusive ``flock`` on ``.state/lock``:

1. Reads ``.state/state.json`` and checks that the published output still has the digest the
   state recorded. Only then does it send the stored validators back verbatim
   (``If-None-Match`` = stored ETag, ``If-Modified-Since`` = stored Last-Modified); otherwise
   the request is unconditional so that a lost or altered output is republished.
2. Fetches with a bounded number of redirects, a total time budget (not just a per-read
   timeout) and a size cap. The decoded body is streamed to a scratch file and, at the same
   time, cut into pieces of whole rows that worker threads parse with pyarrow's JSON reader
   and encode into a temporary Parquet file (see "Parsing" below). The payload is never held
   as Python objects.
3. Validates strictly: a non-empty JSON array of JSON objects, strictly valid UTF-8, no row
   without a value, one JSON type per column, no NaN/Infinity, no duplicate key in an object,
   no object-valued column that only ever holds ``{}`` (Parquet cannot store it).
4. Publishes durably: temp file in the output's own directory, fsync, ``os.replace``, fsync of
   the directory; then writes the state the same way (data first, state second). A 200 whose
   Parquet rendering is byte-identical to the published file leaves the file (and its inode)
   alone and only refreshes the validators.

Exit codes (the blueprint defaults): published 0, not_modified 0, usage 2,
invalid_upstream 65, upstream_refused 69, io_error 74, upstream_transient 75; an unexpected
internal error is 70. Every expected outcome ends with one line (stdout on success, stderr on
failure), never a traceback.

Schema-drift policy (within one payload and between runs):
- Columns are the union of the keys of all rows, in order of first appearance; a row that lacks
  a key gets null there. A row must carry at least one non-null value.
- One JSON type per column: a key whose values mix JSON types across rows (number vs string,
  boolean vs number, object vs array, ...) rejects the payload (invalid_upstream). ``null`` is
  compatible with every type. Integers and decimals are both JSON numbers: a column holding
  any non-integer number is written as float64. Strings stay strings (no date guessing).
- Between runs there is no pinned schema: each publish is a full snapshot of upstream, so an
  added, removed or retyped column is published as is, and the Parquet schema (and the
  OpenLineage schema facet) say so.

Parsing: the reference semantics is a whole-document parse that frames the body as one NDJSON
record (``{"rows":`` + body + ``}``) and reads it with ``pyarrow.json.read_json`` in a single
block, then flattens the ``list<struct>`` into a table. It is fast, but holds the whole body plus
pyarrow's intermediate form in memory (about 3x the payload) and runs on one core. The streaming
path therefore cuts the array at ``},{`` boundaries into ~4 MiB pieces as the bytes arrive,
frames each piece the same way and parses pieces on two threads while the download goes on; an
encoder thread validates them in order and appends them to the Parquet temp file. A cut that
falls inside a string or a nested value always yields a piece that is not valid JSON; such a
piece, or one whose column types differ from the first piece's in a way a whole-document parse
would resolve differently, sends the run to the whole-document parse of the scratch file. Row
groups have a fixed row count, so the Parquet bytes do not depend on how the body was cut or
which path parsed it. pyarrow does not validate UTF-8, so the bytes are checked while streaming.

Lineage (``OPENLINEAGE_URL``) and tracing (``OTEL_EXPORTER_OTLP_ENDPOINT``) are
set up only when configured; every exporter is bounded so that a slow or dead sink cannot hang
the run. The OpenTelemetry SDK and its OTLP protobuf encoder are imported then; the OpenLineage
run events are plain JSON (see :class:`LineageSink` for why not openlineage-python's client).
Every HTTP exchange (the fetch, the events, the spans) uses the standard library's
``http.client`` (see :func:`_http_connection`). Metrics are not exported: the blueprint asks for
traces, and the SDK's metrics pipeline cost about 30 ms of every run.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import queue
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import lakefs_promotion
import provenance_sidecars

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pyarrow as pa

EXIT_CODES: dict[str, int] = {
    "published": 0,
    "not_modified": 0,
    "unchanged": 0,
    "usage": 2,
    "invalid_upstream": 65,
    "internal_error": 70,
    "upstream_refused": 69,
    "io_error": 74,
    "upstream_transient": 75,
}

STATE_FORMAT = 1
DEFAULT_OUTPUT = "out/data.parquet"
STATE_DIR = ".state"
STATE_FILE = "state.json"
LOCK_FILE = "lock"
DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_FETCH_TIMEOUT_S = 60.0
DEFAULT_MAX_REDIRECTS = 5
RETRY_AFTER_MAX_S = 2.0
TELEMETRY_TIMEOUT_S = 2.0
USER_AGENT = "kfm-reference-pipeline/1"
JOB_NAME = "kfm-reference-ingest"
OL_PRODUCER = "urn:kfm:kfm-conformance:reference-pipeline"
OL_RUN_EVENT_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
ERROR_MESSAGE_FACET = (
    "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet"
)
SCHEMA_DATASET_FACET = (
    "https://openlineage.io/spec/facets/1-2-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet"
)

CHUNK_BYTES = 1 << 20
PIECE_BYTES = 4 << 20
MIN_BLOCK_BYTES = 256 << 10
# A streaming piece that found no row boundary within this many bytes (one huge row, or rows
# that are arrays of objects) gives up on streaming; the whole-document parse takes over.
MAX_PIECE_BYTES = 64 << 20
# pyarrow's JSON block size is an int32: the whole-document parse cannot go beyond this.
MAX_WHOLE_DOCUMENT_BYTES = (1 << 31) - 64
ROW_GROUP_ROWS = 1 << 17
PARSE_THREADS = 2
MAX_PIECES_IN_FLIGHT = 4
JSON_WS = b" \t\r\n"
FRAME_OPEN = b'{"rows":'
FRAME_CLOSE = b"}"

# Fixed writer options: the same rows always give the same bytes (no timestamps, no pandas or
# Arrow schema metadata; created_by is fixed per pyarrow version).
PARQUET_OPTIONS: dict[str, Any] = {
    "version": "2.6",
    "compression": "snappy",
    "write_statistics": True,
    "data_page_version": "1.0",
    "data_page_size": 1 << 20,
    # A small dictionary page limit makes high-cardinality string columns give up on dictionary
    # encoding early (faster, and smaller files); low-cardinality ones stay well under it.
    "dictionary_pagesize_limit": 256 << 10,
    "write_batch_size": 1024,
    "store_schema": False,
    "write_page_index": False,
    "write_page_checksum": False,
    "use_compliant_nested_type": True,
}

USAGE = "no URL: SRC=<url> python pipeline.py  (or: python pipeline.py <url>)"


class Outcome(Exception):
    """An expected end of a run: a kind from EXIT_CODES and a one-line message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def code(self) -> int:
        return EXIT_CODES[self.kind]


class _Fallback(Exception):
    """The streaming parse cannot decide: use the whole-document parse."""


class _Deadline(BaseException):
    """Raised from SIGALRM when the total fetch budget is spent (BaseException so that no
    library ``except Exception`` swallows it)."""


def _invalid(message: str) -> Outcome:
    return Outcome("invalid_upstream", message)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Config:
    url: str
    output: str  # absolute
    output_display: str  # as configured, for messages and the state
    state_dir: str  # absolute
    max_bytes: int
    fetch_timeout_s: float
    max_redirects: int


def _env_number(env: Mapping[str, str], name: str, default: float, *, integer: bool) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(int(raw)) if integer else float(raw)
    except ValueError:
        raise Outcome("usage", f"{name} must be a number, got {raw!r}") from None
    if value < 0 or value != value or value == float("inf"):
        raise Outcome("usage", f"{name} must be a finite number >= 0, got {raw!r}")
    return value


def load_config(argv: list[str], env: Mapping[str, str]) -> Config:
    url = env.get("SRC") or (argv[1] if len(argv) > 1 else "")
    if not url:
        raise Outcome("usage", USAGE)
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        valid = False
    if not valid:
        raise Outcome("usage", f"not an http(s) URL: {url!r}")
    output_display = env.get("KFM_OUTPUT") or DEFAULT_OUTPUT
    max_bytes = int(_env_number(env, "KFM_MAX_BYTES", DEFAULT_MAX_BYTES, integer=True))
    timeout = _env_number(env, "KFM_FETCH_TIMEOUT_S", DEFAULT_FETCH_TIMEOUT_S, integer=False)
    redirects = int(_env_number(env, "KFM_MAX_REDIRECTS", DEFAULT_MAX_REDIRECTS, integer=True))
    if timeout <= 0:
        raise Outcome("usage", "KFM_FETCH_TIMEOUT_S must be > 0")
    return Config(
        url=url,
        output=os.path.abspath(output_display),
        output_display=output_display,
        state_dir=os.path.abspath(STATE_DIR),
        max_bytes=max_bytes,
        fetch_timeout_s=timeout,
        max_redirects=redirects,
    )


# --------------------------------------------------------------------------- durable files


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dir(path: str) -> None:
    """Create ``path`` (and parents) durably: each new directory's parent is fsynced."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path:
        _ensure_dir(parent)
    try:
        os.mkdir(path)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return
    _fsync_dir(parent or ".")


def _temp_prefix(final_path: str) -> str:
    return "." + os.path.basename(final_path) + "."


def _remove_quietly(path: str | None) -> None:
    if path:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _cleanup_orphans(final_path: str) -> None:
    """Remove temp files left by a crashed earlier run (callers hold the lock, so no live run
    owns a temp file)."""
    directory = os.path.dirname(final_path)
    prefix = _temp_prefix(final_path)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(prefix) and name.endswith(".tmp"):
            _remove_quietly(os.path.join(directory, name))


def durable_replace(temp_path: str, final_path: str) -> None:
    """Rename a fully written and fsynced temp file over ``final_path``, then fsync the dir."""
    os.replace(temp_path, final_path)
    _fsync_dir(os.path.dirname(final_path))


def durable_write(final_path: str, data: bytes, mode: int) -> None:
    """Write ``data`` to ``final_path`` atomically: temp + fsync + replace + dir fsync."""
    directory = os.path.dirname(final_path)
    fd, temp_path = tempfile.mkstemp(dir=directory, prefix=_temp_prefix(final_path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        durable_replace(temp_path, final_path)
    except BaseException:
        _remove_quietly(temp_path)
        raise


def file_sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


# --------------------------------------------------------------------------- state


def load_state(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            state = json.loads(fh.read().decode("utf-8"))
    except FileNotFoundError:
        return {}
    except (ValueError, UnicodeDecodeError):
        # A corrupt state file is not trusted: the run fetches unconditionally and rewrites it.
        return {}
    return state if isinstance(state, dict) else {}


def _validator(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def conditional_headers(state: Mapping[str, Any], cfg: Config, output_sha: str | None) -> dict:
    """The validators to send back, verbatim; none unless the state describes the output that is
    actually there (same URL, same path, same digest)."""
    if (
        output_sha is None
        or state.get("format") != STATE_FORMAT
        or state.get("url") != cfg.url
        or state.get("output") != cfg.output_display
        or state.get("sha256") != output_sha
    ):
        return {}
    headers: dict[str, str] = {}
    etag = _validator(state.get("etag"))
    last_modified = _validator(state.get("last_modified"))
    if etag is not None:
        headers["If-None-Match"] = etag
    if last_modified is not None:
        headers["If-Modified-Since"] = last_modified
    return headers


def state_document(
    cfg: Config, etag: str | None, last_modified: str | None, sha: str, rows: int
) -> bytes:
    doc = {
        "format": STATE_FORMAT,
        "url": cfg.url,
        "output": cfg.output_display,
        "etag": etag,
        "last_modified": last_modified,
        "sha256": sha,
        "rows": rows,
    }
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


# --------------------------------------------------------------------------- fetch


class FetchDeadline:
    """A total time budget for the whole fetch (connect, redirects, retry, body), enforced with
    SIGALRM: a socket timeout only bounds each read, so a trickling server could
    otherwise hold a run forever."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.armed = False
        self.fired = False
        self.expires = 0.0
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.armed:
            self.armed = False
            self.fired = True
            raise _Deadline()

    def __enter__(self) -> FetchDeadline:
        self._previous = signal.signal(signal.SIGALRM, self._handler)
        self.expires = time.monotonic() + self.seconds
        self.armed = True
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def remaining(self) -> float:
        return max(0.0, self.expires - time.monotonic())

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Stop the clock while the run waits on its own parser rather than on the network."""
        if not self.armed:
            yield
            return
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        left = self.remaining()
        started = time.monotonic()
        try:
            yield
        finally:
            self.expires += time.monotonic() - started
            self.armed = True
            signal.setitimer(signal.ITIMER_REAL, max(0.001, left))

    def disarm(self) -> None:
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)

    def __exit__(self, *exc: object) -> None:
        self.disarm()
        signal.signal(signal.SIGALRM, self._previous or signal.SIG_DFL)


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_outcome(status: int, conditional: bool) -> Outcome | None:
    """Map a final HTTP status to an outcome; None means 'stream the body'."""
    if status == 200:
        return None
    if status == 304:
        if conditional:
            return Outcome("not_modified", "not modified (304)")
        return _invalid("304 Not Modified to an unconditional request")
    if status == 429 or 500 <= status <= 599:
        return Outcome("upstream_transient", f"upstream answered {status}; retry later")
    if 400 <= status <= 499:
        return Outcome("upstream_refused", f"upstream refused the request: HTTP {status}")
    return _invalid(f"unexpected HTTP status {status}")


def _broken_body_outcome(exc: BaseException) -> Outcome:
    """Classify a body that broke off: a reset or timeout is transient, a short or malformed
    message (Content-Length not honoured, cut chunked encoding) is an invalid upstream."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
            return Outcome("upstream_transient", f"connection lost while reading the body: {err}")
        if isinstance(err, TimeoutError):
            return Outcome("upstream_transient", f"timed out while reading the body: {err}")
        if isinstance(err, BaseException):
            todo.extend([err.__cause__, err.__context__])
            todo.extend(a for a in err.args if isinstance(a, BaseException))
    return _invalid(f"incomplete response body: {_one_line(exc)}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    # pyarrow names columns by their path inside the frame ("/rows/[]/a") and the frame's
    # record number ("in row 0"); neither means anything to the reader.
    text = text.replace("Column(/rows/[]/", "column(/").replace(" in row 0", "")
    return text if len(text) <= 300 else text[:297] + "..."


@dataclass
class FetchResult:
    status: int
    etag: str | None = None
    last_modified: str | None = None
    body_bytes: int = 0
    attempts: int = 1


class Utf8Check:
    """Strict UTF-8 validation of a byte stream (no U+FFFD substitution); ASCII chunks are
    checked with ``bytes.isascii`` only."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._pending = False
        self._offset = 0

    def feed(self, chunk: bytes, final: bool = False) -> None:
        try:
            if self._pending or not chunk.isascii() or final:
                self._decoder.decode(chunk, final)
                self._pending = bool(self._decoder.getstate()[0])
        except UnicodeDecodeError as exc:
            raise _invalid(
                f"body is not valid UTF-8 (byte offset {self._offset + exc.start}: {exc.reason})"
            ) from None
        self._offset += len(chunk)


REDIRECT_STATUSES = (301, 302, 303, 307, 308)


def _http_connection(parts: SplitResult, timeout: float) -> Any:
    """An ``http.client`` connection to the URL's host (``https`` with the default context).

    The standard library's client, not requests or urllib3: they cost about 60-80 ms of imports
    in every run, more than the run's own work on a small payload, and the pipeline needs
    only GET with redirects, streaming and gzip, and POST."""
    import http.client

    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {urlunsplit(parts)!r}")
    port = parts.port  # ValueError on a malformed port
    if parts.scheme == "https":
        import ssl

        return http.client.HTTPSConnection(
            parts.hostname, port, timeout=timeout, context=ssl.create_default_context()
        )
    return http.client.HTTPConnection(parts.hostname, port, timeout=timeout)


def _request_target(parts: SplitResult) -> str:
    return urlunsplit(("", "", parts.path or "/", parts.query, ""))


def _userinfo_headers(parts: SplitResult) -> dict[str, str]:
    """Basic credentials given in the URL itself (``http://user:pass@host/``), as browsers and
    requests send them."""
    if parts.username is None:
        return {}
    import base64
    from urllib.parse import unquote

    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}


def http_post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    """POST ``body`` and return the status (the answer's body is read and dropped)."""
    parts = urlsplit(url)
    connection = _http_connection(parts, timeout)
    try:
        connection.request(
            "POST",
            _request_target(parts),
            body=body,
            headers={"User-Agent": USER_AGENT, **_userinfo_headers(parts), **headers},
        )
        answer = connection.getresponse()
        answer.read()
        return int(answer.status)
    finally:
        connection.close()


class _Decoder:
    """The body's ``Content-Encoding`` undone as it streams: identity, gzip or deflate, with
    at most ``CHUNK_BYTES`` of output per step (a small gzip bomb cannot expand at once)."""

    def __init__(self, encoding: str) -> None:
        import zlib

        self.encoding = encoding
        self._zlib = zlib
        if encoding in ("", "identity"):
            self._inflater: Any = None
        elif encoding in ("gzip", "x-gzip"):
            self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._inflater = zlib.decompressobj()
        else:
            raise _invalid(f"unsupported Content-Encoding {encoding!r}")

    def feed(self, raw: bytes) -> Iterator[bytes]:
        if self._inflater is None:
            yield raw
            return
        data = raw
        try:
            while data:
                if self._inflater.eof:
                    raise _invalid(
                        f"corrupt Content-Encoding {self.encoding!r}: data after the end of "
                        "the compressed stream"
                    )
                out = self._inflater.decompress(data, CHUNK_BYTES)
                data = self._inflater.unconsumed_tail
                if out:
                    yield out
        except self._zlib.error as exc:
            raise _invalid(f"corrupt Content-Encoding {self.encoding!r}: {exc}") from None

    def close(self) -> Iterator[bytes]:
        if self._inflater is None:
            return
        try:
            tail = self._inflater.flush()
        except self._zlib.error as exc:
            raise _invalid(f"corrupt Content-Encoding {self.encoding!r}: {exc}") from None
        if tail:
            yield tail
        if not self._inflater.eof:
            raise _invalid(
                f"corrupt Content-Encoding {self.encoding!r}: the compressed stream ends early"
            )


def _get_following_redirects(cfg: Config, headers: Mapping[str, str]) -> tuple[Any, Any]:
    """GET the URL, following at most ``cfg.max_redirects`` redirects; returns the open
    connection and its response (the final one, whatever its status)."""
    import http.client

    url = cfg.url
    followed = 0
    while True:
        try:
            parts = urlsplit(url)
            connection = _http_connection(parts, cfg.fetch_timeout_s)
        except ValueError as exc:
            raise _invalid(f"unusable redirect or URL: {_one_line(exc)}") from None
        try:
            connection.request(
                "GET", _request_target(parts), headers={**_userinfo_headers(parts), **headers}
            )
            response = connection.getresponse()
        except TimeoutError as exc:
            connection.close()
            raise Outcome("upstream_transient", f"timed out: {_one_line(exc)}") from None
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise Outcome("upstream_transient", f"connection failed: {_one_line(exc)}") from None
        location = response.getheader("Location")
        if response.status not in REDIRECT_STATUSES or not location:
            return connection, response
        response.close()
        connection.close()
        followed += 1
        if followed > cfg.max_redirects:
            raise _invalid(f"more than {cfg.max_redirects} redirects (redirect loop?)")
        from urllib.parse import urljoin

        url = urljoin(url, location.strip())


def fetch(
    cfg: Config,
    headers: dict[str, str],
    on_chunk: Callable[[bytes], None],
    on_response: Callable[[int], None],
    deadline: FetchDeadline,
) -> FetchResult:
    """GET the URL and stream the decoded body into ``on_chunk``; raises Outcome."""
    import http.client

    request_headers = {
        "User-Agent": USER_AGENT,
        "Accept": "application/json",
        "Accept-Encoding": "gzip, deflate",
        **headers,
    }
    conditional = bool(headers)
    result = FetchResult(status=0)
    try:
        with deadline:
            attempt = 0
            while True:
                attempt += 1
                connection, response = _get_following_redirects(cfg, request_headers)
                result.status = response.status
                result.attempts = attempt
                wait = _retry_after_seconds(response.getheader("Retry-After"))
                if (
                    attempt == 1
                    and response.status in (429, 503)
                    and wait is not None
                    and wait <= RETRY_AFTER_MAX_S
                    and wait < deadline.remaining()
                ):
                    response.close()
                    connection.close()
                    time.sleep(wait)
                    continue
                break
            try:
                on_response(response.status)
                outcome = _status_outcome(response.status, conditional)
                if outcome is not None:
                    raise outcome  # a 304 with a body: the body is ignored
                result.etag = _validator(response.getheader("ETag"))
                result.last_modified = _validator(response.getheader("Last-Modified"))
                encoding = (response.getheader("Content-Encoding") or "").strip().lower()
                declared = (response.getheader("Content-Length") or "").strip()
                declared_len = int(declared) if declared.isdigit() else None
                identity = encoding in ("", "identity")
                if identity and declared_len is not None and declared_len > cfg.max_bytes:
                    raise _invalid(
                        f"body of {declared_len} bytes exceeds the cap of {cfg.max_bytes} bytes"
                    )
                decoder = _Decoder(encoding)
                utf8 = Utf8Check()
                received = 0
                on_wire = 0

                def deliver(chunk: bytes) -> None:
                    nonlocal received
                    received += len(chunk)
                    if received > cfg.max_bytes:
                        raise _invalid(f"body exceeds the cap of {cfg.max_bytes} bytes")
                    utf8.feed(chunk)
                    on_chunk(chunk)

                try:
                    while raw := response.read(CHUNK_BYTES):
                        on_wire += len(raw)
                        for chunk in decoder.feed(raw):
                            deliver(chunk)
                except TimeoutError as exc:
                    raise Outcome(
                        "upstream_transient", f"read timed out: {_one_line(exc)}"
                    ) from None
                except (OSError, http.client.HTTPException) as exc:
                    raise _broken_body_outcome(exc) from None
                if declared_len is not None and on_wire != declared_len:
                    raise _invalid(
                        f"body has {on_wire} bytes but Content-Length said {declared_len}"
                    )
                for chunk in decoder.close():
                    deliver(chunk)
                utf8.feed(b"", final=True)
                result.body_bytes = received
                return result
            finally:
                response.close()
                connection.close()
    except _Deadline:
        raise Outcome(
            "upstream_transient", f"fetch exceeded the total time budget of {cfg.fetch_timeout_s}s"
        ) from None


# --------------------------------------------------------------------------- parse + encode


@functools.cache
def _arrow() -> Any:
    """Import pyarrow (json, compute, parquet). NumPy is kept out of the import when pyarrow
    allows it (pyarrow >= 16 runs without it): it is never used here and importing it costs
    about a third of pyarrow's import time."""
    block_numpy = "numpy" not in sys.modules
    if block_numpy:
        sys.modules["numpy"] = None  # type: ignore[assignment]
    try:
        try:
            import pyarrow as pa
        except ImportError:
            if not block_numpy:
                raise
            del sys.modules["numpy"]
            block_numpy = False
            import pyarrow as pa
        import pyarrow._compute
        import pyarrow.json
        import pyarrow.parquet  # noqa: F401
    finally:
        if block_numpy and sys.modules.get("numpy", False) is None:
            del sys.modules["numpy"]
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        # The system allocator hands freed piece buffers back, which keeps the peak RSS low.
        pa.set_memory_pool(pa.system_memory_pool())
    return pa


def _compute(name: str, *args: Any) -> Any:
    """Call an Arrow compute kernel. ``pyarrow.compute`` builds a Python wrapper with a
    docstring for every kernel at import (~25 ms per run); the dispatcher it wraps does not."""
    try:
        from pyarrow._compute import call_function
    except ImportError:  # pragma: no cover - a pyarrow that moved it
        from pyarrow.compute import call_function
    return call_function(name, list(args))


def _first_true(mask: Any) -> int:
    """Index of the first true value (error messages only, so the full module is fine)."""
    import pyarrow.compute as pc

    return int(pc.index(mask, True).as_py())


def _strings_for_temporal(pa: Any, t: pa.DataType) -> pa.DataType:
    """pyarrow's JSON reader turns ISO-8601-looking strings into timestamps; a JSON string must
    stay a string, so such types are replaced by string (and the data re-read as text)."""
    types = pa.types
    if types.is_timestamp(t) or types.is_date(t) or types.is_time(t):
        return pa.string()
    if types.is_struct(t):
        return pa.struct([f.with_type(_strings_for_temporal(pa, f.type)) for f in t])
    if types.is_list(t):
        return pa.list_(t.value_field.with_type(_strings_for_temporal(pa, t.value_type)))
    return t


def _empty_struct_path(pa: Any, t: pa.DataType, path: str) -> str | None:
    if pa.types.is_struct(t):
        if t.num_fields == 0:
            return path
        for f in t:
            found = _empty_struct_path(pa, f.type, f"{path}.{f.name}")
            if found:
                return found
    if pa.types.is_list(t):
        return _empty_struct_path(pa, t.value_type, path + "[]")
    return None


def _non_finite_path(pa: Any, arr: Any, path: str) -> str | None:
    """Find a float column holding NaN or Infinity (pyarrow accepts these non-JSON literals)."""
    t = arr.type
    if pa.types.is_floating(t):
        all_finite = _compute("all", _compute("is_finite", arr)).as_py()
        return None if all_finite is not False else path
    if pa.types.is_struct(t):
        for i, f in enumerate(t):
            found = _non_finite_path(pa, arr.field(i), f"{path}.{f.name}")
            if found:
                return found
    if pa.types.is_list(t):
        return _non_finite_path(pa, arr.flatten(), path + "[]")
    return None


class ParquetSink:
    """Writes validated rows into a uniquely named temp file next to the output, in row groups
    of exactly ROW_GROUP_ROWS rows (so the bytes do not depend on how the rows arrived), hashing
    the bytes as they are written. Acts as the file object handed to pyarrow."""

    closed = False

    def __init__(self, pa: Any, final_path: str, schema: pa.Schema, mode: int) -> None:
        self._pa = pa
        self.schema = schema
        self._mode = mode
        fd, self.path = tempfile.mkstemp(
            dir=os.path.dirname(final_path), prefix=_temp_prefix(final_path), suffix=".tmp"
        )
        self._fh = os.fdopen(fd, "wb", buffering=1 << 20)
        self._sha = hashlib.sha256()
        self._size = 0
        self._pending: list[Any] = []
        self._pending_rows = 0
        self.rows = 0
        # Dictionary encoding only for top-level string columns: on unique numbers it costs time
        # and bytes (the dictionary overflows and the writer falls back to plain anyway).
        dictionary = [f.name for f in schema if pa.types.is_string(f.type)]
        self._writer = pa.parquet.ParquetWriter(
            self, schema, use_dictionary=dictionary, **PARQUET_OPTIONS
        )

    # -- file object protocol used by pyarrow
    def write(self, data: Any) -> int:
        self._sha.update(data)
        n = len(memoryview(data))
        self._size += n
        self._fh.write(data)
        return n

    def tell(self) -> int:
        return self._size

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:  # pyarrow does not own this sink; see finish()/discard()
        pass

    def writable(self) -> bool:
        return True

    # -- rows
    def add(self, table: Any) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        while self._pending_rows >= ROW_GROUP_ROWS:
            self._write_group(ROW_GROUP_ROWS)

    def _write_group(self, n: int) -> None:
        pa = self._pa
        combined = pa.concat_tables(self._pending) if len(self._pending) > 1 else self._pending[0]
        group = combined.slice(0, n).combine_chunks()
        self._writer.write_table(group, row_group_size=n)
        self.rows += n
        rest = combined.slice(n)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows -= n

    def finish(self) -> str:
        """Write the last row group and the footer; returns the file's sha256 (not yet
        durable: see commit())."""
        if self._pending_rows:
            self._write_group(self._pending_rows)
        self._writer.close()
        self._fh.flush()
        return self._sha.hexdigest()

    def commit(self) -> None:
        """Make the finished temp file durable before it is renamed over the output."""
        os.fchmod(self._fh.fileno(), self._mode)
        os.fsync(self._fh.fileno())
        self._fh.close()

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(Exception):
            self._fh.close()
        _remove_quietly(self.path)


class RowValidator:
    """Checks that decide a payload: they hold for whole rows, however the body was cut."""

    def __init__(self, pa: Any) -> None:
        self.pa = pa
        self.rows_seen = 0

    def check_schema(self, list_type: Any, streaming: bool = False) -> None:
        """Checks of the element type. A nested object column that only holds ``{}`` in one
        piece may have fields in another, so while streaming that case is left to the
        whole-document parse."""
        pa = self.pa
        if not pa.types.is_list(list_type):
            raise _invalid(f"payload is not a JSON array (top-level value typed {list_type})")
        row_type = list_type.value_type
        if pa.types.is_null(row_type):
            raise _invalid("payload is an empty JSON array (no rows)")
        if not pa.types.is_struct(row_type):
            raise _invalid(f"rows must be JSON objects, found {row_type}")
        if row_type.num_fields == 0:
            raise _invalid("rows have no fields ([{}] carries no data)")
        where = _empty_struct_path(pa, row_type, "")
        if where and streaming:
            raise _Fallback("a nested object column is empty in this piece")
        if where:
            raise _invalid(f"column {where.lstrip('.')!r} only ever holds empty objects")

    def check_rows(self, rows: Any) -> Any:
        """``rows`` is the StructArray of one piece; returns it as a Table."""
        pa = self.pa
        base = self.rows_seen
        if rows.null_count:
            idx = _first_true(_compute("is_null", rows))
            raise _invalid(f"row {base + idx} is null, not a JSON object")
        table = pa.Table.from_struct_array(rows)
        empty = None
        for column in table.columns:
            nulls = _compute("is_null", column)
            empty = nulls if empty is None else _compute("and", empty, nulls)
        if empty is not None and _compute("any", empty).as_py():
            raise _invalid(f"row {base + _first_true(empty)} has no non-null value (empty row)")
        where = _non_finite_path(pa, rows, "")
        if where:
            raise _invalid(f"column {where.lstrip('.')!r} holds NaN or Infinity (not JSON)")
        self.rows_seen += table.num_rows
        return table


def _read_framed(pa: Any, source: Any, size: int, schema: Any = None) -> Any:
    """Parse one framed document ``{"rows": [...]}`` as a single pyarrow JSON block."""
    pj = pa.json
    if schema is None:
        parse = pj.ParseOptions(newlines_in_values=True)
    else:
        parse = pj.ParseOptions(
            newlines_in_values=True, explicit_schema=schema, unexpected_field_behavior="error"
        )
    read = pj.ReadOptions(use_threads=False, block_size=size + 64)
    return pj.read_json(source, read_options=read, parse_options=parse)


def _rows_column(pa: Any, table: Any) -> Any | None:
    """The single ``rows`` value of a framed parse, or None if the frame was broken out of."""
    if table.num_rows != 1 or table.column_names != ["rows"]:
        return None
    column = table.column(0)
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _list_values(rows: Any) -> Any:
    """The elements of the single list value of a framed parse (``ListArray.flatten`` would
    import ``pyarrow.compute``; a fresh one-element list needs no offset arithmetic)."""
    if len(rows) == 1 and rows.offset == 0 and rows.offsets[0].as_py() == 0:
        values = rows.values
        if rows.offsets[1].as_py() == len(values):
            return values
    return rows.flatten()  # pragma: no cover - not produced by the JSON reader


def _frame_schema(pa: Any, list_type: Any) -> Any:
    return pa.schema([pa.field("rows", list_type)])


def _parse_piece(framed: bytes) -> Any:
    """Parse one framed piece of whole rows (on a parse thread); returns its list<struct> value.

    Raises _Fallback when the piece is not valid JSON: the cut may have been a bad one."""
    pa = _arrow()
    try:
        rows = _rows_column(pa, _read_framed(pa, pa.py_buffer(framed), len(framed)))
        if rows is None:
            raise _Fallback("a piece broke out of its frame")
        fixed = _strings_for_temporal(pa, rows.type)
        if fixed != rows.type:
            schema = _frame_schema(pa, fixed)
            rows = _rows_column(pa, _read_framed(pa, pa.py_buffer(framed), len(framed), schema))
            if rows is None:  # pragma: no cover - the same bytes parsed a moment ago
                raise _Fallback("a piece broke out of its frame")
    except pa.ArrowInvalid as exc:
        raise _Fallback(str(exc)) from None
    return rows


class StreamingTransformer:
    """Parses pieces of whole rows on PARSE_THREADS threads while the download goes on; an
    encoder thread takes the results in order, validates them, conforms them to the first
    piece's columns and appends them to the Parquet temp file."""

    def __init__(self, final_path: str, mode: int) -> None:
        self.final_path = final_path
        self.mode = mode
        self.error: BaseException | None = None
        self.sink: ParquetSink | None = None
        self._validator: RowValidator | None = None
        self._row_type: Any = None
        self._slots = threading.BoundedSemaphore(MAX_PIECES_IN_FLIGHT)
        self._ordered: queue.SimpleQueue[Future[Any] | None] = queue.SimpleQueue()
        self._pool: ThreadPoolExecutor | None = None
        self._encoder: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        """Start the threads and import pyarrow on one of them (a 304 never gets here)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(PARSE_THREADS, thread_name_prefix="kfm-parse")
            self._pool.submit(_arrow)
            self._encoder = threading.Thread(
                target=self._encode_loop, name="kfm-encode", daemon=True
            )
            self._encoder.start()

    def submit(self, piece: bytes) -> None:
        self.start()
        pool = self._pool
        if pool is None:  # pragma: no cover - start() just made it
            raise RuntimeError("transformer not started")
        self._slots.acquire()  # bounds the memory held by pieces not yet encoded
        self._ordered.put(pool.submit(_parse_piece, piece))

    def close(self) -> None:
        """Wait until every submitted piece has been processed (or skipped after an error)."""
        if not self._closed:
            self._closed = True
            if self._encoder is not None:
                self._ordered.put(None)
                self._encoder.join()
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)

    def cancel(self) -> None:
        """Stop without encoding what is still queued, and drop the temp file."""
        if self.error is None:
            self.error = _Fallback("cancelled")
        self.close()
        if self.sink is not None:
            self.sink.discard()
            self.sink = None

    def _encode_loop(self) -> None:
        while True:
            future = self._ordered.get()
            if future is None:
                return
            try:
                if self.error is None:
                    self._encode(future.result())
            except BaseException as exc:
                if self.error is None:
                    self.error = exc
            finally:
                self._slots.release()

    def _encode(self, rows: Any) -> None:
        pa = _arrow()
        validator = self._validator
        if validator is None:
            validator = self._validator = RowValidator(pa)
            validator.check_schema(rows.type, streaming=True)
            self._row_type = rows.type.value_type
        else:
            validator.check_schema(rows.type, streaming=True)
        table = validator.check_rows(_list_values(rows))
        table = _conform(pa, table, self._row_type)
        if self.sink is None:
            self.sink = ParquetSink(pa, self.final_path, table.schema, self.mode)
        self.sink.add(table)


def _conform(pa: Any, table: Any, row_type: Any) -> Any:
    """Give a later piece the first piece's columns (order and types), as a whole-document
    parse would: a column the piece lacks, or holds only nulls for, becomes a null column of the
    first piece's type; integers in a float64 column become float64. Anything else (a new
    column, another type) needs the whole-document parse to decide the types."""
    names = table.column_names
    if names == [f.name for f in row_type] and all(
        column.type == f.type for column, f in zip(table.columns, row_type, strict=True)
    ):
        return table
    known = {f.name for f in row_type}
    if any(name not in known for name in names):
        raise _Fallback("a later piece has a column the first one did not")
    columns = []
    for f in row_type:
        if f.name not in names:
            columns.append(pa.nulls(table.num_rows, f.type))
            continue
        column = table.column(f.name)
        if column.type != f.type:
            if pa.types.is_null(column.type):
                column = pa.nulls(table.num_rows, f.type)
            elif pa.types.is_int64(column.type) and pa.types.is_float64(f.type):
                # Integer literals in a float column: the whole-document parse would have
                # read them as float64 too (same rounding; safe=False allows > 2**53).
                column = column.cast(f.type, safe=False)
            else:
                raise _Fallback(f"column {f.name!r} typed differently in a later piece")
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=pa.schema(list(row_type)))


class Splitter:
    """Cuts the top-level JSON array, as its bytes stream in, into framed pieces of whole rows.

    A cut is made after a ``}`` that is followed by ``,``, optional whitespace and ``{``, looked
    for in the latest chunk once the piece is big enough. Such a point may lie inside a string
    or a nested value; the piece is then not valid JSON and the run falls back to the
    whole-document parse (see the module docstring). Each byte is copied once, into the framed
    piece handed to ``submit``."""

    def __init__(self, submit: Callable[[bytes], None], piece_bytes: int = PIECE_BYTES) -> None:
        self._submit = submit
        self._piece_bytes = piece_bytes
        self._block_bytes = min(MIN_BLOCK_BYTES, piece_bytes)
        self._chunks: list[Any] = []  # blocks of at least _block_bytes, searched for cuts
        self._small = bytearray()  # small chunks (e.g. one HTTP chunk per row) coalesced
        self._size = 0
        self.state = "start"  # start -> body -> done | off

    def feed(self, chunk: bytes) -> None:
        if self.state == "off":
            return
        if self.state == "start":
            stripped = chunk.lstrip(JSON_WS)
            if not stripped:
                return
            if stripped[:1] != b"[":
                first = stripped[:1].decode("latin-1")
                raise _invalid(f"payload is not a JSON array (it starts with {first!r})")
            self.state = "body"
            chunk = stripped[1:]
        if not chunk:
            return
        self._size += len(chunk)
        if not self._small and len(chunk) >= self._block_bytes:
            self._chunks.append(chunk)
        else:
            # A row boundary split across two small chunks would never be found in either.
            self._small += chunk
            if len(self._small) < self._block_bytes:
                return
            self._chunks.append(bytes(self._small))
            self._small = bytearray()
        if self._size >= self._piece_bytes:
            self._cut()

    def _cut(self) -> None:
        last = self._chunks[-1]
        size = len(last)
        end = size
        while True:
            k = last.rfind(b"},", 0, end)
            if k < 0:
                break
            j = k + 2
            while j < size and last[j] in JSON_WS:
                j += 1
            if j < size and last[j] == 0x7B:  # "{"
                view = memoryview(last)
                self._chunks[-1] = view[: k + 1]
                self._emit(self._chunks)
                rest = bytes(view[k + 2 :])
                self._chunks = [rest]
                self._size = len(rest) + len(self._small)
                return
            end = k + 1
        if self._size > MAX_PIECE_BYTES:
            self.go_off()

    def _emit(self, parts: list[Any]) -> None:
        self._submit(b"".join([FRAME_OPEN, b"[", *parts, b"]", FRAME_CLOSE]))

    def go_off(self) -> None:
        self.state = "off"
        self._chunks = []
        self._small = bytearray()
        self._size = 0

    def finish(self) -> bool:
        """Submit the last piece; False if the stream did not end like an array."""
        if self.state == "off":
            return False
        if self.state == "start":
            raise _invalid("empty body (no JSON value)")
        tail = b"".join([*self._chunks, self._small]).rstrip(JSON_WS)
        self._chunks = []
        self._small = bytearray()
        self.state = "done"
        if not tail.endswith(b"]"):
            return False
        if tail[:-1].strip(JSON_WS):
            self._emit([memoryview(tail)[:-1]])
        return True


def transform_whole_document(path: str, size: int, final_path: str, mode: int) -> ParquetSink:
    """The reference parse: the framed scratch file read as a single pyarrow JSON block."""
    pa = _arrow()
    if size > MAX_WHOLE_DOCUMENT_BYTES:
        raise _invalid(f"payload of {size} bytes is too large for a whole-document parse")
    try:
        parsed = _read_framed(pa, path, size)
        rows = _rows_column(pa, parsed)
        if rows is None:
            raise _invalid("body is not a single JSON value")
        validator = RowValidator(pa)
        validator.check_schema(rows.type)
        fixed = _strings_for_temporal(pa, rows.type)
        if fixed != rows.type:
            del parsed, rows
            parsed = _read_framed(pa, path, size, _frame_schema(pa, fixed))
            rows = _rows_column(pa, parsed)
            if rows is None:  # pragma: no cover
                raise _invalid("body is not a single JSON value")
        del parsed
    except pa.ArrowInvalid as exc:
        raise _invalid(f"body is not valid JSON of the expected shape: {_one_line(exc)}") from None
    table = validator.check_rows(_list_values(rows))
    del rows
    sink = ParquetSink(pa, final_path, table.schema, mode)
    try:
        for offset in range(0, table.num_rows, ROW_GROUP_ROWS):
            sink.add(table.slice(offset, ROW_GROUP_ROWS))
    except BaseException:
        sink.discard()
        raise
    return sink


# --------------------------------------------------------------------------- telemetry


def _uuid7() -> str:
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (rand >> 68) << 64  # 12 bits rand_a
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def _redacted_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = "REDACTED:REDACTED@" + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _dataset_namespace(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{host}:{port}", parts.path or "/"


def _bounded(tasks: list[tuple[str, Callable[[], Any]]], timeout: float) -> None:
    """Run each (name, task) on its own daemon thread, all at once, and wait at most ``timeout``
    seconds in total: a slow or dead telemetry sink costs a bounded delay, never a hang."""
    errors: dict[str, BaseException] = {}

    def runner(name: str, task: Callable[[], Any]) -> None:
        try:
            if task() is False:
                raise RuntimeError("not confirmed in time")
        except BaseException as exc:
            errors[name] = exc

    threads = [
        (
            name,
            threading.Thread(target=runner, args=(name, task), name="kfm-telemetry", daemon=True),
        )
        for name, task in tasks
    ]
    for _, thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for name, thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            _warn(f"{name}: no answer within {timeout:.1f}s, moving on")
        elif name in errors:
            _warn(f"{name} failed: {_one_line(errors[name])}")


def _warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


def _ol_facet(schema_url: str, **fields: Any) -> dict[str, Any]:
    return {"_producer": OL_PRODUCER, "_schemaURL": schema_url, **fields}


@dataclass
class LineageSink:
    """Where OpenLineage run events go: ``POST {OPENLINEAGE_URL}/{OPENLINEAGE_ENDPOINT}``.

    The events are built here as plain JSON objects, not with openlineage-python: its client
    imports every transport it has (Kafka, async HTTP, cloud services) on first use, about
    0.13 s of CPU in a run that otherwise takes 0.25 s. Only the HTTP transport of the
    standard environment is honoured: ``OPENLINEAGE_URL``, ``OPENLINEAGE_ENDPOINT``
    (``api/v1/lineage``), ``OPENLINEAGE_API_KEY`` (sent as a bearer token),
    ``OPENLINEAGE_DISABLED``.
    """

    url: str
    headers: dict[str, str]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LineageSink:
        endpoint = (env.get("OPENLINEAGE_ENDPOINT") or "api/v1/lineage").lstrip("/")
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if env.get("OPENLINEAGE_API_KEY"):
            headers["Authorization"] = f"Bearer {env['OPENLINEAGE_API_KEY']}"
        return cls(f"{env['OPENLINEAGE_URL'].rstrip('/')}/{endpoint}", headers)

    def emit(self, event: dict[str, Any]) -> None:
        """POST one event; a refusal raises (the caller warns and moves on)."""
        body = json.dumps(event, separators=(",", ":")).encode()
        status = http_post(self.url, body, self.headers, TELEMETRY_TIMEOUT_S)
        if status >= 300:
            raise RuntimeError(f"the lineage endpoint answered {status}")


def _otlp_setting(env: Mapping[str, str], name: str, signal_name: str = "TRACES") -> str:
    return (
        env.get(f"OTEL_EXPORTER_OTLP_{signal_name}_{name}")
        or env.get(f"OTEL_EXPORTER_OTLP_{name}")
        or ""
    ).strip()


def otlp_traces_target(env: Mapping[str, str]) -> tuple[str, dict[str, str], bool]:
    """Where OTLP/HTTP traces go, from the standard variables: the URL (the signal's own
    endpoint verbatim, else the base endpoint + ``/v1/traces``), the extra headers
    (``k=v,k2=v2``, percent-decoded) and whether to gzip. Only ``http/protobuf`` is spoken."""
    from urllib.parse import unquote

    protocol = _otlp_setting(env, "PROTOCOL")
    if protocol and protocol != "http/protobuf":
        raise ValueError(f"OTLP protocol {protocol!r} is not supported (only http/protobuf)")
    url = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if not url:
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or "http://localhost:4318"
        url = base.rstrip("/") + "/v1/traces"
    headers: dict[str, str] = {}
    for item in _otlp_setting(env, "HEADERS").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            headers[unquote(key.strip())] = unquote(value.strip())
    gzip_body = _otlp_setting(env, "COMPRESSION").lower() == "gzip"
    return url, headers, gzip_body


def otlp_span_exporter(env: Mapping[str, str], timeout: float) -> Any:
    """An OpenTelemetry SDK span exporter that encodes with the OTLP protobuf encoder of
    ``opentelemetry-exporter-otlp-proto-common`` and POSTs with :func:`http_post`.

    The SDK's own OTLP/HTTP exporter sends through requests, whose import alone (about 60 ms)
    would be a sixth of a run of the reference; the encoding, the batching and the span
    model stay the SDK's."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    url, extra_headers, gzip_body = otlp_traces_target(env)
    headers = {"Content-Type": "application/x-protobuf", **extra_headers}
    if gzip_body:
        headers["Content-Encoding"] = "gzip"

    class OtlpHttpSpanExporter(SpanExporter):
        def export(self, spans: Any) -> Any:
            body = encode_spans(spans).SerializePartialToString()
            if gzip_body:
                import gzip

                body = gzip.compress(body)
            try:
                status = http_post(url, body, headers, timeout)
            except OSError as exc:
                _warn(f"OpenTelemetry traces: {_one_line(exc)}")
                return SpanExportResult.FAILURE
            if 200 <= status < 300:
                return SpanExportResult.SUCCESS
            _warn(f"OpenTelemetry traces: the collector answered {status}")
            return SpanExportResult.FAILURE

        def shutdown(self) -> None:
            return None

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    return OtlpHttpSpanExporter()


class Telemetry:
    """OpenLineage run events and OpenTelemetry spans, each only when configured."""

    def __init__(self, cfg: Config, env: Mapping[str, str]) -> None:
        self.cfg = cfg
        self.run_id = _uuid7()
        self.lineage: LineageSink | None = None
        self.tracer: Any = None
        self.tracer_provider: Any = None
        self.root: Any = None
        self.namespace = env.get("OPENLINEAGE_NAMESPACE") or "kfm"
        if env.get("OPENLINEAGE_URL"):
            self._init_lineage(env)
        if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            self._init_otel(env)

    @property
    def configured(self) -> bool:
        return self.lineage is not None or self.tracer is not None

    # -- setup
    def _init_lineage(self, env: Mapping[str, str]) -> None:
        if env.get("OPENLINEAGE_DISABLED", "").strip().lower() in ("1", "true", "yes"):
            return
        self.lineage = LineageSink.from_env(env)

    def _init_otel(self, env: Mapping[str, str]) -> None:
        import logging

        logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            resource = Resource.create({})
            if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
                resource = resource.merge(Resource({"service.name": "kfm-reference-pipeline"}))
            exporter = otlp_span_exporter(env, self._otlp_timeout(env, "TRACES"))
            provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60000))
            self.tracer_provider = provider
            self.tracer = provider.get_tracer("kfm-reference-pipeline", "1")
        except Exception as exc:
            _warn(f"OpenTelemetry tracing disabled: {_one_line(exc)}")

    @staticmethod
    def _otlp_timeout(env: Mapping[str, str], signal_name: str) -> float:
        raw = env.get(f"OTEL_EXPORTER_OTLP_{signal_name}_TIMEOUT") or env.get(
            "OTEL_EXPORTER_OTLP_TIMEOUT"
        )
        try:
            configured = float(raw) / 1000.0 if raw else TELEMETRY_TIMEOUT_S
        except ValueError:
            configured = TELEMETRY_TIMEOUT_S
        return max(0.1, min(configured, TELEMETRY_TIMEOUT_S))

    # -- spans
    def start(self) -> None:
        if self.tracer is not None:
            from opentelemetry.trace import SpanKind

            self.root = self.tracer.start_span(
                "ingest",
                kind=SpanKind.INTERNAL,
                attributes={
                    "openlineage.run_id": self.run_id,
                    "kfm.job.name": JOB_NAME,
                    "kfm.output.path": self.cfg.output,
                    # url.full belongs on the HTTP client span (fetch), not on the root.
                    "kfm.source.url": _redacted_url(self.cfg.url),
                },
            )
        if self.lineage is not None:
            _bounded([self._sender("START", outputs=[], error=None)], TELEMETRY_TIMEOUT_S + 0.5)

    def step(
        self, name: str, attributes: Mapping[str, Any] | None = None, client: bool = False
    ) -> Any:
        """Start a child span of the root span (None when tracing is off)."""
        if self.tracer is None:
            return None
        from opentelemetry import trace

        kind = trace.SpanKind.CLIENT if client else trace.SpanKind.INTERNAL
        context = trace.set_span_in_context(self.root) if self.root is not None else None
        return self.tracer.start_span(name, context=context, attributes=attributes, kind=kind)

    @staticmethod
    def end_step(span: Any, error: Outcome | BaseException | None = None) -> None:
        if span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        if error is not None:
            kind = error.kind if isinstance(error, Outcome) else type(error).__name__
            if not (isinstance(error, Outcome) and error.code == 0):
                span.set_attribute("error.type", kind)
                span.set_status(Status(StatusCode.ERROR, _describe(error)))
        span.end()

    # -- lineage
    def _sender(
        self, state: str, outputs: list[dict[str, Any]], error: str | None
    ) -> tuple[str, Callable[[], None]]:
        """The task that emits one run event (see _bounded)."""
        sink = self.lineage
        assert sink is not None, "lineage is not configured"

        def send() -> None:
            from datetime import UTC, datetime

            run_facets: dict[str, Any] = {}
            if error is not None:
                run_facets["errorMessage"] = _ol_facet(
                    ERROR_MESSAGE_FACET, message=error, programmingLanguage="python"
                )
            namespace, name = _dataset_namespace(self.cfg.url)
            sink.emit(
                {
                    "eventType": state,
                    "eventTime": datetime.now(UTC).isoformat(),
                    "run": {"runId": self.run_id, "facets": run_facets},
                    "job": {"namespace": self.namespace, "name": JOB_NAME, "facets": {}},
                    "inputs": [{"namespace": namespace, "name": name, "facets": {}}],
                    "outputs": outputs,
                    "producer": OL_PRODUCER,
                    "schemaURL": OL_RUN_EVENT_SCHEMA,
                }
            )

        return f"OpenLineage {state}", send

    def _output_dataset(self, columns: list[tuple[str, str]]) -> dict[str, Any]:
        fields = [{"name": n, "type": t} for n, t in columns]
        return {
            "namespace": "file",
            "name": self.cfg.output,
            "facets": {"schema": _ol_facet(SCHEMA_DATASET_FACET, fields=fields)},
        }

    def finish(self, outcome: Outcome, rows: int, columns: list[tuple[str, str]] | None) -> None:
        """Close the run: the terminal lineage event and the exporters' flushes, in parallel."""
        tasks: list[tuple[str, Callable[[], Any]]] = []
        if self.lineage is not None:
            try:
                outputs = [self._output_dataset(columns)] if columns is not None else []
            except Exception as exc:
                _warn(f"OpenLineage output facet failed: {_one_line(exc)}")
                outputs = []
            if outcome.code == 0:
                tasks.append(self._sender("COMPLETE", outputs=outputs, error=None))
            else:
                message = f"{outcome.kind}: {outcome.message}"
                tasks.append(self._sender("FAIL", outputs=[], error=message))
        timeout_ms = int(TELEMETRY_TIMEOUT_S * 1000)
        if self.root is not None:
            from opentelemetry.trace import Status, StatusCode

            self.root.set_attribute("kfm.outcome", outcome.kind)
            self.root.set_attribute("process.exit.code", outcome.code)
            self.root.set_attribute("kfm.rows_written", rows)
            if outcome.code == 0:
                self.root.set_status(Status(StatusCode.OK))
            else:
                self.root.set_attribute("error.type", outcome.kind)
                self.root.set_status(Status(StatusCode.ERROR, _describe(outcome)))
            self.root.end()
            provider = self.tracer_provider
            tasks.append(("OpenTelemetry traces", lambda: provider.force_flush(timeout_ms)))
        if tasks:
            _bounded(tasks, TELEMETRY_TIMEOUT_S + 0.5)


def _describe(error: BaseException) -> str:
    if isinstance(error, Outcome):
        return f"{error.kind}: {error.message}"
    return _one_line(error)


# --------------------------------------------------------------------------- the run


@dataclass
class RunReport:
    outcome: Outcome
    rows: int = 0
    published: bool = False  # a new version of the output was published
    columns: list[tuple[str, str]] | None = None  # its Parquet columns, when lineage wants them


@contextlib.contextmanager
def _locked(state_dir: str) -> Iterator[None]:
    fd = os.open(os.path.join(state_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def run(cfg: Config, tele: Telemetry) -> RunReport:
    """One run: take the lock, then read state -> fetch -> transform -> publish -> write state."""
    mode = _file_mode()
    with contextlib.ExitStack() as stack:
        try:
            _ensure_dir(cfg.state_dir)
            _ensure_dir(os.path.dirname(cfg.output))
            stack.enter_context(_locked(cfg.state_dir))
        except OSError as exc:
            raise Outcome(
                "io_error", f"cannot prepare {STATE_DIR}/ or the output directory: {exc}"
            ) from None
        return _run_locked(cfg, tele, mode)
    raise AssertionError("unreachable")  # pragma: no cover


def _run_locked(cfg: Config, tele: Telemetry, mode: int) -> RunReport:
    state_path = os.path.join(cfg.state_dir, STATE_FILE)
    try:
        _cleanup_orphans(cfg.output)
        _cleanup_orphans(state_path)
        state = load_state(state_path)
        current_sha = file_sha256(cfg.output)
    except OSError as exc:
        raise Outcome("io_error", f"cannot read the state or the output: {exc}") from None
    headers = conditional_headers(state, cfg, current_sha)

    body_fd: int | None = None
    body_path: str | None = None
    transformer = StreamingTransformer(cfg.output, mode)
    sink: ParquetSink | None = None
    try:
        deadline = FetchDeadline(cfg.fetch_timeout_s)

        def submit(piece: bytes) -> None:
            with deadline.paused():  # waiting for a free parse slot is not network time
                transformer.submit(piece)

        splitter = Splitter(submit)
        parts = urlsplit(cfg.url)
        fetch_span = tele.step(
            "fetch",
            {
                "http.request.method": "GET",
                "url.full": _redacted_url(cfg.url),
                "server.address": parts.hostname or "",
                "server.port": parts.port or (443 if parts.scheme == "https" else 80),
                "kfm.conditional": bool(headers),
            },
            client=True,
        )
        transform_span: Any = None

        def on_response(status: int) -> None:
            nonlocal body_fd, body_path
            if fetch_span is not None:
                fetch_span.set_attribute("http.response.status_code", status)
            if status != 200:
                return
            transformer.start()
            try:
                body_fd, body_path = tempfile.mkstemp(
                    dir=os.path.dirname(cfg.output),
                    prefix=_temp_prefix(cfg.output),
                    suffix=".body.tmp",
                )
                _write_all(body_fd, FRAME_OPEN)
            except OSError as exc:
                raise Outcome("io_error", f"cannot create a scratch file: {exc}") from None

        def on_chunk(chunk: bytes) -> None:
            nonlocal transform_span
            try:
                if body_fd is None:  # pragma: no cover - made in on_response
                    raise OSError("no scratch file")
                _write_all(body_fd, chunk)
            except OSError as exc:
                raise Outcome("io_error", f"cannot write the scratch file: {exc}") from None
            error = transformer.error
            if isinstance(error, _Fallback):
                splitter.go_off()
            elif error is not None:
                raise error  # a definitive rejection: stop downloading
            if transform_span is None and splitter.state == "body":
                transform_span = tele.step("transform")
            splitter.feed(chunk)

        # -- fetch (the worker parses pieces meanwhile)
        try:
            fetched = fetch(cfg, headers, on_chunk, on_response, deadline)
        except BaseException as exc:
            tele.end_step(fetch_span, exc)
            tele.end_step(transform_span, exc)
            raise
        tele.end_step(fetch_span)
        if transform_span is None:
            transform_span = tele.step("transform")

        # -- transform: finish the streaming parse, or fall back to the whole document
        try:
            streamed = splitter.finish()
            transformer.close()
            error = transformer.error
            if error is not None and not isinstance(error, _Fallback):
                raise error
            if streamed and error is None and transformer.sink is not None:
                sink, transformer.sink = transformer.sink, None
            else:
                transformer.cancel()
                if body_fd is None or body_path is None:  # pragma: no cover - made on the 200
                    raise Outcome("io_error", "the scratch file is missing")
                try:
                    _write_all(body_fd, FRAME_CLOSE)
                    os.close(body_fd)
                    body_fd = None
                except OSError as exc:
                    raise Outcome("io_error", f"cannot write the scratch file: {exc}") from None
                size = len(FRAME_OPEN) + fetched.body_bytes + len(FRAME_CLOSE)
                sink = transform_whole_document(body_path, size, cfg.output, mode)
            schema = sink.schema
            new_sha = sink.finish()
            rows = sink.rows
            if rows == 0:  # pragma: no cover - a sink is only made for a non-empty piece
                raise _invalid("payload is an empty JSON array (no rows)")
        except BaseException as exc:
            tele.end_step(transform_span, exc)
            raise
        tele.end_step(transform_span)

        # -- publish: data first, then the state that describes it
        publish_span = tele.step("publish")
        changed = new_sha != current_sha
        try:
            if changed:
                sink.commit()
                durable_replace(sink.path, cfg.output)
                sink = None
            else:
                sink.discard()  # identical bytes: keep the published file and its inode
                sink = None
            # Provenance sidecars describe the data: after it, before the state.
            if changed or not provenance_sidecars.sidecars_current(cfg.output, new_sha):
                provenance_sidecars.write_sidecars(
                    lambda path, data: durable_write(path, data, mode),
                    output=cfg.output,
                    sha256=new_sha,
                    rows=rows,
                    upstream_url=_redacted_url(cfg.url),
                    run_id=tele.run_id,
                    job=JOB_NAME,
                )
            # lakeFS (when configured): promote what is now published locally, before the
            # state claims it; a failed promotion (an OSError) is an io_error.
            lakefs_promotion.promote(
                output=cfg.output,
                output_display=cfg.output_display,
                sidecars=list(provenance_sidecars.sidecar_paths(cfg.output).values()),
                sha256=new_sha,
                rows=rows,
                run_id=tele.run_id,
                env=os.environ,
            )
            document = state_document(cfg, fetched.etag, fetched.last_modified, new_sha, rows)
            if document != _read_bytes(state_path):
                durable_write(state_path, document, mode)
        except OSError as exc:
            outcome = Outcome("io_error", f"publish failed: {exc}")
            tele.end_step(publish_span, outcome)
            raise outcome from None
        except BaseException as exc:
            tele.end_step(publish_span, exc)
            raise
        if publish_span is not None:
            publish_span.set_attribute("kfm.output.changed", changed)
            publish_span.set_attribute("kfm.rows_written", rows if changed else 0)
        tele.end_step(publish_span)
        if not changed:
            return RunReport(
                Outcome("unchanged", f"upstream content is identical to {cfg.output_display}")
            )
        columns = None
        if tele.lineage is not None:
            columns = _published_columns(cfg.output) or [(f.name, str(f.type)) for f in schema]
        return RunReport(
            Outcome("published", f"{rows} rows to {cfg.output_display}"),
            rows=rows,
            published=True,
            columns=columns,
        )
    except OSError as exc:
        raise Outcome("io_error", f"local I/O failed: {exc}") from None
    finally:
        transformer.cancel()
        if sink is not None:
            sink.discard()
        if body_fd is not None:
            with contextlib.suppress(OSError):
                os.close(body_fd)
        _remove_quietly(body_path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _published_columns(path: str) -> list[tuple[str, str]] | None:
    try:
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
    except Exception:
        return None
    return [(f.name, str(f.type)) for f in schema]


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    env = os.environ if env is None else env
    try:
        cfg = load_config(argv, env)
    except Outcome as usage:
        sys.stderr.write(f"{usage.kind}: {usage.message}\n")
        return usage.code
    tele = Telemetry(cfg, env)
    report = RunReport(Outcome("internal_error", "run did not finish"))
    try:
        tele.start()
        report = run(cfg, tele)
    except Outcome as ended:
        report = RunReport(ended)
    except MemoryError:
        report = RunReport(Outcome("internal_error", "out of memory"))
    except Exception as exc:
        if env.get("KFM_DEBUG"):
            import traceback

            traceback.print_exc()
        report = RunReport(Outcome("internal_error", f"{type(exc).__name__}: {_one_line(exc)}"))
    outcome = report.outcome
    if outcome.code == 0:
        sys.stdout.write(f"{outcome.kind}: {outcome.message}\n")
    else:
        sys.stderr.write(f"{outcome.kind}: {outcome.message}\n")
    if tele.configured:
        try:
            tele.finish(outcome, report.rows, report.columns if report.published else None)
        except Exception as exc:
            _warn(f"telemetry: {_one_line(exc)}")
        sys.stdout.flush()
        sys.stderr.flush()
        # Exporter threads may still be blocked on a dead sink: do not let them hold the exit.
        os._exit(outcome.code)
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
