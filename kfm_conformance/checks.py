"""The checks of the HTTP and data guarantees, as pure functions from observations to findings.

Each function takes what the harness observed (runs, file states, requests, the versions the
origin served, what a reader saw) and returns :class:`~kfm_conformance.verdict.Finding`
objects; nothing here runs a pipeline, reads a file or raises on a broken requirement. The
scenario layer (:mod:`kfm_conformance.scenario`) gathers the observations and hands the
findings to the judge. Unit-tested directly in ``tests/test_checks.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kfm_conformance.faults import requests as run_requests
from kfm_conformance.sandbox import FileState, RunResult, Snapshot
from kfm_conformance.upstream import Exchange
from kfm_conformance.verdict import Finding, fact

#: File names that betray a temporary file left behind.
TEMP_MARKERS = (".tmp", ".temp", ".part", ".partial", ".wal", "~", ".swp")


@dataclass(frozen=True)
class ServedVersion:
    """What the checks need to know of a version the origin served."""

    number: int
    last_modified: str | None
    etag: str | None
    output_sha256: str | None


# -- runs and exit codes -----------------------------------------------------------------------
def run_finished(run: RunResult, timeout_s: float) -> Finding:
    return fact(
        "run.finished",
        not run.timed_out,
        f"the pipeline did not finish within its timeout of {timeout_s:g} s and was killed",
        expected=f"exit within {timeout_s:g} s",
        observed=run.observed_end(),
    )


def exit_code(run: RunResult, declared: dict[str, int]) -> Finding:
    """The run exited with the code declared for one of the outcomes."""
    return fact(
        "exit-code",
        run.exit_code in declared.values(),
        f"{run.label} exited {run.exit_code}; declared for "
        + " or ".join(f"{o}: {c}" for o, c in declared.items()),
        expected=declared,
        observed=run.exit_code,
    )


def every_run_succeeded(runs: Sequence[RunResult], success: frozenset[int]) -> Finding:
    bad = [(r.label, r.exit_code) for r in runs if r.exit_code not in success]
    return fact(
        "exit-code.success",
        not bad,
        "a run against an unchanged upstream did not exit with a success code",
        expected=sorted(success),
        observed=bad,
    )


def same_code_every_time(codes: Sequence[int | None]) -> Finding:
    return fact(
        "exit-code.deterministic",
        len(set(codes)) == 1,
        f"the same scenario gave different exit codes: {list(codes)}",
        expected="one code, every time",
        observed=list(codes),
    )


def failure_not_success(run: RunResult, success: frozenset[int]) -> Finding:
    return fact(
        "exit-code.failure-not-success",
        run.exit_code not in success,
        f"{run.label} exited {run.exit_code}, a success code, on a failure",
        expected=f"any code but {sorted(success)}",
        observed=run.exit_code,
    )


def no_stragglers(runs: Sequence[RunResult]) -> Finding:
    """No run that ended by itself left a process of its own running after it exited."""
    leftovers = {
        r.label: r.stragglers for r in runs if r.stragglers and not r.killed and not r.timed_out
    }
    return fact(
        "run.no-stragglers",
        not leftovers,
        "a process of the run was still running after the run had exited (its exit code "
        "claimed the work was done); the harness killed it",
        expected="every process of a run ends before the run's exit",
        observed=leftovers,
    )


# -- the output -------------------------------------------------------------------------------
def output_exists(exists: bool, output: str, files: Iterable[str]) -> Finding:
    return fact(
        "output.exists",
        exists,
        f"no output at {output} after a publishing run",
        expected=output,
        observed=sorted(files),
    )


def output_readable(problem: str) -> Finding:
    return fact(
        "output.readable",
        False,
        f"the output is unreadable: {problem}",
        expected="rows in the output's format",
        observed=problem,
    )


def output_rows(same: bool, described: str, expected_rows: int, version: int) -> Finding:
    return fact(
        "output.rows",
        same,
        f"the output does not hold version {version}'s rows: {described}",
        expected=f"{expected_rows} rows of version {version}, in order",
        observed=described,
    )


def output_untouched(
    before: FileState | None, after: FileState | None, *, inode: bool = True
) -> list[Finding]:
    """The output's bytes (and inode) are those of the last publication."""
    same = after is not None and before is not None and after.sha256 == before.sha256
    findings = [
        fact(
            "output.bytes-unchanged",
            same,
            "the output's bytes changed",
            expected=before.sha256 if before else None,
            observed=after.sha256 if after else "absent",
        )
    ]
    if inode and before is not None and after is not None:
        findings.append(
            fact(
                "output.inode-unchanged",
                after.inode == before.inode,
                "the output was rewritten (new inode) although nothing changed",
                expected=before.inode,
                observed=after.inode,
            )
        )
    return findings


