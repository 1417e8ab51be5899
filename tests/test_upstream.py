"""The scripted origin: what it serves, and that closing it ends its server."""

from __future__ import annotations

import socket

import requests
from werkzeug.serving import BaseWSGIServer

from kfm_conformance import upstream
from kfm_conformance.upstream import Origin, Resource


def test_the_origin_serves_its_resource_and_closing_it_frees_the_port() -> None:
    origin = Origin()
    origin.serve(Resource(body=b'[{"id": 1}]', last_modified=None))
    answer = requests.get(origin.url, timeout=5)
    assert answer.status_code == 200
    assert answer.content == b'[{"id": 1}]'
    port = int(origin.base_url.rsplit(":", 1)[1])
    origin.close()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_the_serving_loop_looks_for_a_stop_at_the_short_interval(monkeypatch) -> None:
    """Closing an origin waits for its loop to notice; werkzeug's default is 0.5 s a scenario."""
    seen: list[float] = []
    original = BaseWSGIServer.serve_forever

    def spy(self: BaseWSGIServer, poll_interval: float = 0.5) -> None:
        seen.append(poll_interval)
        original(self, poll_interval=poll_interval)

    monkeypatch.setattr(BaseWSGIServer, "serve_forever", spy)
    origin = Origin()
    origin.close()
    assert seen == [upstream.STOP_POLL_S]
    assert upstream.STOP_POLL_S < 0.5
