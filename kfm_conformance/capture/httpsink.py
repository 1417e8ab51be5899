"""A small threaded HTTP capture server that the lineage sink and the OTLP receiver share.

The server listens on ``127.0.0.1`` on a free port chosen by the OS, serves each connection on a
daemon thread (HTTP/1.1 keep-alive, so a client's pooled connection is reused and a request
costs well under a millisecond), decodes ``gzip``/``deflate`` request bodies, and can be put
into a fault mode for robustness tests:

- ``latency_s``: handle (and record) the request at once, but wait that long before answering,
  like a slow server that stores what it got (interrupted at once by :meth:`close`);
- ``status``: answer every request with that HTTP status instead of the normal answer;
- ``down``: stop listening and drop every open connection, so new connections are refused;
  leaving the mode listens again on the same port.

Every server is bounded by construction (:class:`Limits`): a request body is read up to a size
on the wire, decoded by streaming decompression that stops at a size of its own (a 300 MB gzip
bomb never takes more than that cap in memory), and each scenario (:meth:`CaptureServer.
set_scenario`) may send a number of requests and a total of decoded bytes. A request over a
cap is answered ``413`` and handed to the subclass with :attr:`SinkRequest.limit` saying which
cap, so that it is recorded as evidence; past a bounded number of such records further
refusals are only counted (:meth:`CaptureServer.limit_counts`).

Subclasses implement :meth:`CaptureServer.handle`; they record what they need themselves.
"""

from __future__ import annotations

import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

_HOST = "127.0.0.1"
_MIB = 1024 * 1024
_READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """The caps of a capture server. The defaults are far above what a pipeline sends."""

    request_bytes: int = 16 * _MIB
    """A request body as it arrives on the wire (compressed or not)."""
    decoded_bytes: int = 16 * _MIB
    """A request body after ``gzip``/``deflate`` decoding."""
    requests_per_scenario: int = 20_000
    """Requests (events, export batches) one scenario may send."""
    bytes_per_scenario: int = 128 * _MIB
    """Decoded bytes one scenario may send in all."""
    refusals_recorded: int = 100
    """Refused requests kept as records per scenario; later ones are only counted."""


@dataclass
class _Budget:
    requests: int = 0
    decoded_bytes: int = 0
    refused: int = 0
    unrecorded: int = 0


class BodyTooLarge(ValueError):
    """The request body is larger than the cap on the wire."""

    def __init__(self, limit: int, seen: int) -> None:
        super().__init__(f"the request body is larger than {limit} bytes on the wire")
        self.limit = limit
        self.seen = seen


@dataclass(frozen=True)
class FaultMode:
    """How the server misbehaves. The default is a healthy server."""

    latency_s: float = 0.0
    status: int | None = None
    down: bool = False

    @property
    def healthy(self) -> bool:
        return self.latency_s <= 0 and self.status is None and not self.down


@dataclass(frozen=True)
class SinkRequest:
    """One request as received: headers, the decoded body, and when and how it arrived."""

    seq: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    raw_size: int
    arrival: float
    arrival_monotonic: float
    content_type: str
    content_encoding: str | None
    decode_error: str | None = None
    decoded_size: int = 0
    limit: str | None = None
    """Which cap the request broke (it is answered 413 and its body is not kept), or None."""


@dataclass(frozen=True)
class SinkResponse:
    """What the server answers."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, owner: CaptureServer, address: tuple[str, int]) -> None:
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self.connections_lock:
            open_connections = list(self.connections)
            self.connections.clear()
        for conn in open_connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kfm-capture"
    sys_version = ""
    timeout = 60  # an idle keep-alive connection is dropped after this many seconds
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silence the default per-request logging to stderr."""

    def do_POST(self) -> None:  # noqa: N802
        self.server.owner._serve(self)

    def do_GET(self) -> None:  # noqa: N802
        self.server.owner._serve(self)

    def do_PUT(self) -> None:  # noqa: N802
        self.server.owner._serve(self)


def _read_body(handler: BaseHTTPRequestHandler, limit: int) -> bytes:
    """Read a request body given by Content-Length or by chunked transfer encoding, at most
    ``limit`` bytes (:class:`BodyTooLarge` beyond that: the rest is never read)."""
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = handler.rfile.readline(65537)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                break
            total += size
            if total > limit:
                raise BodyTooLarge(limit, total)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline(65537)
        return b"".join(chunks)
    length = int(handler.headers.get("Content-Length") or 0)
    if length > limit:
        raise BodyTooLarge(limit, length)
    return handler.rfile.read(length) if length > 0 else b""