def outputs_identical(digests: dict[str, str | None]) -> Finding:
    return fact(
        "output.identical-across-dirs",
        len(set(digests.values())) == 1 and None not in digests.values(),
        "the same payload gave different output bytes in different working directories",
        expected="one sha256 for every working directory",
        observed=digests,
    )


def reader_saw_whole_versions(seen: Sequence[str | None], complete: set[str | None]) -> Finding:
    """Every state a reader saw is no output or a complete published version."""
    torn = [d for d in seen if d not in complete]
    return fact(
        "output.never-torn",
        not torn,
        f"a reader saw {len(torn)} state(s) of the output that are no complete version",
        expected="absent, or a complete published version",
        observed=torn[:5],
    )


def nothing_published(exists: bool, output: str) -> Finding:
    return fact(
        "output.absent",
        not exists,
        "an output was published from data that had to be rejected",
        expected="no output",
        observed=output,
    )


def files_unchanged(
    before: Snapshot, after: Snapshot, output: str, declared_state: tuple[str, ...] | None
) -> list[Finding]:
    """Output and run-state are byte-identical to an earlier moment. Without declared state
    paths any other changed file is only a warning."""
    digest_before = before[output].sha256 if output in before else "absent"
    digest_after = after[output].sha256 if output in after else "absent"
    findings = [
        fact(
            "output.unchanged",
            digest_before == digest_after,
            "the published output changed on a run that must not publish",
            expected=digest_before,
            observed=digest_after,
        )
    ]
    changed = sorted(
        path
        for path in set(before) | set(after)
        if path != output
        and (
            before.get(path) is None
            or after.get(path) is None
            or before[path].sha256 != after[path].sha256
        )
    )
    if declared_state is not None:
        in_state = [p for p in changed if under_any(p, declared_state)]
        findings.append(
            fact(
                "state.unchanged",
                not in_state,
                "the declared run-state changed on a run that must not publish",
                expected="byte-identical: " + ", ".join(declared_state),
                observed=in_state,
            )
        )
    else:
        findings.append(
            fact(
                "state.unchanged-undeclared",
                not changed,
                "files in the working directory changed on a run that must not publish "
                "(the profile declares no state paths, so this is a warning)",
                expected="no file changed",
                observed=changed,
            )
        )
    return findings


def no_temporaries(
    files: Iterable[str],
    output: str,
    *,
    added_by_failed_run: Iterable[str] = (),
    declared_state: tuple[str, ...] = (),
) -> Finding:
    """Nothing temporary beside the output: no temp-named file, nor a file that a run which
    did not publish added beside it (outside the declared state)."""
    out_dir = parent_of(output)
    beside = [p for p in files if parent_of(p) == out_dir]
    leftovers = [p for p in beside if p != output and looks_temporary(Path(p).name, output)]
    leftovers += [
        p
        for p in added_by_failed_run
        if parent_of(p) == out_dir and p != output and not under_any(p, declared_state)
    ]
    return fact(
        "output.no-temporaries",
        not leftovers,
        "temporary files were left beside the output",
        expected=f"only {output} in {out_dir or '.'}/",
        observed=sorted(set(leftovers)),
    )


