"""I/O errors injected into one chosen system call of a publishing run.

``ENOSPC`` and ``EIO`` on ``write``, ``fsync`` and ``rename``, one at a time, as SQLite's I/O
error tests do. The harness first rehearses the publication under ``strace`` in a copy of the
working directory, finds the call to fail in that trace, and then runs the pipeline for real
with ``-e inject=NAME:error=ERRNO:when=N``. Which call (files are followed by inode, see
:func:`~kfm_conformance.faults.strace.identify_files`):

- ``write``: the first write of the new version, i.e. of the file later renamed onto the output
  (or of the output itself when the pipeline writes in place);
- ``fsync``: the first ``fsync``/``fdatasync`` of that file (on any of its descriptors), else the
  first one in the working directory;
- ``rename``: the rename onto the output, else the first rename in the working directory.

How it is aimed. strace counts ``when=N`` per system call and per tracee. When no other tracee
reaches its own N-th call of that name first, ``N`` is the call's own ordinal. In a pipeline of
several processes (a shell script running curl, then a converter) another process usually does,
so the injection is aimed at the file and the process instead: strace's path filter
(``-P PATH``) restricts tracing, and with it the injection's counting, to the calls that touch
that file, and ``N`` counts only those. That needs the file's name to be the same from run to
run, which a second rehearsal confirms.

The injected run's own trace must show the error on that very call; otherwise the harness
could not aim and says so as an ``error``, never as a verdict on the pipeline.

The outcome judged (:func:`output_after_error`, :func:`state_not_advanced`): the pipeline exits
with its declared ``io_error`` code; the published output is the old version, byte for byte, or,
when the failing call came after the new version had been renamed into place (the point of no
return: an ``fsync`` of the directory after the rename cannot undo it), the new version,
complete; the run-state does not claim the failed version (the next run must not send its
validators), and that next run publishes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from kfm_conformance import outputs
from kfm_conformance.faults import strace
from kfm_conformance.faults.crash import Recording, record, targetable
from kfm_conformance.faults.lint import Layout
from kfm_conformance.faults.strace import (
    RENAME_SYSCALLS,
    SYNC_SYSCALLS,
    WRITE_SYSCALLS,
    Syscall,
    decode_string,
)
from kfm_conformance.sandbox import FileState, Sandbox, file_state
from kfm_conformance.upstream import Exchange, Resource
from kfm_conformance.verdict import Finding, HarnessError, NotApplicable, SkipKind, fact

#: How a disk-error scenario that cannot be aimed at this pipeline's call is skipped: the
#: pipeline's writes come from several threads or processes in an order that changes from run
#: to run, so strace's per-thread count cannot single one out. Its publication is still
#: judged under kills at every step and by concurrent readers.
UNAIMABLE = (
    "not applicable: the harness cannot single out one call of this pipeline for a disk error"
)

FAMILIES: dict[str, frozenset[str]] = {
    "write": WRITE_SYSCALLS,
    "fsync": SYNC_SYSCALLS,
    "rename": RENAME_SYSCALLS,
}
ERRNOS = ("ENOSPC", "EIO")


@dataclass(frozen=True)
class Target:
    """The call to fail: step ``index`` of the rehearsal, ``when=ordinal`` on ``syscall``.

    With ``paths`` set, the injection is path-filtered (``-P``) and ``ordinal`` counts only the
    calls of ``syscall`` that touch those paths."""

    family: str
    index: int
    syscall: str
    ordinal: int
    step: str
    after_commit: bool = False
    paths: tuple[str, ...] = ()

    @property
    def aim(self) -> str:
        return "the file (path filter)" if self.paths else "the call's own number"


@dataclass(frozen=True)
class Injection:
    """What the injected run did."""

    target: Target
    errno: str
    landed: bool
    landed_at: str
    exit_code: int | None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"]["aim"] = self.target.aim
        return data


def _chosen(recording: Recording, layout: Layout, family: str) -> tuple[Syscall | None, bool]:
    """The call of ``family`` to fail, and whether it comes after the output's replacement."""
    steps = recording.steps
    commits = [
        s
        for s in steps
        if s.kind == "rename" and layout.is_output(s.target) and s.finished and not s.failed
    ]
    published = commits[-1].file if commits else None

    def first(predicate: Callable[[Syscall], bool]) -> Syscall | None:
        return next((s for s in steps if predicate(s)), None)

    chosen: Syscall | None
    if family == "write":
        chosen = first(
            lambda s: (
                s.name in WRITE_SYSCALLS
                and ((published is not None and s.file == published) or layout.is_output(s.path))
            )
        )
    elif family == "fsync":
        chosen = first(
            lambda s: s.name in SYNC_SYSCALLS and published is not None and s.file == published
        ) or first(lambda s: s.name in SYNC_SYSCALLS)
    else:
        chosen = commits[-1] if commits else first(lambda s: s.name in RENAME_SYSCALLS)
    after = chosen is not None and any(c.seq < chosen.seq for c in commits)
    return chosen, after