def decode_body(raw: bytes, content_encoding: str | None) -> tuple[bytes, str | None]:
    """Undo ``gzip`` or ``deflate`` content encoding; return (body, error or None).

    Unbounded: for tests and trusted input only. Servers use :func:`decode_body_bounded`.
    """
    body, error, _, _ = decode_body_bounded(raw, content_encoding, limit=None)
    return body, error


def _inflate(raw: bytes, wbits: int, limit: int | None) -> tuple[bytes, int, bool]:
    """Stream-decompress ``raw`` (every member, for gzip), stopping past ``limit`` bytes.

    Returns (output, decoded size, over): ``over`` when the output would exceed ``limit``; the
    output is then dropped (no more than ``limit`` + 1 bytes were ever held) and the decoded
    size is ``limit``.
    """
    out = bytearray()
    data = raw
    while data:
        inflater = zlib.decompressobj(wbits)
        position = 0
        while not inflater.eof:
            if inflater.unconsumed_tail:
                chunk = inflater.unconsumed_tail
            elif position < len(data):
                chunk = data[position : position + _READ_CHUNK]
                position += len(chunk)
            else:
                raise zlib.error("the compressed stream is truncated")
            # Small pieces: the output grows by at most one piece beyond the cap (0: no maximum).
            room = min(limit + 1 - len(out), 4 * _READ_CHUNK) if limit is not None else 0
            out += inflater.decompress(chunk, room)
            if limit is not None and len(out) > limit:
                del out
                return b"", limit, True
        data = inflater.unused_data + data[position:]
        if not wbits & 16 or not data.strip(b"\0"):
            break  # deflate is one stream; gzip may have several members (and zero padding)
    return bytes(out), len(out), False


def decode_body_bounded(
    raw: bytes, content_encoding: str | None, *, limit: int | None
) -> tuple[bytes, str | None, bool, int]:
    """Undo ``gzip`` or ``deflate``, decoding at most ``limit`` bytes.

    Returns (body, error or None, over the limit, decoded size). Over the limit the body is
    dropped (empty) and the decoded size is the limit: what was decoded before stopping.
    """
    encoding = (content_encoding or "").strip().lower()
    try:
        if encoding in ("", "identity"):
            if limit is not None and len(raw) > limit:
                return b"", None, True, limit
            return raw, None, False, len(raw)
        if encoding in ("gzip", "x-gzip"):
            body, size, over = _inflate(raw, 16 + zlib.MAX_WBITS, limit)
            return body, None, over, size
        if encoding == "deflate":
            try:
                body, size, over = _inflate(raw, zlib.MAX_WBITS, limit)
            except zlib.error:
                body, size, over = _inflate(raw, -zlib.MAX_WBITS, limit)
            return body, None, over, size
    except (OSError, EOFError, zlib.error) as exc:
        return b"", f"cannot decode {encoding} body: {exc}", False, 0
    return raw, f"unsupported Content-Encoding {content_encoding!r}", False, len(raw)


