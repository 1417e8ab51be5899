"""``strace`` as a black-box instrument: availability, command lines, and trace parsing.

The harness traces the system calls that change files (``-f -y``, so every file descriptor is
printed with the path it refers to) and parses the ``-o`` output into typed :class:`Syscall`
records. The wrapper goes in front of the pipeline's own argv, so the interpreter the profile
names is the traced process (after the sandbox's one-line ``exec`` shim, below).

The trace is evidence, and the pipeline is not trusted, so it must not be able to write it
(a pipeline that never flushes could otherwise edit its own ``write`` lines into ``fsync``
lines: ``fixtures/forges_trace.py`` did, and was certified). Three things keep it out:

- the trace file is never a path the run can see: the sandbox opens it and hands strace only
  a descriptor, its standard input (``-o /proc/self/fd/0``,
  :func:`kfm_conformance.sandbox.seal_wrapper`);
- strace runs from an execute-only copy (:func:`sealed_executable`): a process that executes
  a file it cannot read is not dumpable, so its ``/proc/PID/fd`` (the trace's descriptor) is
  closed to the run, which holds no capability;
- the inherited descriptor itself is replaced before the pipeline starts, by a shell that
  then runs the pipeline's argv with ``exec`` (:data:`kfm_conformance.sandbox.TRACEE_SHIM`).
  The shell's own calls (the dynamic loader's ``openat`` calls, its ``/dev/null``) are
  traced like the rest, in every recording, injection and held run alike, so ordinals agree
  between them.

Facts this module relies on (measured with strace 6.1 and written down because they are easy to
get wrong):

- ``-e inject=NAME:...:when=N`` counts invocations **per system call and per tracee**: every
  thread and every process keeps its own counter (strace(1): "Accounting of syscalls that are
  subject to injection is done per syscall and per tracee"). ``when=N`` therefore fires in the
  first thread that reaches *its own* N-th call of NAME. :attr:`Syscall.ordinal` is that
  per-thread count; :mod:`.crash` only aims at a call that no other thread reaches first.
- Injection only applies to system calls that are traced: ``-e trace=none`` (or a trace set
  without NAME) silently disables it. The injection commands below always trace the same set
  as the recording, so the ordinals of the recording and of the injected run agree.
- A signal is injected on syscall *entry*: with ``signal=SIGKILL`` the call never executes. A
  crash "at" a call is a crash just before it.
- ``--seccomp-bpf`` (the kernel stops the tracee only at traced calls) makes a traced run of
  the reference about four times cheaper (1.3 s -> 0.36 s wall). Under it strace drops a
  ``signal=`` injection, but keeps ``error=`` and ``delay_enter=`` and counts ``when=`` as
  without it (per tracee, with and without ``-P``: measured on threads writing to three
  files). So no run injects a signal: a kill is a freeze on entry (:func:`freeze_at`) that the
  harness ends with ``SIGKILL``. Every injection's landing is checked from its own trace.
- When the tracee dies of ``SIGKILL``, ``strace`` kills itself with the same signal, so the run's
  exit status is ``-9``.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from kfm_conformance.verdict import NotApplicable, SkipKind

#: Environment variable naming the strace binary (an empty value or a missing file disables it).
STRACE_ENV = "KFM_STRACE"

OPEN_SYSCALLS = frozenset({"openat", "open", "creat"})
WRITE_SYSCALLS = frozenset(
    {"write", "pwrite64", "writev", "pwritev", "pwritev2", "sendfile", "copy_file_range"}
)
SYNC_SYSCALLS = frozenset({"fsync", "fdatasync"})
RENAME_SYSCALLS = frozenset({"rename", "renameat", "renameat2"})
UNLINK_SYSCALLS = frozenset({"unlink", "unlinkat"})
LINK_SYSCALLS = frozenset({"link", "linkat"})
TRUNCATE_SYSCALLS = frozenset({"truncate", "ftruncate"})

#: The write family as an injection set (``?``: no complaint where the name does not exist).
WRITE_SET: tuple[str, ...] = (
    "write",
    "pwrite64",
    "writev",
    "pwritev",
    "?pwritev2",
    "sendfile",
    "copy_file_range",
)

#: The traced set, in a stable order. ``?`` tells strace not to complain about a name this
#: architecture lacks (``open`` and ``creat`` do not exist on aarch64).
TRACED_SYSCALLS: tuple[str, ...] = (
    "openat",
    "?open",
    "?creat",
    "write",
    "pwrite64",
    "writev",
    "pwritev",
    "?pwritev2",
    "sendfile",
    "copy_file_range",
    "fsync",
    "fdatasync",
    "?rename",
    "renameat",
    "?renameat2",
    "?unlink",
    "unlinkat",
    "?link",
    "linkat",
    "?truncate",
    "ftruncate",
    # Not steps: traced so that threads can be told from processes (see Trace.group_of).
    "clone",
    "?clone3",
    "?fork",
    "?vfork",
)

CLONE_SYSCALLS = frozenset({"clone", "clone3", "fork", "vfork"})

#: The injection the probe asks strace to accept.
INJECT_PROBE = ("-e", "inject=write:error=ENOSPC:when=1")

#: strace's limit for ``when=first`` (strace(1): 1..65535).
MAX_WHEN = 65535


# -- availability ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Availability:
    """Whether ``strace`` can trace and inject here, and why not."""

    ok: bool
    executable: str
    reason: str = ""
    version: str = ""
    #: strace can stop the tracee only at the traced calls (``--seccomp-bpf``): about three
    #: times less overhead than stopping at every call, for the same trace.
    seccomp: bool = False


def _strace_executable() -> str | None:
    configured = os.environ.get(STRACE_ENV)
    if configured is not None:
        if not configured:
            return None
        return configured if os.path.isfile(configured) else shutil.which(configured)
    return shutil.which("strace")


@functools.lru_cache(maxsize=1)
def probe() -> Availability:
    """Probe once: is strace installed, may it ptrace, and does it accept ``inject``?"""
    exe = _strace_executable()
    if exe is None:
        return Availability(False, "", "not installed (the Debian package is 'strace')")
    true = shutil.which("true") or "/bin/true"
    try:
        version = subprocess.run(
            [exe, "-V"], capture_output=True, text=True, timeout=20, check=False
        ).stdout.splitlines()
        traced = subprocess.run(
            [exe, "-f", "-o", os.devnull, true],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        if traced.returncode != 0:
            last = (traced.stderr.strip().splitlines() or ["no message"])[-1]
            return Availability(False, exe, f"cannot trace here (ptrace denied?): {last}")
        injected = subprocess.run(
            [exe, "-f", "-o", os.devnull, "-e", "trace=write", *INJECT_PROBE, true],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        if "strace:" in injected.stderr:
            last = injected.stderr.strip().splitlines()[-1]
            return Availability(False, exe, f"fault injection not supported: {last}")
        filtered = subprocess.run(
            [exe, "--seccomp-bpf", "-f", "-o", os.devnull, "-e", "trace=write", true],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        seccomp = filtered.returncode == 0 and "strace:" not in filtered.stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Availability(False, exe, f"cannot run {exe}: {exc}")
    return Availability(True, exe, version=version[0] if version else "", seccomp=seccomp)


#: The execute-only copies made so far, by the executable they copy.
_SEALED: dict[str, str] = {}


def sealed_executable(executable: str) -> str:
    """An execute-only copy of ``executable`` (mode ``0111``), made once per process (again
    when the folder it was made in has gone: a plugin session removes its temporary root at
    its end, and another session may follow in the same process).

    Executing a file the process may not read makes it non-dumpable (``execve(2)``; a run holds
    no ``CAP_DAC_OVERRIDE``), so the run cannot open the tracer's descriptors through
    ``/proc``. The copy lives in the harness's temporary root for runs when there is one (the
    sandbox shows the run that folder, read-only) and goes when this process exits."""
    copy = _SEALED.get(executable)
    if copy is not None and os.path.isfile(copy):
        return copy
    from kfm_conformance.sandbox import private_tmp_root

    folder = Path(tempfile.mkdtemp(prefix="kfm-tracer-", dir=private_tmp_root()))
    atexit.register(shutil.rmtree, folder, True)
    made = folder / Path(executable).name
    shutil.copyfile(executable, made)
    os.chmod(made, 0o111)
    _SEALED[executable] = str(made)
    return str(made)


def require_strace() -> Availability:
    """The availability, or :class:`NotApplicable` (``unavailable``: blocks certification)."""
    found = probe()
    if not found.ok:
        raise NotApplicable(f"strace unavailable: {found.reason}", SkipKind.UNAVAILABLE)
    return found


# -- command lines ---------------------------------------------------------------------------
def wrapper(
    trace_file: Path,
    *,
    inject: Sequence[str] = (),
    syscalls: Sequence[str] = TRACED_SYSCALLS,
    paths: Sequence[str] = (),
    executable: str | None = None,
) -> list[str]:
    """The argv prefix that runs a pipeline under strace, writing the trace to ``trace_file``.

    Every injection traces the same set as a plain recording, so ordinals agree. ``paths``
    restricts tracing, and so the counting of ``when=`` (strace filters a call by path before
    it decides on an injection), to the calls that touch one of them (``-P``; a descriptor
    matches by the absolute path it refers to, a path argument by its exact spelling).
    """
    found = probe()
    exe = executable or (sealed_executable(found.executable) if found.ok else "strace")
    # strace 6.1 drops a ``signal=`` injection under ``--seccomp-bpf`` (see the module's
    # docstring): such a run stops at every call instead.
    filtered = found.seccomp and executable is None and not any(":signal=" in s for s in inject)
    argv = [exe, *(["--seccomp-bpf"] if filtered else []), "-f", "-y", "-s", "24"]
    argv += ["-o", str(trace_file), "-e", "trace=" + ",".join(syscalls)]
    for path in paths:
        argv += ["-P", path]
    for spec in inject:
        argv += ["-e", f"inject={spec}"]
    return argv


#: How long a frozen call waits on entry (:func:`freeze_at`): far longer than the harness takes
#: to see it and kill the run, and than any run's bound, so it never resumes by itself.
FREEZE_S = 3600
_FREEZE = f":delay_enter={FREEZE_S}s"


def freeze_at(name: str, ordinal: int) -> str:
    """Hold the ``ordinal``-th ``name`` call (of each tracee) on entry, before it executes, for
    :data:`FREEZE_S`: the harness sees its entry in the trace (:class:`EntryWatch`) and kills
    the run there. The same crash as a ``signal=SIGKILL`` injection, but with the kernel
    filtering the traced calls (``--seccomp-bpf``, under which strace drops ``signal=``): a
    traced run costs about a quarter."""
    return f"{name}:when={ordinal}{_FREEZE}"


class EntryWatch:
    """Spots, in strace output as it grows, the entry to the ``ordinal``-th ``name`` call of
    any one tracee (strace's ``when=`` counts per tracee, as :attr:`Syscall.ordinal` does).

    strace writes a call's entry before it holds the call, so the frozen call is the last,
    unterminated line of the output (or ends in ``<unfinished ...>`` once another tracee
    printed something); ``<... resumed>`` lines are not entries."""

    def __init__(self, name: str, ordinal: int) -> None:
        self.name = name
        self.ordinal = ordinal
        self.counts: dict[int, int] = {}
        #: The tracee (as strace names it) that entered the target call, once one has.
        self.entered_by: int | None = None
        self._partial = b""

    def _entry_tid(self, line: bytes) -> int | None:
        match = _ENTRY.match(line)
        if match is None or match.group(2).decode() != self.name:
            return None
        return int(match.group(1))

    def feed(self, data: bytes) -> bool:
        """Take the next bytes of the output; true once the target call has been entered."""
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            tid = self._entry_tid(line)
            if tid is not None:
                self.counts[tid] = self.counts.get(tid, 0) + 1
                if self.counts[tid] == self.ordinal:
                    self.entered_by = tid
                    return True
        tid = self._entry_tid(self._partial)
        if tid is not None and self.counts.get(tid, 0) + 1 == self.ordinal:
            self.entered_by = tid
            return True
        return False


_ENTRY = re.compile(rb"^(\d+)\s+(\w+)\(")


def fail_at(name: str, errno_name: str, ordinal: int) -> str:
    """Make the ``ordinal``-th ``name`` call (of each tracee) fail with ``errno_name``."""
    return f"{name}:error={errno_name}:when={ordinal}"


def delay_each(names: Iterable[str], delay_ms: int, *, until: int | None = None) -> str:
    """Delay each call of ``names`` on entry by ``delay_ms`` milliseconds (only the first
    ``until`` calls of each name in each tracee, when given)."""
    spec = f"{','.join(names)}:delay_enter={delay_ms}ms"
    return spec + (f":when=1..{until}" if until else "")


# -- records ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Syscall:
    """One system call as strace printed it, with the paths it touched resolved."""

    seq: int
    tid: int
    name: str
    args: tuple[str, ...]
    result: str | None
    ordinal: int
    paths: tuple[str, ...] = ()
    flags: frozenset[str] = frozenset()
    #: The file (inode) the call acts on, as numbered by :func:`identify_files`: the same
    #: number for every descriptor and every name of one file (a rename's or link's source).
    file: int | None = None

    @property
    def finished(self) -> bool:
        """The call returned (it was not cut off by a kill)."""
        return self.result is not None and not self.result.startswith("?")

    @property
    def retval(self) -> int | None:
        if self.result is None:
            return None
        match = re.match(r"(-?\d+)", self.result)
        return int(match.group(1)) if match else None

    @property
    def errno(self) -> str | None:
        if self.result is None:
            return None
        match = re.match(r"-1 (E[A-Z0-9]+)", self.result)
        return match.group(1) if match else None

    @property
    def failed(self) -> bool:
        return self.errno is not None

    @property
    def injected(self) -> bool:
        return self.result is not None and "(INJECTED)" in self.result

    @property
    def kind(self) -> str:
        """``create``, ``open``, ``write``, ``sync``, ``rename``, ``unlink``, ``link``,
        ``truncate``."""
        if self.name in OPEN_SYSCALLS:
            if self.name == "creat" or self.flags & {"O_CREAT", "O_TRUNC", "O_TMPFILE"}:
                return "create"
            return "open"
        if self.name in WRITE_SYSCALLS:
            return "write"
        if self.name in SYNC_SYSCALLS:
            return "sync"
        if self.name in RENAME_SYSCALLS:
            return "rename"
        if self.name in UNLINK_SYSCALLS:
            return "unlink"
        if self.name in LINK_SYSCALLS:
            return "link"
        if self.name in TRUNCATE_SYSCALLS:
            return "truncate"
        return "other"

    @property
    def is_step(self) -> bool:
        """A file-system step: a call that changes a file, or makes its changes durable."""
        return self.kind in ("create", "write", "sync", "rename", "unlink", "link", "truncate")

    @property
    def opens_for_writing(self) -> bool:
        return self.name in OPEN_SYSCALLS and (
            self.name == "creat" or bool(self.flags & {"O_WRONLY", "O_RDWR", "O_TRUNC"})
        )

    @property
    def path(self) -> str | None:
        """The file the call acts on (a rename's source)."""
        return self.paths[0] if self.paths else None

    @property
    def fd(self) -> int | None:
        """The descriptor a write, sync or ftruncate acts on (an open's result)."""
        if self.name in OPEN_SYSCALLS:
            return self.retval if self.retval is not None and self.retval >= 0 else None
        fd_arg = _arg(self.args, 2 if self.name == "copy_file_range" else 0)
        match = re.match(r"(\d+)<", fd_arg)
        return int(match.group(1)) if match else None

    @property
    def target(self) -> str | None:
        """A rename's or link's destination; otherwise the file the call acts on."""
        return self.paths[-1] if self.paths else None

    def describe(self, root: Path | None = None) -> str:
        shown = [_display(p, root) for p in self.paths]
        joined = self.kind in ("rename", "link")
        where = " -> ".join(shown) if joined else (shown[0] if shown else "?")
        return f"{self.name}({where})"


def _display(path: str, root: Path | None) -> str:
    if root is not None:
        rel = relative_to(root, path)
        if rel is not None:
            return rel
    return path


def relative_to(root: Path | str, path: str) -> str | None:
    """``path`` relative to ``root`` (``"."`` for the root itself), or ``None`` if outside."""
    for base in {str(root).rstrip("/"), os.path.realpath(root).rstrip("/")}:
        if path == base:
            return "."
        if path.startswith(base + "/"):
            return path[len(base) + 1 :]
    return None


@dataclass
class Trace:
    """A parsed strace output: the calls in order of entry, and how each tracee ended."""

    calls: list[Syscall]
    endings: dict[int, str] = field(default_factory=dict)
    groups: dict[int, int] = field(default_factory=dict)

    def group_of(self, tid: int) -> int:
        """The thread group (process) of a tracee: a SIGKILL to any of its threads kills all."""
        return self.groups.get(tid, tid)

    @property
    def killed(self) -> bool:
        return any("killed by SIGKILL" in text for text in self.endings.values())

    def steps_within(self, root: Path | str) -> list[Syscall]:
        """File-system steps that touch a path inside ``root`` (``root`` itself included)."""
        return [c for c in self.calls if c.is_step and touches(c, root)]

    def injected(self) -> list[Syscall]:
        return [c for c in self.calls if c.injected]

    def cut_off(self) -> list[Syscall]:
        """Calls that never returned: where a kill landed."""
        return [c for c in self.calls if not c.finished]


def touches(call: Syscall, root: Path | str) -> bool:
    return any(relative_to(root, p) is not None for p in call.paths)


# -- parsing ---------------------------------------------------------------------------------
_LINE = re.compile(r"^(?:(?P<tid>\d+)\s+)?(?P<rest>.*)$")
_RESUMED = re.compile(r"^<\.\.\. (?P<name>\w+) resumed>(?P<tail>.*)$")
_CALL = re.compile(r"^(?P<name>\w+)\((?P<body>.*)$")
_UNFINISHED = " <unfinished ...>"
_FD = re.compile(r"^(?:-?\d+|AT_FDCWD)<(?P<path>.*)>(?:\(deleted\))?$")
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|.)")
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "v": "\v", "f": "\f", "a": "\a", "b": "\b"}


