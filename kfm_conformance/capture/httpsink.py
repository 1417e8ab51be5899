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

Subclasses implement :meth:`CaptureServer.handle`; they record what they need themselves.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

_HOST = "127.0.0.1"
_MAX_BODY = 64 * 1024 * 1024


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


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """Read a request body given by Content-Length or by chunked transfer encoding."""
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
            if total > _MAX_BODY:
                raise ValueError("request body too large")
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline(65537)
        return b"".join(chunks)
    length = int(handler.headers.get("Content-Length") or 0)
    if length > _MAX_BODY:
        raise ValueError("request body too large")
    return handler.rfile.read(length) if length > 0 else b""


def decode_body(raw: bytes, content_encoding: str | None) -> tuple[bytes, str | None]:
    """Undo ``gzip`` or ``deflate`` content encoding; return (body, error or None)."""
    encoding = (content_encoding or "").strip().lower()
    try:
        if encoding in ("", "identity"):
            return raw, None
        if encoding in ("gzip", "x-gzip"):
            return gzip.decompress(raw), None
        if encoding == "deflate":
            try:
                return zlib.decompress(raw), None
            except zlib.error:
                return zlib.decompress(raw, -zlib.MAX_WBITS), None
    except (OSError, EOFError, zlib.error) as exc:
        return raw, f"cannot decode {encoding} body: {exc}"
    return raw, f"unsupported Content-Encoding {content_encoding!r}"


class CaptureServer:
    """Base class: a threaded HTTP server on 127.0.0.1 with a free port and fault modes."""

    name = "capture"

    def __init__(self) -> None:
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
        try:
            raw = _read_body(handler)
        except (ValueError, OSError) as exc:
            self._send(handler, SinkResponse(400, str(exc).encode(), "text/plain"))
            handler.close_connection = True
            return
        encoding = handler.headers.get("Content-Encoding")
        body, error = decode_body(raw, encoding)
        request = SinkRequest(
            seq=self.next_seq(),
            method=handler.command,
            path=handler.path.split("?", 1)[0],
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            raw_size=len(raw),
            arrival=arrival,
            arrival_monotonic=arrival_mono,
            content_type=(handler.headers.get("Content-Type") or "").split(";", 1)[0].strip(),
            content_encoding=encoding,
            decode_error=error,
        )
        fault = self._fault
        response = self.handle(request, fault.status)
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
