"""The reference pipeline's own tests: the real script, run as a subprocess, against a small
scripted HTTP origin (stdlib ``http.server``, threaded, on 127.0.0.1) written here.

Each test drives one behaviour the blueprint guarantees: publish + state, validators sent back
verbatim, 304 keeps the inode, a lost output is republished, every reject case exits 65 without
touching the output, transient and refused statuses, determinism, gzip, the size cap, the total
fetch bound, lineage and trace emission. A few in-process tests check that the streaming parse
gives the same bytes as the whole-document parse, whatever the cuts.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "reference" / "pipeline.py"
OUTPUT = Path("out") / "data.parquet"
STATE = Path(".state") / "state.json"
LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"
ROWS = [
    {"id": 1, "name": "alpha", "value": 1.5, "flag": True},
    {"id": 2, "name": "bravo", "value": 2.25, "flag": False},
    {"id": 3, "name": "charlie", "value": None, "flag": True},
]
BODY = json.dumps(ROWS).encode()

Handler = Callable[["OriginHandler"], None]


# --------------------------------------------------------------------------- the origin


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class OriginState:
    routes: dict[str, Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    posts: dict[str, list[Seen]] = field(default_factory=dict)


class OriginHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: OriginState  # set on the subclass made per server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        self.state.seen.append(Seen("GET", path, dict(self.headers.items())))
        route = self.state.routes.get(path)
        if route is None:
            self.reply(404, b"not found")
        else:
            route(self)

    def do_POST(self) -> None:  # noqa: N802 - lineage and OTLP sinks
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        path = self.path.split("?", 1)[0]
        self.state.posts.setdefault(path, []).append(
            Seen("POST", path, dict(self.headers.items()), body)
        )
        self.reply(200, b"{}", {"Content-Type": "application/json"})

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        sent = {k.lower() for k in (headers or {})}
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if "content-length" not in sent and "transfer-encoding" not in sent:
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if body:
            self.wfile.write(body)

    def raw(self, data: bytes) -> None:
        """Write raw bytes (status line and headers included) and close."""
        self.close_connection = True
        self.wfile.write(data)
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Origin:
    def __init__(self) -> None:
        self.state = OriginState()
        handler = type("BoundHandler", (OriginHandler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/data") -> str:
        return self.base + path

    def route(self, path: str, handler: Handler) -> None:
        self.state.routes[path] = handler

    def reset(self) -> None:
        self.state.routes.clear()
        self.state.seen.clear()
        self.state.posts.clear()

    def gets(self, path: str = "/data") -> list[Seen]:
        return [s for s in self.state.seen if s.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(status: int = 200, body: bytes = BODY, **headers: str) -> Handler:
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}

    def handler(h: OriginHandler) -> None:
        h.reply(status, body, hdrs)

    return handler


def conditional(body: bytes = BODY, etag: str | None = None, **extra: str) -> Handler:
    """A correct origin: 304 when a validator matches, else 200 with validators."""

    def handler(h: OriginHandler) -> None:
        headers = {"Last-Modified": LAST_MODIFIED, **extra}
        if etag is not None:
            headers["ETag"] = etag
        inm = h.headers.get("If-None-Match")
        ims = h.headers.get("If-Modified-Since")
        if (etag is not None and inm == etag) or (inm is None and ims == LAST_MODIFIED):
            h.reply(304, b"", headers)
        else:
            h.reply(200, body, headers)

    return handler


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _fresh_routes(origin: Origin) -> None:
    origin.reset()


# --------------------------------------------------------------------------- running it


def run(cwd: Path, url: str | None, **env: str) -> subprocess.CompletedProcess[str]:
    child_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OPENLINEAGE", "OTEL_", "KFM_"))
    }
    child_env.pop("SRC", None)
    child_env.update(env)
    argv = [sys.executable, str(PIPELINE)] + ([url] if url else [])
    return subprocess.run(
        argv, cwd=cwd, env=child_env, capture_output=True, text=True, timeout=60, check=False
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(cwd: Path) -> tuple[bytes, int, int, bytes]:
    out, state = cwd / OUTPUT, cwd / STATE
    st = out.stat()
    return out.read_bytes(), st.st_ino, st.st_mtime_ns, state.read_bytes()


def read_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def assert_one_line(stream: str) -> None:
    assert "Traceback" not in stream
    assert len(stream.strip().splitlines()) == 1, stream


@pytest.fixture(scope="module")
def published(origin: Origin, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working dir that has published BODY from /data once (copied per test)."""
    cwd = tmp_path_factory.mktemp("published")
    origin.route("/data", conditional(etag='"v1"'))
    result = run(cwd, origin.url())
    assert result.returncode == 0, result.stderr
    return cwd


