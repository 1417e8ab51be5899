"""The durable-publication protocol, read off the system-call trace of a publishing run.

What atomicity needs is one rename within one file system: the new version is written
somewhere (beside the output, in a ``.wal/`` directory, or as an anonymous ``O_TMPFILE`` inode
linked to a temporary name) and then renamed over the output. Where the temporary file lives
is not judged: a rename that would cross file systems fails with ``EXDEV``, and what the
pipeline does then (a copy into the output) is judged as what it is, an in-place write.

What is required and what is recommended:

- required: the output is replaced by a rename, and never opened for writing, written or
  truncated in place (a copy over the output, ``shutil.move``'s fallback after ``EXDEV``, and a
  truncation are all in-place writes);
- recommended (a process kill keeps the page cache, so only a trace shows these; they are
  PostgreSQL's ``durable_rename``): the renamed file is fsynced (``fsync`` or ``fdatasync``, on
  any descriptor of that inode) after its last write and before the rename; the directory is
  fsynced after the rename; the run-state is replaced atomically, with the same two fsyncs;
- recommended: the run-state's last change comes after the output was replaced. Touching the
  state early (a lock file, a SQLite database opened and locked at start, a scratch download)
  is no commit; only the order of the last change is read here, and what the state *claims*
  after a crash at every point is judged by the crash campaign (:mod:`.crash`), which is the
  required check.

Files are followed by inode (:func:`~kfm_conformance.faults.strace.identify_files`), not by
name. Functions return :class:`~kfm_conformance.verdict.Finding` objects; the steps judge them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kfm_conformance.faults.strace import Syscall, Trace, relative_to
from kfm_conformance.verdict import Finding, fact

#: Check names, grouped by what the feature files say about them.
REPLACEMENT_CHECKS = ("protocol.rename-onto-output",)
IN_PLACE_CHECKS = ("protocol.no-in-place-write",)
ORDER_CHECKS = ("protocol.state-after-data",)
DURABILITY_CHECKS = (
    "protocol.temp-fsynced",
    "protocol.dir-fsynced",
    "protocol.state-replaced-by-rename",
    "protocol.state-temp-fsynced",
    "protocol.state-dir-fsynced",
)
#: Files beside a database whose writes make its in-place writes atomic (SQLite's rollback
#: journal and write-ahead log).
JOURNAL_SUFFIXES = ("-journal", "-wal")


@dataclass(frozen=True)
class Layout:
    """Where the output and the run-state live, as absolute paths."""

    root: Path
    output: str
    state: tuple[str, ...] | None

    @property
    def output_path(self) -> str:
        return os.path.normpath(os.path.join(self.root, self.output))

    @property
    def output_dir(self) -> str:
        return os.path.dirname(self.output_path)

    def is_output(self, path: str | None) -> bool:
        return path is not None and _same(path, self.output_path, self.root)

    def is_state(self, path: str | None) -> bool:
        """Declared state paths; without a declaration, anything outside the output's dir."""
        if path is None or self.is_output(path):
            return False
        rel = relative_to(self.root, path)
        if rel is None or rel == ".":
            return False
        if self.state is None:
            out_dir_rel = relative_to(self.root, self.output_dir) or "."
            return os.path.dirname(rel) != ("" if out_dir_rel == "." else out_dir_rel)
        return any(rel == d.rstrip("/") or rel.startswith(d.rstrip("/") + "/") for d in self.state)


def _same(path: str, wanted: str, root: Path) -> bool:
    if path == wanted:
        return True
    rel_a, rel_b = relative_to(root, path), relative_to(root, wanted)
    return rel_a is not None and rel_a == rel_b


def _show(calls: Iterable[Syscall], root: Path, limit: int = 6) -> list[str]:
    return [c.describe(root) + (f" = {c.result}" if c.failed else "") for c in calls][:limit]