class CaptureServer:
    """Base class: a threaded HTTP server on 127.0.0.1 with a free port and fault modes."""

    name = "capture"

    def __init__(self, *, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._scenario: str | None = None
        self._budgets: dict[str | None, _Budget] = {}
        self._lock = threading.Lock()
        self._seq = 0
        self._fault = FaultMode()
        self._closing = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._start(0)

    # -- lifecycle -------------------------------------------------------------------------

    def _start(self, port: int) -> None:
        server = _Server(self, (_HOST, port))
        self._port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"kfm-{self.name}-{self._port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread

    def _stop(self) -> None:
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.drop_connections()
        if thread is not None:
            thread.join(timeout=2)

    def close(self) -> None:
        """Stop listening and drop open connections. Never waits for a handler in a fault delay."""
        self._closing.set()
        self._stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, without a trailing slash."""
        return f"http://{_HOST}:{self._port}"

    # -- fault modes -----------------------------------------------------------------------

    @property
    def fault(self) -> FaultMode:
        return self._fault

    def set_fault(
        self, *, latency_s: float = 0.0, status: int | None = None, down: bool = False
    ) -> None:
        """Enter a fault mode (replacing the current one). ``down`` refuses connections."""
        new = FaultMode(latency_s=latency_s, status=status, down=down)
        was_down = self._fault.down
        self._fault = new
        if new.down and not was_down:
            self._stop()
        elif was_down and not new.down:
            self._start(self._port)

    def clear_fault(self) -> None:
        """Back to a healthy server."""
        self.set_fault()

    # -- scenarios and budgets -------------------------------------------------------------

    def set_scenario(self, scenario: str | None) -> None:
        """Count (and let subclasses tag) the requests that arrive from now on as ``scenario``'s."""
        self._scenario = scenario

    @property
    def current_scenario(self) -> str | None:
        return self._scenario

    def limit_counts(self, scenario: str | None) -> dict[str, int]:
        """What one scenario sent, and how much of it the caps refused."""
        with self._lock:
            budget = self._budgets.get(scenario, _Budget())
            return {
                "requests": budget.requests,
                "decoded_bytes": budget.decoded_bytes,
                "refused": budget.refused,
                "refused_unrecorded": budget.unrecorded,
            }

    def _admit(self, scenario: str | None, decoded: int) -> str | None:
        """Charge one request to the scenario's budget; the cap it breaks, or None."""
        with self._lock:
            budget = self._budgets.setdefault(scenario, _Budget())
            budget.requests += 1
            if budget.requests > self.limits.requests_per_scenario:
                return (
                    f"the scenario has sent more than {self.limits.requests_per_scenario} "
                    "requests to this endpoint"
                )
            if budget.decoded_bytes + decoded > self.limits.bytes_per_scenario:
                return (
                    f"the scenario has sent more than {self.limits.bytes_per_scenario} bytes "
                    "to this endpoint"
                )
            budget.decoded_bytes += decoded
            return None

    def _record_refusal(self, scenario: str | None) -> bool:
        """Count a refusal; True while it may still be kept as a record."""
        with self._lock:
            budget = self._budgets.setdefault(scenario, _Budget())
            budget.refused += 1
            if budget.refused > self.limits.refusals_recorded:
                budget.unrecorded += 1
                return False
            return True

    # -- request handling ------------------------------------------------------------------

    def next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def mark(self) -> int:
        """The sequence number of the latest request; pass it as ``since`` to see later ones."""
        with self._lock:
            return self._seq

    def handle(self, request: SinkRequest, fault_status: int | None) -> SinkResponse:
        """Answer one request. ``fault_status`` is the status the fault mode forces, if any."""
        raise NotImplementedError

    def _serve(self, handler: _Handler) -> None:
        arrival, arrival_mono = time.time(), time.monotonic()
        scenario = self._scenario
        limits = self.limits
        limit: str | None = None
        raw_size = 0
        try:
            raw = _read_body(handler, limits.request_bytes)
            raw_size = len(raw)
        except BodyTooLarge as exc:
            raw, raw_size = b"", exc.seen
            limit = str(exc)
            handler.close_connection = True  # the rest of the body is never read
        except (ValueError, OSError) as exc:
            self._send(handler, SinkResponse(400, str(exc).encode(), "text/plain"))
            handler.close_connection = True
            return
        encoding = handler.headers.get("Content-Encoding")
        body, error, over, decoded_size = decode_body_bounded(
            raw, encoding, limit=limits.decoded_bytes
        )
        del raw
        if limit is None and over:
            limit = (
                f"the request body inflates to more than {limits.decoded_bytes} bytes "
                f"({raw_size} bytes on the wire, {encoding or 'identity'})"
            )
        if limit is None:
            limit = self._admit(scenario, decoded_size)
        if limit is not None:
            body = b""
            if not self._record_refusal(scenario):
                self.next_seq()
                self._send(handler, SinkResponse(413, b"", "text/plain"))
                return
        request = SinkRequest(
            seq=self.next_seq(),
            method=handler.command,
            path=handler.path.split("?", 1)[0],
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            raw_size=raw_size,
            arrival=arrival,
            arrival_monotonic=arrival_mono,
            content_type=(handler.headers.get("Content-Type") or "").split(";", 1)[0].strip(),
            content_encoding=encoding,
            decode_error=error,
            decoded_size=decoded_size,
            limit=limit,
        )
        fault = self._fault
        response = self.handle(request, fault.status)
        if limit is not None:
            response = SinkResponse(413, response.body, response.content_type, response.headers)
        if fault.latency_s > 0 and self._closing.wait(fault.latency_s):
            handler.close_connection = True
            return
        self._send(handler, response)

    @staticmethod
    def _send(handler: _Handler, response: SinkResponse) -> None:
        try:
            handler.send_response(response.status)
            handler.send_header("Content-Type", response.content_type)
            handler.send_header("Content-Length", str(len(response.body)))
            for key, value in response.headers.items():
                handler.send_header(key, value)
            handler.end_headers()
            if response.body:
                handler.wfile.write(response.body)
        except OSError:
            handler.close_connection = True