@pytest.fixture
def republished(published: Path, tmp_path: Path) -> Path:
    cwd = tmp_path / "work"
    shutil.copytree(published, cwd)
    return cwd


# --------------------------------------------------------------------------- publish + state


def test_publish_writes_output_then_state_with_verbatim_validators(
    origin: Origin, tmp_path: Path
) -> None:
    origin.route("/data", serve(body=BODY, Last_Modified=LAST_MODIFIED, ETag='W/"abc"'))
    result = run(tmp_path, origin.url())
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert read_rows(tmp_path / OUTPUT) == ROWS
    state = json.loads((tmp_path / STATE).read_text())
    assert state["last_modified"] == LAST_MODIFIED
    assert state["etag"] == 'W/"abc"'
    assert state["sha256"] == sha256(tmp_path / OUTPUT)
    leftovers = [p.name for p in (tmp_path / "out").iterdir()] + [
        p.name for p in (tmp_path / ".state").iterdir()
    ]
    assert sorted(leftovers) == [
        "data.dcat.jsonld",
        "data.parquet",
        "data.prov.jsonld",
        "data.stac.json",
        "lock",
        "state.json",
    ]


def test_url_from_src_env_wins_and_no_url_is_usage(origin: Origin, tmp_path: Path) -> None:
    origin.route("/data", serve(body=BODY))
    result = run(tmp_path, origin.url("/elsewhere"), SRC=origin.url())
    assert result.returncode == 0, result.stderr
    usage = run(tmp_path / "..", None)
    assert usage.returncode == 2
    assert_one_line(usage.stderr)


def test_rerun_sends_validators_verbatim_and_304_keeps_inode(
    origin: Origin, tmp_path: Path
) -> None:
    origin.route("/data", conditional(etag='W/"v-1"'))
    assert run(tmp_path, origin.url()).returncode == 0
    before = snapshot(tmp_path)
    result = run(tmp_path, origin.url())
    assert result.returncode == 0, result.stderr
    first, second = origin.gets()
    assert "If-None-Match" not in first.headers and "If-Modified-Since" not in first.headers
    assert second.headers["If-None-Match"] == 'W/"v-1"'
    assert second.headers["If-Modified-Since"] == LAST_MODIFIED
    assert snapshot(tmp_path) == before


def test_304_with_a_body_is_ignored(origin: Origin, republished: Path) -> None:
    before = snapshot(republished)
    origin.route("/data", serve(status=304, body=b"[garbage", Last_Modified=LAST_MODIFIED))
    result = run(republished, origin.url())
    assert result.returncode == 0, result.stderr
    assert snapshot(republished) == before


def test_no_validators_means_no_conditional_headers(origin: Origin, tmp_path: Path) -> None:
    origin.route("/data", serve(body=BODY))
    assert run(tmp_path, origin.url()).returncode == 0
    assert run(tmp_path, origin.url()).returncode == 0
    for seen in origin.gets():
        assert "If-Modified-Since" not in seen.headers
        assert "If-None-Match" not in seen.headers


def test_malformed_last_modified_is_stored_and_sent_verbatim(
    origin: Origin, tmp_path: Path
) -> None:
    origin.route("/data", serve(body=BODY, Last_Modified="yesterday-ish"))
    assert run(tmp_path, origin.url()).returncode == 0
    assert json.loads((tmp_path / STATE).read_text())["last_modified"] == "yesterday-ish"
    assert run(tmp_path, origin.url()).returncode == 0
    assert origin.gets()[1].headers["If-Modified-Since"] == "yesterday-ish"


