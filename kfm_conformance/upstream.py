"""The scripted upstream origin: an HTTP server whose every answer a scenario decides.

Built on pytest-httpserver (Werkzeug). A scenario scripts a :class:`Resource` (its current body
and validators) and, when it needs misbehaviour, a queue of one-off :class:`Reply` objects:
status, headers, body, delays, trickling, truncation (a short Content-Length or a cut chunked
body), gzip (valid or corrupt), redirects and connection resets.

Every request is recorded as an :class:`Exchange`, so steps can assert on exactly what the
pipeline sent: the header bytes it chose, not what a client library meant to send.

A scenario speaks to the origin through its :class:`UpstreamScript`: the versions it served, in
order (each remembers what publishing it produced), and the one-off answers the feature files
describe in words.

A resource answers conditional requests the way RFC 9110 says a correct origin does: with an
ETag, ``If-None-Match`` decides (weak comparison) and ``If-Modified-Since`` is ignored; without
one, an ``If-Modified-Since`` equal to the stored Last-Modified gives ``304``. The comparison is
byte-exact on purpose: a pipeline that reformats the date gets a full ``200``, and the
evidence shows why.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

from pytest_httpserver import HTTPServer, URIPattern
from werkzeug.wrappers import Request, Response

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kfm_conformance.sandbox import FileState

#: The path a scenario's data is served from.
DATA_PATH = "/data.json"

#: How often the origin's serving loop looks for a request to stop. ``stop()`` waits for the
#: loop to notice, so this is what closing an origin costs: werkzeug's default of 0.5 s made
#: every scenario's teardown last about 0.45 s (measured, about a fifth of a certification).
STOP_POLL_S = 0.02


def http_date(epoch_s: int) -> str:
    """An IMF-fixdate (RFC 9110) for a Unix time."""
    return format_datetime(datetime.fromtimestamp(epoch_s, tz=UTC), usegmt=True)


@dataclass
class Reply:
    """One scripted answer. Fields left at their defaults behave like a plain origin."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    trickle_chunk: int = 0
    trickle_interval_s: float = 0.0
    truncate: str | None = None  # "content-length" | "chunked" | "reset" | "none" (raw, whole)
    gzip: str | None = None  # "valid" | "corrupt"
    redirect_to: str | None = None

    def describe(self) -> str:
        parts = [str(self.status)]
        for name in ("truncate", "gzip", "redirect_to"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name}={value}")
        if self.delay_s:
            parts.append(f"delay={self.delay_s}s")
        if self.trickle_chunk:
            parts.append(f"trickle={self.trickle_chunk}B/{self.trickle_interval_s}s")
        return " ".join(parts)


@dataclass
class Resource:
    """The current version of the upstream data and how the origin treats validators."""

    body: bytes
    last_modified: str | None = None
    etag: str | None = None
    honour_conditionals: bool = True
    content_type: str = "application/json"
    gzip: bool = False

    def is_not_modified(self, request_headers: dict[str, str]) -> bool:
        if not self.honour_conditionals:
            return False
        inm = request_headers.get("if-none-match")
        if self.etag is not None and inm is not None:
            wanted = {tag.strip().removeprefix("W/") for tag in inm.split(",")}
            return self.etag.removeprefix("W/") in wanted or "*" in wanted
        ims = request_headers.get("if-modified-since")
        return self.last_modified is not None and ims == self.last_modified


@dataclass
class Exchange:
    """One request the pipeline sent and what the origin answered."""

    number: int
    at: float
    method: str
    path: str
    headers: dict[str, str]
    raw_headers: list[tuple[str, str]]
    status: int | None
    answer: str
    body_bytes: int

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _QuickStopServer(HTTPServer):
    """pytest-httpserver's server, with a serving loop that notices a stop within
    :data:`STOP_POLL_S` (``thread_target`` is the library's documented place for this)."""

    def thread_target(self) -> None:
        assert self.server is not None
        self.server.serve_forever(poll_interval=STOP_POLL_S)


