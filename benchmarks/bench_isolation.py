"""What containing a run costs: the same pipeline runs started by the sandbox with
``--isolation none`` and ``namespaces``, side by side, alternating which goes first.

Two pipelines: a trivial one (``python -c pass``: the fixed cost of a run) and the reference
pipeline publishing 25 rows against a local origin (a real run). Prints the median, min and
max wall time per run for each mode and their difference and ratio.

    python benchmarks/bench_isolation.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kfm_conformance import isolation
from kfm_conformance.profile import parse_profile
from kfm_conformance.sandbox import Sandbox
from kfm_conformance.upstream import Origin, Resource, rows_payload

REPO = Path(__file__).resolve().parents[1]


def _profile(command: list[str]) -> object:
    data = {"pipeline": {"name": "bench", "command": command, "output": "out/data.parquet"}}
    return parse_profile(data, REPO / "reference" / "profile.toml")


def _time_runs(
    profile: object, choice: isolation.IsolationChoice, src: str, repeat: int
) -> list[float]:
    times = []
    with tempfile.TemporaryDirectory(prefix="kfm-bench-iso-") as root:
        for number in range(repeat):
            box = Sandbox(
                profile,
                Path(root) / f"{choice.mode}-{number}",  # type: ignore[arg-type]
                isolation_choice=choice,
            )
            began = time.perf_counter()
            result = box.run(src)
            times.append(time.perf_counter() - began)
            if result.exit_code != 0:
                raise SystemExit(f"run failed under {choice.mode}: {result.stderr_tail}")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    namespaces = isolation.choose("namespaces")
    unisolated = isolation.choose("none")
    origin = Origin()
    origin.serve(Resource(body=rows_payload(25, seed=1, version=1), last_modified=None))
    cases = {
        "trivial (python -c pass)": _profile([sys.executable, "-c", "pass"]),
        "reference, 25 rows": _profile(
            ["{python}", str(REPO / "reference" / "pipeline.py"), "{src}"]
        ),
    }
    print(f"{'pipeline':28} {'mode':11} {'n':>3} {'median s':>9} {'min s':>7} {'max s':>7}")
    try:
        for name, profile in cases.items():
            figures: dict[str, list[float]] = {"none": [], "namespaces": []}
            for half in range(2):  # alternate which mode goes first
                order = (unisolated, namespaces) if half == 0 else (namespaces, unisolated)
                for choice in order:
                    figures[str(choice.mode)] += _time_runs(
                        profile, choice, origin.url, args.repeat // 2
                    )
            for mode, values in figures.items():
                print(
                    f"{name:28} {mode:11} {len(values):>3} {statistics.median(values):9.3f} "
                    f"{min(values):7.3f} {max(values):7.3f}"
                )
            extra = statistics.median(figures["namespaces"]) - statistics.median(figures["none"])
            ratio = statistics.median(figures["namespaces"]) / statistics.median(figures["none"])
            print(f"{'':28} isolation costs {extra * 1000:+.1f} ms per run ({ratio:.2f}x)")
    finally:
        origin.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