def test_deleted_output_is_fetched_unconditionally_and_republished(
    origin: Origin, republished: Path
) -> None:
    origin.route("/data", conditional(etag='"v1"'))
    (republished / OUTPUT).unlink()
    result = run(republished, origin.url())
    assert result.returncode == 0, result.stderr
    (request,) = origin.gets()
    assert "If-None-Match" not in request.headers
    assert "If-Modified-Since" not in request.headers
    assert read_rows(republished / OUTPUT) == ROWS


def test_altered_output_is_republished(origin: Origin, republished: Path) -> None:
    origin.route("/data", conditional(etag='"v1"'))
    good = (republished / OUTPUT).read_bytes()
    (republished / OUTPUT).write_bytes(b"not parquet")
    assert run(republished, origin.url()).returncode == 0
    assert "If-None-Match" not in origin.gets()[0].headers
    assert (republished / OUTPUT).read_bytes() == good


def test_identical_200_keeps_inode_and_refreshes_validators(
    origin: Origin, republished: Path
) -> None:
    before = snapshot(republished)
    origin.route("/data", serve(body=BODY, ETag='"v2"', Last_Modified=LAST_MODIFIED))
    result = run(republished, origin.url())
    assert result.returncode == 0, result.stderr
    after = snapshot(republished)
    assert after[:3] == before[:3]  # bytes, inode, mtime
    assert json.loads(after[3])["etag"] == '"v2"'


def test_changed_payload_is_published(origin: Origin, republished: Path) -> None:
    rows = [{"id": 9, "extra": "new column"}]
    origin.route("/data", serve(body=json.dumps(rows).encode(), ETag='"v2"'))
    assert run(republished, origin.url()).returncode == 0
    assert read_rows(republished / OUTPUT) == rows
    state = json.loads((republished / STATE).read_text())
    assert state["etag"] == '"v2"' and state["last_modified"] is None


# --------------------------------------------------------------------------- rejections


def _cut_chunked(h: OriginHandler) -> None:
    h.raw(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"10\r\n" + BODY[:16] + b"\r\n40\r\n" + BODY[16:30]
    )


def _short_content_length(h: OriginHandler) -> None:
    h.raw(
        f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY) + 50}\r\nConnection: close\r\n\r\n".encode()
        + BODY
    )


def _redirect_loop(h: OriginHandler) -> None:
    h.reply(302, b"", {"Location": "/data"})


REJECTS: dict[str, Handler] = {
    "empty-array": serve(body=b"[]"),
    "empty-array-spaces": serve(body=b" [ \n ] "),
    "empty-body": serve(body=b""),
    "null": serve(body=b"null"),
    "empty-object-row": serve(body=b"[{}]"),
    "empty-row-among-rows": serve(body=b'[{"a":1},{}]'),
    "null-row": serve(body=b'[{"a":1},null]'),
    "object-not-array": serve(body=b'{"id":[1,2],"v":[3,4]}'),
    "array-of-numbers": serve(body=b"[1,2,3]"),
    "html": serve(body=b"<html><body>maintenance</body></html>", Content_Type="text/html"),
    "not-json": serve(body=b"[{'a': 1}]"),
    "trailing-garbage": serve(body=BODY + b" trailing"),
    "truncated-close-delimited": serve(body=BODY[:-3]),
    "non-utf8": serve(body='[{"name": "caf\u00e9"}]'.encode("latin-1")),
    "utf8-surrogate": serve(body=b'[{"name": "\xed\xa0\x80"}]'),
    "mixed-types": serve(body=b'[{"a":1},{"a":"one"}]'),
    "nan": serve(body=b'[{"a":NaN}]'),
    "duplicate-key": serve(body=b'[{"a":1,"a":2}]'),
    "empty-nested-object": serve(body=b'[{"a":{},"b":1}]'),
    "short-content-length": _short_content_length,
    "cut-chunked": _cut_chunked,
    "corrupt-gzip": serve(body=b"\x1f\x8b\x08\x00garbage-not-gzip", Content_Encoding="gzip"),
    "redirect-loop": _redirect_loop,
    "unexpected-2xx": serve(status=204, body=b""),
}


