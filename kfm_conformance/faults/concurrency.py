"""Two instances in one working directory, and readers that poll the output meanwhile.

Judged by outcome, not mechanism: a pipeline may serialise its runs with a lock, make the loser
wait, or let it fail with a declared code; what matters is that the output is never torn (a
reader thread reads it again and again and every distinct content it saw must be absent or a
whole version of the data), that every run ends with a code from the profile's table, and that
afterwards the run-state matches the output (the next run sends only validators of the version
whose data is published, and converges).

Two overlaps are staged:

- ``downloading``: run A fetches the first version through a trickling body; once its request
  has arrived the upstream moves to the next version and run B starts;
- ``writing``: run A runs under ``strace`` with its writes slowed down; as soon as it starts
  writing (a new file appears beside the output, or the output itself changes) the harness
  freezes it by stopping its tracer (``SIGSTOP`` to strace: the pipeline then blocks at its next
  system call), moves the upstream on and starts run B. Once B has finished, or is plainly
  waiting (asleep, using no CPU, for a second: a lock), A is resumed (``SIGCONT``). The
  interleaving is forced, not left to timing: a pipeline without a lock that shares one fixed
  temp name is caught every time, because B truncates and renames the very file A is writing
  through, and A's remaining writes land in the published output.

:func:`kill_and_restart` is the time-based complement of the crash campaign (no strace needed):
runs are killed at seeded random moments and restarted while a reader polls the output.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfm_conformance.faults import strace
from kfm_conformance.faults.crash import VersionBook
from kfm_conformance.profile import Profile
from kfm_conformance.sandbox import RunningPipeline, RunResult, Sandbox
from kfm_conformance.upstream import Origin, Reply, Resource
from kfm_conformance.verdict import Finding, fact

OVERLAPS = ("downloading", "writing")

#: Each write of run A is delayed this long (milliseconds), so that the harness sees it
#: writing before it is done ...
WRITE_DELAY_MS = 20
#: ... for at most this many writes per thread (a bound on the slowdown).
DELAYED_WRITES = 100
#: Run B counts as waiting (on a lock) after this long asleep without using any CPU.
IDLE_S = 1.0

#: How many distinct contents the reader keeps the bytes of (for classification).
MAX_KEPT_CONTENTS = 64


class OutputPoller:
    """A reader thread: reads the output again and again, keeps every distinct content."""

    def __init__(self, path: Path, interval_s: float = 0.0005) -> None:
        self.path = path
        self.interval_s = interval_s
        self.sequence: list[str | None] = []
        self.contents: dict[str, bytes] = {}
        self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data: bytes | None = self.path.read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                data = None
            except OSError:
                data = None
            self.reads += 1
            digest = hashlib.sha256(data).hexdigest() if data is not None else None
            if not self.sequence or self.sequence[-1] != digest:
                self.sequence.append(digest)
                if (
                    digest is not None
                    and data is not None
                    and digest not in self.contents
                    and len(self.contents) < MAX_KEPT_CONTENTS
                ):
                    self.contents[digest] = data
            time.sleep(self.interval_s)

    def __enter__(self) -> OutputPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def verdicts(self, book: VersionBook) -> list[tuple[str, str | None]]:
        """Each distinct content seen, in order: (``absent`` | a version's label | ``torn``)."""
        seen: list[tuple[str, str | None]] = []
        for digest in self.sequence:
            if digest is None:
                seen.append(("absent", None))
            elif digest in self.contents:
                seen.append((book.classify_bytes(self.contents[digest])[0], digest))
            else:
                seen.append(("unchecked", digest))
        return seen


def never_torn(seen: list[tuple[str, str | None]], reads: int, context: str) -> Finding:
    torn = [d for label, d in seen if label == "torn"]
    return fact(
        "output.never-torn",
        not torn,
        f"{context}: a reader saw {len(torn)} content(s) of the output that are no whole version",
        expected="absent, or a whole version of the data",
        observed={
            "reads": reads,
            "distinct_contents": [f"{label}:{(d or '')[:16]}" for label, d in seen][:40],
        },
    )


def book_for(profile: Profile, versions: list[tuple[str, Resource]]) -> VersionBook:
    book = VersionBook(Path(profile.output).suffix)
    for label, resource in versions:
        book.add(label, resource)
    return book


# -- two runs at once ----------------------------------------------------------------------------
@dataclass
class ConcurrentOutcome:
    """The two runs, what the reader saw, and what the output held afterwards."""

    overlap: str
    runs: list[RunResult]
    seen: list[tuple[str, str | None]]
    reads: int
    final: str
    timeline: list[str] = field(default_factory=list)

    def to_evidence(self) -> dict[str, Any]:
        return {
            "overlap": self.overlap,
            "runs": [
                {
                    "label": r.label,
                    "exit_code": r.exit_code,
                    "timed_out": r.timed_out,
                    "duration_s": r.duration_s,
                }
                for r in self.runs
            ],
            "reader": {
                "reads": self.reads,
                "distinct_contents": [f"{label}:{(d or '')[:16]}" for label, d in self.seen],
            },
            "output_afterwards": self.final,
            "timeline": self.timeline,
        }

    def declared_exit_findings(self, profile: Profile) -> list[Finding]:
        declared = profile.exit_codes.as_dict()
        bad = [
            (r.label, r.exit_code)
            for r in self.runs
            if r.timed_out or r.exit_code not in declared.values()
        ]
        return [
            fact(
                "concurrency.declared-exit",
                not bad,
                "a run that shared its working directory ended with a code the profile does not "
                f"declare (or hung): {bad}",
                expected=declared,
                observed=[
                    (r.label, r.exit_code, "timed out" if r.timed_out else "") for r in self.runs
                ],
            )
        ]


def _wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return condition()


def two_runs_at_once(
    *,
    profile: Profile,
    sandbox: Sandbox,
    origin: Origin,
    first: Resource,
    move_upstream: Callable[[], object],
    book: VersionBook,
    overlap: str,
    trace_dir: Path,
    extra_env: dict[str, str] | None = None,
    download_s: float = 1.0,
) -> ConcurrentOutcome:
    """Stage run A, move the upstream, start run B beside it; poll the output throughout."""
    if overlap not in OVERLAPS:
        raise ValueError(f"unknown overlap {overlap!r}; known: {OVERLAPS}")
    timeline: list[str] = []
    started = time.monotonic()

    def note(text: str) -> None:
        timeline.append(f"{time.monotonic() - started:7.3f} s  {text}")

    url = origin.url
    requests_before = len(origin.exchanges)
    with OutputPoller(sandbox.output_path) as poller:
        if overlap == "downloading":
            headers = {"Content-Type": first.content_type}
            if first.last_modified:
                headers["Last-Modified"] = first.last_modified
            if first.etag:
                headers["ETag"] = first.etag
            chunk = max(1, len(first.body) // 40)
            origin.push(
                Reply(
                    body=first.body,
                    headers=headers,
                    trickle_chunk=chunk,
                    trickle_interval_s=download_s / 40,
                )
            )
            run_a = sandbox.start(url, label="run A (slow download)", extra_env=extra_env)
            note("run A started; its answer trickles")
            _wait_until(lambda: _asked(origin, requests_before, run_a), profile.timeout_s)
            note("run A's request arrived")
            move_upstream()
            note("the upstream moved to the next version")
            run_b = sandbox.start(url, label="run B (started beside run A)", extra_env=extra_env)
            note("run B started")
            results = _wait_all([run_a, run_b])
        else:
            results = _frozen_writer(
                sandbox, url, trace_dir, move_upstream, extra_env, profile.timeout_s, note
            )
        note(f"both ended: A exit {results[0].exit_code}, B exit {results[1].exit_code}")
    for result in results:
        sandbox.record(result)
    final, _ = book.classify_path(sandbox.output_path)
    return ConcurrentOutcome(
        overlap=overlap,
        runs=results,
        seen=poller.verdicts(book),
        reads=poller.reads,
        final=final,
        timeline=timeline,
    )


def _frozen_writer(
    sandbox: Sandbox,
    url: str,
    trace_dir: Path,
    move_upstream: Callable[[], object],
    extra_env: dict[str, str] | None,
    timeout_s: float,
    note: Callable[[str], None],
) -> list[RunResult]:
    """Run A until it starts writing, freeze it, run B beside it, then let A go on."""
    out_dir = sandbox.output_path.parent
    files_before = _listing(out_dir)
    slow = strace.delay_each(strace.WRITE_SET, WRITE_DELAY_MS, until=DELAYED_WRITES)
    run_a = sandbox.start(
        url,
        label="run A (slowed, then frozen while it writes)",
        extra_env=extra_env,
        wrapper=strace.wrapper(trace_dir / "run-a.trace", inject=[slow]),
    )
    note("run A started under strace, its writes slowed")
    tracer = run_a.pid  # found now (inside the sandbox), so that the freeze below is at once
    began = _wait_until(
        lambda: _listing(out_dir) != files_before or run_a.process.poll() is not None,
        timeout_s,
        interval_s=0.001,
    )
    frozen = began and run_a.process.poll() is None
    if frozen:
        os.kill(tracer, signal.SIGSTOP)  # the tracer: its tracee blocks at its next call
        note("run A began writing: frozen")
    else:
        note("run A ended before it was seen writing")
    try:
        move_upstream()
        note("the upstream moved to the next version")
        run_b = sandbox.start(url, label="run B (started beside run A)", extra_env=extra_env)
        note("run B started")
        if frozen:
            how = _finished_or_waiting(run_b, timeout_s)
            note(f"run B {how}: run A resumed")
    finally:
        if frozen:
            os.kill(tracer, signal.SIGCONT)
    return _wait_all([run_a, run_b])


def _listing(directory: Path) -> dict[str, tuple[int, int, int]]:
    """Name -> (inode, size, mtime) of every entry: any change means someone is writing."""
    found: dict[str, tuple[int, int, int]] = {}
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        try:
            stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        found[entry.name] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return found


def _group_activity(pgid: int) -> tuple[int, bool]:
    """CPU ticks used by a process group, and whether any of it is running or in I/O."""
    ticks, busy = 0, False
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(os.path.join(entry.path, "stat"), encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the command: state ppid pgrp session ... utime(12th) stime(13th)
        if int(fields[2]) != pgid:
            continue
        ticks += int(fields[11]) + int(fields[12])
        busy = busy or fields[0] in ("R", "D")
    return ticks, busy


def _finished_or_waiting(running: RunningPipeline, timeout_s: float) -> str:
    """Wait until the run exits, or sleeps without using any CPU for :data:`IDLE_S`."""
    deadline = time.monotonic() + timeout_s
    last = (-1, True)
    idle_since = time.monotonic()
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            return "finished"
        now = _group_activity(running.pid)
        if now[1] or now[0] != last[0]:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= IDLE_S:
            return "is waiting (asleep, using no CPU)"
        last = now
        time.sleep(0.05)
    return "was still running at the time bound"


def _asked(origin: Origin, before: int, running: RunningPipeline) -> bool:
    """Run A's request has arrived (or run A is already gone)."""
    return len(origin.exchanges) > before or running.process.poll() is not None


def _wait_all(running: list[RunningPipeline]) -> list[RunResult]:
    """Every run's result; a run that could not be waited for (the harness's own failure,
    such as an init that never started) raises here, once all of them have ended, instead
    of vanishing in its thread and leaving the judge fewer runs than were started."""
    results: list[RunResult | None] = [None] * len(running)
    raised: list[BaseException] = []

    def wait(index: int) -> None:
        try:
            results[index] = running[index].wait()
        except BaseException as exc:  # re-raised below, in the caller's thread
            raised.append(exc)

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(len(running))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if raised:
        raise raised[0]
    return [r for r in results if r is not None]


# -- kill and restart, with a reader ---------------------------------------------------------
@dataclass
class KillRound:
    """One version: the run killed at a random moment, and the restart that must publish it."""

    version: str
    delay_s: float
    killed: RunResult
    restarted: RunResult
    after_kill: str
    after_restart: str

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "killed_after_s": self.delay_s,
            "killed_run_exit": self.killed.exit_code,
            "output_after_kill": self.after_kill,
            "restart_exit": self.restarted.exit_code,
            "output_after_restart": self.after_restart,
        }


@dataclass
class KillRestartOutcome:
    rounds: list[KillRound]
    seen: list[tuple[str, str | None]]
    reads: int

    def to_evidence(self) -> dict[str, Any]:
        return {
            "rounds": [r.to_json() for r in self.rounds],
            "reader": {
                "reads": self.reads,
                "distinct_contents": [f"{label}:{(d or '')[:16]}" for label, d in self.seen],
            },
        }

    def restart_findings(self, profile: Profile) -> list[Finding]:
        success = profile.exit_codes.success_codes()
        bad = [
            r.to_json()
            for r in self.rounds
            if r.restarted.exit_code not in success or r.after_restart != r.version
        ]
        return [
            fact(
                "crash.recovery-converges",
                not bad,
                f"after {len(bad)} of {len(self.rounds)} kills the restarted run did not publish "
                "the version the upstream served",
                expected="a success code and the served version at the output",
                observed=bad[:6],
            )
        ]


def kill_and_restart(
    *,
    sandbox: Sandbox,
    origin: Origin,
    serve_next: Callable[[], tuple[str, Resource]],
    book: VersionBook,
    rounds: int,
    rng: random.Random,
    clean_duration_s: float,
    extra_env: dict[str, str] | None = None,
) -> KillRestartOutcome:
    """For each round: serve a new version, start a run, SIGKILL it at a random moment, rerun."""
    done: list[KillRound] = []
    with OutputPoller(sandbox.output_path) as poller:
        for number in range(1, rounds + 1):
            label, resource = serve_next()
            book.add(label, resource)
            delay = round(rng.uniform(0.3, 1.1) * clean_duration_s, 4)
            running = sandbox.start(
                origin.url, label=f"round {number}: killed after {delay:.3f} s", extra_env=extra_env
            )
            time.sleep(delay)
            running.kill(signal.SIGKILL)
            killed = sandbox.record(running.wait())
            after_kill, _ = book.classify_path(sandbox.output_path)
            restarted = sandbox.run(
                origin.url, label=f"round {number}: restarted", extra_env=extra_env
            )
            after, _ = book.classify_path(sandbox.output_path)
            done.append(KillRound(label, delay, killed, restarted, after_kill, after))
    return KillRestartOutcome(done, poller.verdicts(book), poller.reads)