def _filter_paths(call: Syscall) -> tuple[str, ...]:
    """What ``-P`` must name to select ``call``: the absolute paths, and a rename's arguments
    as the pipeline spelled them (strace compares the strings the call passes)."""
    spelled = [decode_string(arg) for arg in call.args] if call.kind == "rename" else []
    found = [*call.paths, *(s for s in spelled if s)]
    return tuple(dict.fromkeys(p for p in found if not p.startswith("/proc/")))


def _filtered(calls: list[Syscall], name: str, paths: tuple[str, ...]) -> list[Syscall]:
    selected = set(paths)
    return [
        c
        for c in calls
        if c.name == name
        and (
            selected & set(c.paths)
            or (c.kind == "rename" and selected & {decode_string(a) for a in c.args})
        )
    ]


def choose_target(
    recording: Recording,
    layout: Layout,
    family: str,
    rehearse_again: Callable[[], Recording] | None = None,
) -> Target | None:
    """The call of ``family`` to fail in this rehearsal, or ``None`` when it makes none.

    ``rehearse_again`` is called only when the call has to be aimed by its file (another
    process reaches the same call number first), to check that the file's name is stable."""
    if family not in FAMILIES:
        raise ValueError(f"unknown operation {family!r}; known: {sorted(FAMILIES)}")
    chosen, after = _chosen(recording, layout, family)
    if chosen is None:
        return None
    root = recording.sandbox.workdir
    steps = recording.steps
    common = {
        "family": family,
        "index": steps.index(chosen),
        "syscall": chosen.name,
        "step": chosen.describe(root),
        "after_commit": after,
    }
    if targetable(recording.trace.calls, chosen):
        return Target(ordinal=chosen.ordinal, **common)  # type: ignore[arg-type]
    paths = _filter_paths(chosen)
    same_file = _filtered(recording.trace.calls, chosen.name, paths)
    mine = [c for c in same_file if c.tid == chosen.tid]
    ordinal = mine.index(chosen) + 1 if chosen in mine else 0
    if not paths or not ordinal or not targetable(same_file, replace(chosen, ordinal=ordinal)):
        raise NotApplicable(
            f"{UNAIMABLE}: {chosen.describe(root)} cannot be singled out: another process "
            f"of the pipeline reaches its own {chosen.name} number {chosen.ordinal} first, and "
            "the file is shared too",
            SkipKind.NOT_DECLARED,
        )
    if rehearse_again is not None:
        again = rehearse_again()
        twin, _ = _chosen(again, Layout(again.sandbox.workdir, layout.output, layout.state), family)
        moved = [_relative(p, again.sandbox.workdir) for p in twin.paths] if twin else []
        if twin is None or moved != [_relative(p, root) for p in chosen.paths]:
            seen = twin.describe(again.sandbox.workdir) if twin else "no such call"
            raise NotApplicable(
                f"{UNAIMABLE}: {chosen.describe(root)} cannot be singled out: another process "
                f"of the pipeline reaches its own {chosen.name} number {chosen.ordinal} first, "
                f"and the file's name changes from run to run ({seen} in a second rehearsal), "
                "so it cannot be named to strace's path filter",
                SkipKind.NOT_DECLARED,
            )
    return Target(ordinal=ordinal, paths=paths, **common)  # type: ignore[arg-type]


def _relative(path: str, root: Path) -> str:
    return strace.relative_to(root, path) or path


