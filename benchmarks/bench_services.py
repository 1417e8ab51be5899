"""Start-to-healthy time of the `local` real services, from a warm cache.

    python benchmarks/bench_services.py                      # 3 starts of each set
    python benchmarks/bench_services.py --repeat 5 --json services.json

Each repetition starts a fresh :class:`~kfm_conformance.services.local.LocalServices` and stops
it again, for two sets side by side: lakeFS + the Collector (the baseline, no JVM and no
database) and lakeFS + the Collector + Marquez (with its own PostgreSQL cluster: ``initdb``,
server start, role and database, then Marquez's boot and its Flyway migrations against the
empty database). Figures: the provider's own timings per service (launch to healthy), the
total, and the stop time, with the load average before each start, since the machine is
shared. The target (issue 12) is all three healthy within 60 s; a missed target is printed,
never an exit code.

Needs the builds (``scripts/build-services.sh``); says which are missing and exits 2 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kfm_conformance.services.local import LocalServices, missing_builds  # noqa: E402

TARGET_S = 60.0
SETS: dict[str, set[str]] = {
    "lakefs+collector": {"lakefs", "collector"},
    "lakefs+collector+marquez": {"lakefs", "collector", "marquez"},
}


def one_start(services: set[str]) -> dict[str, Any]:
    """Start and stop ``services`` once; the provider's timings plus the wall time."""
    load = os.getloadavg()[0]
    provider = LocalServices()
    started = time.monotonic()
    try:
        provider.start(set(services))
        healthy = time.monotonic() - started
        assert all(provider.health().values()), provider.health()
    finally:
        provider.stop()
    timings = {k: round(v, 2) for k, v in provider.timings.items()}
    return {"wall_s": round(healthy, 2), "load1": round(load, 1), **timings}


def summarise(rows: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows if key in r]
    if not values:
        return "-"
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    missing = missing_builds()
    if missing:
        for service, reason in sorted(missing.items()):
            print(f"bench_services: {service}: {reason}", file=sys.stderr)
        return 2
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in SETS}
    for _ in range(args.repeat):  # alternate the sets, so load drifts hit both alike
        for name, services in SETS.items():
            results[name].append(one_start(services))
    keys = ["wall_s", "postgresql", "marquez", "lakefs", "collector", "stop", "load1"]
    print("min / median / max seconds over", args.repeat, "starts (load1: load average)")
    print("| set | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, rows in results.items():
        print(f"| {name} | " + " | ".join(summarise(rows, k) for k in keys) + " |")
    worst = max(r["wall_s"] for r in results["lakefs+collector+marquez"])
    verdict = "met" if worst <= TARGET_S else "MISSED"
    print(f"all three healthy within {TARGET_S:.0f} s (worst start {worst:.1f} s): {verdict}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
