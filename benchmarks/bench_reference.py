"""Benchmark: the reference pipeline against the blueprint's seed on a large JSON array.

Generates a deterministic JSON array (default 1,000,000 rows, about 100 MB), serves it from a
local threaded HTTP server on 127.0.0.1 (with Last-Modified, honouring If-Modified-Since), and
runs ``benchmarks/seed_http_change_detection.py`` and ``reference/pipeline.py`` side by side,
alternating which goes first, each in a fresh temporary working directory. For every child it
records the wall time and the peak RSS (``ru_maxrss`` from ``os.wait4`` on that child alone), then
reruns it in the same directory to time the not-modified (304) path.

It checks that both produced the same rows (same count, same values in the same order; the
column types may differ, pandas writes its own) and that the reference output is byte-identical
across runs and directories, and prints a table with the figures and the ratios
(targets: reference >= 3x faster, <= 1/3 of the seed's peak RSS).

Run from the repository root: ``python benchmarks/bench_reference.py [--rows N] [--repeat N]
[--json OUT]``. Exits 1 when a correctness check fails (not when a target is missed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "benchmarks" / "seed_http_change_detection.py"
REFERENCE = ROOT / "reference" / "pipeline.py"
OUTPUT = "out/data.parquet"
LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "kilo"]


def generate(rows: int) -> bytes:
    """A deterministic JSON array: int id, string name, float value, bool flag, string category.

    Every value is a float literal with a fractional part or ``.0`` so both parsers type the
    column as float64."""
    parts: list[str] = []
    x = 12345
    for i in range(rows):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        name = f"{WORDS[x % 10]}-{WORDS[(x >> 8) % 10]}-{x % 100000:05d}"
        value = (x % 10_000_000) / 64
        flag = "true" if x & 1 else "false"
        parts.append(
            f'{{"id": {i}, "name": "{name}", "value": {value!r}, "flag": {flag}, '
            f'"category": "cat-{x % 37:02d}"}}'
        )
    return ("[" + ",".join(parts) + "]").encode("utf-8")


class Origin:
    """A threaded HTTP server on 127.0.0.1 serving one payload with Last-Modified."""

    def __init__(self, body: bytes) -> None:
        payload = memoryview(body)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.headers.get("If-Modified-Since") == LAST_MODIFIED:
                    self.send_response(304)
                    self.send_header("Last-Modified", LAST_MODIFIED)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Last-Modified", LAST_MODIFIED)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/data.json"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Origin:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Run:
    impl: str
    kind: str  # "publish" (first run) or "not_modified" (rerun)
    exit_code: int
    wall_s: float
    cpu_s: float
    max_rss_kib: int


@dataclass
class Report:
    rows: int
    payload_bytes: int
    repeat: int
    runs: list[Run] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def run_child(script: Path, url: str, cwd: str) -> dict[str, Any]:
    """Run one pipeline; returns its exit code, wall and CPU (user + sys) seconds and the peak
    RSS in KiB of that child only.

    The child is started by a small runner process (this file with ``--run-child``), not by
    this process: on Linux a child's ``ru_maxrss`` starts from the high-water mark of the
    address space it was forked (or vforked) from, and this process holds the payload."""
    runner = [sys.executable, str(Path(__file__).resolve()), "--run-child", str(script), url]
    result = subprocess.run(runner, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"child runner failed: {result.stderr.strip()}")
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


def _run_child_here(script: str, url: str) -> int:
    """The runner: start the pipeline in the cwd, wait4 it, print its figures as JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENLINEAGE_", "OTEL_"))}
    env.pop("SRC", None)
    with open("child.log", "ab") as log:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, script, url], env=env, stdout=log, stderr=log)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    figures = {
        "exit_code": child.returncode,
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "max_rss_kib": usage.ru_maxrss,
    }
    sys.stdout.write(json.dumps(figures) + "\n")
    return 0


def same_rows(seed_path: str, ref_path: str) -> tuple[bool, str]:
    """Same number of rows and the same values in the same order (types may differ)."""
    import pyarrow.parquet as pq

    seed = pq.read_table(seed_path)
    ref = pq.read_table(ref_path)
    seed_cols = [c for c in seed.column_names if not c.startswith("__index_level_")]
    if seed_cols != ref.column_names:
        return False, f"columns differ: seed {seed_cols} vs reference {ref.column_names}"
    if seed.num_rows != ref.num_rows:
        return False, f"row counts differ: seed {seed.num_rows} vs reference {ref.num_rows}"
    for name in ref.column_names:
        expected = ref.column(name).combine_chunks()
        got = seed.column(name).combine_chunks()
        if got.type != expected.type:
            got = got.cast(expected.type)
        if not got.equals(expected):
            return False, f"values differ in column {name!r}"
    return True, f"{ref.num_rows} rows x {ref.num_columns} columns identical in value and order"


