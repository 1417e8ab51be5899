"""I/O errors injected into one chosen system call of a publishing run.

``ENOSPC`` and ``EIO`` on ``write``, ``fsync`` and ``rename``, one at a time, as SQLite's I/O
error tests do. The harness first rehearses the publication under ``strace`` in a copy of the
working directory, finds the call to fail in that trace, and then runs the pipeline for real
with ``-e inject=NAME:error=ERRNO:when=N`` (``N`` the call's per-thread ordinal, see
:mod:`.strace`). Which call:

- ``write``: the first write of the publication, i.e. to the file later renamed onto the output
  (or to the output itself when the pipeline writes in place);
- ``fsync``: the first ``fsync``/``fdatasync`` of that file, else the first one in the working
  directory;
- ``rename``: the rename onto the output, else the first rename in the working directory.

The injected run's own trace must show the error on that very call (same name, same ordinal,
same number of steps before it); otherwise the harness could not aim and says so as an
``error``, never as a verdict on the pipeline. Afterwards the pipeline must have exited with its
declared ``io_error`` code, left the published output byte-identical and not advanced its
run-state: the next run against the same upstream must not send the failed version's validators,
and must publish it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kfm_conformance.faults import strace
from kfm_conformance.faults.crash import Recording, record, targetable
from kfm_conformance.faults.lint import Layout
from kfm_conformance.faults.strace import RENAME_SYSCALLS, SYNC_SYSCALLS, WRITE_SYSCALLS, Syscall
from kfm_conformance.sandbox import Sandbox
from kfm_conformance.upstream import Exchange, Resource
from kfm_conformance.verdict import Finding, HarnessError, required

FAMILIES: dict[str, frozenset[str]] = {
    "write": WRITE_SYSCALLS,
    "fsync": SYNC_SYSCALLS,
    "rename": RENAME_SYSCALLS,
}
ERRNOS = ("ENOSPC", "EIO")


@dataclass(frozen=True)
class Target:
    """The call to fail: step ``index`` of the rehearsal, ``when=ordinal`` on ``syscall``."""

    family: str
    index: int
    syscall: str
    ordinal: int
    step: str


@dataclass(frozen=True)
class Injection:
    """What the injected run did."""

    target: Target
    errno: str
    landed: bool
    landed_at: str
    exit_code: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def choose_target(recording: Recording, layout: Layout, family: str) -> Target | None:
    """The call of ``family`` to fail in this rehearsal, or ``None`` when it makes none."""
    if family not in FAMILIES:
        raise ValueError(f"unknown operation {family!r}; known: {sorted(FAMILIES)}")
    steps = recording.steps
    commits = [
        s for s in steps if s.kind == "rename" and layout.is_output(s.target) and not s.failed
    ]
    published = commits[-1].path if commits else layout.output_path

    def first(predicate: Any) -> Syscall | None:
        return next((s for s in steps if predicate(s)), None)

    chosen: Syscall | None
    if family == "write":
        chosen = first(lambda s: s.name in WRITE_SYSCALLS and s.path == published)
    elif family == "fsync":
        chosen = first(lambda s: s.name in SYNC_SYSCALLS and s.path == published) or first(
            lambda s: s.name in SYNC_SYSCALLS
        )
    else:
        chosen = commits[-1] if commits else first(lambda s: s.name in RENAME_SYSCALLS)
    if chosen is None:
        return None
    if not targetable(recording.trace.calls, chosen):
        raise HarnessError(
            f"cannot aim at {chosen.describe(recording.sandbox.workdir)}: another thread of the "
            f"pipeline reaches its own {chosen.name} number {chosen.ordinal} first"
        )
    return Target(
        family=family,
        index=steps.index(chosen),
        syscall=chosen.name,
        ordinal=chosen.ordinal,
        step=chosen.describe(recording.sandbox.workdir),
    )


def inject(
    sandbox: Sandbox,
    url: str,
    trace_dir: Path,
    target: Target,
    errno_name: str,
    *,
    extra_env: dict[str, str] | None = None,
) -> tuple[Recording, Injection]:
    """Run the pipeline in ``sandbox`` with ``target`` failing with ``errno_name``."""
    if errno_name not in ERRNOS:
        raise ValueError(f"unknown error {errno_name!r}; known: {ERRNOS}")
    recording = record(
        sandbox,
        url,
        trace_dir,
        label=f"{target.family} fails with {errno_name}",
        extra_env=extra_env,
        inject=[strace.fail_at(target.syscall, errno_name, target.ordinal)],
    )
    steps = recording.steps
    hit = [
        (index, s)
        for index, s in enumerate(steps)
        if s.injected and s.name == target.syscall and s.ordinal == target.ordinal
    ]
    landed = bool(hit) and hit[0][0] == target.index
    if hit:
        where = f"{hit[0][1].describe(sandbox.workdir)} = {hit[0][1].result}"
    else:
        others = recording.trace.injected()
        where = (
            f"elsewhere: {others[0].describe(sandbox.workdir)}"
            if others
            else "nowhere: not reached"
        )
    return recording, Injection(target, errno_name, landed, where, recording.result.exit_code)


def require_landed(injection: Injection) -> None:
    """An injection that missed its call says nothing about the pipeline: a harness error."""
    if not injection.landed:
        raise HarnessError(
            f"the {injection.errno} injection aimed at {injection.target.step} landed "
            f"{injection.landed_at}"
        )


def state_not_advanced(exchange: Exchange, failed: Resource, label: str) -> Finding:
    """The request after a failed publication carries none of the failed version's validators."""
    ims, inm = exchange.header("if-modified-since"), exchange.header("if-none-match")
    leaked = {}
    if failed.last_modified is not None and ims == failed.last_modified:
        leaked["If-Modified-Since"] = ims
    if failed.etag is not None and inm is not None and failed.etag.removeprefix("W/") in inm:
        leaked["If-None-Match"] = inm
    return required(
        "state.not-advanced",
        not leaked,
        f"{label} sent validators of the version whose publication failed: the run-state "
        "advanced although the output did not",
        expected="no validator of the failed version",
        observed={"If-Modified-Since": ims, "If-None-Match": inm},
    )
