"""One pipeline run in a fresh working directory, contained and observed from the outside.

A :class:`Sandbox` owns one empty working directory per scenario. Repeated runs within the
scenario reuse it, as cron would. Every pipeline run of every scenario is spawned here, by
:meth:`Sandbox.start`, and nowhere else: plain, killed, traced, injected and concurrent runs
alike. Each returns a :class:`RunResult`: the argv, the exit code, whether the run had to be
killed at its time bound, bounded tails of stdout and stderr, what was left running when the
main process exited, and a digest of every file in the working directory before and after.

How a run is contained (see :mod:`kfm_conformance.isolation`): under ``namespaces`` the run is
started by bubblewrap in its own PID namespace with a private ``/proc``, a read-only file
system except its working directory and a private ``/tmp`` (its ``HOME`` too), and the
shared network. Under both modes the first process of the run is
:mod:`kfm_conformance.run_init`, which enforces the time bound and, when the pipeline's main
process exits, notes and kills whatever the run left behind. The environment is scrubbed:
the harness's own ``PATH`` and locale, the profile's ``[pipeline.env]``, ``SRC``, and
whatever the capture services add. Times are taken on the monotonic clock, before the spawn
and after the reap, so every request a run sends falls inside its window.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from kfm_conformance import isolation
from kfm_conformance.airflow import carry_wrapper
from kfm_conformance.isolation import Isolation, IsolationChoice
from kfm_conformance.profile import Profile
from kfm_conformance.verdict import ConfigurationError, HarnessError

TAIL_BYTES = 4096

#: Variables passed through from the harness's own environment. ``HOME`` and ``TMPDIR`` are
#: not: every run gets a private, empty temp directory as both.
PASSTHROUGH_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "VIRTUAL_ENV")

#: The run's first process (standard library only, run with ``python -I -S``).
RUN_INIT = Path(__file__).resolve().parent / "run_init.py"

#: How long past its own bound the harness waits for a run's init before killing everything.
WATCHDOG_GRACE_S = 15.0

#: Paths no run may see, even read-only (the harness's results); set by the plugin.
HIDDEN_PATHS: list[Path] = []

#: The environment variable naming the directory where runs get their private temp
#: directories. The CLI makes one for each certification and removes it at the end whatever
#: happened (a SIGTERM, a worker killed mid-run), so that no run's temp directory outlives
#: the certification; without it they are made in the system's temp directory, and each is
#: removed when its run ends.
RUN_TMP_ROOT_ENV = "KFM_RUN_TMP_ROOT"

#: The command between a tracer and the pipeline: a shell that gives the pipeline
#: ``/dev/null`` as its standard input, as every run gets, in place of the trace file the
#: tracer writes to (:func:`seal_wrapper`), and then runs the pipeline's own argv with
#: ``exec``, in the same process. dash is preferred: it adds nothing to the environment but
#: ``PWD``, which every run gets anyway (:meth:`Sandbox.environment`).
SHELL = shutil.which("dash") or "/bin/sh"
TRACEE_SHIM = 'exec </dev/null && exec "$@"'


def private_tmp_root() -> str | None:
    """The directory runs get their private temp directories in (:data:`RUN_TMP_ROOT_ENV`),
    when it is set and exists."""
    root = os.environ.get(RUN_TMP_ROOT_ENV)
    return root if root and os.path.isdir(root) else None


@dataclass(frozen=True)
class FileState:
    """What the harness knows about one file: its digest, size and inode."""

    sha256: str
    size: int
    inode: int


Snapshot = dict[str, FileState]


def file_state(path: Path) -> FileState | None:
    """Digest a file, or ``None`` when it does not exist."""
    try:
        stat = path.stat()
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return FileState(sha256=digest.hexdigest(), size=stat.st_size, inode=stat.st_ino)


def snapshot(root: Path) -> Snapshot:
    """Digest every regular file under ``root``, keyed by its relative POSIX path."""
    states: Snapshot = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            state = file_state(path)
            if state is not None:
                states[path.relative_to(root).as_posix()] = state
    return states


class StreamTail:
    """Drains one of the run's output pipes as it streams, keeping only the last bytes."""

    def __init__(self, stream: IO[bytes], keep: int = TAIL_BYTES) -> None:
        self._stream = stream
        self._keep = keep
        self._tail = bytearray()
        self.total = 0
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while chunk := self._stream.read1(65536):  # type: ignore[attr-defined]
            self.total += len(chunk)
            self._tail += chunk
            if len(self._tail) > 2 * self._keep:
                del self._tail[: -self._keep]
        self._stream.close()

    def text(self, timeout_s: float = 5.0) -> str:
        """The tail (after the writers closed the pipe, or ``timeout_s``), with a note of how
        much came before it."""
        self._thread.join(timeout_s)
        tail = bytes(self._tail[-self._keep :])
        text = tail.decode("utf-8", errors="replace")
        if self.total > len(tail):
            text = f"[{self.total - len(tail)} earlier bytes not kept]\n" + text
        return text


