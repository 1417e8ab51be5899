"""Crash points from a trace, and the crash campaign that kills the pipeline at each of them.

A **recording** is one publishing run under ``strace``. Its **steps** are the system calls that
change a file inside the working directory, or make such a change durable: opens that create or
truncate, writes, ``fsync``/``fdatasync``, renames, unlinks, truncates (reads, ``.pyc`` files,
``/tmp``, site-packages, pipes and sockets are ignored because they are outside the working
directory). The **crash points** are every rename, sync, create/truncate and unlink, plus the
first, middle and last write of each file. A crash "at" a step is ``SIGKILL`` on entry to it:
every earlier step has happened, the step itself has not. strace holds the call on entry
(``delay_enter``); the harness reads the growing trace, sees the call entered and kills the
whole run (:func:`record_killed_at`). A process killed while the kernel holds it on entry to
a traced call never executes that call (the kernel skips a traced call when a fatal signal is
pending). A tracer that dies first would let the call go on, so the held process and every
process below strace get the signal before strace's process group does.

How a kill is aimed. strace counts ``when=N`` per system call *and per tracee* (see
:mod:`.strace`), so the harness aims at the step's own per-thread ordinal, unless another
thread of the pipeline reaches that ordinal first. Then it aims at an equivalent call: any
traced call of the same process between the previous step and this one (the working directory
is in the same state before each of them). A step with no such call is reported unreachable.
After each injected run the harness checks, from that run's own trace, that the kill landed
where it was aimed: the targeted call never returned and exactly the expected number of steps
had completed. Wherever the kill landed, the oracle is checked all the same.

The oracle (after ALICE, OSDI 2014), checked from the outside after every crash:

- the published output is absent (first publication only), the old version or the new version,
  complete (digest of a clean run's output, else the rows compared with the payload); never a
  mix, never truncated;
- the next normal run against the new upstream exits with a success code and publishes the new
  version (convergence);
- the run-state never claims a version whose data is not published: the validators that next
  run sends belong to the version whose data survived the crash (a state-before-data pipeline
  sends the new version's validators, gets ``304`` and stays stale).

Two cases: a first publication (fresh directory) and an update (the old version published, the
upstream moved on, the old state present). Points run in parallel lanes, in contiguous
blocks; each lane has its own origin, so the requests of a run can be told apart by time.
Time-based kills at seeded random moments (no strace needed) complement the enumerated points.

One held run instead of a killed run per point (:mod:`.hold`): where the machine allows it
(Linux on x86_64, a pipeline that is not an Airflow DAG), the campaign makes one more run,
stopped by the harness's own tracer on entry to each point's call with every thread stopped,
and copies the working directory there: the files a ``SIGKILL`` at that call would leave. Each
copy is then judged like a killed run's directory (``method = "hold"``; the held run itself is
in the evidence). A point the held run did not reach, and every point when the tracer cannot
trace here, is killed in a fresh run as before (``method = "kill"``).

The oracle is :func:`judge_crash`, a pure function of what a kill left (:class:`CrashState`)
and what the next run did (:class:`Recovery`). The next run is made once per distinct working
directory: after each kill the directory is digested (:func:`workdir_digest`), and a kill that
left identical files (one "before fsync" and one "before the next step" do) reuses the first
recovery's outcome; the point records which crash it reused (``recovery_reused_from``).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kfm_conformance import outputs
from kfm_conformance.faults import hold, strace
from kfm_conformance.faults.requests import request_of_run
from kfm_conformance.faults.strace import Syscall, Trace
from kfm_conformance.isolation import Isolation
from kfm_conformance.profile import Profile
from kfm_conformance.sandbox import FileState, RunResult, Sandbox, file_state
from kfm_conformance.upstream import Origin, Resource
from kfm_conformance.verdict import Finding, HarnessError, fact

FIRST_PUBLICATION = "first-publication"
UPDATE = "update"
CASES = (FIRST_PUBLICATION, UPDATE)

#: State files up to this size are shown as text in the evidence.
STATE_TEXT_BYTES = 600

SandboxFactory = Callable[[], Sandbox]


# -- the versions a scenario served --------------------------------------------------------------
@dataclass
class KnownVersion:
    """A version of the upstream data, and the digests of outputs known to hold it whole."""

    label: str
    resource: Resource
    digests: set[str] = field(default_factory=set)

    @property
    def validators(self) -> dict[str, str]:
        found = {}
        if self.resource.last_modified is not None:
            found["If-Modified-Since"] = self.resource.last_modified
        if self.resource.etag is not None:
            found["If-None-Match"] = self.resource.etag
        return found


class VersionBook:
    """Which complete version an output holds: by digest first, else by comparing rows."""

    def __init__(self, output_suffix: str) -> None:
        self.versions: list[KnownVersion] = []
        self._suffix = output_suffix
        self._verdicts: dict[str, str] = {}
        self._lock = threading.Lock()
        self._scratch = Path(tempfile.mkdtemp(prefix="kfm-versions-"))

    def add(self, label: str, resource: Resource) -> KnownVersion:
        version = KnownVersion(label, resource)
        self.versions.append(version)
        return version

    def get(self, label: str) -> KnownVersion:
        for version in self.versions:
            if version.label == label:
                return version
        raise KeyError(label)

    def learn(self, label: str, digest: str | None) -> None:
        if digest is None:
            return
        with self._lock:
            self.get(label).digests.add(digest)
            self._verdicts[digest] = label

    def classify_path(self, path: Path) -> tuple[str, str | None]:
        """(``absent`` | a version's label | ``torn``, the sha256 or ``None``)."""
        state = file_state(path)
        if state is None:
            return "absent", None
        return self._classify(state.sha256, lambda: path), state.sha256

    def classify_bytes(self, data: bytes) -> tuple[str, str]:
        digest = hashlib.sha256(data).hexdigest()

        def materialise() -> Path:
            copy = self._scratch / f"{digest[:16]}{self._suffix}"
            copy.write_bytes(data)
            return copy

        return self._classify(digest, materialise), digest

    def _classify(self, digest: str, locate: Callable[[], Path]) -> str:
        with self._lock:
            if digest in self._verdicts:
                return self._verdicts[digest]
        label = "torn"
        path = locate()
        for version in self.versions:
            try:
                same = outputs.compare_rows(version.resource.body, path).same
            except (outputs.UnreadableOutput, ValueError):
                break
            if same:
                label = version.label
                break
        with self._lock:
            self._verdicts[digest] = label
        return label

    def close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)


