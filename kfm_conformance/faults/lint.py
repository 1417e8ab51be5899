"""The durable-publication protocol, read off the system-call trace of a publishing run.

The protocol (as PostgreSQL's ``durable_rename``): write the new version to a temporary file in
the output's own directory (the same file system: a rename across file systems fails with
``EXDEV``), flush and ``fsync`` it, ``rename`` it over the output, ``fsync`` the directory; only
then write the run-state, the same way.

What is required and what is recommended:

- required: the output is replaced by a rename (never opened for writing, written or truncated
  in place); the renamed file was in the output's own directory; the run-state is committed only
  after the output was replaced (state first, then data, is a permanent lost update after a
  crash between the two);
- recommended (a process kill keeps the page cache, so only a trace shows these): the temporary
  file is fsynced after its last write and before the rename; the directory is fsynced after the
  rename; the state is replaced by a rename too, with the same two fsyncs.

Functions return :class:`~kfm_conformance.verdict.Finding` objects; the steps judge them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kfm_conformance.faults.strace import Syscall, Trace, relative_to
from kfm_conformance.verdict import Finding, recommended, required

#: Check names, grouped by what the feature files say about them.
REPLACEMENT_CHECKS = ("protocol.rename-onto-output", "protocol.temp-beside-output")
IN_PLACE_CHECKS = ("protocol.no-in-place-write",)
ORDER_CHECKS = ("protocol.state-after-data",)
DURABILITY_CHECKS = (
    "protocol.temp-fsynced",
    "protocol.dir-fsynced",
    "protocol.state-replaced-by-rename",
    "protocol.state-temp-fsynced",
    "protocol.state-dir-fsynced",
)


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
    findings.append(
        required(
            "protocol.no-in-place-write",
            not in_place,
            f"{context} wrote the published output in place, where readers can see it half "
            "written: " + ", ".join(_show(in_place, root, 3)),
            expected="the output only ever replaced by a rename",
            observed=_show(in_place, root),
        )
    )
    renames = [c for c in steps if c.kind == "rename" and layout.is_output(c.target)]
    done = [c for c in renames if not c.failed and c.finished]
    cross_fs = [c for c in renames if c.errno == "EXDEV"]
    if output_changed:
        findings.append(
            required(
                "protocol.rename-onto-output",
                bool(done),
                f"{context} changed the output without renaming a finished file onto it"
                + (
                    " (its rename failed with EXDEV: the temp file was on another file system)"
                    if cross_fs
                    else ""
                ),
                expected=f"rename(<temp file> -> {layout.output})",
                observed=_show(renames, root) or "no rename onto the output",
            )
        )
    elsewhere = [c for c in renames if os.path.dirname(c.path or "") != layout.output_dir]
    findings.append(
        required(
            "protocol.temp-beside-output",
            not elsewhere,
            f"{context} renamed a file from outside the output's own directory onto it"
            + (
                " (another file system: the rename failed with EXDEV and the data was copied)"
                if cross_fs
                else ""
            )
            + ": "
            + ", ".join(_show(elsewhere, root, 2)),
            expected=f"the temp file in {relative_to(root, layout.output_dir) or '.'}/",
            observed=_show(elsewhere, root),
        )
    )

    # -- durability of the output ------------------------------------------------------------
    commit = done[-1] if done else None
    if commit is not None:
        findings.append(_temp_fsynced(steps, commit, root, context, "protocol.temp-fsynced"))
        findings.append(_dir_fsynced(steps, commit, root, context, "protocol.dir-fsynced"))

    # -- the run-state: after the data, and durable ------------------------------------------
    rename_sources = {c.path for c in steps if c.kind == "rename"}
    state_commits = [
        c
        for c in steps
        if c.finished
        and not c.failed
        and (
            (c.kind == "rename" and layout.is_state(c.target))
            or (
                c.kind in ("write", "truncate")
                and layout.is_state(c.path)
                and c.path not in rename_sources
            )
        )
    ]
    if commit is not None and state_commits:
        early = [c for c in state_commits if c.seq < commit.seq]
        findings.append(
            required(
                "protocol.state-after-data",
                not early,
                f"{context} wrote its run-state before the output was replaced: a crash in "
                "between leaves a state that claims data that was never published",
                expected=f"state written after {commit.describe(root)}",
                observed=_show(early, root),
            )
        )
    in_place_state = [c for c in state_commits if c.kind != "rename"]
    state_renames = [c for c in state_commits if c.kind == "rename"]
    if state_commits:
        findings.append(
            recommended(
                "protocol.state-replaced-by-rename",
                not in_place_state,
                f"{context} wrote its run-state in place (a crash can leave it torn)",
                expected="the state replaced by a rename, like the output",
                observed=_show(in_place_state, root),
            )
        )
    if state_renames:
        last = state_renames[-1]
        findings.append(_temp_fsynced(steps, last, root, context, "protocol.state-temp-fsynced"))
        findings.append(_dir_fsynced(steps, last, root, context, "protocol.state-dir-fsynced"))
    return findings


def _temp_fsynced(
    steps: Sequence[Syscall], rename: Syscall, root: Path, context: str, check: str
) -> Finding:
    """The renamed file was fsynced after its last write and before the rename."""
    source = rename.path
    writes = [c for c in steps if c.kind in ("write", "create") and c.path == source]
    after = writes[-1].seq if writes else -1
    synced = [
        c
        for c in steps
        if c.kind == "sync" and c.path == source and after < c.seq < rename.seq and not c.failed
    ]
    what = "run-state's" if "state" in check else "output's"
    shown = relative_to(root, source or "") or source
    return recommended(
        check,
        bool(synced),
        f"{context} did not fsync the {what} temp file before renaming it (after a power loss "
        "the rename can survive while the data does not)",
        expected=f"fsync({shown}) before {rename.describe(root)}",
        observed=_show([c for c in steps if c.path == source], root),
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
    return recommended(
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