@dataclass
class RunResult:
    """The outside view of one pipeline run."""

    label: str
    argv: list[str]
    exit_code: int | None
    timed_out: bool
    duration_s: float
    stdout_tail: str
    stderr_tail: str
    started_at: float
    ended_at: float
    files_before: Snapshot = field(default_factory=dict)
    files_after: Snapshot = field(default_factory=dict)
    #: Command lines of the run's processes still alive after its main process exited.
    stragglers: list[str] = field(default_factory=list)
    #: ``killed``: the harness stopped the run on purpose (a crash test).
    killed: bool = False
    isolation: str = "none"
    stdout_bytes: int = 0
    stderr_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["files_before"] = {k: asdict(v) for k, v in self.files_before.items()}
        data["files_after"] = {k: asdict(v) for k, v in self.files_after.items()}
        return data

    def observed_end(self) -> str:
        """What the harness saw of the run's end, in words."""
        if self.timed_out:
            return "still running at its time bound; killed with SIGKILL"
        if self.killed:
            return "killed by the harness (a crash test)"
        if self.exit_code is None:
            return "ended without an exit code"
        if self.exit_code < 0:
            return f"ended by signal {-self.exit_code}"
        return f"exited {self.exit_code} after {self.duration_s:.2f} s"


class RunListener(Protocol):
    """Told of every run a sandbox starts and finishes (the scenario's single run log)."""

    def run_started(self, sandbox: Sandbox, label: str) -> object: ...

    def run_finished(self, sandbox: Sandbox, result: RunResult, token: object) -> None: ...


def _host_children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _host_descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children of any of its threads), parents before children."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        children: list[int] = []
        for parent in frontier:
            try:
                tasks = os.listdir(f"/proc/{parent}/task")
            except OSError:
                continue
            for task in tasks:
                try:
                    text = Path(f"/proc/{parent}/task/{task}/children").read_text()
                except OSError:
                    continue
                children += [int(p) for p in text.split() if int(p) not in found]
        found += children
        frontier = children
    return found