class Origin:
    """A running scripted origin. Use :meth:`serve` to set the data, :meth:`push` for faults."""

    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = _QuickStopServer(host="127.0.0.1", port=0, threaded=True)
        self._server.expect_request(_ANY_PATH).respond_with_handler(self._handle)
        self._lock = threading.Lock()
        self._resource: Resource | None = None
        self._queue: deque[Reply] = deque()
        self._routes: dict[str, Reply] = {}
        self.exchanges: list[Exchange] = []
        self._server.start()

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}"

    @property
    def url(self) -> str:
        """The URL the pipeline is given (``{src}``)."""
        return self.base_url + DATA_PATH

    def close(self) -> None:
        if self._server.is_running():
            self._server.stop()

    def reset(self) -> None:
        with self._lock:
            self._resource = None
            self._queue.clear()
            self._routes.clear()
            self.exchanges.clear()

    # -- scripting ---------------------------------------------------------------------------
    def serve(self, resource: Resource) -> None:
        """Make ``resource`` the current version served at :data:`DATA_PATH`."""
        with self._lock:
            self._resource = resource

    @property
    def resource(self) -> Resource | None:
        return self._resource

    def push(self, *replies: Reply) -> None:
        """Queue one-off answers; each is used once, before the resource."""
        with self._lock:
            self._queue.extend(replies)

    def route(self, path: str, reply: Reply) -> None:
        """A fixed answer for another path (redirect targets, loops)."""
        with self._lock:
            self._routes[path] = reply

    def requests_for(self, path: str = DATA_PATH) -> list[Exchange]:
        return [e for e in self.exchanges if e.path == path]

    def last_request(self) -> Exchange | None:
        return self.exchanges[-1] if self.exchanges else None

    def transcript(self) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.exchanges]

    # -- answering ---------------------------------------------------------------------------
    def _choose(self, request: Request) -> tuple[Reply, str]:
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._lock:
            if request.path in self._routes:
                return self._routes[request.path], "route"
            if request.path == DATA_PATH and self._queue:
                return self._queue.popleft(), "scripted"
            resource = self._resource
        if request.path != DATA_PATH or resource is None:
            return Reply(status=404, body=b"not found"), "no such resource"
        validators: dict[str, str] = {}
        if resource.last_modified is not None:
            validators["Last-Modified"] = resource.last_modified
        if resource.etag is not None:
            validators["ETag"] = resource.etag
        if resource.is_not_modified(headers):
            return Reply(status=304, headers=validators), "conditional: not modified"
        return (
            Reply(
                status=200,
                body=resource.body,
                headers={"Content-Type": resource.content_type, **validators},
                gzip="valid" if resource.gzip else None,
            ),
            "resource",
        )

    def _handle(self, request: Request) -> Response:
        reply, why = self._choose(request)
        body = reply.body
        headers = dict(reply.headers)
        if reply.gzip is not None:
            body = gzip.compress(body, mtime=0)
            if reply.gzip == "corrupt":
                cut = max(len(body) // 2, 12)
                body = body[:10] + bytes(b ^ 0x5A for b in body[10:cut]) + body[cut:]
            headers["Content-Encoding"] = "gzip"
        if reply.redirect_to is not None:
            headers["Location"] = reply.redirect_to
        with self._lock:
            number = len(self.exchanges) + 1
            self.exchanges.append(
                Exchange(
                    number=number,
                    at=time.monotonic(),
                    method=request.method,
                    path=request.path,
                    headers={k.lower(): v for k, v in request.headers.items()},
                    raw_headers=list(request.headers.items()),
                    status=None if reply.truncate == "reset" else reply.status,
                    answer=f"{why}: {reply.describe()}",
                    body_bytes=len(body),
                )
            )
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.truncate is not None:
            _write_broken(request, reply, headers, body)
            return Response(status=200)  # never reaches the client: the socket is closed
        response = Response(status=reply.status, headers=headers)
        if reply.status == 304 or request.method == "HEAD":
            response.set_data(b"")
            response.headers.pop("Content-Length", None)
            return response
        if reply.trickle_chunk:
            response.response = _trickle(body, reply.trickle_chunk, reply.trickle_interval_s)
            response.headers["Content-Length"] = str(len(body))
            response.direct_passthrough = True
        else:
            response.set_data(body)
        return response


def _trickle(body: bytes, chunk: int, interval: float) -> Iterator[bytes]:
    for start in range(0, len(body), chunk):
        yield body[start : start + chunk]
        time.sleep(interval)


def _write_broken(request: Request, reply: Reply, headers: dict[str, str], body: bytes) -> None:
    """Write an incomplete response straight to the socket, then close the connection."""
    sock: socket.socket = request.environ["werkzeug.socket"]
    try:
        if reply.truncate == "reset":
            # SO_LINGER on, zero timeout: close() sends a TCP reset.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            head = [f"HTTP/1.1 {reply.status} Scripted"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            if reply.truncate == "none":  # a whole response, written raw (e.g. 304 + body)
                head.append(f"Content-Length: {len(body)}")
                payload = body
            elif reply.truncate == "content-length":
                head.append(f"Content-Length: {len(body)}")
                payload = body[: len(body) // 2]
            else:  # chunked, cut before the terminating chunk
                head.append("Transfer-Encoding: chunked")
                half = body[: len(body) // 2]
                payload = f"{len(body):x}\r\n".encode() + half
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


class _AnyPath(URIPattern):
    """A URI matcher that accepts every path: the origin decides what each path answers."""

    def match(self, uri: str) -> bool:
        return True


_ANY_PATH = _AnyPath()


# -- payloads -------------------------------------------------------------------------------
def rows_payload(count: int, *, seed: int = 0, version: int = 1) -> bytes:
    """A deterministic JSON array of ``count`` flat rows."""
    rng = random.Random(f"{seed}:{version}")
    rows = [
        {
            "id": index,
            "name": f"station-{index:05d}",
            "value": round(rng.uniform(-50, 50), 3),
            "ok": rng.random() > 0.2,
            "version": version,
        }
        for index in range(count)
    ]
    return json.dumps(rows, separators=(",", ":")).encode()


#: Named bodies that a feature file can refer to in plain words.
NAMED_BODIES: dict[str, bytes] = {
    "an empty array": b"[]",
    "an empty body": b"",
    "null": b"null",
    "an array of one empty object": b"[{}]",
    "an HTML page": b"<!doctype html><html><body><h1>Service maintenance</h1></body></html>",
    "a JSON object instead of an array": b'{"id": [1, 2], "value": [3, 4]}',
    "an array of numbers": b"[1, 2, 3]",
    "invalid UTF-8 bytes": b'[{"id": 1, "name": "caf\xe9 \xff\xfe"}]',
    "JSON cut in the middle": b'[{"id": 1, "name": "a"}, {"id": 2, "na',
}


def named_body(name: str, *, seed: int = 0) -> bytes:
    """Look up a body a feature names; ``N rows`` and ``N rows of version V`` are generated."""
    words = name.split()
    if len(words) >= 2 and words[0].isdigit() and words[1] in ("rows", "row"):
        version = int(words[-1]) if "version" in words else 1
        return rows_payload(int(words[0]), seed=seed, version=version)
    try:
        return NAMED_BODIES[name]
    except KeyError:
        known = ", ".join(sorted(NAMED_BODIES))
        raise KeyError(f"unknown body {name!r}; known: N rows, {known}") from None


#: A Last-Modified for one-off scripted answers, distinct from every served version's.
SCRIPTED_LAST_MODIFIED = http_date(1_900_000_000)


def script_next_answer(origin: Origin, phrase: str, *, seed: int = 0) -> Reply:
    """Queue the one-off answer a feature file describes in words, and return it."""
    rows = rows_payload(25, seed=seed, version=99)
    stamped = {"Last-Modified": SCRIPTED_LAST_MODIFIED, "Content-Type": "application/json"}
    words = phrase.split()
    reply: Reply
    if words[:1] == ["status"] and len(words) >= 2 and words[1].isdigit():
        status = int(words[1])
        headers = {"Content-Type": "text/plain"}
        if "Retry-After" in words:
            headers["Retry-After"] = words[-1]
        reply = Reply(status=status, body=f"scripted status {status}".encode(), headers=headers)
    elif phrase == "a 304 with a body":
        reply = Reply(status=304, body=rows, truncate="none")
    elif phrase == "an HTML page with status 200":
        reply = Reply(
            body=NAMED_BODIES["an HTML page"],
            headers={**stamped, "Content-Type": "text/html"},
        )
    elif phrase == "corrupt gzip":
        reply = Reply(body=rows, headers=stamped, gzip="corrupt")
    elif phrase == "a body shorter than its Content-Length":
        reply = Reply(body=rows, headers=stamped, truncate="content-length")
    elif phrase == "a chunked body cut before its end":
        reply = Reply(body=rows, headers=stamped, truncate="chunked")
    elif phrase == "a redirect to the data":
        origin.route("/moved/data.json", Reply(body=rows, headers=stamped))
        reply = Reply(status=307, redirect_to="/moved/data.json")
    elif phrase == "a connection reset":
        reply = Reply(truncate="reset")
    elif phrase == "a redirect loop":
        origin.route("/loop-a", Reply(status=302, redirect_to="/loop-b"))
        origin.route("/loop-b", Reply(status=302, redirect_to="/loop-a"))
        reply = Reply(status=302, redirect_to="/loop-a")
    else:
        reply = Reply(body=named_body(phrase, seed=seed), headers=stamped)
    origin.push(reply)
    return reply


# -- the scenario's script of the upstream ------------------------------------------------------
@dataclass
class Version:
    """A version of the upstream data the scenario served, and what publishing it produced."""

    number: int
    resource: Resource
    output: FileState | None = None


@dataclass
class UpstreamScript:
    """What one scenario serves, version after version, and the one-off answers it queues."""

    origin: Origin
    seed: int
    rng: random.Random
    versions: list[Version] = field(default_factory=list)

    def serve(
        self,
        body: str | bytes,
        *,
        last_modified: str | None = "default",
        etag: str | None = None,
        honour_conditionals: bool = True,
        gzip: bool = False,
    ) -> Version:
        """Make a new version of the upstream data current (a phrase such as "25 rows" or the
        name of a body, or the bytes themselves)."""
        number = len(self.versions) + 1
        payload = body if isinstance(body, bytes) else named_body(body, seed=self.seed)
        if last_modified == "default":
            last_modified = http_date(1_700_000_000 + 86_400 * number)
        resource = Resource(
            body=payload,
            last_modified=last_modified,
            etag=etag,
            honour_conditionals=honour_conditionals,
            gzip=gzip,
        )
        self.origin.serve(resource)
        version = Version(number, resource)
        self.versions.append(version)
        return version

    def serve_rows(self, count: int, **kw: Any) -> Version:
        return self.serve(f"{count} rows of version {len(self.versions) + 1}", **kw)

    def serve_scrambled_rows(self, count: int) -> Version:
        """Rows in an order of the scenario's seeded choosing (not sorted by any key)."""
        rows = json.loads(rows_payload(count, seed=self.seed, version=len(self.versions) + 1))
        self.rng.shuffle(rows)
        return self.serve(json.dumps(rows, separators=(",", ":")).encode())

    def serve_gzip_encoded(self) -> None:
        """Serve the current version's bytes again, gzip-encoded on the wire."""
        resource = self.current.resource
        self.origin.serve(
            Resource(
                body=resource.body,
                last_modified=resource.last_modified,
                etag=resource.etag,
                gzip=True,
            )
        )

    @property
    def current(self) -> Version:
        if not self.versions:
            raise RuntimeError("no upstream version served yet")
        return self.versions[-1]

    def published(self) -> FileState | None:
        """What publishing the latest published version produced (None before any)."""
        for version in reversed(self.versions):
            if version.output is not None:
                return version.output
        return None

    def serve_published_version_again(self) -> None:
        """Serve the resource of the version whose data is published, validators and all."""
        published = self.published()
        for version in reversed(self.versions):
            if (
                version.output is not None
                and published is not None
                and version.output.sha256 == published.sha256
            ):
                self.origin.serve(version.resource)
                self.versions.append(version)
                return
        raise RuntimeError("no published version to go back to")

    def queue_answer(self, phrase: str) -> Reply:
        """Queue the one-off answer a feature file describes in words."""
        return script_next_answer(self.origin, phrase, seed=self.seed)

    def queue_oversized_answer(self, cap_bytes: int) -> Reply:
        """Queue valid rows larger than ``cap_bytes``."""
        count = cap_bytes // 40 + 100  # every generated row is longer than 40 bytes
        body = rows_payload(count, seed=self.seed, version=97)
        reply = Reply(body=body, headers={"Content-Type": "application/json"})
        self.origin.push(reply)
        return reply

    def queue_slow_answer(self, slowness: str, bound_s: float) -> Reply:
        """An answer that takes twice ``bound_s``: headers sent late, or a trickling body."""
        body = rows_payload(25, seed=self.seed, version=98)
        if slowness == "headers sent late":
            reply = Reply(body=body, delay_s=2 * bound_s)
        elif slowness == "a trickling body":
            chunk = max(1, len(body) // 40)
            reply = Reply(body=body, trickle_chunk=chunk, trickle_interval_s=2 * bound_s / 40)
        else:
            raise ValueError(f"unknown slowness {slowness!r}")
        self.origin.push(reply)
        return reply

    def data_requests(self) -> list[Exchange]:
        return self.origin.requests_for()

    def to_evidence(self) -> list[dict[str, Any]]:
        return [
            {
                "number": v.number,
                "last_modified": v.resource.last_modified,
                "etag": v.resource.etag,
                "payload_bytes": len(v.resource.body),
                "output_sha256": v.output.sha256 if v.output else None,
            }
            for v in self.versions
        ]


def closed_port_url() -> tuple[str, int]:
    """A loopback URL nobody listens on (connecting to it is refused), and its port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/data.json", port
