"""One run held at each crash point in turn: the harness's side of :mod:`.hold_tracer`.

A crash campaign plans its points from a strace recording (:func:`.crash.select_crash_points`):
each is "the ``ordinal``-th ``syscall`` of a tracee", strace's ``when=``. Killing a fresh run at
each point costs a whole run start per point. :func:`run_held` instead makes one run under
:mod:`.hold_tracer`, which stops the run on entry to each of those calls, with every thread
stopped; the harness copies the working directory there (what a ``SIGKILL`` at that call would
leave: the call never ran, every earlier one did) and lets the run go on.

The channel is a pair of pipes passed to the tracer through the sandbox. The tracer keeps
them from the pipeline (close-on-exec, and a non-dumpable tracer whose descriptors ``/proc``
does not show to it), so a pipeline cannot report a hold that did not happen.

A point the held run never reached (the run took another path) and every point of a run the
tracer could not trace are left to the campaign, which kills a fresh run there as before.
"""

from __future__ import annotations

import contextlib
import os
import platform
import select
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kfm_conformance.sandbox import RunResult, Sandbox

HOLD_TRACER = Path(__file__).resolve().parent / "hold_tracer.py"


def supported() -> bool:
    """Whether this machine can hold runs: Linux on x86_64 (the tracer's system call table)."""
    return sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")


def wrapper(held_write: int, go_read: int, sites: Sequence[tuple[str, int]]) -> list[str]:
    """The argv prefix that runs a pipeline under the hold tracer."""
    spec = ",".join(f"{name}:{ordinal}" for name, ordinal in sites)
    return [
        sys.executable,
        "-I",
        "-S",
        str(HOLD_TRACER),
        "--fds",
        f"{held_write},{go_read}",
        "--sites",
        spec,
        "--",
    ]


@dataclass(frozen=True)
class Hold:
    """One site the run was held at: which, by which tracee, and what the call acts on."""

    site: int
    tid: int
    syscall: str
    paths: tuple[str, ...]


@dataclass
class HeldRun:
    """The held run's own result, the holds in the order they happened, and the tracer's
    complaint when it could not trace."""

    result: RunResult
    holds: list[Hold] = field(default_factory=list)
    error: str | None = None


def parse_line(line: str) -> Hold | str | None:
    """A tracer line: a :class:`Hold`, an error text, or None for anything else."""
    if line.startswith("ERROR "):
        return line[6:].strip() or "unknown"
    parts = line.split(" ", 4)
    if len(parts) < 4 or parts[0] != "HELD" or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    paths = tuple(p for p in (parts[4].split("\t") if len(parts) > 4 else []) if p)
    return Hold(int(parts[1]), int(parts[2]), parts[3], paths)


def run_held(
    sandbox: Sandbox,
    url: str,
    sites: Sequence[tuple[str, int]],
    on_hold: Callable[[Hold], None],
    *,
    label: str,
    extra_env: dict[str, str] | None = None,
) -> HeldRun:
    """Run the pipeline once, held at each of ``sites``; ``on_hold`` sees the working
    directory while the run is held there (it is called once per hold, in order)."""
    held_read, held_write = os.pipe()
    go_read, go_write = os.pipe()
    holds: list[Hold] = []
    error: str | None = None
    try:
        running = sandbox.start(
            url,
            label=label,
            extra_env=extra_env,
            wrapper=wrapper(held_write, go_read, sites),
            pass_fds=(held_write, go_read),
        )
    finally:
        os.close(held_write)
        os.close(go_read)
    try:
        pending = b""
        while True:
            ready, _, _ = select.select([held_read], [], [], 0.5)
            if not ready:
                if running.process.poll() is not None:
                    break
                continue
            data = os.read(held_read, 65536)
            if not data:  # every holder of the write end is gone: the run is over
                break
            pending += data
            while b"\n" in pending:
                raw, pending = pending.split(b"\n", 1)
                parsed = parse_line(raw.decode("utf-8", "replace"))
                if isinstance(parsed, str):
                    error = parsed
                elif parsed is not None:
                    try:
                        on_hold(parsed)
                        holds.append(parsed)
                    finally:
                        with contextlib.suppress(OSError):
                            os.write(go_write, b"g")
    finally:
        os.close(held_read)
        os.close(go_write)
        result = running.wait()
    return HeldRun(result, holds, error)
