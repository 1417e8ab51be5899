"""Benchmark: the crash campaigns of a certification, as run now and as they ran before.

Runs the campaigns the features ask for (see ``kfm_conformance/faults/crash.py``): a
recording of one publishing run under strace, one SIGKILL per crash point (every rename, fsync,
create/truncate and unlink, and the first, middle and last write of each file), plus a few
time-based kills, with the oracle and a recovery run after each kill; for a first publication
(fresh directory) and for an update (old version published, old state present).

Two ways, side by side, on the same machine and in the same invocation:

- ``now``: each campaign once per certification (the update campaign is judged by both
  ``atomic-publication`` and ``idempotency``), its strace points from one held run
  (``kfm_conformance/faults/hold.py``) where the machine allows it, one recovery run per
  distinct working directory a crash left;
- ``killed`` (``--compare``): the same, but a fresh run killed at each point, as the campaigns
  ran before the held run;
- ``before`` (``--compare``, the default): a recovery after every kill, and the update campaign
  run twice, once per guarantee, as the features did before.

Prints, per campaign: crash points, distinct states, recovery runs, recovery time, wall time;
then the totals and their ratio. It is a benchmark, not a timed test. Exits 1 only when the
pipeline fails the oracle (a correct pipeline must exit 0), 2 when strace is unavailable.

Run from the repository root: ``python benchmarks/bench_crash_campaign.py [--profile P]
[--workers N] [--no-compare] [--json OUT]``. The profile defaults to ``reference/profile.toml``.
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
from kfm_conformance.faults.crash import FIRST_PUBLICATION, UPDATE, run_campaign  # noqa: E402
from kfm_conformance.profile import load_profile  # noqa: E402
from kfm_conformance.sandbox import Sandbox  # noqa: E402
from kfm_conformance.upstream import Resource, http_date, rows_payload  # noqa: E402

#: The campaigns a certification asks for: (scenario that asks, case).
NOW = [("atomic-publication[first]", FIRST_PUBLICATION), ("atomic-publication[update]", UPDATE)]
BEFORE = [*NOW, ("idempotency[update]", UPDATE)]


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
    parser.add_argument("--no-compare", action="store_true", help="skip the 'before' runs")
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

    print(f"{profile.name}: crash campaigns, {args.workers} lanes, {found.version}")
    header = (
        f"{'way':7} {'campaign':28} {'points':>6} {'states':>6} {'recov':>5} {'recov s':>7} "
        f"{'wall s':>7} {'failed':>6}"
    )
    print(header)
    figures: dict[str, list[dict[str, Any]]] = {"now": [], "killed": [], "before": []}
    failed = 0
    ways = [("now", NOW, False, True)]
    if not args.no_compare:
        ways += [("killed", NOW, False, False), ("before", BEFORE, True, False)]
    try:
        for way, campaigns, each, held in ways:
            for name, case in campaigns:
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
                    recover_each_point=each,
                    hold_runs=held,
                )
                wall = time.monotonic() - clock
                bad = [p for p in result.points if not p.ok]
                failed += len(bad)
                summary = result.summary()
                figures[way].append(
                    {"campaign": name, **summary, "wall_s": round(wall, 2), "failed": len(bad)}
                )
                print(
                    f"{way:7} {name:28} {summary['crash_points_explored']:>6} "
                    f"{summary['distinct_states']:>6} {summary['recovery_runs']:>5} "
                    f"{summary['recovery_s']:>7.1f} {wall:>7.1f} {len(bad):>6}"
                )
                for point in bad[:5]:
                    problems = (
                        point.problems_output + point.problems_recovery + point.problems_state
                    )
                    print(f"    FAILED {point.label}: {'; '.join(problems)}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    totals = {
        way: {
            "campaigns": len(rows),
            "points": sum(r["crash_points_explored"] for r in rows),
            "recovery_runs": sum(r["recovery_runs"] for r in rows),
            "recovery_s": round(sum(r["recovery_s"] for r in rows), 2),
            "wall_s": round(sum(r["wall_s"] for r in rows), 2),
        }
        for way, rows in figures.items()
        if rows
    }
    for way, total in totals.items():
        print(
            f"total {way}: {total['campaigns']} campaigns, {total['points']} points, "
            f"{total['recovery_runs']} recovery runs ({total['recovery_s']:.1f} s), "
            f"{total['wall_s']:.1f} s wall"
        )
    for way in ("killed", "before"):
        if way in totals and totals["now"]["wall_s"]:
            ratio = totals[way]["wall_s"] / totals["now"]["wall_s"]
            print(f"wall {way} / now: {ratio:.2f}x")
    if args.json:
        args.json.write_text(
            json.dumps({"profile": profile.name, "figures": figures, "totals": totals}, indent=2)
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
