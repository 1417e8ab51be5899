"""Benchmark: the crash campaign (both cases) against one pipeline, with its wall time.

Runs the same campaign the ``atomic-publication`` feature runs (see
``kfm_conformance/faults/crash.py``): a recording of one publishing run under strace, one
SIGKILL per crash point (every rename, fsync, create/truncate and unlink, and the first, middle
and last write of each file), the oracle and a recovery run after each kill, plus a few
time-based kills; first for a first publication (fresh directory), then for an update (old
version published, old state present). Points run in parallel lanes (default 2, for 2 cores).

Prints, per case, the crash points explored (how many strace kills landed exactly where they
were aimed, how many time-based kills), unreachable steps, failures of the oracle and the wall
time, then the total against the target (whole campaign <= 60 s on 2 cores). It is a benchmark,
not a timed test: a missed target is reported, not failed. Exits 1 only when the pipeline fails
the oracle (so a correct pipeline must exit 0), 2 when strace is unavailable.

Run from the repository root: ``python benchmarks/bench_crash_campaign.py [--profile P]
[--workers N] [--old-rows N] [--new-rows N] [--timed-kills N] [--json OUT]``. The profile
defaults to ``reference/profile.toml``, else ``fixtures/profile.toml``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kfm_conformance.faults import strace  # noqa: E402
from kfm_conformance.faults.crash import CASES, UPDATE, run_campaign  # noqa: E402
from kfm_conformance.profile import load_profile  # noqa: E402
from kfm_conformance.sandbox import Sandbox  # noqa: E402
from kfm_conformance.upstream import Resource, http_date, rows_payload  # noqa: E402

TARGET_S = 60.0


def default_profile() -> Path:
    reference = ROOT / "reference" / "profile.toml"
    return reference if reference.is_file() else ROOT / "fixtures" / "profile.toml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=Path, default=default_profile())
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--old-rows", type=int, default=2000)
    parser.add_argument("--new-rows", type=int, default=2500)
    parser.add_argument("--timed-kills", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    found = strace.probe()
    if not found.ok:
        print(f"strace unavailable: {found.reason}", file=sys.stderr)
        return 2
    profile = load_profile(args.profile)
    old = Resource(
        body=rows_payload(args.old_rows, version=1), last_modified=http_date(1_700_086_400)
    )
    new = Resource(
        body=rows_payload(args.new_rows, version=2), last_modified=http_date(1_700_172_800)
    )
    root = Path(tempfile.mkdtemp(prefix="kfm-bench-crash-"))
    counter = itertools.count(1)

    def make_sandbox() -> Sandbox:
        return Sandbox(profile, root / f"run-{next(counter)}")

    print(f"{profile.name}: crash campaign, {args.workers} lanes, {found.version}")
    print(
        f"{'case':18} {'points':>6} {'landed':>6} {'timed':>5} {'unreach':>7} {'failed':>6} "
        f"{'wall s':>7}"
    )
    figures: list[dict[str, Any]] = []
    failed = 0
    started = time.monotonic()
    try:
        for case in CASES:
            clock = time.monotonic()
            result = run_campaign(
                profile,
                make_sandbox,
                case=case,
                old=old if case == UPDATE else None,
                new=new,
                workers=args.workers,
                timed_kills=args.timed_kills,
                seed=args.seed,
            )
            wall = time.monotonic() - clock
            bad = [p for p in result.points if not p.ok]
            failed += len(bad)
            summary = result.summary()
            figures.append({**summary, "wall_s": round(wall, 2), "failed": len(bad)})
            print(
                f"{case:18} {summary['crash_points_explored']:>6} "
                f"{summary['strace_points_landed_as_aimed']:>6} {summary['timed_kills']:>5} "
                f"{len(summary['unreachable_steps']):>7} {len(bad):>6} {wall:>7.1f}"
            )
            for point in bad[:5]:
                problems = point.problems_output + point.problems_recovery + point.problems_state
                print(f"    FAILED {point.label}: {'; '.join(problems)}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    total = time.monotonic() - started
    explored = sum(f["crash_points_explored"] for f in figures)
    verdict = "within" if total <= TARGET_S else "OVER"
    print(
        f"total: {explored} crash points explored in {total:.1f} s ({verdict} the {TARGET_S:g} s "
        "target)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"profile": profile.name, "total_s": round(total, 2), "cases": figures}, indent=2
            )
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