def parse_trace(text: str, cwd: Path | str | None = None) -> Trace:
    """Parse ``strace -f -y -o`` output. Relative paths are resolved against the directory the
    thread last showed as ``AT_FDCWD``, else against ``cwd`` (the run's working directory)."""
    calls: list[Syscall] = []
    endings: dict[int, str] = {}
    pending: dict[int, tuple[int, str, str]] = {}
    counts: dict[tuple[int, str], int] = {}
    cwds: dict[int, str] = {}
    order = 0
    entries: list[tuple[int, int, str, str, str | None]] = []  # seq, tid, name, body, result

    for line in text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        tid = int(match.group("tid") or 0)
        rest = match.group("rest")
        if rest.startswith("+++"):
            endings[tid] = rest.strip("+ ")
            continue
        if rest.startswith("---") or not rest:
            continue
        resumed = _RESUMED.match(rest)
        if resumed:
            start = pending.pop(tid, None)
            if start is None:
                continue
            seq, name, head = start
            body, result = _split_result(head + resumed.group("tail"))
            entries.append((seq, tid, name, body, result))
            continue
        call = _CALL.match(rest)
        if not call:
            continue
        name = call.group("name")
        if rest.endswith(_UNFINISHED):
            pending[tid] = (order, name, call.group("body")[: -len(_UNFINISHED)])
            order += 1
            continue
        body, result = _split_result(call.group("body"))
        entries.append((order, tid, name, body, result))
        order += 1
    for tid, (seq, name, head) in pending.items():  # never resumed: the tracee died in it
        body, _ = _split_result(head + ")")
        entries.append((seq, tid, name, body, None))

    entries.sort(key=lambda e: e[0])
    default_cwd = str(cwd) if cwd is not None else None
    groups: dict[int, int] = {}
    for seq, tid, name, body, result in entries:
        groups.setdefault(tid, tid)
        if name in CLONE_SYSCALLS and result is not None:
            child = re.match(r"(\d+)", result)
            if child and int(child.group(1)) > 0:
                threaded = "CLONE_THREAD" in body
                groups[int(child.group(1))] = groups[tid] if threaded else int(child.group(1))
        key = (tid, name)
        counts[key] = counts.get(key, 0) + 1
        args = tuple(split_args(body))
        for arg in args:
            if arg.startswith("AT_FDCWD<"):
                found = _fd_path(arg)
                if found:
                    cwds[tid] = found
        base = cwds.get(tid, default_cwd)
        paths, flags = _paths_of(name, args, result, base)
        calls.append(
            Syscall(
                seq=seq,
                tid=tid,
                name=name,
                args=args,
                result=result,
                ordinal=counts[key],
                paths=paths,
                flags=flags,
            )
        )
    return Trace(calls=identify_files(calls, groups), endings=endings, groups=groups)