# -- the requests ------------------------------------------------------------------------------
def requests_of_run(exchanges: Iterable[Exchange], run: RunResult) -> list[Exchange]:
    """The requests that arrived while the run was under way (times are monotonic, taken
    before the spawn and after the reap)."""
    return run_requests.requests_of_run(exchanges, run.started_at, run.ended_at)


def request_sent(run: RunResult, seen: Sequence[Exchange]) -> Finding:
    return fact(
        "request.sent",
        bool(seen),
        f"{run.label} sent no request to the upstream",
        expected="a GET of the upstream URL",
        observed="no request",
    )


def ims_verbatim_if_sent(sent: str | None, served: Iterable[ServedVersion]) -> Finding:
    stored = {v.last_modified for v in served}
    return fact(
        "request.if-modified-since",
        sent is None or sent in stored,
        "the pipeline sent an If-Modified-Since that the upstream never gave it",
        expected=[*sorted(v for v in stored if v), "or no header"],
        observed=sent,
    )


def request_header(name: str, sent: str | None, value: str | None) -> Finding:
    """The request carried ``name`` with exactly ``value`` (or, for None, not at all)."""
    if value is None:
        return fact(
            f"request.no-{name.lower()}",
            sent is None,
            f"the request carried {name}: {sent!r} although there was nothing to send",
            expected="header absent",
            observed=sent,
        )
    return fact(
        f"request.{name.lower()}",
        sent == value,
        f"the request carried {name} {sent!r}, not the stored validator byte for byte",
        expected=value,
        observed=sent,
    )


def validators_of_published_version(
    ims: str | None, inm: str | None, published: ServedVersion | None
) -> Finding:
    """Whatever validators a run sent belong to the version that is published."""
    allowed_ims = {published.last_modified} if published else set()
    allowed_inm = {published.etag} if published else set()
    ok = (ims is None or ims in allowed_ims) and (inm is None or inm in allowed_inm)
    return fact(
        "state.matches-output",
        ok,
        "the pipeline sent validators of a version it has not published: its run-state "
        "disagrees with its output",
        expected={
            "published version": published.number if published else None,
            "If-Modified-Since": sorted(v for v in allowed_ims if v) or None,
            "If-None-Match": sorted(v for v in allowed_inm if v) or None,
        },
        observed={"If-Modified-Since": ims, "If-None-Match": inm},
    )


def status_answered(exchange: Exchange, status: int) -> Finding:
    return fact(
        "upstream.status",
        exchange.status == status,
        f"the upstream answered {exchange.status}, expected {status} "
        f"(the request carried If-Modified-Since={exchange.header('if-modified-since')!r}, "
        f"If-None-Match={exchange.header('if-none-match')!r})",
        expected=status,
        observed=exchange.status,
    )


def published_version(
    versions: Sequence[ServedVersion], published_sha256: str | None
) -> ServedVersion | None:
    """The latest served version whose output is the one published now."""
    if published_sha256 is None:
        return None
    return next((v for v in reversed(versions) if v.output_sha256 == published_sha256), None)


# -- paths ---------------------------------------------------------------------------------------
def parent_of(relpath: str) -> str:
    return relpath.rpartition("/")[0]


def under_any(relpath: str, prefixes: tuple[str, ...]) -> bool:
    for prefix in prefixes:
        clean = prefix.rstrip("/")
        if relpath == clean or relpath.startswith(clean + "/"):
            return True
    return False


def looks_temporary(name: str, output: str) -> bool:
    lowered = name.lower()
    base = Path(output).name.lower()
    if any(lowered.endswith(m) or m + "." in lowered for m in TEMP_MARKERS):
        return True
    return lowered != base and base in lowered and lowered.startswith((".", "tmp"))
