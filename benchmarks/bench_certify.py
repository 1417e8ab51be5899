"""Benchmark: the main job (certifying the reference with the embedded services) against the
pipeline's own run time for the same runs, measured bare.

1. Runs ``kfm-conformance certify --profile reference/profile.toml -j 2`` and times it (wall).
2. Counts the whole pipeline runs the certification made: every run in the report's evidence,
   plus each crash campaign's recovery runs, counted once for a campaign that two scenarios
   share. The campaigns' kills are not counted: a kill stops a run part-way, so charging it
   as a whole bare run would flatter the ratio; their cost stays on the harness's side.
3. Measures the same pipeline bare: a publication and a not-modified rerun, started by the
   sandbox without isolation and without a harness around it, repeated, with the environment
   every certification run gets (``OPENLINEAGE_URL`` and the ``OTEL_*`` variables pointing
   at an embedded lineage sink and OTLP receiver), because a pipeline that sends lineage and
   traces pays for its clients on every run. The bare cost of the certification's runs is
   their count times the median bare run, shared over the jobs.
4. Prints the wall time, the bare time, their ratio (target <= 1.6), and for each crash campaign
   its points, distinct states, recovery runs and time.

It is a benchmark, not a timed test: it exits 1 only when the certification does not certify.

    python benchmarks/bench_certify.py [--jobs 2] [--repeat 10] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kfm_conformance.capture.session import CaptureServices  # noqa: E402
from kfm_conformance.isolation import choose  # noqa: E402
from kfm_conformance.profile import load_profile  # noqa: E402
from kfm_conformance.sandbox import Sandbox  # noqa: E402
from kfm_conformance.upstream import Origin, Resource, http_date, rows_payload  # noqa: E402


def _walk(value: Any) -> Any:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


def count_runs(report: dict[str, Any]) -> int:
    """Every whole pipeline run the certification made: the runs its evidence records, and
    the crash campaigns' recovery runs (a shared campaign once; its kills not at all)."""
    runs = 0
    for guarantee in report["guarantees"]:
        for scenario in guarantee["scenarios"]:
            for node in _walk(scenario.get("evidence", {})):
                if "argv" in node and "exit_code" in node and "duration_s" in node:
                    runs += 1
    for campaign in campaigns(report):
        if "note" not in campaign:  # the scenario that reuses a campaign shows a copy
            runs += int(campaign.get("recovery_runs") or 0)
    return runs


def campaigns(report: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for guarantee in report["guarantees"]:
        for scenario in guarantee["scenarios"]:
            for node in _walk(scenario.get("evidence", {})):
                if "crash_points_explored" in node:
                    found.append({"check_id": scenario["check_id"], **node})
    return found


def bare_run_s(repeat: int) -> float:
    """The median wall time of one bare reference run (publication, then 304), with the
    capture environment a certification gives every run."""
    profile = load_profile(REPO / "reference" / "profile.toml")
    sinks = CaptureServices()
    env = sinks.env(scenario_id="bench-bare", service_name=profile.name)
    origin = Origin()
    origin.serve(
        Resource(body=rows_payload(25, seed=1, version=1), last_modified=http_date(1_700_000_000))
    )
    times = []
    try:
        with tempfile.TemporaryDirectory(prefix="kfm-bench-bare-") as root:
            for number in range(repeat):
                box = Sandbox(
                    profile, Path(root) / f"run-{number}", isolation_choice=choose("none")
                )
                for _ in range(2):
                    began = time.perf_counter()
                    box.run(origin.url, extra_env=env)
                    times.append(time.perf_counter() - began)
    finally:
        origin.close()
        sinks.close()
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kfm-bench-certify-") as scratch:
        report_dir = Path(scratch) / "report"
        began = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "kfm_conformance.cli", "certify", "--profile",
             str(REPO / "reference" / "profile.toml"), "-j", str(args.jobs),
             "--report-dir", str(report_dir)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        wall = time.monotonic() - began
        report = json.loads((report_dir / "report.json").read_text())
    runs = count_runs(report)
    bare_one = bare_run_s(args.repeat)
    bare_total = runs * bare_one / args.jobs
    figures = {
        "verdict": report["verdict"],
        "counts": report["counts"],
        "wall_s": round(wall, 1),
        "runs": runs,
        "bare_run_median_s": round(bare_one, 3),
        "bare_total_s": round(bare_total, 1),
        "ratio": round(wall / bare_total, 2) if bare_total else None,
        "campaigns": [
            {
                "check_id": c["check_id"],
                "points": c.get("crash_points_explored"),
                "distinct_states": c.get("distinct_states"),
                "recovery_runs": c.get("recovery_runs"),
                "recovery_s": c.get("recovery_s"),
                "duration_s": c.get("duration_s"),
            }
            for c in campaigns(report)
        ],
    }
    print(
        f"main job ({args.jobs} jobs): {figures['wall_s']} s wall, {report['verdict']}, "
        f"{report['counts']}"
    )
    print(
        f"pipeline runs: {runs}; bare median {bare_one:.3f} s; bare total over "
        f"{args.jobs} jobs {bare_total:.1f} s; ratio {figures['ratio']} (target <= 1.6)"
    )
    for c in figures["campaigns"]:
        print(
            f"  campaign {c['check_id']}: {c['points']} points, {c['distinct_states']} "
            f"distinct states, {c['recovery_runs']} recoveries in {c['recovery_s']} s, "
            f"{c['duration_s']} s"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0 if done.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