_PROC_FD = re.compile(r"^/proc/(?:self|\d+)/fd/(\d+)$")


def identify_files(calls: Sequence[Syscall], groups: dict[int, int]) -> list[Syscall]:
    """Number the files (inodes) the calls act on, following descriptors and names.

    A file keeps its number through every descriptor opened on it (per process; a forked child
    inherits its parent's), every rename and every link: an anonymous ``O_TMPFILE`` inode that
    is written, fsynced, ``linkat``-ed to a temporary name and renamed over the output is one
    file from its ``openat`` to the rename. Calls that act on no file keep ``None``."""
    numbers = iter(range(1, 1 << 30))
    by_name: dict[str, int] = {}
    by_fd: dict[tuple[int, int], int] = {}
    found: list[Syscall] = []

    def named(path: str) -> int:
        if path not in by_name:
            by_name[path] = next(numbers)
        return by_name[path]

    for call in calls:
        group = groups.get(call.tid, call.tid)
        file: int | None = None
        if call.name in CLONE_SYSCALLS and call.retval and call.retval > 0:
            child = groups.get(call.retval, call.retval)
            if child != group:  # a new process: it inherits the parent's descriptors
                for (owner, inherited), number in list(by_fd.items()):
                    if owner == group:
                        by_fd[(child, inherited)] = number
        elif call.name in OPEN_SYSCALLS:
            if call.path is not None and call.fd is not None:
                file = named(call.path)
                by_fd[(group, call.fd)] = file
        elif call.kind in ("write", "sync", "truncate") and call.name != "truncate":
            descriptor = call.fd
            if descriptor is not None and (group, descriptor) in by_fd:
                file = by_fd[(group, descriptor)]
            elif call.path is not None:
                file = named(call.path)
        elif call.kind in ("rename", "link") and len(call.paths) == 2:
            source, target = call.paths
            proc_fd = _PROC_FD.match(source)
            if proc_fd and (group, int(proc_fd.group(1))) in by_fd:
                file = by_fd[(group, int(proc_fd.group(1)))]
            else:
                file = named(source)
            if call.finished and not call.failed:
                by_name[target] = file
                if call.kind == "rename":
                    by_name.pop(source, None)
        elif call.kind in ("unlink", "truncate") and call.path is not None:
            file = by_name.get(call.path)
            if call.kind == "unlink" and call.finished and not call.failed:
                by_name.pop(call.path, None)
        found.append(replace(call, file=file) if file is not None else call)
    return found