def state_files(sandbox: Sandbox, profile: Profile) -> dict[str, dict[str, Any]]:
    """The run-state files (declared paths, else everything outside the output's directory):
    digest, size, and the text when it is small."""
    out_dir = Path(profile.output).parent.as_posix()
    declared = profile.state
    found: dict[str, dict[str, Any]] = {}
    for rel, state in sandbox.files().items():
        if rel == profile.output:
            continue
        if declared is not None:
            if not any(
                rel == d.rstrip("/") or rel.startswith(d.rstrip("/") + "/") for d in declared
            ):
                continue
        elif Path(rel).parent.as_posix() == out_dir:
            continue
        entry: dict[str, Any] = {"sha256": state.sha256, "size": state.size}
        if state.size <= STATE_TEXT_BYTES:
            try:
                entry["text"] = (sandbox.workdir / rel).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                pass
        found[rel] = entry
    return found


def digests(files: dict[str, Any]) -> dict[str, str]:
    return {rel: state.sha256[:16] for rel, state in files.items()}


# -- recordings and crash points ---------------------------------------------------------------
@dataclass
class Recording:
    """One publishing run under strace, and its trace."""

    label: str
    sandbox: Sandbox
    result: RunResult
    trace: Trace

    @property
    def steps(self) -> list[Syscall]:
        return self.trace.steps_within(self.sandbox.workdir)

    def describe_steps(self) -> list[str]:
        return [step.describe(self.sandbox.workdir) for step in self.steps]


def _next_trace_file(sandbox: Sandbox, trace_dir: Path) -> Path:
    """Where the trace of the sandbox's next run goes."""
    trace_dir.mkdir(parents=True, exist_ok=True)
    return trace_dir / f"{sandbox.workdir.name}-{len(sandbox.runs) + 1}.trace"


def record(
    sandbox: Sandbox,
    url: str,
    trace_dir: Path,
    *,
    label: str,
    extra_env: dict[str, str] | None = None,
    inject: Sequence[str] = (),
    paths: Sequence[str] = (),
) -> Recording:
    """Run the pipeline once under strace (optionally injecting, optionally tracing only the
    calls that touch ``paths``) and parse the trace."""
    trace_file = _next_trace_file(sandbox, trace_dir)
    result = sandbox.run(
        url,
        label=label,
        extra_env=extra_env,
        wrapper=strace.wrapper(trace_file, inject=inject, paths=paths),
    )
    return Recording(label, sandbox, result, strace.read_trace(trace_file, sandbox.workdir))


#: How often the harness reads a frozen run's trace for the call it holds (seconds).
WATCH_POLL_S = 0.001


def record_killed_at(
    sandbox: Sandbox,
    url: str,
    trace_dir: Path,
    *,
    label: str,
    syscall: str,
    ordinal: int,
    extra_env: dict[str, str] | None = None,
) -> Recording:
    """Run the pipeline under strace, hold its ``ordinal``-th ``syscall`` on entry
    (:func:`.strace.freeze_at`) and ``SIGKILL`` the run as soon as the trace shows that call
    entered: the call never executes, every earlier one has. A run that ends without reaching
    the call ends by itself, as with ``signal=SIGKILL`` injection."""
    trace_file = _next_trace_file(sandbox, trace_dir)
    running = sandbox.start(
        url,
        label=label,
        extra_env=extra_env,
        wrapper=strace.wrapper(trace_file, inject=[strace.freeze_at(syscall, ordinal)]),
    )
    watch = strace.EntryWatch(syscall, ordinal)
    try:
        with _Growing(trace_file) as trace:
            while running.process.poll() is None:
                if watch.feed(trace.read_new()):
                    # Unisolated, strace names host PIDs: the held process itself goes first
                    # (a warm Airflow worker is outside the run's process tree).
                    unisolated = sandbox.isolation.mode is Isolation.NONE
                    held = [watch.entered_by] if unisolated and watch.entered_by else []
                    running.kill_below_wrapper_first(also=held)
                    break
                time.sleep(WATCH_POLL_S)
    finally:
        result = running.wait()
    return Recording(label, sandbox, result, strace.read_trace(trace_file, sandbox.workdir))


def kill_landing(
    trace: Trace, result: RunResult, point: CrashPoint, workdir: Path, steps_done: int
) -> tuple[bool, str]:
    """Whether a kill landed where it was aimed, from the killed run's own trace (which had
    completed ``steps_done`` steps), and where it landed: the aimed call never returned and
    exactly ``point.index`` steps had completed. A held call that the run's timeout ended was
    never seen entered by the harness, so that kill did not land as aimed, whatever the trace
    shows."""
    hit = [
        c
        for c in trace.cut_off()
        if c.name == point.site.syscall and c.ordinal == point.site.ordinal
    ]
    if not hit:
        return False, f"not reached: the run exited {result.exit_code}"
    shown = hit[0].describe(workdir)
    if result.timed_out:
        return False, f"{shown} held until the run's timeout (the harness never saw it)"
    return steps_done == point.index, f"{shown} after {steps_done} steps"


