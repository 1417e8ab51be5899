"""The command line: ``kfm-conformance certify --profile FILE``.

Exit codes: 0 certified, 1 not certified, 2 bad input to the harness (one line on stderr).

``certify`` is pytest, configured: it runs the packaged suite with the plugin in a child
process (so a crash in a scenario cannot take the results with it), reads the per-scenario
results it wrote, and folds them into ``report.json``, ``report.md`` and ``junit.xml``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kfm_conformance import __version__, guarantees
from kfm_conformance.features import inventory_digest
from kfm_conformance.profile import Profile, load_profile
from kfm_conformance.redact import Redactor
from kfm_conformance.report.model import base_provenance, fold, now_iso, read_scenario_results
from kfm_conformance.report.writers import write_reports
from kfm_conformance.verdict import ConfigurationError

SUITE_DIR = Path(__file__).resolve().parent / "suite"

EXIT_CERTIFIED = 0
EXIT_NOT_CERTIFIED = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2."""

    def error(self, message: str) -> Any:
        raise ConfigurationError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kfm-conformance", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"kfm-conformance {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    certify = commands.add_parser("certify", help="certify a pipeline against its profile")
    certify.add_argument("--profile", required=True, help="the pipeline profile (TOML)")
    certify.add_argument("--report-dir", default="kfm-report", help="where reports are written")
    certify.add_argument(
        "--only",
        nargs="+",
        metavar="ID",
        help="check only these guarantees: " + ", ".join(guarantees.IDS),
    )
    certify.add_argument("-j", "--jobs", type=int, default=1, help="scenarios run in parallel")
    certify.add_argument(
        "--strict", action="store_true", help="recommended checks fail instead of warning"
    )
    certify.add_argument("--seed", type=int, help="replay the randomised choices of a run")
    certify.add_argument("--work-dir", help="keep scenario working directories here")
    return parser


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def pytest_argv(
    profile: Profile, args: argparse.Namespace, results_dir: Path, report_dir: Path, seed: int
) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "pytest",
        str(SUITE_DIR / "test_guarantees.py"),
        "-c",
        str(SUITE_DIR / "pytest.ini"),
        "--rootdir",
        str(SUITE_DIR),
        "--kfm-profile",
        str(profile.path),
        "--kfm-results",
        str(results_dir),
        "--kfm-seed",
        str(seed),
        "--kfm-progress",
        "--junitxml",
        str(report_dir / "junit.xml"),
        "-o",
        "junit_family=xunit2",
        "-q",
        "--no-header",
    ]
    if args.only:
        argv += ["-m", " or ".join(args.only)]
    if args.jobs > 1:
        argv += ["-n", str(args.jobs)]
    if args.strict:
        argv.append("--kfm-strict")
    if args.work_dir:
        argv += ["--kfm-work-dir", str(Path(args.work_dir).resolve())]
    return argv


def certify(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    profile.check_command()
    selected = list(args.only or guarantees.IDS)
    for guarantee_id in selected:
        if guarantee_id not in guarantees.BY_ID:
            raise ConfigurationError(
                f"--only: unknown guarantee {guarantee_id!r}; known: {', '.join(guarantees.IDS)}"
            )
    if args.jobs < 1:
        raise ConfigurationError("--jobs: must be at least 1")
    report_dir = Path(args.report_dir)
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"--report-dir: cannot create {report_dir}: {exc.strerror}"
        ) from None
    results_dir = report_dir / "scenarios"
    results_dir.mkdir(exist_ok=True)
    for stale in results_dir.glob("scenarios-*.jsonl"):
        stale.unlink()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(3), "big")
    started = now_iso()
    clock = time.monotonic()
    log_path = report_dir / "pytest.log"
    print(f"certifying {profile.name} ({len(selected)} guarantees, seed {seed})", file=sys.stderr)
    with log_path.open("w") as log:
        completed = subprocess.run(
            pytest_argv(profile, args, results_dir, report_dir, seed),
            stdout=log,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    results = read_scenario_results(results_dir)
    problems = []
    if completed.returncode not in (0, 1):
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        problems.append(
            f"harness error: the test run exited {completed.returncode}: " + " / ".join(tail)
        )
    if not results:
        problems.append("harness error: no scenario produced a result (see pytest.log)")
    provenance = {
        **base_provenance(),
        "git_commit": git_commit(),
        "inventory_sha256": inventory_digest(),
        "started_at": started,
        "ended_at": now_iso(),
        "duration_s": round(time.monotonic() - clock, 2),
        "seed": seed,
        "services": {"provider": "embedded"},
        "jobs": args.jobs,
    }
    report = fold(
        results,
        pipeline=profile.summary(),
        provenance=provenance,
        strict=args.strict,
        selected=selected,
        problems=problems,
    )
    redactor = Redactor.for_profile(profile)
    data = redactor.redact(report.to_json())
    write_reports(data, report_dir)
    print(summary_line(data))
    for check_id in data["blocking"][:20]:
        print(f"  blocking: {check_id}")
    print(f"reports: {report_dir}/report.json, report.md, junit.xml")
    return EXIT_CERTIFIED if data["verdict"] == "certified" else EXIT_NOT_CERTIFIED


def summary_line(data: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {v}" for v, n in data["counts"].items() if n)
    if data["verdict"] == "certified":
        return f"CERTIFIED ({data['level']}): {data['pipeline']['name']} — {counts}"
    return f"NOT CERTIFIED: {data['pipeline']['name']} — {counts}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "certify":
            return certify(args)
        raise ConfigurationError(f"unknown command {args.command!r}")
    except ConfigurationError as exc:
        print(f"kfm-conformance: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("kfm-conformance: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