def read_trace(path: Path, cwd: Path | str | None = None) -> Trace:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        text = ""
    return parse_trace(text, cwd)


def _split_result(body: str) -> tuple[str, str | None]:
    """``args) = result`` -> (``args``, ``result``); result ``None`` when there is none."""
    close = next((i for i, char, depth in _top_level(body) if char == ")" and depth == 0), None)
    if close is None:
        return body, None
    args = body[:close]
    tail = body[close + 1 :].strip()
    if tail.startswith("="):
        return args, tail[1:].strip()
    return args, None


def _top_level(text: str) -> Iterator[tuple[int, str, int]]:
    """The one scanner of strace's argument text: every character outside quoted strings and
    ``-y`` annotations (``<out/x>``, ``<TCP:[1.2.3.4:5->6.7.8.9:80]>``), with the bracket depth
    it stands at (a closing bracket at depth 0 closes the call's own argument list)."""
    depth = 0
    index = 0
    while index < len(text):
        char = text[index]
        if char == '"':
            index = _skip_string(text, index)
            continue
        if char == "<":
            index = _skip_annotation(text, index)
            continue
        yield index, char, depth
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        index += 1


def _skip_string(text: str, start: int) -> int:
    index = start + 1
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == '"':
            return index + 1
        index += 1
    return index


