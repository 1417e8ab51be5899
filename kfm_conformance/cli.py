"""The command line: ``kfm-conformance certify --profile FILE``, and the governance tools
``verify`` (an evidence bundle), ``diff`` (two reports), ``baseline`` (expected results for CI
gating) and ``keygen`` (a bundle signing key).

Exit codes: 0 certified, 1 not certified, 2 bad input to the harness (one line on stderr).
With ``--baseline``: 0 unless a result is unexpected. ``verify``: 0 intact, 1 tampered.
``diff``: 0 no change, 1 changes.

``certify`` is pytest, configured: it runs the packaged suite with the plugin in a child
process (so a crash in a scenario cannot take the results with it), reads the per-scenario
results it wrote, and folds them into ``report.json``, ``report.md`` and ``junit.xml``.
"""

from __future__ import annotations

# First, before anything imports jsonschema (see its docstring).
from kfm_conformance import lean_imports  # noqa: F401

# isort: split

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfm_conformance import __version__, channel, guarantees, isolation, sandbox
from kfm_conformance.capture.olmodel import model_provenance
from kfm_conformance.capture.olschema import cache_provenance
from kfm_conformance.capture.session import schema_location
from kfm_conformance.features import inventory_digest, select
from kfm_conformance.profile import Profile, load_profile
from kfm_conformance.redact import Redactor
from kfm_conformance.report import baseline as baselines
from kfm_conformance.report import bundle, cucumber, diff
from kfm_conformance.report.model import (
    ScenarioResult,
    build_provenance,
    fold,
    now_iso,
    services_used,
)
from kfm_conformance.report.writers import prepare_report_dir, redact_file, write_reports
from kfm_conformance.services.selection import ExternalSettings, parse_services
from kfm_conformance.stderr_tee import StderrTee, failure_excerpt
from kfm_conformance.verdict import ConfigurationError

SUITE_DIR = Path(__file__).resolve().parent / "suite"

EXIT_CERTIFIED = 0
EXIT_NOT_CERTIFIED = 1
EXIT_USAGE = 2

#: Environment variable with the default for ``--jobs`` (a number or ``auto``).
JOBS_ENV = "KFM_JOBS"
#: ``--jobs auto`` starts one worker per usable CPU, up to this many: a certification has about
#: a hundred scenarios, and each worker costs a second to start.
MAX_AUTO_JOBS = 8


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def parse_jobs(text: str | int) -> int:
    """``--jobs``: a whole number of at least 1, or ``auto``."""
    if isinstance(text, int):
        value = text
    elif text.strip().lower() == "auto":
        return min(usable_cpus(), MAX_AUTO_JOBS)
    else:
        try:
            value = int(text)
        except ValueError:
            raise ConfigurationError(
                f"--jobs: {text!r} is neither a number nor auto (default from ${JOBS_ENV})"
            ) from None
    if value < 1:
        raise ConfigurationError("--jobs: must be at least 1")
    return value