@pytest.mark.parametrize("case", sorted(REJECTS))
def test_bad_upstream_is_rejected_and_output_untouched(
    case: str, origin: Origin, republished: Path
) -> None:
    before = snapshot(republished)
    origin.route("/data", REJECTS[case])
    result = run(republished, origin.url())
    assert result.returncode == 65, (result.returncode, result.stderr)
    assert_one_line(result.stderr)
    assert snapshot(republished) == before
    assert sorted(p.name for p in (republished / "out").iterdir()) == [
        "data.dcat.jsonld",
        "data.parquet",
        "data.prov.jsonld",
        "data.stac.json",
    ]


def test_unconditional_304_is_rejected(origin: Origin, tmp_path: Path) -> None:
    origin.route("/data", serve(status=304, body=b""))
    result = run(tmp_path, origin.url())
    assert result.returncode == 65
    assert not (tmp_path / OUTPUT).exists()


@pytest.mark.parametrize(
    ("status", "code"),
    [(500, 75), (502, 75), (503, 75), (429, 75), (404, 69), (403, 69), (410, 69)],
)
def test_http_errors_map_to_exit_codes(
    status: int, code: int, origin: Origin, republished: Path
) -> None:
    before = snapshot(republished)
    origin.route("/data", serve(status=status, body=b"oops"))
    result = run(republished, origin.url())
    assert result.returncode == code, result.stderr
    assert_one_line(result.stderr)
    assert snapshot(republished) == before


def test_local_write_failure_is_io_error(origin: Origin, tmp_path: Path) -> None:
    origin.route("/data", serve(body=BODY))
    (tmp_path / "blocker").write_text("a file where a directory should be")
    result = run(tmp_path, origin.url(), KFM_OUTPUT="blocker/data.parquet")
    assert result.returncode == 74, result.stderr
    assert_one_line(result.stderr)


def test_connection_refused_is_transient(tmp_path: Path) -> None:
    result = run(tmp_path, "http://127.0.0.1:9/data")
    assert result.returncode == 75
    assert_one_line(result.stderr)


def test_429_with_short_retry_after_is_retried_once(origin: Origin, tmp_path: Path) -> None:
    calls: list[int] = []

    def handler(h: OriginHandler) -> None:
        calls.append(1)
        if len(calls) == 1:
            h.reply(429, b"slow down", {"Retry-After": "0"})
        else:
            h.reply(200, BODY)

    origin.route("/data", handler)
    result = run(tmp_path, origin.url())
    assert result.returncode == 0, result.stderr
    assert len(calls) == 2


def test_trickling_body_hits_the_total_fetch_bound(origin: Origin, tmp_path: Path) -> None:
    def trickle(h: OriginHandler) -> None:
        h.raw(f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode())
        for byte in BODY[:100]:  # ~10 s if nothing bounded the whole fetch
            try:
                h.wfile.write(bytes([byte]))
                h.wfile.flush()
            except OSError:
                return
            time.sleep(0.1)

    origin.route("/data", trickle)
    started = time.monotonic()
    result = run(tmp_path, origin.url(), KFM_FETCH_TIMEOUT_S="1")
    assert result.returncode == 75, result.stderr
    assert time.monotonic() - started < 5
    assert not (tmp_path / OUTPUT).exists()


@pytest.mark.parametrize("chunked", [False, True])
def test_over_the_size_cap_is_rejected(chunked: bool, origin: Origin, republished: Path) -> None:
    big = json.dumps([{"id": i, "pad": "x" * 50} for i in range(2000)]).encode()

    def handler(h: OriginHandler) -> None:
        if not chunked:
            h.reply(200, big)
            return
        h.raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        for i in range(0, len(big), 4096):
            part = big[i : i + 4096]
            try:
                h.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            except OSError:
                return
        h.wfile.write(b"0\r\n\r\n")

    before = snapshot(republished)
    origin.route("/data", handler)
    result = run(republished, origin.url(), KFM_MAX_BYTES="10000")
    assert result.returncode == 65, result.stderr
    assert "cap" in result.stderr
    assert snapshot(republished) == before


def test_bounded_redirects_are_followed(origin: Origin, tmp_path: Path) -> None:
    origin.route("/data", serve(status=301, body=b"", Location="/hop"))
    origin.route("/hop", serve(status=307, body=b"", Location="/final"))
    origin.route("/final", serve(body=BODY))
    assert run(tmp_path, origin.url()).returncode == 0
    assert run(tmp_path / "..", origin.url(), KFM_MAX_REDIRECTS="1").returncode == 65