def wait_exited(process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait until ``process`` exits (reaping it) or ``timeout_s`` passes; whether it exited.

    ``Popen.wait(timeout=...)`` polls, sleeping up to 50 ms between looks, which added about
    25 ms to every run; a pidfd (Linux 5.3+) becomes readable the moment the process exits."""
    if process.returncode is not None:  # reaped already (a poll): its PID may be reused
        return True
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # no pidfds, or the process was reaped meanwhile
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True
    if process.returncode is not None:  # another thread reaped it before the pidfd opened
        os.close(pidfd)
        return True
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(max(0.0, timeout_s) * 1000):
            return False
    finally:
        os.close(pidfd)
    process.wait()
    return True


def _runs_init(cmdline: bytes) -> bool:
    """Whether a process's command line is :mod:`run_init` itself, not a process (bubblewrap)
    that merely names it among its arguments."""
    argv = cmdline.split(b"\0")
    return len(argv) > 3 and argv[1:4] == [b"-I", b"-S", str(RUN_INIT).encode()]


def parse_report(data: bytes) -> list[dict[str, Any]]:
    """The JSON objects written on a run's report descriptor, one per line, in order."""
    lines = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            lines.append(parsed)
    return lines


def init_started(lines: Sequence[dict[str, Any]]) -> bool:
    """Whether the run's init said it was starting the pipeline (it does before the fork)."""
    return any(line.get("init") == "started" for line in lines)


def init_report(lines: Sequence[dict[str, Any]], returncode: int | None) -> dict[str, Any]:
    """The init's final report, or ``{}`` when it cannot be the init's.

    The init exits with the pipeline's code, or 128 + the signal that ended it, and bubblewrap
    passes that status on. A final line that disagrees with the status was not written by an
    init that went on to exit: a pipeline that forged one and killed its init. Its raw status
    is then all there is."""
    final = next((line for line in reversed(lines) if "exit" in line or "signal" in line), None)
    if final is None:
        return {}
    exit_code, sig = final.get("exit"), final.get("signal")
    if isinstance(exit_code, int) and not isinstance(exit_code, bool):
        claimed = exit_code
    elif isinstance(sig, int) and not isinstance(sig, bool) and sig > 0:
        claimed = 128 + sig
    else:
        return {}
    return final if claimed == returncode else {}


class RunningPipeline:
    """A pipeline run under way (plain runs wait at once; crash and concurrency tests wait
    later)."""

    def __init__(
        self,
        sandbox: Sandbox,
        label: str,
        argv: list[str],
        process: subprocess.Popen[bytes],
        timeout_s: float,
        before: Snapshot,
        started: float,
        report: IO[bytes],
        private_tmp: Path,
        token: object,
    ) -> None:
        self.sandbox = sandbox
        self.label = label
        self.argv = argv
        self.process = process
        self.timeout_s = timeout_s
        self.before = before
        self.workdir = sandbox.workdir
        self.started = started
        self._report = report
        self._private_tmp = private_tmp
        self._token = token
        assert process.stdout is not None and process.stderr is not None
        self._stdout = StreamTail(process.stdout)
        self._stderr = StreamTail(process.stderr)
        self._killed = False
        self._main_pid: int | None = None

    @property
    def pid(self) -> int:
        """The host PID of the run's own command (the wrapper, or the pipeline itself): what a
        test signals to stop or resume the run."""
        if self._main_pid is not None:
            return self._main_pid
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            init = self._init_pid()
            if init is not None:
                children = _host_children(init)
                if children:
                    self._main_pid = children[0]
                    return self._main_pid
            if self.process.poll() is not None:
                break
            time.sleep(0.002)
        return self.process.pid

    def _init_pid(self) -> int | None:
        """The host PID of :mod:`run_init` (the spawned process, or inside bubblewrap)."""
        frontier = [self.process.pid]
        for _ in range(4):
            next_frontier = []
            for pid in frontier:
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if _runs_init(cmdline):
                    return pid
                next_frontier += _host_children(pid)
            frontier = next_frontier
        return None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop the run abruptly (a crash test): the pipeline's processes get ``sig``; under
        namespaces the whole run goes with its namespace."""
        self._killed = True
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill_below_wrapper_first(self, also: Sequence[int] = ()) -> None:
        """``SIGKILL`` the run for a crash test when a wrapper (strace) holds one of its calls:
        first ``also`` (host PIDs outside the run, e.g. a warm Airflow worker) and every
        process below the wrapper, then the wrapper's process group. A tracer that dies lets
        the calls it holds go on; a process killed while it is held never makes its call."""
        self._killed = True
        wrapper = self.pid
        for pid in [*also, *_host_descendants(wrapper)]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.kill(signal.SIGKILL)

    def wait(self) -> RunResult:
        """Wait for the run to end (its init enforces the bound; a watchdog backs it up)."""
        try:
            watchdog = not wait_exited(self.process, self.timeout_s + WATCHDOG_GRACE_S)
            if watchdog:  # the init itself was stopped or killed
                self._kill_group()
                self.process.wait()
        except BaseException:  # the harness is stopping (SIGINT): the run goes first
            self._kill_group()
            self._report.close()
            self._cleanup()
            raise
        ended = time.monotonic()
        lines = self._read_report()
        self._cleanup()
        report = init_report(lines, self.process.returncode)
        if not report and not watchdog and not self._killed and not init_started(lines):
            # The pipeline never ran: bubblewrap or the interpreter could not start the init.
            said = self._stderr.text().strip().splitlines()
            raise HarnessError(
                "the run's init did not start"
                + (f": {said[-1][:200]}" if said else f" (status {self.process.returncode})")
            )
        timed_out = watchdog or bool(report.get("timed_out"))
        exit_code: int | None
        if timed_out:
            exit_code = None
        elif "exit" in report or "signal" in report:
            exit_code = report.get("exit")
            if exit_code is None and report.get("signal"):
                exit_code = -int(report["signal"])
        else:  # the init died without a report it could have written: only the raw status
            exit_code = self.process.returncode
        result = RunResult(
            label=self.label,
            argv=self.argv,
            exit_code=exit_code,
            timed_out=timed_out,
            duration_s=round(ended - self.started, 4),
            stdout_tail=self._stdout.text(),
            stderr_tail=self._stderr.text(),
            started_at=self.started,
            ended_at=ended,
            files_before=self.before,
            files_after=snapshot(self.workdir),
            stragglers=[str(s) for s in report.get("stragglers", [])][:50],
            killed=self._killed,
            isolation=str(self.sandbox.isolation.mode),
            stdout_bytes=self._stdout.total,
            stderr_bytes=self._stderr.total,
        )
        self.sandbox._finished(result, self._token)
        return result

    def _read_report(self) -> list[dict[str, Any]]:
        try:
            data = self._report.read(65536)
        finally:
            self._report.close()
        return parse_report(data)

    def _kill_group(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _cleanup(self) -> None:
        shutil.rmtree(self._private_tmp, ignore_errors=True)


#: The isolation a sandbox uses when none is given (the CLI and plugin always give one).
UNISOLATED = IsolationChoice(Isolation.NONE, "none", "not configured")


class Sandbox:
    """A fresh, empty working directory for one scenario, and the runs made in it."""

    def __init__(
        self,
        profile: Profile,
        root: Path | None = None,
        *,
        base_env: dict[str, str] | None = None,
        isolation_choice: IsolationChoice | None = None,
        listener: RunListener | None = None,
    ) -> None:
        self.profile = profile
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="kfm-run-"))
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            raise ConfigurationError(f"{root}: a scenario's working directory must start empty")
        self.workdir = root.resolve()
        self.base_env = dict(base_env or {})
        self.isolation = isolation_choice or UNISOLATED
        self.listener = listener
        self.runs: list[RunResult] = []
        self._lock = threading.Lock()
        self._started = 0

    @property
    def output_path(self) -> Path:
        return self.workdir / self.profile.output

    def environment(self, src: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
        env.update(self.base_env)
        env.update(self.profile.env)
        env["SRC"] = src
        env["PWD"] = str(self.workdir)  # what a shell would pass, traced or not
        env.update(extra or {})
        return env

    def _command(
        self,
        argv: list[str],
        wrapper: Sequence[str],
        private_tmp: Path,
        report_fd: int,
        timeout_s: float,
    ) -> list[str]:
        """The run's whole command line. ``wrapper`` is the sealed one (:func:`seal_wrapper`),
        followed by :data:`TRACEE_SHIM`."""
        init = [sys.executable, "-I", "-S", str(RUN_INIT), str(report_fd), f"{timeout_s:g}", "--"]
        carried = carry_wrapper(argv, list(wrapper)) if "airflow" in self.profile.raw else None
        if carried is not None:
            wrapped = carried
        elif wrapper:
            wrapped = [*wrapper, SHELL, "-c", TRACEE_SHIM, "kfm-tracee", *argv]
        else:
            wrapped = argv
        command = [*init, *wrapped]
        if self.isolation.mode is Isolation.NONE:
            return command
        writable = [Path(p) for p in self.profile.writable_paths()]
        # The run's init is the harness's own file: visible even when the harness lives under
        # /tmp (a clone there, an editable install), which the run's private /tmp would hide.
        readable = [RUN_INIT, self.profile.profile_dir.resolve(), Path(sys.prefix).resolve()]
        readable += _wrapper_scripts(wrapper)
        readable += [Path(a).resolve().parent for a in argv if a.startswith("/")]
        return [
            *isolation.sandbox_argv(
                self.workdir, private_tmp, writable, HIDDEN_PATHS, readable=readable
            ),
            *command,
        ]

    def start(
        self,
        src: str,
        *,
        label: str | None = None,
        extra_env: dict[str, str] | None = None,
        wrapper: Sequence[str] = (),
        timeout_s: float | None = None,
        pass_fds: Sequence[int] = (),
    ) -> RunningPipeline:
        """Start the pipeline in the background and return a handle to wait on.

        ``pass_fds`` reach the run's command (the wrapper, a tracer of the harness's own) as
        they are; a wrapper that gets them keeps them from the pipeline itself."""
        argv = self.profile.argv(src=src, workdir=self.workdir)
        with self._lock:
            self._started += 1
            number = self._started
        label = label or f"run {number}"
        bound = timeout_s or self.profile.timeout_s
        env = self.environment(src, extra_env)
        private_tmp = Path(
            tempfile.mkdtemp(prefix=f"kfm-tmp-{self.workdir.name[:40]}-", dir=private_tmp_root())
        )
        report_read, report_write = os.pipe()
        trace_fd: int | None = None
        try:
            (private_tmp / "home").mkdir()
            inside_tmp = "/tmp" if self.isolation.mode is Isolation.NAMESPACES else str(private_tmp)
            env["HOME"] = f"{inside_tmp}/home"
            env["TMPDIR"] = inside_tmp
            sealed, trace_fd = seal_wrapper(wrapper)
            command = self._command(argv, sealed, private_tmp, report_write, bound)
            token = self.listener.run_started(self, label) if self.listener else None
            before = snapshot(self.workdir)
            started = time.monotonic()
            try:
                process = subprocess.Popen(
                    command,
                    cwd=self.workdir,
                    env=env,
                    # The trace file, when a tracer writes one: the wrapper's alone (the shim
                    # gives the pipeline /dev/null); every other run gets /dev/null.
                    stdin=subprocess.DEVNULL if trace_fd is None else trace_fd,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=(report_write, *pass_fds),
                    start_new_session=True,
                )
            except OSError as exc:
                raise HarnessError(f"cannot start the run's sandbox: {exc}") from None
        except BaseException:
            # Nothing was started (a service that cannot be reached, a wrapper that cannot be
            # built): the run's temp directory goes with it.
            os.close(report_read)
            shutil.rmtree(private_tmp, ignore_errors=True)
            raise
        finally:
            os.close(report_write)
            if trace_fd is not None:
                os.close(trace_fd)
        return RunningPipeline(
            self,
            label=label,
            argv=[*wrapper, *argv],
            process=process,
            timeout_s=bound,
            before=before,
            started=started,
            report=os.fdopen(report_read, "rb"),
            private_tmp=private_tmp,
            token=token,
        )

    def _finished(self, result: RunResult, token: object) -> None:
        self.record(result)
        if self.listener is not None:
            self.listener.run_finished(self, result, token)

    def record(self, result: RunResult) -> RunResult:
        """Keep a finished run in this sandbox's list (:meth:`RunningPipeline.wait` does)."""
        with self._lock:
            if result not in self.runs:
                self.runs.append(result)
        return result

    def run(
        self,
        src: str,
        *,
        label: str | None = None,
        extra_env: dict[str, str] | None = None,
        wrapper: Sequence[str] = (),
        timeout_s: float | None = None,
    ) -> RunResult:
        """Run the pipeline to completion (or to its timeout) and record the result."""
        running = self.start(
            src, label=label, extra_env=extra_env, wrapper=wrapper, timeout_s=timeout_s
        )
        return running.wait()

    def output_state(self) -> FileState | None:
        return file_state(self.output_path)

    def files(self) -> Snapshot:
        return snapshot(self.workdir)