def _positive_seconds(text: str) -> float:
    """A finite, positive number of seconds (argparse's float takes nan and inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds above 0: {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2."""

    def error(self, message: str) -> Any:
        # The line is printed after "kfm-conformance: "; name the subcommand only.
        command = self.prog.removeprefix("kfm-conformance").strip()
        raise ConfigurationError(f"{command}: {message}" if command else message)


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
        help="check only these guarantees ("
        + ", ".join(guarantees.IDS)
        + ") or scenarios, by check ID (GUARANTEE/SLUG, the @id: tag of features/)",
    )
    certify.add_argument(
        "-j",
        "--jobs",
        default=os.environ.get(JOBS_ENV) or "auto",
        help=f"scenarios run in parallel: a number, or auto (one per usable CPU, at most "
        f"{MAX_AUTO_JOBS}); default ${JOBS_ENV}, else auto",
    )
    certify.add_argument(
        "--strict", action="store_true", help="recommended checks fail instead of warning"
    )
    certify.add_argument("--seed", type=int, help="replay the randomised choices of a run")
    certify.add_argument("--work-dir", help="keep scenario working directories here")
    certify.add_argument(
        "--bundle",
        metavar="OUT",
        help="also write an evidence bundle: a directory, or a .tar.gz/.tgz archive",
    )
    certify.add_argument(
        "--sign-key", metavar="PRIVATE.pem", help="sign the bundle's MANIFEST (Ed25519)"
    )
    certify.add_argument(
        "--baseline",
        metavar="FILE",
        help="expected results (TOML or JSON): exit non-zero only on unexpected results",
    )
    certify.add_argument(
        "--services",
        metavar="SPEC",
        help="who runs Marquez, lakeFS and the OpenTelemetry Collector: embedded (default), "
        "local, containers, external or auto, or per service, e.g. "
        "lakefs=local,collector=local,marquez=embedded (default: the profile's [services])",
    )
    certify.add_argument(
        "--openlineage-schemas",
        metavar="DIR",
        help="the official OpenLineage JSON Schemas (the spec/ folder: OpenLineage.json and "
        "facets/) to validate lineage events against; default: $KFM_OPENLINEAGE_SCHEMAS",
    )

    certify.add_argument(
        "--isolation",
        choices=isolation.CHOICES,
        default="auto",
        help=isolation.OPTION_HELP,
    )
    certify.add_argument(
        "--require-isolation",
        action="store_true",
        help="refuse to certify (exit 2) unless every run can be isolated",
    )
    certify.add_argument(
        "--stall-timeout",
        type=_positive_seconds,
        metavar="S",
        help="stop the run when no scenario has finished for S seconds (default: "
        "max(1200, 10 x the profile's timeout_s))",
    )

    verify = commands.add_parser("verify", help="check an evidence bundle's digests and signature")
    verify.add_argument("bundle", metavar="BUNDLE", help="a bundle directory or .tar.gz")
    verify.add_argument("--key", metavar="PUB.pem", help="the signer's public key")

    compare = commands.add_parser("diff", help="added, removed and changed checks of two reports")
    compare.add_argument("a", metavar="A.json")
    compare.add_argument("b", metavar="B.json")
    compare.add_argument("--format", choices=("text", "json"), default="text")

    expect = commands.add_parser("baseline", help="write a CI baseline from a report")
    expect.add_argument("report", metavar="REPORT.json")
    expect.add_argument(
        "-o", "--output", metavar="FILE", help="TOML, or JSON if it ends in .json (default: stdout)"
    )

    keys = commands.add_parser("keygen", help="write an Ed25519 key pair for signing bundles")
    keys.add_argument("out", metavar="OUT", help="writes OUT.pem (private) and OUT.pub.pem")
    return parser


#: The certification's test run loads only the plugins :func:`pytest_argv` names.
SUITE_ENV = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


def pytest_argv(
    profile: Profile,
    args: argparse.Namespace,
    results_dir: Path,
    report_dir: Path,
    seed: int,
    key_fd: int | None = None,
    isolation_mode: str = "none",
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
        "--kfm-isolation",
        isolation_mode,
        "--junitxml",
        str(report_dir / "junit.xml"),
        # Only the plugins the suite uses: the child runs with plugin autoloading off
        # (SUITE_ENV), so nothing else installed beside the harness joins a certification
        # (anyio's plugin alone imports trio, about 60 ms in each of its processes).
        "-p",
        "kfm_conformance.plugin",
        "-p",
        "pytest_bdd.plugin",
        "-p",
        "xdist.plugin",
        "-p",
        "kfm_conformance.report.cucumber",
        # pytest's unraisable-exception plugin runs a full garbage collection as each process
        # ends, about 0.25 s in a worker that has held a hundred scenarios' evidence; an
        # exception the harness cannot raise still reaches the log through Python's own hook.
        "-p",
        "no:unraisableexception",
        "--cucumberjson",
        str((report_dir / "cucumber.json").resolve()),
        "-o",
        "junit_family=xunit2",
        "-q",
        "--no-header",
        # The suite judges through findings, not assert statements: pytest need not rewrite
        # the asserts of every module of this package in every process (about 0.6 s of CPU
        # each where bytecode is not cached, as under PYTHONDONTWRITEBYTECODE).
        "--assert=plain",
    ]
    if args.only:
        selection = select(args.only)
        argv += ["-m", " or ".join(selection.guarantees)]
        for check_id in selection.check_ids:
            argv += ["--kfm-check", check_id]
    if key_fd is not None:
        argv += ["--kfm-key-fd", str(key_fd)]
    if args.jobs > 1:
        argv += ["-n", str(args.jobs)]
    if args.strict:
        argv.append("--kfm-strict")
    if args.work_dir:
        argv += ["--kfm-work-dir", str(Path(args.work_dir).resolve())]
    if getattr(args, "openlineage_schemas", None):
        argv += ["--kfm-openlineage-schemas", str(Path(args.openlineage_schemas).resolve())]
    if getattr(args, "services", None):
        argv += ["--kfm-services", args.services]
    return argv


