"""A recording reverse proxy between a pipeline and lakeFS.

The promotion scenarios give the pipeline this proxy's URL as its lakeFS endpoint. It
forwards every request unchanged (body, headers, basic auth) and records what the pipeline
asked of lakeFS: method, API path, the object path if any, the status lakeFS answered. The
record is evidence (which branch the pipeline wrote to, when it committed and merged), and
it gives crash scenarios a precise, reproducible moment: :attr:`LakeFSProxy.on_write` is
called right after the pipeline's *n*-th write request (anything but GET/HEAD) has taken
effect in lakeFS and before the pipeline gets the answer, so the harness can SIGKILL the
pipeline there.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import requests

__all__ = ["LakeFSProxy", "ProxyCall"]

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
READS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class ProxyCall:
    """One request the pipeline sent to lakeFS, and lakeFS's answer."""

    seq: int
    write: int | None
    """1, 2, ... for write requests (not GET/HEAD), None for reads."""
    method: str
    path: str
    object_path: str | None
    status: int | None
    at: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def is_merge(self) -> bool:
        return self.method == "POST" and "/merge/" in self.path


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size_line = self.rfile.readline().strip().split(b";")[0]
                size = int(size_line or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _proxy(self) -> None:
        proxy = self.server.owner
        body = self._body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        parsed = urllib.parse.urlsplit(self.path)
        object_path = urllib.parse.parse_qs(parsed.query).get("path", [None])[0]
        status: int | None = None
        content = b""
        out_headers: list[tuple[str, str]] = []
        try:
            response = proxy.http.request(
                self.command,
                proxy.target + self.path,
                data=body if body or self.command not in READS else None,
                headers=headers,
                timeout=proxy.timeout_s,
                stream=True,
                allow_redirects=False,
            )
            content = response.raw.read(decode_content=False)
            status = response.status_code
            out_headers = [
                (k, v) for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP
            ]
        except requests.RequestException:
            status = None
        call = proxy.record(self.command, parsed.path, object_path, status)
        if call.write is not None and proxy.on_write is not None:
            proxy.on_write(call)
        if status is None:
            self.send_response(502)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with contextlib.suppress(OSError):
            self.send_response(status)
            for key, value in out_headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _proxy


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: LakeFSProxy


class LakeFSProxy:
    """Forwards ``http://127.0.0.1:PORT/...`` to ``target`` (a lakeFS endpoint)."""

    def __init__(self, target: str, *, timeout_s: float = 60.0) -> None:
        self.target = target.rstrip("/")
        self.timeout_s = timeout_s
        self.http = requests.Session()
        self.calls: list[ProxyCall] = []
        self.on_write: Callable[[ProxyCall], None] | None = None
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            # close() waits for the loop to look for a stop: 0.5 s by default, per scenario.
            kwargs={"poll_interval": 0.02},
            name="kfm-lakefs-proxy",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def record(
        self, method: str, path: str, object_path: str | None, status: int | None
    ) -> ProxyCall:
        with self._lock:
            writes = sum(1 for c in self.calls if c.write is not None)
            call = ProxyCall(
                seq=len(self.calls) + 1,
                write=None if method in READS else writes + 1,
                method=method,
                path=path,
                object_path=object_path,
                status=status,
                at=time.time(),
            )
            self.calls.append(call)
        return call

    def calls_between(self, start: float, end: float) -> list[ProxyCall]:
        with self._lock:
            return [c for c in self.calls if start <= c.at <= end]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.http.close()