def hold_landing(
    recording: Recording, point: CrashPoint, held: hold.Hold, held_root: Path
) -> tuple[bool, str]:
    """Whether a hold landed where it was aimed: the held call acts on the files the
    recording's call did (random parts of names aside), and where it was."""
    aimed = next(
        (
            c
            for c in recording.trace.calls
            if c.name == point.site.syscall and c.ordinal == point.site.ordinal
        ),
        None,
    )

    def names(paths: Sequence[str], root: Path) -> list[str]:
        # An unlinked or O_TMPFILE file: /proc says "#INODE (deleted)", strace "#INODE".
        bare = [p.removesuffix(" (deleted)") for p in paths]
        return [strace.relative_to(root, path) or path for path in bare]

    got = names(held.paths, held_root)
    wanted = names(aimed.paths, recording.sandbox.workdir) if aimed is not None else []
    ordinal = point.site.ordinal
    where = f"held on entry to {held.syscall}({', '.join(got)}), call {ordinal} of its thread"
    if aimed is None or held.syscall != point.site.syscall:
        return False, where + " (not the recording's call)"
    same = len(got) == len(wanted) and all(map(same_file_name, got, wanted))
    if wanted and not same and "?" not in held.paths:
        return False, where + f" (the recording's call acted on {', '.join(wanted)})"
    return True, where + "; its working directory copied there"


def copy_workdir(source: Path, target: Path) -> None:
    """Copy a held run's working directory as a kill there would leave it: files with their
    times, links as links, FIFOs as new FIFOs (reading one would block), sockets left out
    (a socket file outlives no process usefully)."""

    def copy_entry(src: str, dst: str) -> None:
        mode = os.lstat(src).st_mode
        if stat.S_ISFIFO(mode):
            os.mkfifo(dst, stat.S_IMODE(mode))
        elif stat.S_ISREG(mode):
            shutil.copy2(src, dst)

    shutil.copytree(source, target, dirs_exist_ok=True, symlinks=True, copy_function=copy_entry)


#: Where a file name splits into tokens for :func:`same_file_name` (the separators kept).
_NAME_PARTS = re.compile(r"([/._-])")


def same_file_name(one: str, other: str) -> bool:
    """Whether two runs' names are the same file to the pipeline: equal, but for tokens of
    letters and digits of one length that differ (``mktemp``'s ``download.GasJtF`` and
    ``download.yEamiM``, ``tempfile``'s ``.data.csv.k2j9x0aa.tmp``) and numbers
    (``.data.csv.4.1796324965243725968.tmp``). Only the evidence's "landed as aimed" uses it."""
    if canonical_name(one) == canonical_name(other):
        return True
    mine, theirs = _NAME_PARTS.split(one), _NAME_PARTS.split(other)

    def random_like(token: str) -> bool:  # letters and digits, or an inode number "#123"
        return token.removeprefix("#").replace("_", "").isalnum()

    return len(mine) == len(theirs) and all(
        a == b
        or (a.isdigit() and b.isdigit())  # a counter, a process or thread number, a time
        or (len(a) == len(b) >= 4 and random_like(a) and random_like(b))
        for a, b in zip(mine, theirs, strict=True)
    )


class _Growing:
    """A file another process is still writing: each read returns what was added since."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: Any = None

    def __enter__(self) -> _Growing:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()

    def read_new(self) -> bytes:
        if self._handle is None:
            try:
                self._handle = self.path.open("rb")
            except FileNotFoundError:
                return b""
        data: bytes = self._handle.read()
        return data


@dataclass(frozen=True)
class KillSite:
    """The call a kill is aimed at: ``when=ordinal`` on ``syscall``."""

    syscall: str
    ordinal: int
    exact: bool


@dataclass(frozen=True)
class CrashPoint:
    """Crash just before step ``index`` of the recording (``index`` steps have happened)."""

    index: int
    step: str
    why: str
    path: str
    site: KillSite

    def label(self) -> str:
        return f"before step {self.index + 1}: {self.why} — {self.step}"


def _write_picks(steps: Sequence[Syscall]) -> dict[int, str]:
    """First, middle and last write of each file: step index -> why."""
    by_file: dict[str, list[int]] = {}
    for index, step in enumerate(steps):
        if step.kind == "write" and step.path:
            by_file.setdefault(step.path, []).append(index)
    picks: dict[int, str] = {}
    for indexes in by_file.values():
        count = len(indexes)
        named = [(indexes[0], "first"), (indexes[count // 2], "middle"), (indexes[-1], "last")]
        for index, which in named:
            picks.setdefault(index, f"{which} write of {count}" if count > 1 else "only write")
    return picks


def targetable(calls: Sequence[Syscall], candidate: Syscall) -> bool:
    """No other tracee reaches its own ``ordinal``-th call of this name before ``candidate``."""
    if candidate.ordinal > strace.MAX_WHEN:
        return False
    reached: dict[int, int] = {}
    for call in calls:
        if call.seq >= candidate.seq:
            break
        if call.name == candidate.name and call.tid != candidate.tid:
            reached[call.tid] = reached.get(call.tid, 0) + 1
            if reached[call.tid] >= candidate.ordinal:
                return False
    return True


def select_crash_points(trace: Trace, root: Path) -> tuple[list[CrashPoint], list[str]]:
    """The crash points of a recorded run in ``root``, and the steps no kill can be aimed at."""
    steps = trace.steps_within(root)
    writes = _write_picks(steps)
    points: list[CrashPoint] = []
    unreachable: list[str] = []
    calls = trace.calls
    position = {call.seq: index for index, call in enumerate(calls)}
    for index, step in enumerate(steps):
        why = writes.get(index) if step.kind == "write" else step.kind
        if why is None:
            continue
        if step.kind == "sync":
            why = "fsync of a directory" if _is_dir_sync(step, steps) else "fsync"
        lower = position[steps[index - 1].seq] if index else -1
        window = calls[lower + 1 : position[step.seq] + 1]
        site = None
        for candidate in reversed(window):
            same_process = trace.group_of(candidate.tid) == trace.group_of(step.tid)
            if same_process and targetable(calls, candidate):
                site = KillSite(candidate.name, candidate.ordinal, candidate.seq == step.seq)
                break
        rel = strace.relative_to(root, step.path or "") or (step.path or "?")
        described = step.describe(root)
        if site is None:
            unreachable.append(f"step {index + 1}: {why} — {described}")
            continue
        points.append(CrashPoint(index, described, why, rel, site))
    return points, unreachable


def _is_dir_sync(step: Syscall, steps: Sequence[Syscall]) -> bool:
    """A sync of a path that some other step created a file in (or the working directory)."""
    target = step.path or ""
    return any((s.target or "").startswith(target + "/") for s in steps) or not any(
        s.path == target for s in steps if s.kind in ("create", "write")
    )


# -- the campaign --------------------------------------------------------------------------------
@dataclass
class PointResult:
    """What one crash did, and what the oracle says about it."""

    kind: str  # "strace" | "timed"
    label: str
    syscall: str | None
    ordinal: int | None
    path: str | None
    landed: bool
    landed_at: str
    steps_done: int | None
    exit_code: int | None
    output: str
    output_sha256: str | None
    files: dict[str, str]
    state: dict[str, dict[str, Any]]
    recovery_exit: int | None
    recovery_output: str
    recovery_validators: dict[str, str | None]
    workdir: str
    problems_output: list[str] = field(default_factory=list)
    problems_recovery: list[str] = field(default_factory=list)
    problems_state: list[str] = field(default_factory=list)
    #: sha256 over every file, directory and link the kill left in the working directory.
    state_digest: str = ""
    #: The crash whose identical working directory was recovered, when this one reused it.
    recovery_reused_from: str | None = None
    recovery_duration_s: float = 0.0
    #: How the crash state was made: ``kill`` (a run killed there) or ``hold`` (the held run's
    #: working directory copied while it was held there, :mod:`.hold`).
    method: str = "kill"

    @property
    def ok(self) -> bool:
        return not (self.problems_output or self.problems_recovery or self.problems_state)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PointResult:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


# -- the oracle: a pure function of what a kill left and what the next run did ----------------
@dataclass(frozen=True)
class CrashState:
    """What a kill left behind: the output's version (``absent``, a label, or ``torn``)."""

    output: str