def _wrapper_scripts(wrapper: Sequence[str]) -> list[Path]:
    """The harness's own files a wrapper runs (``python -I -S hold_tracer.py``, the sealed
    strace): visible to the run even when they live under ``/tmp``, as :data:`RUN_INIT` is."""
    package = RUN_INIT.parent
    found = [Path(a) for a in wrapper if a.startswith("/") and Path(a).is_relative_to(package)]
    if wrapper and wrapper[0].startswith("/"):  # the tracer itself (an execute-only copy)
        found.append(Path(wrapper[0]).parent)
    return found


def seal_wrapper(wrapper: Sequence[str]) -> tuple[list[str], int | None]:
    """The wrapper with the output file it names (strace's ``-o FILE``) opened by the harness
    and given as the wrapper's standard input instead (``-o /proc/self/fd/0``), and that
    descriptor (None when the wrapper names no file).

    The file is never a path the run can see or write: the descriptor reaches only the run's
    init and the wrapper, neither of them dumpable (:mod:`kfm_conformance.run_init`,
    :func:`kfm_conformance.faults.strace.sealed_executable`), and :data:`TRACEE_SHIM` replaces
    it with ``/dev/null`` before the pipeline starts. The caller closes its own copy once the
    run has started. Wrappers are the harness's own argv, never the pipeline's."""
    sealed = list(wrapper)
    for index, arg in enumerate(wrapper[:-1]):
        if arg == "-o" and wrapper[index + 1].startswith("/"):
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            try:
                fd = os.open(wrapper[index + 1], flags, 0o600)
            except OSError as exc:
                raise HarnessError(f"cannot open the run's trace file: {exc}") from None
            sealed[index + 1] = "/proc/self/fd/0"
            return sealed, fd
    return sealed, None