# --------------------------------------------------------------------------- determinism


def test_same_payload_gives_identical_bytes_in_two_dirs(origin: Origin, tmp_path: Path) -> None:
    origin.route("/data", serve(body=BODY))
    digests = set()
    for name in ("a", "b/nested"):
        cwd = tmp_path / name
        cwd.mkdir(parents=True)
        assert run(cwd, origin.url()).returncode == 0
        digests.add(sha256(cwd / OUTPUT))
    assert len(digests) == 1


def test_gzip_body_gives_the_same_output_as_plain(origin: Origin, tmp_path: Path) -> None:
    origin.route("/plain", serve(body=BODY))
    origin.route("/gz", serve(body=gzip.compress(BODY, mtime=0), Content_Encoding="gzip"))
    (tmp_path / "plain").mkdir()
    (tmp_path / "gz").mkdir()
    assert run(tmp_path / "plain", origin.url("/plain")).returncode == 0
    assert run(tmp_path / "gz", origin.url("/gz")).returncode == 0
    assert sha256(tmp_path / "plain" / OUTPUT) == sha256(tmp_path / "gz" / OUTPUT)


def test_schema_policy_union_of_keys_numbers_widen_strings_stay(
    origin: Origin, tmp_path: Path
) -> None:
    rows = [
        {"id": 1, "when": "2020-01-01T00:00:00Z"},
        {"id": 2.5, "note": "later key", "when": "2020-01-02"},
    ]
    origin.route("/data", serve(body=json.dumps(rows).encode()))
    assert run(tmp_path, origin.url()).returncode == 0
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / OUTPUT)
    assert table.column_names == ["id", "when", "note"]
    assert [str(t) for t in table.schema.types] == ["double", "string", "string"]
    assert table.to_pylist() == [
        {"id": 1.0, "when": "2020-01-01T00:00:00Z", "note": None},
        {"id": 2.5, "when": "2020-01-02", "note": "later key"},
    ]