def _skip_annotation(text: str, start: int) -> int:
    """Skip a ``-y`` annotation such as ``<out/x>`` or ``<TCP:[1.2.3.4:5->6.7.8.9:80]>``."""
    index = start + 1
    while index < len(text):
        if text[index] == ">" and text[index - 1] != "-":
            return index + 1
        index += 1
    return index


def split_args(body: str) -> list[str]:
    """Split a call's argument text at top-level commas."""
    args: list[str] = []
    start = 0
    for index, char, depth in _top_level(body):
        if char == "," and depth == 0:
            args.append(body[start:index].strip())
            start = index + 1
    last = body[start:].strip()
    if last:
        args.append(last)
    return args


def decode_string(arg: str) -> str | None:
    """A quoted C string as strace prints it, decoded; ``None`` if ``arg`` is not one."""
    if not arg.startswith('"'):
        return None
    end = _skip_string(arg, 0)
    inner = arg[1 : end - 1]

    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] == "x":
            return chr(int(code[1:], 16))
        if code[0] in "01234567":
            return chr(int(code, 8))
        return _SIMPLE_ESCAPES.get(code, code)

    raw = _ESCAPE.sub(replace, inner)
    return raw.encode("latin-1", errors="replace").decode("utf-8", errors="replace")


def _fd_path(arg: str) -> str | None:
    match = _FD.match(arg.strip())
    if not match:
        return None
    path = match.group("path").removesuffix(" (deleted)")
    return path if path.startswith("/") else None