def digest(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def print_run(rep: int, run: Run) -> None:
    print(
        f"  rep {rep} {run.impl:9s} {run.kind:12s} exit {run.exit_code}  wall {run.wall_s:6.2f} s"
        f"  cpu {run.cpu_s:6.2f} s  peak RSS {run.max_rss_kib / 1024:7.1f} MiB",
        flush=True,
    )


def bench(rows: int, repeat: int) -> Report:
    print(f"generating {rows} rows ...", flush=True)
    body = generate(rows)
    report = Report(rows=rows, payload_bytes=len(body), repeat=repeat)
    impls = {"seed": SEED, "reference": REFERENCE}
    ref_digests: set[str] = set()
    compared = False
    failures: list[str] = []
    with Origin(body) as origin, tempfile.TemporaryDirectory(prefix="kfm-bench-") as base:
        for rep in range(repeat):
            order = ["seed", "reference"] if rep % 2 == 0 else ["reference", "seed"]
            outputs: dict[str, str] = {}
            for impl in order:
                cwd = os.path.join(base, f"{impl}-{rep}")
                os.makedirs(cwd)
                first = Run(impl, "publish", **run_child(impls[impl], origin.url, cwd))
                report.runs.append(first)
                print_run(rep, first)
                out = os.path.join(cwd, OUTPUT)
                if first.exit_code != 0 or not os.path.exists(out):
                    failures.append(
                        f"{impl} rep {rep}: exit {first.exit_code}, see {cwd}/child.log"
                    )
                    continue
                outputs[impl] = out
                again = Run(impl, "not_modified", **run_child(impls[impl], origin.url, cwd))
                report.runs.append(again)
                print_run(rep, again)
                if again.exit_code != 0:
                    failures.append(f"{impl} rep {rep} rerun: exit {again.exit_code}")
            if "reference" in outputs:
                ref_digests.add(digest(outputs["reference"]))
            if not compared and len(outputs) == 2:
                ok, detail = same_rows(outputs["seed"], outputs["reference"])
                report.checks["same_rows"] = {"ok": ok, "detail": detail}
                compared = True
                if not ok:
                    failures.append(detail)
    report.checks["reference_byte_identical"] = {
        "ok": len(ref_digests) == 1,
        "detail": f"{len(ref_digests)} distinct digest(s) over {repeat} runs in separate dirs",
    }
    if len(ref_digests) != 1:
        failures.append("reference output differs across runs")
    report.checks["failures"] = failures
    report.summary = summarize(report)
    return report


def summarize(report: Report) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for impl in ("seed", "reference"):
        for kind in ("publish", "not_modified"):
            runs = [
                r for r in report.runs if r.impl == impl and r.kind == kind and r.exit_code == 0
            ]
            if not runs:
                continue
            walls = [r.wall_s for r in runs]
            summary[f"{impl}.{kind}"] = {
                "n": len(runs),
                "wall_min_s": round(min(walls), 3),
                "wall_median_s": round(statistics.median(walls), 3),
                "wall_max_s": round(max(walls), 3),
                "cpu_median_s": round(statistics.median(r.cpu_s for r in runs), 3),
                "max_rss_mib": round(max(r.max_rss_kib for r in runs) / 1024, 1),
            }
    seed, ref = summary.get("seed.publish"), summary.get("reference.publish")
    if seed and ref:
        speedup = seed["wall_median_s"] / ref["wall_median_s"]
        rss_ratio = ref["max_rss_mib"] / seed["max_rss_mib"]
        summary["speedup_median"] = round(speedup, 2)
        summary["speedup_min"] = round(seed["wall_min_s"] / ref["wall_min_s"], 2)
        summary["cpu_ratio"] = round(seed["cpu_median_s"] / ref["cpu_median_s"], 2)
        summary["rss_ratio"] = round(rss_ratio, 3)
        summary["targets_met"] = {"speed_3x": speedup >= 3.0, "rss_one_third": rss_ratio <= 1 / 3}
    return summary


def print_table(report: Report) -> None:
    s = report.summary
    print()
    print(
        f"payload: {report.rows} rows, {report.payload_bytes / 1e6:.1f} MB, "
        f"{report.repeat} repetition(s), alternating order"
    )
    print(
        f"{'implementation':24s} {'n':>2s} {'min s':>7s} {'median s':>9s} {'max s':>7s} "
        f"{'cpu s':>7s} {'peak RSS MiB':>13s}"
    )
    for key in ("seed.publish", "reference.publish", "seed.not_modified", "reference.not_modified"):
        if key in s:
            row = s[key]
            print(
                f"{key:24s} {row['n']:>2d} {row['wall_min_s']:>7.2f} "
                f"{row['wall_median_s']:>9.2f} {row['wall_max_s']:>7.2f} "
                f"{row['cpu_median_s']:>7.2f} {row['max_rss_mib']:>13.1f}"
            )
    if "speedup_median" in s:
        met = s["targets_met"]
        print(
            f"speed-up, median wall (seed / reference): {s['speedup_median']:.2f}x "
            f"(target >= 3x: {'met' if met['speed_3x'] else 'NOT met'}); "
            f"best-of-n {s['speedup_min']:.2f}x; CPU time {s['cpu_ratio']:.2f}x"
        )
        print(
            f"peak RSS ratio (reference / seed):       {s['rss_ratio']:.3f} "
            f"(target <= 0.333: {'met' if met['rss_one_third'] else 'NOT met'})"
        )
    for name in ("same_rows", "reference_byte_identical"):
        check = report.checks.get(name)
        if check:
            print(f"check {name}: {'ok' if check['ok'] else 'FAILED'} - {check['detail']}")
    for failure in report.checks.get("failures", []):
        print(f"FAILURE: {failure}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--run-child"] and len(argv) == 3:
        return _run_child_here(argv[1], argv[2])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the payload")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per implementation")
    parser.add_argument("--json", metavar="OUT", help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be >= 1")
    report = bench(args.rows, args.repeat)
    print_table(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(asdict(report), fh, indent=2)
            fh.write("\n")
    return 1 if report.checks.get("failures") else 0


if __name__ == "__main__":
    sys.exit(main())