def test_concurrent_runs_do_not_interleave(origin: Origin, tmp_path: Path) -> None:
    origin.route("/data", serve(body=BODY))
    children = [
        subprocess.Popen(
            [sys.executable, str(PIPELINE), origin.url()],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    assert [c.wait(timeout=30) for c in children] == [0, 0, 0]
    assert read_rows(tmp_path / OUTPUT) == ROWS
    state = json.loads((tmp_path / STATE).read_text())
    assert state["sha256"] == sha256(tmp_path / OUTPUT)


# --------------------------------------------------------------------------- streaming parse


def _load_pipeline() -> ModuleType:
    if str(PIPELINE.parent) not in sys.path:  # its sibling module, as when run as a script
        sys.path.insert(0, str(PIPELINE.parent))
    spec = importlib.util.spec_from_file_location("kfm_reference_pipeline", PIPELINE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pipeline() -> ModuleType:
    return _load_pipeline()


def _streamed_sha(p: ModuleType, body: bytes, tmp: Path, piece: int, chunk: int) -> str | None:
    """Digest from the streaming path, or None when it fell back."""
    transformer = p.StreamingTransformer(str(tmp / "data.parquet"), 0o644)
    splitter = p.Splitter(transformer.submit, piece)
    for i in range(0, len(body), chunk):
        splitter.feed(body[i : i + chunk])
    complete = splitter.finish()
    transformer.close()
    if not complete or transformer.error is not None or transformer.sink is None:
        transformer.cancel()
        return None
    sink = transformer.sink
    transformer.sink = None
    digest = sink.finish()
    sink.discard()
    return str(digest)


def _whole_sha(p: ModuleType, body: bytes, tmp: Path) -> str:
    framed = tmp / "framed.json"
    framed.write_bytes(p.FRAME_OPEN + body + p.FRAME_CLOSE)
    sink = p.transform_whole_document(
        str(framed), framed.stat().st_size, str(tmp / "data.parquet"), 0o644
    )
    digest = sink.finish()
    sink.discard()
    return str(digest)


def test_streaming_parse_matches_whole_document_bytes(
    pipeline: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "ROW_GROUP_ROWS", 64)
    rows: list[dict[str, Any]] = [
        {"id": i, "name": f"n{i}", "v": i / 4, "ok": i % 2 == 0, "note": "x" if i < 100 else None}
        for i in range(500)
    ]
    for i in range(5, 500, 9):
        del rows[i]["name"]  # a key missing here and there
    for indent in (None, 1):
        body = json.dumps(rows, indent=indent).encode()
        whole = _whole_sha(pipeline, body, tmp_path)
        for piece, chunk in [(64, 7), (300, 1000), (4096, 50), (1 << 20, 1 << 20)]:
            assert _streamed_sha(pipeline, body, tmp_path, piece, chunk) == whole, (piece, chunk)


def test_streaming_finds_cuts_across_one_http_chunk_per_row(
    pipeline: ModuleType, tmp_path: Path
) -> None:
    rows = [{"id": i, "v": i + 0.5} for i in range(400)]
    encoded = [json.dumps(r).encode() for r in rows]
    chunks = [b"[" + encoded[0]] + [b"," + e for e in encoded[1:]] + [b"]"]
    transformer = pipeline.StreamingTransformer(str(tmp_path / "data.parquet"), 0o644)
    pieces: list[bytes] = []

    def submit(piece: bytes) -> None:
        pieces.append(piece)
        transformer.submit(piece)

    splitter = pipeline.Splitter(submit, 600)
    for chunk in chunks:
        splitter.feed(chunk)
    assert splitter.finish()
    transformer.close()
    assert transformer.error is None and len(pieces) > 5
    sink = transformer.sink
    assert sink is not None
    transformer.sink = None
    digest = sink.finish()
    sink.discard()
    assert digest == _whole_sha(pipeline, b"".join(chunks), tmp_path)


def test_streaming_falls_back_when_a_later_piece_needs_other_types(
    pipeline: ModuleType, origin: Origin, tmp_path: Path
) -> None:
    rows: list[dict[str, Any]] = [{"id": i, "v": 1} for i in range(300)]
    rows[250]["late"] = "a key first seen late"
    rows[260]["v"] = "now a string"
    body = json.dumps(rows).encode()
    assert _streamed_sha(pipeline, body, tmp_path, 256, 100) is None
    with pytest.raises(pipeline.Outcome) as rejected:
        _whole_sha(pipeline, body, tmp_path)
    assert rejected.value.kind == "invalid_upstream"
    del rows[260]
    body = json.dumps(rows).encode()
    assert _streamed_sha(pipeline, body, tmp_path, 256, 100) is None
    origin.route("/data", serve(body=body))
    assert run(tmp_path, origin.url()).returncode == 0
    assert sha256(tmp_path / OUTPUT) == _whole_sha(pipeline, body, tmp_path)


def test_bad_cuts_fall_back_and_still_match(
    pipeline: ModuleType, origin: Origin, tmp_path: Path
) -> None:
    rows = [
        {"id": i, "s": 'tricky },{"id": 0, "s": "', "nested": [{"a": i}, {"a": i + 1}]}
        for i in range(200)
    ]
    body = json.dumps(rows).encode()
    whole = _whole_sha(pipeline, body, tmp_path)
    assert _streamed_sha(pipeline, body, tmp_path, 50, 13) in (None, whole)
    origin.route("/data", serve(body=body))
    assert run(tmp_path, origin.url()).returncode == 0
    assert sha256(tmp_path / OUTPUT) == whole
    assert read_rows(tmp_path / OUTPUT) == rows


def test_streaming_conforms_later_pieces_to_first_columns(
    pipeline: ModuleType, tmp_path: Path
) -> None:
    rows = [{"a": i / 2, "b": "x"} for i in range(100)] + [{"b": "y", "a": 3} for _ in range(100)]
    body = json.dumps(rows).encode()
    assert _streamed_sha(pipeline, body, tmp_path, 200, 64) == _whole_sha(pipeline, body, tmp_path)


# --------------------------------------------------------------------------- lineage + traces


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def test_openlineage_start_and_one_terminal_event(
    origin: Origin, tmp_path: Path, openlineage_schema_dir: Path
) -> None:
    """The reference builds its run events itself: each is valid for openlineage-python's
    model (the main job's validator) and for the official JSON Schemas."""
    from kfm_conformance.capture.olmodel import default_model
    from kfm_conformance.capture.olschema import OpenLineageSchemas

    origin.route("/data", conditional(etag='"v1"'))
    env = {"OPENLINEAGE_URL": origin.base, "OPENLINEAGE_NAMESPACE": "kfm-test"}
    assert run(tmp_path, origin.url(), **env).returncode == 0
    assert run(tmp_path, origin.url(), **env).returncode == 0  # 304
    origin.route("/data", serve(status=503))
    assert run(tmp_path, origin.url(), **env).returncode == 75
    events = [json.loads(s.body) for s in origin.state.posts["/api/v1/lineage"]]
    assert [e["eventType"] for e in events] == [
        "START",
        "COMPLETE",
        "START",
        "COMPLETE",
        "START",
        "FAIL",
    ]
    validators = (default_model(), OpenLineageSchemas(openlineage_schema_dir))
    for event in events:
        for validator in validators:
            problems = validator.validate(event)
            assert problems == [], (validator.describe(), [p.message for p in problems])
    for start, end in zip(events[::2], events[1::2], strict=True):
        assert start["run"]["runId"] == end["run"]["runId"]
        assert (end["job"]["namespace"], end["job"]["name"]) == ("kfm-test", "kfm-reference-ingest")
        (dataset,) = end["inputs"]
        assert dataset["namespace"] == origin.base  # scheme://host:port
        assert dataset["name"] == "/data"
    published, not_modified, failed = events[1], events[3], events[5]
    (output,) = published["outputs"]
    assert output["namespace"] == "file"
    assert output["name"] == str((tmp_path / OUTPUT).resolve())
    fields = output["facets"]["schema"]["fields"]
    assert [(f["name"], f["type"]) for f in fields] == [
        ("id", "int64"),
        ("name", "string"),
        ("value", "double"),
        ("flag", "bool"),
    ]
    assert not_modified["outputs"] == []
    assert failed["outputs"] == []
    assert "upstream_transient" in failed["run"]["facets"]["errorMessage"]["message"]


@pytest.mark.skipif(
    not _have("opentelemetry.sdk") or not _have("opentelemetry.proto"),
    reason="opentelemetry-sdk / proto not installed",
)
def test_otlp_trace_has_root_and_step_spans(origin: Origin, tmp_path: Path) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    origin.route("/data", serve(body=BODY))
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": origin.base,
        "OTEL_SERVICE_NAME": "kfm-test",
        "OPENLINEAGE_URL": origin.base,
    }
    assert run(tmp_path, origin.url(), **env).returncode == 0
    origin.route("/data", serve(status=404))
    assert run(tmp_path / "..", origin.url(), **env).returncode == 69
    spans: list[Any] = []
    for post in origin.state.posts.get("/v1/traces", []):
        request = ExportTraceServiceRequest.FromString(post.body)
        for resource_spans in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert attrs["service.name"] == "kfm-test"
            for scope in resource_spans.scope_spans:
                spans.extend(scope.spans)
    roots = [s for s in spans if s.name == "ingest"]
    assert len(roots) == 2
    run_ids = [json.loads(p.body)["run"]["runId"] for p in origin.state.posts["/api/v1/lineage"]]
    ok_root, failed_root = sorted(roots, key=lambda s: s.start_time_unix_nano)
    for root in roots:
        attrs = {a.key: a.value for a in root.attributes}
        assert attrs["openlineage.run_id"].string_value in run_ids
    assert ok_root.status.code != 2  # not ERROR
    assert failed_root.status.code == 2  # ERROR
    children = {s.name for s in spans if s.trace_id == ok_root.trace_id and s.name != "ingest"}
    assert children == {"fetch", "transform", "publish"}
    fetch = next(s for s in spans if s.trace_id == ok_root.trace_id and s.name == "fetch")
    attrs = {a.key: a.value for a in fetch.attributes}
    assert attrs["http.request.method"].string_value == "GET"
    assert attrs["url.full"].string_value == origin.url()
    assert attrs["http.response.status_code"].int_value == 200
    assert fetch.parent_span_id == ok_root.span_id