def schema_cache_provenance(option: str | None) -> dict[str, Any]:
    """Which OpenLineage validator the run uses and its version: the model of openlineage-python
    by default; with a schema cache, where it was named, how many files, a digest of them and
    the core spec versions; never its path on this machine."""
    path, source = schema_location(option)
    if path is None:
        return {"given_by": None, **model_provenance()}
    if not path.is_dir():
        named_by = "--openlineage-schemas" if source == "option" else source
        raise ConfigurationError(f"{named_by}: OpenLineage schema cache is not a directory: {path}")
    return {"given_by": source, **cache_provenance(path)}


def certify(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    profile.check_command()
    service_selection = parse_services(args.services, profile.services.get("provider"))
    ExternalSettings.from_sources(profile.services)  # registers external credentials as secrets
    try:
        selection = select(args.only)
    except ValueError as exc:
        raise ConfigurationError(f"--only: {exc}") from None
    selected = selection.guarantees
    args.jobs = parse_jobs(args.jobs)
    schema_cache = schema_cache_provenance(args.openlineage_schemas)
    sign_key = None
    if args.sign_key:
        if not args.bundle:
            raise ConfigurationError("--sign-key: signs a bundle; give --bundle OUT too")
        sign_key = bundle.load_private_key(args.sign_key)
    if args.bundle:
        bundle.check_target(Path(args.bundle))
    expected = baselines.load_baseline(args.baseline) if args.baseline else None
    choice = isolation.choose(args.isolation)
    if not choice.isolated:
        if args.require_isolation:
            raise ConfigurationError(
                f"--require-isolation: runs cannot be isolated: {choice.reason}"
            )
        if args.isolation == "auto":
            print(f"kfm-conformance: unisolated: {choice.reason}", file=sys.stderr)
    report_dir = Path(args.report_dir)
    prepare_report_dir(report_dir)  # exists, takes a write; one line (exit 2) if not
    (report_dir / "cucumber.json").unlink(missing_ok=True)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(3), "big")
    started = now_iso()
    clock = time.monotonic()
    log_path = report_dir / "pytest.log"
    mode = "isolated" if choice.isolated else "unisolated"
    print(
        f"certifying {profile.name} ({len(selected)} guarantees, seed {seed}, {mode}, "
        f"{args.jobs} at a time)",
        file=sys.stderr,
    )
    stall = args.stall_timeout or max(1200.0, 10 * profile.timeout_s)
    with (
        tempfile.TemporaryDirectory(prefix="kfm-results-") as private,
        # The runs' private temp directories live here, and go with it whatever happened.
        tempfile.TemporaryDirectory(prefix="kfm-runs-", ignore_cleanup_errors=True) as run_tmp,
    ):
        results_dir = Path(private)
        key = channel.new_key()
        outcome = run_suite(
            pytest_argv(
                profile, args, results_dir, report_dir, seed, isolation_mode=str(choice.mode)
            ),
            log_path,
            results_dir,
            key,
            stall_s=stall,
            env={**os.environ, **SUITE_ENV, sandbox.RUN_TMP_ROOT_ENV: run_tmp},
        )
        contents = channel.read_channel(results_dir, key, validate=ScenarioResult.from_json)
    results = contents.results
    problems = list(outcome.problems)
    if outcome.returncode not in (0, 1) and not outcome.interrupted:
        problems.append(
            f"harness error: the test run exited {outcome.returncode}: "
            + failure_excerpt(outcome.stderr_lines, log_path)
        )
    problems += contents.problems
    if not results:
        problems.append("harness error: no scenario produced a result (see pytest.log)")
    elif not outcome.interrupted:
        problems += cucumber.cucumber_problems(report_dir / "cucumber.json", results)
    provenance = {
        **build_provenance(
            pipeline=profile.summary(),
            seed=seed,
            seed_given=args.seed is not None,
            started_at=started,
            ended_at=now_iso(),
            duration_s=round(time.monotonic() - clock, 2),
            services=services_used(results, {"provider": service_selection.describe()}),
            jobs=args.jobs,
            strict=args.strict,
            selected=list(args.only or []),
            profile_arg=str(args.profile),
            inventory_sha256=inventory_digest(),
        ),
        "openlineage_schemas": schema_cache,
        "isolation": choice.to_json(),
    }
    report = fold(
        results,
        pipeline=profile.summary(),
        provenance=provenance,
        strict=args.strict,
        selected=selected,
        selected_checks=selection.check_ids,
        problems=problems,
    )
    redactor = Redactor.for_profile(profile)
    data = redactor.redact(report.to_json())
    data["isolated"] = choice.isolated
    if outcome.interrupted:
        data["interrupted"] = outcome.interrupted
        data["verdict"] = "not-certified"
    if expected is not None:
        data["gate"] = baselines.gate(data, expected, Path(args.baseline).name)
    for written_by_pytest in ("junit.xml", "cucumber.json", "pytest.log"):
        redact_file(report_dir / written_by_pytest, redactor)
    write_reports(data, report_dir)
    print(summary_line(data))
    for problem in data.get("problems", [])[:5]:
        print(f"  problem: {problem}")
    for check_id in data["blocking"][:20]:
        print(f"  blocking: {check_id}")
    print(f"reports: {report_dir}/report.json, report.html, report.md, junit.xml, cucumber.json")
    if args.bundle:
        out = bundle.write_bundle(
            Path(args.bundle),
            report_dir,
            data,
            redactor=redactor,
            profile_path=profile.path,
            sign_key=sign_key,
        )
        signed = f", signed by {bundle.fingerprint(sign_key.public_key())}" if sign_key else ""
        print(f"bundle: {out}{signed}")
    if outcome.interrupted:
        print(f"kfm-conformance: interrupted by {outcome.interrupted}", file=sys.stderr)
        return 128 + int(getattr(signal, outcome.interrupted))
    if "gate" in data:
        for line in baselines.gate_lines(data["gate"]):
            print(line)
        return EXIT_CERTIFIED if data["gate"]["ok"] else EXIT_NOT_CERTIFIED
    return EXIT_CERTIFIED if data["verdict"] == "certified" else EXIT_NOT_CERTIFIED


