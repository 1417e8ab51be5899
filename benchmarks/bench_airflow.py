"""Benchmark: the reference pipeline as an Airflow DAG, cold and warm, against the plain script.

For each way of running, ``--repeat`` publishing runs, each in a fresh working directory,
against a local origin serving a 200-row JSON array, with the harness's embedded lineage sink
and OTLP receiver as the lineage and trace endpoints (as under ``certify``):

* ``plain``: ``python reference/pipeline.py`` (the task's own work, and its baseline);
* ``DAG, cold``: the harness's DAG runner (``kfm_conformance/airflow/dag_runner.py --cold``)
  on ``reference/airflow/kfm_ingest_dag.py``: import Airflow, parse the DAG, one DAG run;
* ``DAG, warm``: the same through the warm runner (``--serve`` once, then one client per run;
  its start-up is reported on its own line).

Per run: wall time, and CPU time (user + sys) of the run's process tree where it can be
measured (the cold runner and the plain script are children of this process; a warm worker is
a child of the server, so its CPU is read from the runner's own ``KFM_AIRFLOW_TIMING`` line).
The overhead of a DAG run is its wall time minus the plain script's (the same work).
``--certify`` also times ``kfm-conformance certify -j 2`` (every guarantee, embedded
services) of the plain reference and of the reference DAG through the warm runner
(``--isolation none``, how this project certifies its own DAG); ``--certify-contained`` adds
the reference DAG under the default isolation, where every DAG run is a cold run (tens of
minutes). Each line says the verdict and the counts, so a time is never a failed run's.

Run from the repository root with Airflow installed (``scripts/setup-airflow.sh``):
``python benchmarks/bench_airflow.py [--repeat N] [--certify] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kfm_conformance.airflow import AirflowSpec, airflow_argv, db_template  # noqa: E402
from kfm_conformance.capture.lineage import LineageSink  # noqa: E402
from kfm_conformance.capture.otlp import OTLPReceiver  # noqa: E402
from kfm_conformance.profile import load_profile  # noqa: E402
from kfm_conformance.upstream import Origin, Resource, rows_payload  # noqa: E402

PLAIN_PROFILE = ROOT / "reference" / "profile.toml"
DAG_PROFILE = ROOT / "reference" / "airflow" / "profile.toml"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(argv: list[str], env: dict[str, str], workdir: Path) -> dict[str, Any]:
    cpu_before, start = _children_cpu(), time.monotonic()
    done = subprocess.run(argv, env=env, cwd=workdir, capture_output=True, text=True, check=False)
    wall, cpu = time.monotonic() - start, _children_cpu() - cpu_before
    timing = re.findall(
        r"dag_runner timing: flushed, exiting: wall [\d.]+ s, cpu ([\d.]+) s", done.stderr
    )
    return {
        "exit_code": done.returncode,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3) if cpu > 0.05 else (float(timing[-1]) if timing else None),
        "published": (workdir / "out" / "data.parquet").is_file(),
        "tail": (done.stdout + done.stderr).strip().splitlines()[-1:] or [""],
    }


def _summary(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    walls = [r["wall_s"] for r in runs]
    cpus = [r["cpu_s"] for r in runs if r["cpu_s"] is not None]
    return {
        "name": name,
        "n": len(runs),
        "wall_median_s": round(statistics.median(walls), 3),
        "wall_min_s": min(walls),
        "cpu_median_s": round(statistics.median(cpus), 3) if cpus else None,
        "ok": all(r["exit_code"] == 0 and r["published"] for r in runs),
    }


def _certify(profile: Path, report_dir: Path, *extra: str) -> dict[str, Any]:
    """Time one full certification; its wall time, verdict and counts."""
    start = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "kfm_conformance.cli",
            "certify",
            "--profile",
            str(profile),
            "-j",
            "2",
            "--report-dir",
            str(report_dir),
            *extra,
        ],
        check=False,
        capture_output=True,
    )
    wall = round(time.monotonic() - start, 1)
    try:
        report = json.loads((report_dir / "report.json").read_text())
    except (OSError, ValueError):
        return {"wall_s": wall, "verdict": "no report", "counts": {}}
    return {"wall_s": wall, "verdict": report["verdict"], "counts": report["counts"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--certify", action="store_true")
    parser.add_argument("--certify-contained", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()

    plain = load_profile(PLAIN_PROFILE)
    dag = load_profile(DAG_PROFILE)
    spec = AirflowSpec.of(dag)
    assert spec is not None
    spec.check()
    db_template(spec.python)  # once per Airflow version, as under certify
    origin, sink, receiver = Origin(), LineageSink(), OTLPReceiver()
    origin.serve(Resource(body=rows_payload(200, seed=7, version=1)))
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TZ") if k in os.environ}
    base.update(sink.env("kfm-conformance"))
    base.update(receiver.env("bench", "bench-airflow"))
    base["SRC"] = origin.url
    base["KFM_AIRFLOW_TIMING"] = "1"
    scratch = Path(tempfile.mkdtemp(prefix="kfm-bench-airflow-"))
    counter = iter(range(1_000_000))

    def fresh() -> Path:
        path = scratch / f"run-{next(counter)}"
        path.mkdir()
        return path

    results: dict[str, list[dict[str, Any]]] = {"plain": [], "DAG, cold": [], "DAG, warm": []}
    dag_env = {**base, **dag.env}
    cold_argv = [a for a in airflow_argv(dag, src=origin.url, workdir=dag.profile_dir) or []]
    cold_argv.append("--cold")
    for _ in range(args.repeat):
        workdir = fresh()
        results["plain"].append(
            _run(plain.argv(src=origin.url, workdir=workdir), {**base, **plain.env}, workdir)
        )
        workdir = fresh()
        results["DAG, cold"].append(_run(cold_argv, dag_env, workdir))

    address = f"kfm-bench-{os.getpid()}"
    serve_argv = [a for a in cold_argv if a != "--cold"]
    server_env = {k: v for k, v in dag_env.items() if not k.startswith(("OPENLINEAGE", "OTEL"))}
    start = time.monotonic()
    server = subprocess.Popen(
        [*serve_argv, "--serve", address],
        env=server_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert server.stdout is not None
    ready = any(line.strip() == "ready" for line in iter(server.stdout.readline, ""))
    threading.Thread(target=server.stdout.read, daemon=True).start()  # drain its log
    warm_start = round(time.monotonic() - start, 2)
    try:
        for _ in range(args.repeat if ready else 0):
            workdir = fresh()
            results["DAG, warm"].append(_run([*serve_argv, "--client", address], dag_env, workdir))
    finally:
        server.kill()
        server.wait()

    table = [_summary(name, runs) for name, runs in results.items() if runs]
    plain_wall = table[0]["wall_median_s"]
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 cores)")
    print("| run | n | median wall s | min wall s | median CPU s | overhead over plain, s | ok |")
    print("|---|---|---|---|---|---|---|")
    for row in table:
        overhead = round(row["wall_median_s"] - plain_wall, 2)
        row["overhead_s"] = overhead
        print(
            f"| {row['name']} | {row['n']} | {row['wall_median_s']} | {row['wall_min_s']} | "
            f"{row['cpu_median_s']} | {overhead if row['name'] != 'plain' else '-'} | {row['ok']} |"
        )
    print(
        f"warm runner start-up (import, parse, DB sync, execution API): {warm_start} s"
        + ("" if ready else " (did not become ready)")
    )
    certify_times: dict[str, dict[str, Any]] = {}
    if args.certify or args.certify_contained:
        certify_times["plain reference"] = _certify(PLAIN_PROFILE, scratch / "report-plain")
        certify_times["reference DAG, warm runner (--isolation none)"] = _certify(
            DAG_PROFILE, scratch / "report-dag-warm", "--isolation", "none"
        )
    if args.certify_contained:
        certify_times["reference DAG, contained (every run cold)"] = _certify(
            DAG_PROFILE, scratch / "report-dag-contained"
        )
    for name, figures in certify_times.items():
        print(
            f"full certification, {name}: {figures['wall_s']} s, {figures['verdict']}, "
            f"{figures['counts']}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "table": table,
                    "runs": results,
                    "warm_start_s": warm_start,
                    "certify_s": certify_times,
                },
                indent=2,
            )
        )
    origin.close()
    sink.close()
    receiver.close()
    return 0 if all(row["ok"] for row in table) and ready else 1


if __name__ == "__main__":
    sys.exit(main())