@dataclass(frozen=True)
class Recovery:
    """What the next normal run did: its exit code, the output's version afterwards, and the
    validators its request carried (``None`` for a header it did not send)."""

    exit_code: int | None
    output: str
    validators: dict[str, str | None]


@dataclass(frozen=True)
class CrashVerdict:
    problems_output: list[str]
    problems_recovery: list[str]
    problems_state: list[str]


def judge_crash(
    case: str,
    versions: Sequence[tuple[str, dict[str, str]]],
    success_codes: frozenset[int],
    state: CrashState,
    recovery: Recovery,
) -> CrashVerdict:
    """The crash-consistency oracle for one crash.

    ``versions`` are the upstream's versions in order, old to new, each with the validators
    the origin gave it; the last is the new one. The output must be absent (first publication
    only), or a whole old or new version; the next run must succeed and publish the new
    version; and the validators it sends must belong to the version whose data survived, or an
    older one (a state that lags behind the data only costs a download; one that runs ahead of
    it gets a 304 and leaves the output stale for good).
    """
    labels = [label for label, _ in versions]
    new = labels[-1]
    allowed = {new} | ({"absent"} if case == FIRST_PUBLICATION else set(labels[:-1]))
    problems_output: list[str] = []
    if state.output not in allowed:
        problems_output.append(
            "the output vanished" if state.output == "absent" else f"the output is {state.output}"
        )
    problems_recovery: list[str] = []
    if recovery.exit_code not in success_codes:
        problems_recovery.append(f"the next run exited {recovery.exit_code}")
    if recovery.output != new:
        problems_recovery.append(
            f"after the next run the output is {recovery.output}, not the new version"
        )
    problems_state: list[str] = []
    survived = state.output if state.output in labels else None
    allowed_validators: dict[str, set[str]] = {}
    if survived is not None:
        for _, validators in versions[: labels.index(survived) + 1]:
            for header, value in validators.items():
                allowed_validators.setdefault(header, set()).add(value)
    foreign = {
        k: v
        for k, v in recovery.validators.items()
        if v is not None and v not in allowed_validators.get(k, ())
    }
    # A torn output has failed already; the state is judged against whole data (or none).
    if foreign and (survived is not None or state.output == "absent"):
        claimed = [
            label
            for label, validators in versions
            if any(validators.get(k) == value for k, value in foreign.items())
        ]
        problems_state.append(
            f"with {survived or state.output} data at the output the next run sent {foreign}"
            + (f" (validators of the {claimed[0]} version)" if claimed else "")
        )
    return CrashVerdict(problems_output, problems_recovery, problems_state)


#: A name token that a temp-file maker chose at random: mkstemp's suffix (letters and digits
#: mixed), a pid, an inode number (``#9988556``).
_RANDOM_TOKEN = re.compile(r"(?=[A-Za-z_]*\d)(?=\d*[A-Za-z_])[A-Za-z0-9_]{6,}|\d{3,}")


def canonical_name(relpath: str) -> str:
    """``relpath`` with its randomly chosen tokens replaced by ``*``. Two runs killed at the
    same step leave ``out/.data.parquet.k2j9x0aa.tmp`` and ``out/.data.parquet.q8w7e6rr.tmp``:
    the same file to the next run. ``.state/state.json`` stays what it is. In a temp-looking
    name (a leading dot, or ``tmp`` in it) an eight-character ``tempfile`` token counts as
    random even without a digit; a random token that is not recognised only costs a recovery
    run, never a wrong reuse."""
    parts = []
    for part in relpath.split("/"):
        temp_like = part.startswith(".") or "tmp" in part.lower()
        parts.append(".".join(_canonical_token(t, temp_like) for t in part.split(".")))
    return "/".join(parts)