@dataclass
class SuiteOutcome:
    """How the child test run ended."""

    returncode: int
    interrupted: str | None = None
    problems: list[str] = field(default_factory=list)
    stderr_lines: list[str] = field(default_factory=list)


def run_suite(
    argv: list[str],
    log_path: Path,
    results_dir: Path,
    key: bytes,
    *,
    stall_s: float,
    env: dict[str, str] | None = None,
) -> SuiteOutcome:
    """Run the packaged suite in a child process group; hand it the result key over a pipe.

    SIGINT or SIGTERM to the CLI stop the run: the child gets SIGINT (pytest tears its
    fixtures and services down), then SIGKILL after a grace period. A run in which no scenario
    has finished for ``stall_s`` seconds (a stopped worker) is stopped the same way.
    """
    received: list[str] = []

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    key_read, key_write = os.pipe()
    problems: list[str] = []
    # pytest's own errors (exit 2-4) go to stderr, not to the log: kept for the problem line,
    # while only the progress lines reach the person waiting (never a traceback).
    tee = StderrTee(forward=is_progress_line)
    try:
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [*argv, "--kfm-key-fd", str(key_read)],
                stdout=log,
                stderr=tee.write_end,
                stdin=subprocess.DEVNULL,
                pass_fds=(key_read,),
                start_new_session=True,
                env=env,
            )
            os.close(key_read)
            os.write(key_write, key.hex().encode() + b"\n")
            os.close(key_write)
            last_progress, last_size = time.monotonic(), -1
            while process.poll() is None:
                if received:
                    break
                size = sum(p.stat().st_size for p in results_dir.glob("scenarios-*.jsonl"))
                if size != last_size:
                    last_size, last_progress = size, time.monotonic()
                elif time.monotonic() - last_progress > stall_s:
                    problems.append(
                        f"harness error: no scenario finished for {stall_s:g} s; the run was "
                        "stopped (a stopped or hung worker)"
                    )
                    break
                # Waits on the child rather than sleeping: the run's end is seen at once.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=0.2)
            if process.poll() is None:
                stop_process_group(process)
    finally:
        tee.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return SuiteOutcome(
        process.returncode,
        interrupted=received[0] if received else None,
        problems=problems,
        stderr_lines=list(tee.lines),
    )


