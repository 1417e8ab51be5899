"""One pipeline run in a fresh working directory, observed from the outside.

A :class:`Sandbox` owns one empty working directory per scenario. Repeated runs within the
scenario reuse it, as cron would. Each :meth:`Sandbox.run` returns a :class:`RunResult`: the
argv, the exit code, whether the harness had to kill the run at its timeout, the tails of
stdout and stderr, and a digest of every file in the working directory before and after.

The pipeline is started in its own process group with a scrubbed environment (the harness's
own ``PATH``, ``HOME`` and locale, the profile's ``[pipeline.env]``, ``SRC``, and whatever the
capture services add). A run that outlives its timeout is killed, group and all.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from kfm_conformance.profile import Profile
from kfm_conformance.verdict import ConfigurationError

TAIL_BYTES = 4096

#: Variables passed through from the harness's own environment.
PASSTHROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")


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


def _tail(data: bytes) -> str:
    return data[-TAIL_BYTES:].decode("utf-8", errors="replace")


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

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["files_before"] = {k: asdict(v) for k, v in self.files_before.items()}
        data["files_after"] = {k: asdict(v) for k, v in self.files_after.items()}
        return data


class RunningPipeline:
    """A pipeline started in the background (for concurrency and reader scenarios)."""

    def __init__(
        self,
        label: str,
        argv: list[str],
        process: subprocess.Popen[bytes],
        timeout_s: float,
        before: Snapshot,
        workdir: Path,
        stdout: IO[bytes],
        stderr: IO[bytes],
    ) -> None:
        self.label = label
        self.argv = argv
        self.process = process
        self.timeout_s = timeout_s
        self.before = before
        self.workdir = workdir
        self.started = time.time()
        self._stdout = stdout
        self._stderr = stderr

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group."""
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self) -> RunResult:
        timed_out = False
        try:
            self.process.wait(timeout=max(0.0, self.started + self.timeout_s - time.time()))
        except subprocess.TimeoutExpired:
            timed_out = True
            self.kill()
            self.process.wait()
        else:
            # Reap helpers the pipeline may have left behind in its group.
            self.kill()
        ended = time.time()
        self._stdout.seek(0)
        self._stderr.seek(0)
        out, err = self._stdout.read(), self._stderr.read()
        self._stdout.close()
        self._stderr.close()
        return RunResult(
            label=self.label,
            argv=self.argv,
            exit_code=None if timed_out else self.process.returncode,
            timed_out=timed_out,
            duration_s=round(ended - self.started, 4),
            stdout_tail=_tail(out),
            stderr_tail=_tail(err),
            started_at=self.started,
            ended_at=ended,
            files_before=self.before,
            files_after=snapshot(self.workdir),
        )


class Sandbox:
    """A fresh, empty working directory for one scenario, and the runs made in it."""

    def __init__(
        self,
        profile: Profile,
        root: Path | None = None,
        *,
        base_env: dict[str, str] | None = None,
    ) -> None:
        self.profile = profile
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="kfm-run-"))
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            raise ConfigurationError(f"{root}: a scenario's working directory must start empty")
        self.workdir = root
        self.base_env = dict(base_env or {})
        self.runs: list[RunResult] = []
        self._lock = threading.Lock()

    @property
    def output_path(self) -> Path:
        return self.workdir / self.profile.output

    def environment(self, src: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
        env.update(self.base_env)
        env.update(self.profile.env)
        env["SRC"] = src
        env.update(extra or {})
        return env

    def start(
        self,
        src: str,
        *,
        label: str | None = None,
        extra_env: dict[str, str] | None = None,
        wrapper: Sequence[str] = (),
        timeout_s: float | None = None,
    ) -> RunningPipeline:
        """Start the pipeline in the background and return a handle to wait on."""
        argv = self.profile.argv(src=src, workdir=self.workdir)
        full_argv = [*wrapper, *argv]
        before = snapshot(self.workdir)
        stdout = tempfile.TemporaryFile()
        stderr = tempfile.TemporaryFile()
        try:
            process = subprocess.Popen(
                full_argv,
                cwd=self.workdir,
                env=self.environment(src, extra_env),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        except FileNotFoundError:
            stdout.close()
            stderr.close()
            raise ConfigurationError(
                f"{self.profile.path}: pipeline.command: program not found: {full_argv[0]}"
            ) from None
        except PermissionError:
            stdout.close()
            stderr.close()
            raise ConfigurationError(
                f"{self.profile.path}: pipeline.command: not executable: {full_argv[0]}"
            ) from None
        with self._lock:
            number = len(self.runs) + 1
        return RunningPipeline(
            label=label or f"run {number}",
            argv=full_argv,
            process=process,
            timeout_s=timeout_s or self.profile.timeout_s,
            before=before,
            workdir=self.workdir,
            stdout=stdout,
            stderr=stderr,
        )

    def record(self, result: RunResult) -> RunResult:
        with self._lock:
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
        return self.record(running.wait())

    def output_state(self) -> FileState | None:
        return file_state(self.output_path)

    def files(self) -> Snapshot:
        return snapshot(self.workdir)