#: Python's ``tempfile`` suffix: eight characters of ``[a-z0-9_]``, letters only 8% of the time.
_TEMPFILE_TOKEN = re.compile(r"[a-z0-9_]{8}")


def _canonical_token(token: str, temp_like: bool) -> str:
    if not _random_like(token, temp_like):
        return token
    return "#*" if token.startswith("#") else "*"


def _random_like(token: str, temp_like: bool = False) -> bool:
    bare = token.lstrip("#")
    return bool(_RANDOM_TOKEN.fullmatch(bare) or (temp_like and _TEMPFILE_TOKEN.fullmatch(bare)))


def workdir_digest(root: Path) -> str:
    """One sha256 over every entry under ``root``: file contents, directories, link targets,
    under their canonical names (:func:`canonical_name`).

    Two kills that leave the same digest leave the same working directory for the next run:
    a kill "before fsync" and one "before the next step" do."""
    entries: list[str] = []
    for path in root.rglob("*"):
        rel = canonical_name(path.relative_to(root).as_posix())
        if path.is_symlink():
            entries.append(f"L {rel} -> {path.readlink()}")
        elif path.is_dir():
            entries.append(f"D {rel}")
        elif not path.is_file():  # a FIFO or socket: opening a FIFO to read it would block
            entries.append(f"S {rel}")
        else:
            state = file_state(path)
            entries.append(f"F {rel} {state.sha256 if state else '?'}")
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()