_PROGRESS = ("PASS ", "WARN ", "FAIL ", "SKIP ", "ERROR ")


def is_progress_line(line: str) -> bool:
    """A scenario's one progress line (the plugin's ``--kfm-progress``)."""
    return line.startswith(_PROGRESS)


def stop_process_group(process: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGINT to the whole group (pytest tears down), then SIGKILL to whatever is left."""
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        break
    try:  # stragglers of the group (services, pipelines) after pytest itself exited
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def verify_command(args: argparse.Namespace) -> int:
    """``verify BUNDLE [--key PUB.pem]``: 0 intact, 1 tampered, 2 bad input."""
    path = Path(args.bundle)
    if not path.exists():
        raise ConfigurationError(f"verify: {path}: not found")
    if not path.is_dir() and not bundle.is_archive(path):
        raise ConfigurationError(f"verify: {path}: not a bundle directory or .tar.gz")
    key_pem = None
    if args.key:
        try:
            key_pem = Path(args.key).read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"--key: cannot read {args.key}: {exc.strerror}") from None
        bundle.load_public_key(key_pem, "--key")
    result = bundle.verify_bundle(path, key_pem)
    for note in result.notes:
        print(f"note: {note}")
    if result.ok:
        print(f"OK: {path}: {result.files} files match MANIFEST")
        return 0
    for problem in result.problems:
        print(f"TAMPERED: {problem}")
    print(f"verify failed: {len(result.problems)} problems in {path}", file=sys.stderr)
    return 1


def diff_command(args: argparse.Namespace) -> int:
    a, b = diff.load_report(args.a), diff.load_report(args.b)
    result = diff.diff_reports(a, b, Path(args.a).name, Path(args.b).name)
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        print(diff.render_text(result), end="")
    return 1 if diff.has_changes(result) else 0


def baseline_command(args: argparse.Namespace) -> int:
    report = diff.load_report(args.report)
    data = baselines.baseline_from_report(report)
    text = baselines.dump(data, args.output)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"-o: cannot write {args.output}: {exc.strerror}") from None
        print(f"baseline: {args.output} ({len(data['checks'])} known results)", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def keygen_command(args: argparse.Namespace) -> int:
    private_path, public_path, print_ = bundle.keygen(args.out)
    print(f"private key: {private_path} (keep it secret)")
    print(f"public key:  {public_path}")
    print(f"fingerprint: {print_}")
    return 0


def summary_line(data: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {v}" for v, n in data["counts"].items() if n)
    # A certificate for part of the guarantees says which part.
    chosen = data.get("selected_checks") or []
    whole = [
        g
        for g in data.get("selected_guarantees", [])
        if not any(c.split("/", 1)[0] == g for c in chosen)
    ]
    if chosen or set(whole) != set(guarantees.IDS):
        counts += "; checked only: " + ", ".join([*whole, *chosen])
    if data.get("interrupted"):
        return f"NOT CERTIFIED (interrupted): {data['pipeline']['name']} — {counts}"
    if data["verdict"] == "certified":
        level = data["level"] if data.get("isolated", True) else f"{data['level']}, unisolated"
        return f"CERTIFIED ({level}): {data['pipeline']['name']} — {counts}"
    return f"NOT CERTIFIED: {data['pipeline']['name']} — {counts}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "certify":
            return certify(args)
        if args.command == "verify":
            return verify_command(args)
        if args.command == "diff":
            return diff_command(args)
        if args.command == "baseline":
            return baseline_command(args)
        if args.command == "keygen":
            return keygen_command(args)
        raise ConfigurationError(f"unknown command {args.command!r}")
    except ConfigurationError as exc:
        message = str(exc).replace("\r", "\\r").replace("\n", "\\n").replace("\0", "\\0")
        print(f"kfm-conformance: {message}", file=sys.stderr)  # always one line
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("kfm-conformance: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