def lint_trace(
    trace: Trace,
    layout: Layout,
    *,
    context: str = "the publishing run",
    output_changed: bool = True,
) -> list[Finding]:
    """All protocol findings for one publishing run's trace.

    ``output_changed`` says whether the run changed the output's bytes; a run that left them
    alone (an identical payload) is not required to rename anything onto the output.
    """
    root = layout.root
    steps = trace.steps_within(root)
    findings: list[Finding] = []

    # -- the output is replaced, never written in place --------------------------------------
    in_place = [
        c
        for c in steps
        if (c.kind in ("write", "truncate") and layout.is_output(c.path))
        or (c.opens_for_writing and layout.is_output(c.path))
    ]
    cross_fs = [c for c in steps if c.kind == "rename" and c.errno == "EXDEV"]
    findings.append(
        fact(
            "protocol.no-in-place-write",
            not in_place,
            f"{context} wrote the published output in place, where readers can see it half "
            "written"
            + (
                " (its rename failed with EXDEV, the temp file being on another file system, "
                "and the data was copied into the output)"
                if cross_fs
                else ""
            )
            + ": "
            + ", ".join(_show(in_place, root, 3)),
            expected="the output only ever replaced by a rename",
            observed=_show([*cross_fs, *in_place], root),
        )
    )
    renames = [c for c in steps if c.kind == "rename" and layout.is_output(c.target)]
    done = [c for c in renames if not c.failed and c.finished]
    if output_changed:
        findings.append(
            fact(
                "protocol.rename-onto-output",
                bool(done),
                f"{context} changed the output without renaming a finished file onto it"
                + (
                    " (its rename failed with EXDEV: the temp file was on another file system)"
                    if any(c.errno == "EXDEV" for c in renames)
                    else ""
                ),
                expected=f"rename(<temp file> -> {layout.output})",
                observed=_show(renames, root) or "no rename onto the output",
            )
        )

    # -- durability of the output ------------------------------------------------------------
    commit = done[-1] if done else None
    if commit is not None:
        findings.append(_temp_fsynced(steps, commit, root, context, "protocol.temp-fsynced"))
        findings.append(_dir_fsynced(steps, commit, root, context, "protocol.dir-fsynced"))

    # -- the run-state: its last change after the data, and atomic ----------------------------
    renamed_files = {c.file for c in steps if c.kind in ("rename", "link") and c.file is not None}
    state_changes = [
        c
        for c in steps
        if c.finished
        and not c.failed
        and (
            (c.kind in ("rename", "link") and layout.is_state(c.target))
            or (c.kind == "unlink" and layout.is_state(c.path))
            or (
                c.kind in ("write", "truncate")
                and layout.is_state(c.path)
                and c.file not in renamed_files
            )
        )
    ]
    if commit is not None and state_changes:
        last = state_changes[-1]
        findings.append(
            fact(
                "protocol.state-after-data",
                last.seq > commit.seq,
                f"{context} changed its run-state for the last time before the output was "
                "replaced (a crash in between leaves a state that may claim data that was "
                "never published; the crash campaign judges what it claims)",
                expected=f"the run-state's last change after {commit.describe(root)}",
                observed=_show([c for c in state_changes if c.seq < commit.seq], root),
            )
        )
    journaled = {
        c.path[: -len(suffix)]
        for c in state_changes
        for suffix in JOURNAL_SUFFIXES
        if c.path and c.path.endswith(suffix)
    }
    read_back = _read_before_changed(trace, layout, state_changes)
    in_place_state = [
        c
        for c in state_changes
        if c.kind in ("write", "truncate")
        and c.path in read_back
        and c.path not in journaled
        and not (c.path or "").endswith(JOURNAL_SUFFIXES)
    ]
    state_renames = [c for c in state_changes if c.kind == "rename"]
    if state_changes:
        findings.append(
            fact(
                "protocol.state-replaced-by-rename",
                not in_place_state,
                f"{context} wrote its run-state in place without a journal (a crash can leave "
                "it torn)",
                expected="the state replaced by a rename, like the output, or journaled",
                observed=_show(in_place_state, root),
            )
        )
    if state_renames:
        last_rename = state_renames[-1]
        findings.append(
            _temp_fsynced(steps, last_rename, root, context, "protocol.state-temp-fsynced")
        )
        findings.append(
            _dir_fsynced(steps, last_rename, root, context, "protocol.state-dir-fsynced")
        )
    return findings


def _read_before_changed(trace: Trace, layout: Layout, changes: Sequence[Syscall]) -> set[str]:
    """State files the run read before it first changed them: the ones whose content the next
    run trusts. A scratch download, a pid file or a lock written before anything reads it is
    no claim, and a torn one costs nothing."""
    first_change: dict[str, int] = {}
    for change in changes:
        if change.path is not None:
            first_change.setdefault(change.path, change.seq)
    found: set[str] = set()
    for call in trace.calls:
        path = call.path
        if call.kind != "open" or call.opens_for_writing or not layout.is_state(path):
            continue
        if path is not None and call.seq < first_change.get(path, call.seq + 1):
            found.add(path)
    return found


def _temp_fsynced(
    steps: Sequence[Syscall], rename: Syscall, root: Path, context: str, check: str
) -> Finding:
    """The renamed file (that inode, through any descriptor or name) was fsynced after its last
    write and before the rename."""
    source = rename.file
    writes = [c for c in steps if c.kind in ("write", "create") and c.file == source]
    after = writes[-1].seq if writes else -1
    synced = [
        c
        for c in steps
        if c.kind == "sync" and c.file == source and after < c.seq < rename.seq and not c.failed
    ]
    what = "run-state's" if "state" in check else "output's"
    shown = relative_to(root, rename.path or "") or rename.path
    return fact(
        check,
        bool(synced),
        f"{context} did not fsync the {what} temp file before renaming it (after a power loss "
        "the rename can survive while the data does not)",
        expected=f"fsync or fdatasync of {shown} (any descriptor) before {rename.describe(root)}",
        observed=_show([c for c in steps if c.file == source], root),
    )


def _dir_fsynced(
    steps: Sequence[Syscall], rename: Syscall, root: Path, context: str, check: str
) -> Finding:
    """The directory holding the renamed file was fsynced after the rename."""
    directory = os.path.dirname(rename.target or "")
    synced = [
        c
        for c in steps
        if c.kind == "sync" and c.path == directory and c.seq > rename.seq and not c.failed
    ]
    what = "run-state's" if "state" in check else "output's"
    shown = relative_to(root, directory) or directory
    return fact(
        check,
        bool(synced),
        f"{context} did not fsync the {what} directory after the rename (after a power loss "
        "the rename itself may be lost)",
        expected=f"fsync({shown}) after {rename.describe(root)}",
        observed=_show([c for c in steps if c.kind == "sync"], root),
    )


def select(findings: Iterable[Finding], checks: Sequence[str]) -> list[Finding]:
    """The findings of the named checks."""
    return [f for f in findings if f.check in checks]
