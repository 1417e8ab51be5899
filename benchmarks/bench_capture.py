"""Benchmark: what lineage and telemetry capture adds to a pipeline run.

Runs the same pipeline N times in each of three modes, side by side (the order of the modes
rotates every round), each run a publishing run in a fresh working directory against the same
local origin, with the argv, directory and environment the harness's sandbox would use (but a
blocking wait, so the timing is exact):

- ``off``: no capture variables at all (the pipeline reports nothing);
- ``null``: the capture variables point at a bare endpoint that answers every request at once
  and keeps nothing (what any endpoint costs: the pipeline's own reporting);
- ``capture``: the harness's embedded LineageSink and OTLPReceiver, as in a certification.

It prints the median wall time of each mode and the differences: ``capture - off`` is what a
certification run adds over the pipeline's own runtime (target: at most 50 ms), and
``capture - null`` is the share of it the harness's sinks are responsible for. It also prints
how many lineage events and OTLP requests each captured run sent, so a difference can be read.

Run from the repository root::

    python benchmarks/bench_capture.py [--profile FILE] [--runs N] [--rows N] [--json OUT]

The default profile is fixtures/observed_profile.toml. This is not a timed test: it only
measures and reports; it exits 1 when a run fails, never because a target is missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kfm_conformance.capture.session import LINEAGE_NAMESPACE, CaptureServices  # noqa: E402
from kfm_conformance.profile import load_profile  # noqa: E402
from kfm_conformance.sandbox import Sandbox  # noqa: E402
from kfm_conformance.upstream import Origin, Resource, http_date, rows_payload  # noqa: E402

TARGET_MS = 50.0
MODES = ("off", "null", "capture")


class NullEndpoint:
    """Answers every POST at once (201 for lineage, an empty 200 for OTLP) and keeps nothing."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                lineage = self.path.startswith("/api/v1/lineage")
                self.send_response(201 if lineage else 200)
                self.send_header(
                    "Content-Type", "application/json" if lineage else "application/x-protobuf"
                )
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def env(self, service_name: str) -> dict[str, str]:
        return {
            "OPENLINEAGE_URL": self.url,
            "OPENLINEAGE_NAMESPACE": LINEAGE_NAMESPACE,
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_LOGS_EXPORTER": "otlp",
            "OTEL_SERVICE_NAME": service_name,
            "OTEL_RESOURCE_ATTRIBUTES": "kfm.scenario.id=bench",
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def timed_run(box: Sandbox, src: str, extra_env: dict[str, str]) -> tuple[int, float]:
    """Run the pipeline as the sandbox would (same argv, directory and environment) and time it
    precisely: a blocking wait, where the sandbox's wait with a timeout polls."""
    argv = box.profile.argv(src=src, workdir=box.workdir)
    env = box.environment(src, extra_env)
    started = time.perf_counter()
    done = subprocess.run(
        argv, cwd=box.workdir, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=False
    )
    return done.returncode, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=str(ROOT / "fixtures" / "observed_profile.toml"))
    parser.add_argument("--runs", type=int, default=20, help="runs per mode")
    parser.add_argument("--rows", type=int, default=1000, help="rows the origin serves")
    parser.add_argument("--json", help="also write the figures as JSON to this file")
    args = parser.parse_args(argv)

    profile = load_profile(args.profile)
    origin = Origin()
    origin.serve(Resource(body=rows_payload(args.rows), last_modified=http_date(1_700_000_000)))
    services = CaptureServices()
    null = NullEndpoint()
    envs = {
        "off": {},
        "null": null.env(profile.name),
        "capture": services.env(scenario_id="bench", service_name=profile.name),
    }
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    sent: list[tuple[int, int]] = []
    failures: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="kfm-bench-capture-"))
    try:
        for index in range(args.runs):
            order = MODES[index % 3 :] + MODES[: index % 3]
            for mode in order:
                box = Sandbox(profile, root / f"{mode}-{index}")
                marks = (services.lineage.mark(), services.otlp.mark())
                code, elapsed = timed_run(box, origin.url, envs[mode])
                if code not in profile.exit_codes.success_codes():
                    failures.append(f"{mode} run {index}: exit {code}")
                times[mode].append(elapsed)
                if mode == "capture":
                    sent.append(
                        (
                            len(services.lineage.records(since=marks[0])),
                            len(services.otlp.records(since=marks[1])),
                        )
                    )
    finally:
        services.close()
        null.close()
        origin.close()

    medians = {mode: statistics.median(values) * 1000 for mode, values in times.items()}
    minima = {mode: min(values) * 1000 for mode, values in times.items()}
    added = medians["capture"] - medians["off"]
    sinks = medians["capture"] - medians["null"]
    print(f"pipeline: {profile.name} ({args.runs} publishing runs per mode, {args.rows} rows)")
    print(f"{'mode':<10}{'median ms':>12}{'min ms':>10}{'max ms':>10}")
    for mode in MODES:
        values = [v * 1000 for v in times[mode]]
        print(f"{mode:<10}{medians[mode]:>12.1f}{minima[mode]:>10.1f}{max(values):>10.1f}")
    events = statistics.median(s[0] for s in sent) if sent else 0
    otlp = statistics.median(s[1] for s in sent) if sent else 0
    print(f"captured per run (median): {events:g} lineage events, {otlp:g} OTLP requests")
    print("differences per run, of the medians (of the minima, less sensitive to a busy machine):")
    for label, left, right, meaning in (
        ("capture - off", "capture", "off", "what a certification adds to the run"),
        ("capture - null", "capture", "null", "the embedded sinks' own share"),
        ("null - off", "null", "off", "the pipeline's own reporting"),
    ):
        print(
            f"  {label:<15}{medians[left] - medians[right]:+8.1f} ms "
            f"({minima[left] - minima[right]:+.1f} ms)  {meaning}"
        )
    verdict = "within" if added <= TARGET_MS else "over"
    print(f"target: capture - off <= {TARGET_MS:g} ms: {verdict}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "profile": profile.name,
                    "runs": args.runs,
                    "rows": args.rows,
                    "median_ms": medians,
                    "min_ms": minima,
                    "capture_minus_off_ms": added,
                    "capture_minus_null_ms": sinks,
                    "target_ms": TARGET_MS,
                    "times_s": times,
                },
                indent=2,
            )
            + "\n"
        )
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