def rebase(target: Target, old_root: Path, new_root: Path) -> Target:
    """The target, with its filter paths moved from the rehearsal's directory to the run's."""
    if not target.paths:
        return target
    moved = []
    for path in target.paths:
        rel = strace.relative_to(old_root, path)
        moved.append(str(new_root / rel) if rel is not None and path.startswith("/") else path)
    return replace(target, paths=tuple(dict.fromkeys(moved)))


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
        paths=target.paths,
    )
    injected = recording.trace.injected()
    if target.paths:
        hit = _filtered(injected, target.syscall, target.paths)
        landed = len(hit) == 1 and len(injected) == 1
        shown = hit[0] if hit else None
    else:
        steps = recording.steps
        found = [
            (index, s)
            for index, s in enumerate(steps)
            if s.injected and s.name == target.syscall and s.ordinal == target.ordinal
        ]
        landed = bool(found) and found[0][0] == target.index
        shown = found[0][1] if found else None
    if not landed and injected and not target.paths:
        # Another thread of the pipeline reached its own call of the same number first (a
        # thread pool's writes come in any order): the error landed on another call of this
        # publication in the working directory. The guarantee is about a disk error while
        # publishing, not about which call: judge the outcome for the call it hit, noting it.
        first = injected[0]
        inside = bool(first.paths) and all(
            strace.relative_to(sandbox.workdir, p) is not None for p in first.paths
        )
        if first.name == target.syscall and inside:
            output = str(sandbox.output_path)
            replaced_before = any(
                c.kind == "rename" and c.target == output and c.seq < first.seq
                for c in recording.trace.calls
                if not c.injected and c.finished
            )
            where = (
                f"{first.describe(sandbox.workdir)} = {first.result} (not the aimed call: "
                "another thread reached its own call of that number first; judged for the "
                "call it hit"
                + (", which came after the output was replaced)" if replaced_before else ")")
            )
            target = replace(target, after_commit=replaced_before)
            return recording, Injection(target, errno_name, True, where, recording.result.exit_code)
    if shown is not None:
        where = f"{shown.describe(sandbox.workdir)} = {shown.result}"
    else:
        where = (
            f"elsewhere: {injected[0].describe(sandbox.workdir)}"
            if injected
            else "nowhere: not reached"
        )
    return recording, Injection(target, errno_name, landed, where, recording.result.exit_code)


def require_landed(injection: Injection) -> None:
    """An injection that missed its call says nothing about the pipeline. Taken by another
    thread's call outside the working directory (a thread pool's writes come in any order):
    the scenario cannot be applied to this pipeline. Not reached at all: a harness error."""
    if not injection.landed and injection.landed_at.startswith("elsewhere"):
        raise NotApplicable(
            f"{UNAIMABLE}: the {injection.errno} injection aimed at {injection.target.step} was "
            f"taken by another thread's call ({injection.landed_at})",
            SkipKind.NOT_DECLARED,
        )
    if not injection.landed:
        raise HarnessError(
            f"the {injection.errno} injection aimed at {injection.target.step} landed "
            f"{injection.landed_at}"
        )


def output_after_error(
    injection: Injection, published: FileState | None, new: Resource, output: Path
) -> Finding:
    """The output after the failed run: the published version byte for byte; or, when the
    error came after the new version was renamed into place, that new version, complete."""
    now = file_state(output)
    unchanged = now is not None and published is not None and now.sha256 == published.sha256
    whole_new = False
    detail = ""
    if not unchanged and now is not None and injection.target.after_commit:
        try:
            comparison = outputs.compare_rows(new.body, output)
            whole_new, detail = comparison.same, comparison.describe()
        except outputs.UnreadableOutput as exc:
            detail = str(exc)
    allowed = (
        "the published version byte for byte, or the new version complete (the error came "
        "after the new version was renamed into place, which cannot be undone)"
        if injection.target.after_commit
        else "the published version, byte for byte"
    )
    return fact(
        "output.after-io-error",
        unchanged or whole_new,
        f"after {injection.target.step} failed with {injection.errno} the output is not "
        + (
            "the published version, nor the new one complete"
            if injection.target.after_commit
            else "the published version"
        )
        + (f" ({detail})" if detail else ""),
        expected=allowed,
        observed={
            "sha256": now.sha256 if now else "absent",
            "published_sha256": published.sha256 if published else None,
            "new_version_complete": whole_new,
            "error_after_the_output_was_replaced": injection.target.after_commit,
        },
    )


def state_not_advanced(exchange: Exchange, failed: Resource, label: str) -> Finding:
    """The request after a failed publication carries none of the failed version's validators."""
    ims, inm = exchange.header("if-modified-since"), exchange.header("if-none-match")
    leaked = {}
    if failed.last_modified is not None and ims == failed.last_modified:
        leaked["If-Modified-Since"] = ims
    if failed.etag is not None and inm is not None and failed.etag.removeprefix("W/") in inm:
        leaked["If-None-Match"] = inm
    return fact(
        "state.not-advanced",
        not leaked,
        f"{label} sent validators of the version whose publication failed: the run-state "
        "advanced although the run reported the failure",
        expected="no validator of the failed version",
        observed={"If-Modified-Since": ims, "If-None-Match": inm},
    )
