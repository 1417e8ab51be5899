"""The capture sinks are bounded by construction: a gzip bomb, an oversized body, and a flood of
requests are refused with 413 and recorded, and the sink never holds more than its caps.

The bomb is real: 300 MB of zeros, compressed on the fly in 1 MiB pieces (about 300 KB on the
wire), never held uncompressed by the test either.
"""

from __future__ import annotations

import gc
import http.client
import json
import tracemalloc
import zlib
from collections.abc import Iterator

import pytest

from kfm_conformance.capture.httpsink import CaptureServer, Limits, decode_body_bounded
from kfm_conformance.capture.lineage import LINEAGE_PATH, LineageSink
from kfm_conformance.capture.otlp import OTLPReceiver

MIB = 1024 * 1024
BOMB_BYTES = 300 * MIB


def gzip_bomb(total: int = BOMB_BYTES, piece: int = MIB) -> bytes:
    """``total`` zero bytes, gzip-compressed piece by piece (never all in memory)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(piece)
    parts = [compressor.compress(zeros) for _ in range(total // piece)]
    parts.append(compressor.flush())
    return b"".join(parts)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    data = gzip_bomb()
    assert len(data) < 2 * MIB  # small on the wire ...
    return data


def post(
    server: CaptureServer, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


@pytest.fixture
def sink() -> Iterator[LineageSink]:
    server = LineageSink(limits=Limits(decoded_bytes=MIB, request_bytes=4 * MIB))
    yield server
    server.close()


def test_decoding_stops_at_the_cap(bomb: bytes) -> None:
    body, error, over, decoded = decode_body_bounded(bomb, "gzip", limit=MIB)
    assert over and error is None
    assert body == b"" and decoded == MIB
    small = b'{"eventType": "START"}'
    assert decode_body_bounded(small, None, limit=MIB) == (small, None, False, len(small))
    assert decode_body_bounded(small, "identity", limit=4) == (b"", None, True, 4)


def test_a_gzip_bomb_is_refused_with_bounded_memory(sink: LineageSink, bomb: bytes) -> None:
    sink.set_scenario("bomb")
    gc.collect()
    tracemalloc.start()
    try:
        status, answer = post(
            sink,
            LINEAGE_PATH,
            bomb,
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 413
    assert "inflates to more than" in json.loads(answer)["error"]
    (record,) = sink.records(scenario="bomb")
    assert record.status == 413 and record.event is None
    assert record.limit is not None and "inflates to more than 1048576 bytes" in record.limit
    assert record.size == len(bomb)
    assert record.decoded_size <= sink.limits.decoded_bytes
    # What the sink allocated while serving the bomb stays near its 1 MiB cap (measured: about
    # 1.1 MiB), far below the 300 MB the bomb inflates to (an unbounded decode holds it all).
    assert peak < 4 * MIB, peak
    assert sink.limit_counts("bomb")["refused"] == 1


def test_the_otlp_receiver_refuses_a_gzip_bomb(bomb: bytes) -> None:
    receiver = OTLPReceiver(limits=Limits(decoded_bytes=MIB))
    try:
        receiver.set_scenario("bomb")
        status, _ = post(
            receiver,
            "/v1/traces",
            bomb,
            {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
        )
        (record,) = receiver.records()
    finally:
        receiver.close()
    assert status == 413
    assert record.status == 413 and not record.accepted
    assert record.limit is not None and "inflates" in record.limit
    assert record.decoded_size <= MIB


def test_a_body_too_large_on_the_wire_is_refused_unread(sink: LineageSink) -> None:
    sink.set_scenario("big")
    body = b" " * (5 * MIB)
    try:
        status, _ = post(sink, LINEAGE_PATH, body, {"Content-Type": "application/json"})
    except (ConnectionError, http.client.HTTPException):
        status = 413  # the sink may close before the client finished sending
    assert status == 413
    (record,) = sink.records(scenario="big")
    assert record.status == 413 and record.limit is not None
    assert "on the wire" in record.limit and record.decoded_size == 0


def test_the_scenario_budget_caps_requests_and_refusals_recorded() -> None:
    limits = Limits(requests_per_scenario=3, refusals_recorded=2)
    server = LineageSink(limits=limits)
    event = json.dumps({"eventType": "START"}).encode()
    try:
        server.set_scenario("flood")
        statuses = [
            post(server, LINEAGE_PATH, event, {"Content-Type": "application/json"})[0]
            for _ in range(7)
        ]
        server.set_scenario("next")
        after = post(server, LINEAGE_PATH, event, {"Content-Type": "application/json"})[0]
        counts = server.limit_counts("flood")
        records = server.records(scenario="flood")
    finally:
        server.close()
    assert statuses == [201, 201, 201, 413, 413, 413, 413]
    assert after == 201  # another scenario has a budget of its own
    assert len(records) == 5  # 3 accepted + 2 refusals kept; the rest only counted
    assert [r.status for r in records] == [201, 201, 201, 413, 413]
    assert counts["refused"] == 4 and counts["refused_unrecorded"] == 2


def test_the_scenario_budget_caps_bytes() -> None:
    server = LineageSink(limits=Limits(bytes_per_scenario=100))
    body = json.dumps({"eventType": "START", "pad": "x" * 40}).encode()
    try:
        server.set_scenario("bytes")
        statuses = [
            post(server, LINEAGE_PATH, body, {"Content-Type": "application/json"})[0]
            for _ in range(3)
        ]
        refused = [r for r in server.records(scenario="bytes") if r.limit]
    finally:
        server.close()
    assert len(body) < 100 < 2 * len(body)
    assert statuses == [201, 413, 413]
    assert refused and "more than 100 bytes" in str(refused[0].limit)
