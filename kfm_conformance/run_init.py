"""The first process of every pipeline run: it starts the pipeline, waits for it, and ends the run.

This file runs as a standalone script (``python -I -S run_init.py ...``): standard library
only, no site-packages, so nothing planted there runs here. Inside the sandbox it is the
pipeline's parent; without a sandbox it makes itself a child subreaper so that orphans the
pipeline leaves behind (``setsid``, double forks) come back to it.

It enforces the run's time bound, and when the pipeline's main process has exited (or was
killed at its bound) it looks for every other process of the run that is still alive, notes
its command line, kills it, and reports one JSON line on the report descriptor::

    {"exit": 0, "signal": null, "timed_out": false, "stragglers": ["python helper.py"]}

Before it starts the pipeline it writes ``{"init": "started"}`` there, so that the harness can
tell a run whose init never started (its own failure) from a pipeline that failed. The report
descriptor is the harness's evidence, so the pipeline must not reach it: the init makes itself
non-dumpable (its ``/proc/PID/fd`` is then closed to processes without ``CAP_SYS_PTRACE``,
which a contained run never holds; an unisolated pipeline run as root does), and the harness
trusts the final line only when it agrees with the init's own exit status
(:func:`kfm_conformance.sandbox.init_report`): a pipeline that writes a line there and then
kills its init gains nothing. Contained, the init is PID 1 of the run's PID namespace
(bubblewrap's ``--as-pid-1``), which no process of the run can signal.

Processes that end by themselves within :data:`GRACE_S` of the main process (an interpreter's
helper shutting down) are not stragglers. Usage::

    run_init.py REPORT_FD TIMEOUT_S -- ARGV...
"""

from __future__ import annotations

# The C module itself: ``signal`` would import enum and functools (~7 ms of every run).
import _signal as signal
import ctypes
import os
import sys
import time

GRACE_S = 0.2
PR_SET_CHILD_SUBREAPER = 36
PR_SET_DUMPABLE = 4
CMDLINE_CHARS = 300


def json_line(value: object) -> bytes:
    """``value`` as one line of JSON: None, booleans, numbers, strings, lists and dicts of them.

    Written here rather than imported: ``json`` imports ``re`` and ``enum``, several
    milliseconds of every run."""
    return (_json(value) + "\n").encode("utf-8")


def _json(value: object) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(_json_char(c) for c in value) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_json(str(k))}: {_json(v)}" for k, v in value.items()) + "}"
    return _json(str(value))


def _json_char(char: str) -> str:
    if char == '"' or char == "\\":
        return "\\" + char
    if char < " " or "\ud800" <= char <= "\udfff":
        return f"\\u{ord(char):04x}"
    return char


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces or parentheses itself.
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None


def _state_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return "X"
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[0].decode() if fields else "X"


def descendants(root: int) -> list[int]:
    """Every live (not zombie) process whose chain of parents leads to ``root``."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            parent = _parent_of(int(name))
            if parent is not None:
                parents[int(name)] = parent
    found = []
    for pid in parents:
        seen = 0
        current = pid
        while current in parents and seen < 4096:
            current = parents[current]
            seen += 1
            if current == root:
                if _state_of(pid) not in ("Z", "X"):
                    found.append(pid)
                break
    return sorted(found)


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read(CMDLINE_CHARS * 4)
    except OSError:
        return f"pid {pid}"
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", errors="replace")
    return text[:CMDLINE_CHARS] or f"pid {pid}"


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def end_stragglers(me: int) -> list[str]:
    """Give the run's other processes :data:`GRACE_S` to end, then note and kill the rest."""
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline:
        _reap()
        if not descendants(me):
            return []
        time.sleep(0.01)
    noted: dict[int, str] = {}
    for _ in range(50):  # a process may fork while it is being killed
        alive = descendants(me)
        if not alive:
            break
        for pid in alive:
            noted.setdefault(pid, command_line(pid))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.005)
        _reap()
    return [noted[pid] for pid in sorted(noted)]


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: run_init.py REPORT_FD TIMEOUT_S -- ARGV...", file=sys.stderr)
        return 2
    report_fd, timeout_s, command = int(argv[0]), float(argv[1]), argv[3:]
    os.set_inheritable(report_fd, False)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # execve makes the pipeline dumpable again
    except (OSError, AttributeError):
        pass
    os.write(report_fd, b'{"init": "started"}\n')
    me = os.getpid()
    # SIGCHLD stays blocked: the loop below waits for it with sigtimedwait.
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
    started = time.monotonic()
    try:
        child = os.fork()
    except OSError as exc:
        os.write(report_fd, json_line({"error": f"fork: {exc}"}))
        return 127
    if child == 0:
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])
            os.setpgid(0, 0)
            os.execvp(command[0], command)
        except OSError as exc:
            os.write(2, f"kfm-conformance: cannot start {command[0]}: {exc.strerror}\n".encode())
            os._exit(127)
    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        signal.signal(getattr(signal, name), lambda signum, frame: os.kill(child, signal.SIGKILL))
    timed_out = False
    status = 0
    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid == child:
            break
        remaining = timeout_s - (time.monotonic() - started)
        if remaining <= 0:
            timed_out = True
            try:
                os.killpg(child, signal.SIGKILL)
            except ProcessLookupError:
                os.kill(child, signal.SIGKILL)
            _, status = os.waitpid(child, 0)
            break
        signal.sigtimedwait([signal.SIGCHLD], min(remaining, 1.0))
    exited_after = time.monotonic() - started
    stragglers = end_stragglers(me)
    code = os.waitstatus_to_exitcode(status)
    report = {
        "exit": code if code >= 0 else None,
        "signal": -code if code < 0 else None,
        "timed_out": timed_out,
        "stragglers": stragglers,
        "main_exited_after_s": round(exited_after, 4),
    }
    os.write(report_fd, json_line(report))
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