@dataclass
class CampaignResult:
    """Every crash of one case, the recording it was planned from, and the timings."""

    case: str
    recording_steps: list[str]
    recording_exit: int | None
    recording_problem: str | None
    points: list[PointResult]
    unreachable: list[str]
    duration_s: float
    keep: list[Sandbox] = field(default_factory=list)
    #: Runs of a campaign read back from JSON (whose working directories are gone).
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def explored(self) -> int:
        return len(self.points)

    @property
    def landed(self) -> int:
        return sum(1 for p in self.points if p.kind == "strace" and p.landed)

    @property
    def distinct_states(self) -> int:
        """How many different working directories the kills left."""
        return len({p.state_digest for p in self.points})

    @property
    def recovery_runs(self) -> int:
        """How many recovery runs were made (one per distinct state)."""
        return sum(1 for p in self.points if p.recovery_reused_from is None)

    @property
    def recovery_s(self) -> float:
        return round(sum(p.recovery_duration_s for p in self.points), 2)

    def summary(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "crash_points_explored": self.explored,
            "strace_points": sum(1 for p in self.points if p.kind == "strace"),
            "strace_points_landed_as_aimed": self.landed,
            "timed_kills": sum(1 for p in self.points if p.kind == "timed"),
            "distinct_states": self.distinct_states,
            "recovery_runs": self.recovery_runs,
            "recovery_s": self.recovery_s,
            "unreachable_steps": self.unreachable,
            "duration_s": round(self.duration_s, 2),
            "recording": {"exit_code": self.recording_exit, "steps": self.recording_steps},
        }

    def to_evidence(self) -> dict[str, Any]:
        return {**self.summary(), "points": [p.to_json() for p in self.points]}

    def to_json(self) -> dict[str, Any]:
        """Everything but the kept working directories (their runs are carried as JSON)."""
        return {
            "case": self.case,
            "recording_steps": self.recording_steps,
            "recording_exit": self.recording_exit,
            "recording_problem": self.recording_problem,
            "points": [p.to_json() for p in self.points],
            "unreachable": self.unreachable,
            "duration_s": self.duration_s,
            "runs": [r.to_json() for box in self.keep for r in box.runs] + self.runs,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CampaignResult:
        return cls(
            case=data["case"],
            recording_steps=list(data["recording_steps"]),
            recording_exit=data["recording_exit"],
            recording_problem=data["recording_problem"],
            points=[PointResult.from_json(p) for p in data["points"]],
            unreachable=list(data["unreachable"]),
            duration_s=float(data["duration_s"]),
            runs=list(data.get("runs", [])),
        )

    def output_findings(self) -> list[Finding]:
        bad = [p for p in self.points if p.problems_output]
        return [
            fact(
                "crash.output-whole",
                not bad,
                f"after {len(bad)} of {self.explored} crashes the output was not a complete "
                "version: " + "; ".join(f"{p.label}: {p.problems_output[0]}" for p in bad[:3]),
                expected=_allowed_text(self.case),
                observed=[_brief(p) for p in bad[:8]],
            )
        ]

    def recovery_findings(self) -> list[Finding]:
        bad = [p for p in self.points if p.problems_recovery]
        return [
            fact(
                "crash.recovery-converges",
                not bad,
                f"after {len(bad)} of {self.explored} crashes the next normal run did not "
                "publish the new version: "
                + "; ".join(f"{p.label}: {p.problems_recovery[0]}" for p in bad[:3]),
                expected="a success code, and the new version's rows at the output",
                observed=[_brief(p) for p in bad[:8]],
            )
        ]

    def state_findings(self) -> list[Finding]:
        bad = [p for p in self.points if p.problems_state]
        return [
            fact(
                "crash.state-matches-output",
                not bad,
                f"after {len(bad)} of {self.explored} crashes the run-state claimed a version "
                "whose data was not published: "
                + "; ".join(f"{p.label}: {p.problems_state[0]}" for p in bad[:3]),
                expected="the next run sends only validators of the version whose data survived",
                observed=[_brief(p) for p in bad[:8]],
            )
        ]

    def exploration_findings(self) -> list[Finding]:
        """The runs the campaign is planned from published: else nothing can be planned."""
        return [
            fact(
                "crash.clean-publication",
                self.recording_problem is None,
                self.recording_problem or "",
                expected="a clean publication to plan the crash points from",
                observed={"exit_code": self.recording_exit, "steps": self.recording_steps[:40]},
            )
        ]


def _allowed_text(case: str) -> str:
    if case == FIRST_PUBLICATION:
        return "no output, or the new version complete"
    return "the old version complete, or the new version complete"


def _brief(point: PointResult) -> dict[str, Any]:
    return {
        "crash": point.label,
        "landed_at": point.landed_at,
        "output": point.output,
        "recovery_exit": point.recovery_exit,
        "recovery_output": point.recovery_output,
        "recovery_validators": point.recovery_validators,
        "state": {k: v.get("text", v["sha256"][:16]) for k, v in point.state.items()},
        "problems": point.problems_output + point.problems_recovery + point.problems_state,
        "workdir": point.workdir,
    }


@dataclass
class _Worker:
    """One parallel lane: its own origin (so its requests can be attributed) and template."""

    origin: Origin
    template: Path | None = None


class CrashCampaign:
    """Plan crash points from a recording of ``case``, kill the pipeline at each, judge."""

    def __init__(
        self,
        profile: Profile,
        make_sandbox: SandboxFactory,
        *,
        case: str,
        old: Resource | None,
        new: Resource,
        extra_env: dict[str, str] | None = None,
        workers: int = 2,
        timed_kills: int = 2,
        seed: int = 0,
        keep_passing_dirs: bool = False,
        use_strace: bool = True,
        recover_each_point: bool = False,
        hold_runs: bool = True,
    ) -> None:
        if case not in CASES:
            raise ValueError(f"unknown case {case!r}; known: {CASES}")
        if case == UPDATE and old is None:
            raise ValueError("an update needs an old version")
        self.profile = profile
        self.make_sandbox = make_sandbox
        self.case = case
        self.extra_env = dict(extra_env or {})
        self.workers = max(1, workers)
        self.timed_kills = timed_kills
        self.rng = random.Random(f"{seed}:{case}")
        self.keep_passing_dirs = keep_passing_dirs
        self.use_strace = use_strace
        #: The old behaviour, for the benchmark: one recovery run per kill, identical or not.
        self.recover_each_point = recover_each_point
        #: One held run for every strace point where the machine allows it (:mod:`.hold`).
        self.hold_runs = hold_runs and hold.supported() and "airflow" not in profile.raw
        self.book = VersionBook(Path(profile.output).suffix)
        self.old = self.book.add("old", old) if old is not None else None
        self.new = self.book.add("new", new)
        self._trace_dir = Path(tempfile.mkdtemp(prefix="kfm-traces-"))
        self._keep: list[Sandbox] = []
        self._keep_lock = threading.Lock()
        self._memo: dict[str, _MemoEntry] = {}
        self._memo_lock = threading.Lock()
        self._clean_duration_s = 1.0

    # -- set-up ------------------------------------------------------------------------------
    def _prepare_lane(self, lane: _Worker) -> Sandbox | None:
        """Warm the interpreter's caches and, for an update, publish the old version."""
        box = self.make_sandbox()
        if self.old is not None:
            lane.origin.serve(self.old.resource)
        else:
            lane.origin.serve(self.new.resource)
        result = box.run(
            lane.origin.url, label="set-up: clean publication", extra_env=self.extra_env
        )
        label, digest = self.book.classify_path(box.output_path)
        wanted = self.old.label if self.old is not None else self.new.label
        if result.exit_code not in self.profile.exit_codes.success_codes() or label != wanted:
            raise _SetupFailed(
                f"the set-up publication exited {result.exit_code} and left {label!r} "
                f"(wanted {wanted!r})",
                box,
            )
        self.book.learn(wanted, digest)
        self._clean_duration_s = max(result.duration_s, 0.05)
        lane.origin.serve(self.new.resource)
        if self.old is not None:
            lane.template = box.workdir
            return box
        shutil.rmtree(box.workdir, ignore_errors=True)
        return None

    def _fresh(self, lane: _Worker) -> Sandbox:
        box = self.make_sandbox()
        if lane.template is not None:
            shutil.copytree(lane.template, box.workdir, dirs_exist_ok=True, symlinks=True)
        return box

    # -- the campaign --------------------------------------------------------------------------
    def run(self) -> CampaignResult:
        started = time.monotonic()
        lanes = [_Worker(Origin()) for _ in range(self.workers)]
        try:
            try:
                with ThreadPoolExecutor(max_workers=self.workers) as pool:
                    kept = list(pool.map(self._prepare_lane, lanes))
            except _SetupFailed as failed:
                self._keep.append(failed.sandbox)
                return self._setup_failure(failed, started)
            self._keep.extend(box for box in kept[:1] if box is not None)
            points: list[CrashPoint] = []
            unreachable: list[str] = []
            steps: list[str] = []
            recording_exit: int | None = None
            problem: str | None = None
            recording: Recording | None = None
            if self.use_strace:
                recording = self._record(lanes[0])
                recording_exit = recording.result.exit_code
                steps = recording.describe_steps()
                self._keep.append(recording.sandbox)
                label, digest = self.book.classify_path(recording.sandbox.output_path)
                if label == self.new.label:
                    self.book.learn(self.new.label, digest)
                if recording_exit not in self.profile.exit_codes.success_codes() or label != "new":
                    problem = (
                        f"the publishing run recorded under strace exited {recording_exit} and "
                        f"left {label!r} at the output, not the new version"
                    )
                points, unreachable = select_crash_points(
                    recording.trace, recording.sandbox.workdir
                )
            timed = self._timed_delays()
            if self.hold_runs and points and recording and _HOLD_BROKEN[0] is None:
                results = self._held_campaign(lanes, points, timed, recording)
            else:
                results = self._killed_campaign(lanes, points, timed)
            return CampaignResult(
                case=self.case,
                recording_steps=steps,
                recording_exit=recording_exit,
                recording_problem=problem,
                points=results,
                unreachable=unreachable,
                duration_s=time.monotonic() - started,
                keep=list(self._keep),
            )
        finally:
            for lane in lanes:
                lane.origin.close()
            self.book.close()
            shutil.rmtree(self._trace_dir, ignore_errors=True)

    def _killed_campaign(
        self, lanes: list[_Worker], points: list[CrashPoint], timed: list[float]
    ) -> list[PointResult]:
        """A fresh run killed at each point, the points spread over the lanes."""
        jobs: list[CrashPoint | float] = [*points, *timed]
        # Neighbouring points go to one lane: a kill before an fsync and one before the
        # next step leave identical files only within a lane (each lane has its own origin,
        # so its template's run-state may name another URL).
        owner = contiguous_lanes(len(points), len(lanes)) + [
            index % len(lanes) for index in range(len(timed))
        ]

        def run_lane(number: int) -> list[tuple[int, PointResult]]:
            mine = [index for index, lane in enumerate(owner) if lane == number]
            return [(index, self._run_job(lanes[number], jobs[index])) for index in mine]

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            done = [pair for part in pool.map(run_lane, range(len(lanes))) for pair in part]
        return [result for _, result in sorted(done, key=lambda pair: pair[0])]

    def _held_campaign(
        self,
        lanes: list[_Worker],
        points: list[CrashPoint],
        timed: list[float],
        recording: Recording,
    ) -> list[PointResult]:
        """The strace points from one held run on the first lane (its copies judged there, in
        order, so that identical states meet), the timed kills on the last lane meanwhile."""
        first, last = lanes[0], lanes[-1]

        def timed_kills() -> list[PointResult]:
            return [self._timed_point(last, delay) for delay in timed]

        with ThreadPoolExecutor(max_workers=1) as pool:
            later = pool.submit(timed_kills) if last is not first else None
            held = self._held_points(first, points, recording)
            by_index = dict(held)
            for index, point in enumerate(points):
                if index not in by_index:  # not reached by the held run: kill a run there
                    by_index[index] = self._strace_point(first, point)
            timed_results = later.result() if later is not None else timed_kills()
        return [by_index[index] for index in range(len(points))] + timed_results

    def _held_points(
        self, lane: _Worker, points: list[CrashPoint], recording: Recording
    ) -> list[tuple[int, PointResult]]:
        """Hold one run at every point; judge a copy of its working directory at each hold."""
        box = self._fresh(lane)
        copies: dict[int, tuple[Sandbox, hold.Hold]] = {}

        def on_hold(held: hold.Hold) -> None:
            if held.site >= len(points) or held.site in copies:
                return
            copy = self.make_sandbox()
            copy_workdir(box.workdir, copy.workdir)
            copies[held.site] = (copy, held)

        run = hold.run_held(
            box,
            lane.origin.url,
            [(p.site.syscall, p.site.ordinal) for p in points],
            on_hold,
            label=f"held run: {self.case.replace('-', ' ')}, held at each crash point",
            extra_env=self.extra_env,
        )
        with self._keep_lock:
            self._keep.append(box)
        if run.error is not None and not copies:
            _HOLD_BROKEN[0] = run.error
        results = []
        for index, point in enumerate(points):
            if index not in copies:
                continue
            copy, held = copies[index]
            landed, where = hold_landing(recording, point, held, box.workdir)
            results.append(
                (
                    index,
                    self._judge(
                        lane,
                        copy,
                        kind="strace",
                        label=point.label(),
                        exit_code=None,
                        syscall=point.site.syscall,
                        ordinal=point.site.ordinal,
                        path=point.path,
                        landed=landed,
                        landed_at=where,
                        steps_done=None,
                        method="hold",
                    ),
                )
            )
        return results

    def _setup_failure(self, failed: _SetupFailed, started: float) -> CampaignResult:
        return CampaignResult(
            case=self.case,
            recording_steps=[],
            recording_exit=failed.sandbox.runs[-1].exit_code if failed.sandbox.runs else None,
            recording_problem=str(failed),
            points=[],
            unreachable=[],
            duration_s=time.monotonic() - started,
            keep=list(self._keep),
        )

    def _record(self, lane: _Worker) -> Recording:
        box = self._fresh(lane)
        return record(
            box,
            lane.origin.url,
            self._trace_dir,
            label=f"recording: {self.case.replace('-', ' ')} under strace",
            extra_env=self.extra_env,
        )

    def _timed_delays(self) -> list[float]:
        base = self._clean_duration_s
        return [round(self.rng.uniform(0.3, 1.1) * base, 4) for _ in range(self.timed_kills)]

    def _run_job(self, lane: _Worker, job: CrashPoint | float) -> PointResult:
        """One crash on ``lane``: a strace crash point, or a kill after ``job`` seconds."""
        if isinstance(job, CrashPoint):
            return self._strace_point(lane, job)
        return self._timed_point(lane, job)

    # -- one crash ---------------------------------------------------------------------------
    def _strace_point(self, lane: _Worker, point: CrashPoint) -> PointResult:
        box = self._fresh(lane)
        recording = record_killed_at(
            box,
            lane.origin.url,
            self._trace_dir,
            label=f"crash {point.label()}",
            syscall=point.site.syscall,
            ordinal=point.site.ordinal,
            extra_env=self.extra_env,
        )
        steps_done = sum(1 for s in recording.steps if s.finished)
        landed, where = kill_landing(
            recording.trace, recording.result, point, box.workdir, steps_done
        )
        return self._judge(
            lane,
            box,
            kind="strace",
            label=point.label(),
            exit_code=recording.result.exit_code,
            syscall=point.site.syscall,
            ordinal=point.site.ordinal,
            path=point.path,
            landed=landed,
            landed_at=where,
            steps_done=steps_done,
        )

    def _timed_point(self, lane: _Worker, delay_s: float) -> PointResult:
        box = self._fresh(lane)
        running = box.start(
            lane.origin.url, label=f"killed after {delay_s:.3f} s", extra_env=self.extra_env
        )
        time.sleep(delay_s)
        running.kill(signal.SIGKILL)
        result = box.record(running.wait())
        killed = result.exit_code == -signal.SIGKILL
        return self._judge(
            lane,
            box,
            kind="timed",
            label=f"SIGKILL after {delay_s:.3f} s",
            exit_code=result.exit_code,
            syscall=None,
            ordinal=None,
            path=None,
            landed=killed,
            landed_at="killed" if killed else f"finished first (exit {result.exit_code})",
            steps_done=None,
        )

    def _judge(
        self,
        lane: _Worker,
        box: Sandbox,
        *,
        kind: str,
        label: str,
        exit_code: int | None,
        syscall: str | None,
        ordinal: int | None,
        path: str | None,
        landed: bool,
        landed_at: str,
        steps_done: int | None,
        method: str = "kill",
    ) -> PointResult:
        output, sha = self.book.classify_path(box.output_path)
        files = digests(box.files())
        state = state_files(box, self.profile)
        digest = workdir_digest(box.workdir)
        recovery, reused_from, took = self._recover(lane, box, digest, label)
        versions = [(v.label, v.validators) for v in self.book.versions]
        verdict = judge_crash(
            self.case,
            versions,
            self.profile.exit_codes.success_codes(),
            CrashState(output),
            recovery,
        )
        result = PointResult(
            kind=kind,
            label=label,
            syscall=syscall,
            ordinal=ordinal,
            path=path,
            landed=landed,
            landed_at=landed_at,
            steps_done=steps_done,
            exit_code=exit_code,
            output=output,
            output_sha256=sha,
            files=files,
            state=state,
            recovery_exit=recovery.exit_code,
            recovery_output=recovery.output,
            recovery_validators=dict(recovery.validators),
            workdir=box.workdir.name,
            problems_output=verdict.problems_output,
            problems_recovery=verdict.problems_recovery,
            problems_state=verdict.problems_state,
            state_digest=digest,
            recovery_reused_from=reused_from,
            recovery_duration_s=round(took, 4),
            method=method,
        )
        if result.ok and not self.keep_passing_dirs:
            shutil.rmtree(box.workdir, ignore_errors=True)
        else:
            with self._keep_lock:
                self._keep.append(box)
        return result

    def _recover(
        self, lane: _Worker, box: Sandbox, digest: str, label: str
    ) -> tuple[Recovery, str | None, float]:
        """The next normal run from this state: run once per distinct working directory, and
        reuse that run's outcome for every later kill that left identical files."""
        with self._memo_lock:
            key = f"{digest}:{label}" if self.recover_each_point else digest
            entry = self._memo.get(key)
            first = entry is None
            if entry is None:
                entry = self._memo[key] = _MemoEntry(label)
        if not first:
            entry.done.wait()
            if entry.recovery is not None:
                return entry.recovery, entry.label, 0.0
        started = time.monotonic()
        try:
            run = box.run(lane.origin.url, label="recovery: a normal run", extra_env=self.extra_env)
            request = request_of_run(lane.origin.requests_for(), run.started_at, run.ended_at)
            sent = {
                "If-Modified-Since": request.header("if-modified-since") if request else None,
                "If-None-Match": request.header("if-none-match") if request else None,
            }
            after, _ = self.book.classify_path(box.output_path)
            recovery = Recovery(run.exit_code, after, sent)
        finally:
            if first:
                entry.done.set()
        if first:
            entry.recovery = recovery
        return recovery, None, time.monotonic() - started


@dataclass
class _MemoEntry:
    """The first recovery from one distinct working directory (set once it has run)."""

    label: str
    recovery: Recovery | None = None
    done: threading.Event = field(default_factory=threading.Event)


class _SetupFailed(Exception):
    def __init__(self, message: str, sandbox: Sandbox) -> None:
        super().__init__(message)
        self.sandbox = sandbox


#: Why the hold tracer cannot trace on this machine, once a held run said so (every later
#: campaign then kills a run per point).
_HOLD_BROKEN: list[str | None] = [None]


def contiguous_lanes(count: int, lanes: int) -> list[int]:
    """The lane of each of ``count`` jobs: contiguous blocks of (nearly) equal size."""
    lanes = max(1, lanes)
    return [index * lanes // count for index in range(count)] if count else []


def run_from_json(data: dict[str, Any]) -> RunResult:
    """A :class:`RunResult` read back from its JSON (a shared campaign's runs)."""
    fields = {k: v for k, v in data.items() if k in RunResult.__dataclass_fields__}
    for key in ("files_before", "files_after"):
        fields[key] = {rel: FileState(**state) for rel, state in data.get(key, {}).items()}
    return RunResult(**fields)


def run_campaign(
    profile: Profile,
    make_sandbox: SandboxFactory,
    *,
    case: str,
    old: Resource | None,
    new: Resource,
    **options: Any,
) -> CampaignResult:
    """Convenience wrapper: build a :class:`CrashCampaign` and run it."""
    return CrashCampaign(profile, make_sandbox, case=case, old=old, new=new, **options).run()


def require_some_crash(result: CampaignResult) -> None:
    """A campaign that explored nothing proves nothing: that is the harness's failure."""
    if not result.points:
        raise HarnessError(
            f"the {result.case} crash campaign explored no crash point "
            f"(unreachable: {result.unreachable[:3]})"
        )