def _join(base: str | None, path: str | None) -> str | None:
    if path is None:
        return None
    if path.startswith("/") or base is None:
        return os.path.normpath(path) if path.startswith("/") else path
    return os.path.normpath(os.path.join(base, path))


def _at(dirfd: str, path_arg: str, cwd: str | None) -> str | None:
    path = decode_string(path_arg)
    if path is None:
        return None
    base = _fd_path(dirfd) if dirfd.startswith("AT_FDCWD") or dirfd[:1].isdigit() else None
    return _join(base or cwd, path)


def _arg(args: tuple[str, ...], index: int) -> str:
    return args[index] if len(args) > index else ""


def _paths_of(
    name: str, args: tuple[str, ...], result: str | None, cwd: str | None
) -> tuple[tuple[str, ...], frozenset[str]]:
    flags: frozenset[str] = frozenset()
    paths: list[str | None] = []
    if name == "openat":
        flags = frozenset(_arg(args, 2).split("|"))
        opened = _fd_path(result.split(" ")[0]) if result else None
        paths.append(opened or _at(_arg(args, 0), _arg(args, 1), cwd))
    elif name in ("open", "creat"):
        flags = frozenset(_arg(args, 1).split("|")) if name == "open" else frozenset()
        opened = _fd_path(result.split(" ")[0]) if result else None
        paths.append(opened or _join(cwd, decode_string(_arg(args, 0))))
    elif name in ("sendfile",):
        paths.append(_fd_path(_arg(args, 0)))
    elif name == "copy_file_range":
        paths.append(_fd_path(_arg(args, 2)))
    elif name in WRITE_SYSCALLS or name in SYNC_SYSCALLS or name == "ftruncate":
        paths.append(_fd_path(_arg(args, 0)))
    elif name == "rename":
        paths += [
            _join(cwd, decode_string(_arg(args, 0))),
            _join(cwd, decode_string(_arg(args, 1))),
        ]
    elif name in ("renameat", "renameat2"):
        paths += [_at(_arg(args, 0), _arg(args, 1), cwd), _at(_arg(args, 2), _arg(args, 3), cwd)]
        if name == "renameat2":
            flags = frozenset(_arg(args, 4).split("|"))
    elif name == "link":
        paths += [
            _join(cwd, decode_string(_arg(args, 0))),
            _join(cwd, decode_string(_arg(args, 1))),
        ]
    elif name == "linkat":
        flags = frozenset(_arg(args, 4).split("|"))
        empty = decode_string(_arg(args, 1)) == "" and "AT_EMPTY_PATH" in flags
        source = _fd_path(_arg(args, 0)) if empty else _at(_arg(args, 0), _arg(args, 1), cwd)
        paths += [source, _at(_arg(args, 2), _arg(args, 3), cwd)]
    elif name in ("unlink", "truncate"):
        paths.append(_join(cwd, decode_string(_arg(args, 0))))
    elif name == "unlinkat":
        paths.append(_at(_arg(args, 0), _arg(args, 1), cwd))
        flags = frozenset(_arg(args, 2).split("|"))
    return tuple(p for p in paths if p), flags
