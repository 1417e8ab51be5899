"""Hold a pipeline run at chosen system calls, one after another, while the harness copies its
working directory: every crash point of a campaign from one run instead of one killed run each.

This file runs as a standalone script, as the run's wrapper inside the sandbox (where strace
would be)::

    python -I -S hold_tracer.py --fds HELD_W,GO_R --sites write:3,openat:17 -- ARGV...

It starts ``ARGV`` under ``ptrace`` with a seccomp filter that stops the run only at the calls
strace's recording traced (:data:`SYSCALLS`, the same set in the same names), and counts them
per tracee (thread) exactly as strace's ``when=`` does. When a tracee enters the call a site
names (``write:3``: its third ``write``), before the kernel executes it, the tracer stops every
other tracee of the run, writes one line to the harness on descriptor ``HELD_W``::

    HELD <site index> <tid> <call name> <what it acts on>

and waits for one byte on ``GO_R`` before it lets the run go on. What the working
directory holds at that moment is exactly what a ``SIGKILL`` there would leave: the held call
and everything after it never happened, every earlier call did, and no thread moves while the
harness looks. A site is held once, by the first tracee that reaches it.

The harness is not trusted to answer: after :data:`RELEASE_S` without a byte the run goes on by
itself (and the run's own time bound still applies). The tracer exits with the pipeline's
status (re-raising its signal); it writes ``ERROR <reason>`` to the harness and exits 125 when it
cannot trace at all (no ``ptrace``, no seccomp), so that the harness falls back to killed runs.

Linux on x86_64 only (the system call numbers are that architecture's); the harness uses it
nowhere else. Standard library only, no site-packages, like :mod:`kfm_conformance.run_init`.

The two descriptors are the harness's pipe ends, inherited through the sandbox; the tracer
marks them close-on-exec and makes itself non-dumpable, so that the pipeline can neither
inherit them nor open them through ``/proc``: a pipeline cannot forge or answer a hold.
"""

from __future__ import annotations

import ctypes
import os
import select
import sys
import time

#: x86_64 numbers of the calls strace records (``kfm_conformance.faults.strace.TRACED_SYSCALLS``).
SYSCALLS: dict[str, int] = {
    "openat": 257,
    "open": 2,
    "creat": 85,
    "write": 1,
    "pwrite64": 18,
    "writev": 20,
    "pwritev": 296,
    "pwritev2": 328,
    "sendfile": 40,
    "copy_file_range": 326,
    "fsync": 74,
    "fdatasync": 75,
    "rename": 82,
    "renameat": 264,
    "renameat2": 316,
    "unlink": 87,
    "unlinkat": 263,
    "link": 86,
    "linkat": 265,
    "truncate": 76,
    "ftruncate": 77,
    "clone": 56,
    "clone3": 435,
    "fork": 57,
    "vfork": 58,
}
NAMES = list(SYSCALLS)

#: How long a held run waits for the harness before it goes on by itself (seconds).
RELEASE_S = 60.0
#: How long the tracer waits for the other tracees to stop before a hold (seconds): a thread
#: that does not stop in time is blocked in the kernel (a vfork parent, an uninterruptible
#: wait) and cannot touch a file until it returns, when it stops.
SETTLE_S = 0.5

# ptrace(2)
PTRACE_CONT = 7
PTRACE_GETREGS = 12
PTRACE_GETEVENTMSG = 0x4201
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208
OPTIONS = (
    0x02  # TRACEFORK
    | 0x04  # TRACEVFORK
    | 0x08  # TRACECLONE
    | 0x10  # TRACEEXEC
    | 0x80  # TRACESECCOMP
    | 0x100000  # EXITKILL
)
EVENT_FORK, EVENT_VFORK, EVENT_CLONE, EVENT_EXEC, EVENT_SECCOMP, EVENT_STOP = 1, 2, 3, 4, 7, 128
WALL = 0x40000000
SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU = 19, 20, 21, 22

# seccomp(2) and its BPF
PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_ALLOW = 0x7FFF0000
AUDIT_ARCH_X86_64 = 0xC000003E
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06

#: user_regs_struct on x86_64: the argument registers' positions among its 27 words.
REG_RDI, REG_RSI, REG_RDX, REG_R10 = 14, 13, 12, 7
AT_FDCWD = -100

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
LIBC.ptrace.restype = ctypes.c_long
LIBC.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
LIBC.prctl.argtypes += [ctypes.c_ulong, ctypes.c_ulong]
LIBC.prctl.restype = ctypes.c_int


class SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint),
    ]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def filter_program(numbers: list[int]) -> list[tuple[int, int, int, int]]:
    """The seccomp program: on x86_64, stop the ``i``-th call of ``numbers`` for the tracer
    with ``i`` as its data; let every other call (and every other architecture's) through."""
    count = len(numbers)
    program = [
        (BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (BPF_JEQ_K, 0, count + 1, AUDIT_ARCH_X86_64),
        (BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    ]
    program += [(BPF_JEQ_K, count, 0, number) for number in numbers]
    program.append((BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    program += [(BPF_RET_K, 0, 0, SECCOMP_RET_TRACE | index) for index in range(count)]
    return program


def parse_sites(spec: str) -> dict[tuple[str, int], int]:
    """``write:3,openat:17`` -> {(name, ordinal): site index}."""
    sites: dict[tuple[str, int], int] = {}
    for index, item in enumerate(s for s in spec.split(",") if s):
        name, _, ordinal = item.partition(":")
        if name not in SYSCALLS or not ordinal.isdigit():
            raise ValueError(f"bad site {item!r}")
        sites[(name, int(ordinal))] = index
    return sites


def _ptrace(request: int, pid: int, addr: int = 0, data: object = 0) -> int:
    result = int(LIBC.ptrace(request, pid, addr, data))
    if result == -1:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def _event_message(tid: int) -> int:
    value = ctypes.c_ulong(0)
    _ptrace(PTRACE_GETEVENTMSG, tid, 0, ctypes.addressof(value))
    return value.value


def _registers(tid: int) -> list[int]:
    regs = (ctypes.c_ulonglong * 27)()
    _ptrace(PTRACE_GETREGS, tid, 0, ctypes.addressof(regs))
    return list(regs)


def _string_at(tid: int, address: int) -> str:
    try:
        with open(f"/proc/{tid}/mem", "rb", buffering=0) as memory:
            memory.seek(address)
            data = memory.read(4096)
    except (OSError, ValueError, OverflowError):
        return "?"
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")


def _fd_path(tid: int, fd: int) -> str:
    where = f"/proc/{tid}/cwd" if fd == AT_FDCWD else f"/proc/{tid}/fd/{fd}"
    try:
        return os.readlink(where)
    except OSError:
        return "?"


def _signed(value: int) -> int:
    """A descriptor argument: a C ``int``, whatever the register's upper half holds."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _join(base: str, path: str) -> str:
    if not path:  # AT_EMPTY_PATH: the descriptor's own file
        return base
    return path if path.startswith("/") else f"{base.rstrip('/')}/{path}"


def describe_call(tid: int, name: str) -> str:
    """What the held call acts on: absolute paths, tab-separated (``?`` when unreadable)."""
    try:
        regs = _registers(tid)
    except OSError:
        return "?"
    rdi, rsi, rdx, r10 = regs[REG_RDI], regs[REG_RSI], regs[REG_RDX], regs[REG_R10]
    if name in ("open", "creat", "truncate", "unlink"):
        paths = [_join(_fd_path(tid, AT_FDCWD), _string_at(tid, rdi))]
    elif name in ("rename", "link"):
        cwd = _fd_path(tid, AT_FDCWD)
        paths = [_join(cwd, _string_at(tid, rdi)), _join(cwd, _string_at(tid, rsi))]
    elif name in ("openat", "unlinkat"):
        paths = [_join(_fd_path(tid, _signed(rdi)), _string_at(tid, rsi))]
    elif name in ("renameat", "renameat2", "linkat"):
        paths = [
            _join(_fd_path(tid, _signed(rdi)), _string_at(tid, rsi)),
            _join(_fd_path(tid, _signed(rdx)), _string_at(tid, r10)),
        ]
    elif name == "copy_file_range":
        paths = [_fd_path(tid, _signed(rdx))]
    elif name in ("clone", "clone3", "fork", "vfork"):
        paths = []
    else:  # write, pwrite64, writev, pwritev, pwritev2, sendfile, fsync, fdatasync, ftruncate
        paths = [_fd_path(tid, _signed(rdi))]
    return "\t".join(p.replace("\t", " ").replace("\n", " ") for p in paths)


def _install_filter(numbers: list[int]) -> None:
    program = filter_program(numbers)
    array = (SockFilter * len(program))(*[SockFilter(*item) for item in program])
    fprog = SockFprog(len(program), ctypes.cast(array, ctypes.POINTER(SockFilter)))
    if LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if LIBC.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def _resolve(command: str) -> str:
    if "/" in command:
        return command
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(folder or ".", command)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return command


class Tracer:
    """The tracees of one run, their call counts, and the holds."""

    def __init__(self, sites: dict[tuple[str, int], int], held_fd: int, go_fd: int) -> None:
        self.sites = dict(sites)
        self.held_fd = held_fd
        self.go_fd = go_fd
        self.counts: dict[int, list[int]] = {}
        #: Tracees that are running (not at a stop the tracer has yet to resume).
        self.running: set[int] = set()
        #: Stops collected while settling a hold, handled once the hold is over.
        self.deferred: list[tuple[int, int]] = []
        self.main_pid = 0
        self.main_status: int | None = None
        self.exec_seen = False

    # -- events ------------------------------------------------------------------------------
    def next_event(self) -> tuple[int, int] | None:
        if self.deferred:
            return self.deferred.pop(0)
        try:
            return os.waitpid(-1, WALL)
        except ChildProcessError:
            return None

    def handle(self, tid: int, status: int) -> None:
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            self.running.discard(tid)
            self.counts.pop(tid, None)
            if tid == self.main_pid:
                self.main_status = status
            return
        if not os.WIFSTOPPED(status):
            return
        self.running.discard(tid)
        sig = os.WSTOPSIG(status)
        event = status >> 16
        if event == EVENT_SECCOMP:
            self._on_call(tid)
            self._resume(tid)
        elif event in (EVENT_FORK, EVENT_VFORK, EVENT_CLONE):
            child = _event_message(tid)
            self.counts.setdefault(child, [0] * len(NAMES))
            self._resume(tid)
        elif event == EVENT_EXEC:
            former = _event_message(tid)
            if former != tid:  # a thread's exec: it takes the leader's ID, the old one is gone
                self.counts.pop(former, None)
                self.running.discard(former)
            if tid == self.main_pid:
                self.exec_seen = True
            self._resume(tid)
        elif event == EVENT_STOP:
            if sig in (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU):  # a group-stop: stay stopped
                self._listen(tid)
            else:  # a new tracee's first stop, or one of the tracer's interrupts
                self._resume(tid)
        else:  # a signal on its way to the tracee: deliver it
            self._resume(tid, sig)

    def _resume(self, tid: int, sig: int = 0) -> None:
        try:
            _ptrace(PTRACE_CONT, tid, 0, sig)
            self.running.add(tid)
        except OSError:  # it died meanwhile (SIGKILL): its exit is still to come
            pass

    def _listen(self, tid: int) -> None:
        """Leave a group-stopped tracee stopped (not in :attr:`running`: a hold need not stop
        it) until a signal resumes it."""
        try:
            _ptrace(PTRACE_LISTEN, tid, 0, 0)
        except OSError:  # it died meanwhile: its exit is still to come
            pass

    # -- calls and holds ---------------------------------------------------------------------
    def _on_call(self, tid: int) -> None:
        try:
            index = _event_message(tid)
        except OSError:
            return
        if index >= len(NAMES) or not self.exec_seen:
            return
        counts = self.counts.setdefault(tid, [0] * len(NAMES))
        counts[index] += 1
        name = NAMES[index]
        site = self.sites.pop((name, counts[index]), None)
        if site is not None:
            self._hold(tid, site, name)

    def _hold(self, tid: int, site: int, name: str) -> None:
        others = [t for t in self.running if t != tid]
        for other in others:
            try:
                _ptrace(PTRACE_INTERRUPT, other, 0, 0)
            except OSError:
                self.running.discard(other)
        deadline = time.monotonic() + SETTLE_S
        while any(t in self.running for t in others) and time.monotonic() < deadline:
            try:
                pid, status = os.waitpid(-1, WALL | os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.0002)
                continue
            self.running.discard(pid)
            self.deferred.append((pid, status))
        what = describe_call(tid, name)
        _write(self.held_fd, f"HELD {site} {tid} {name} {what}\n")
        ready, _, _ = select.select([self.go_fd], [], [], RELEASE_S)
        if ready:
            os.read(self.go_fd, 1)

    # -- the run -------------------------------------------------------------------------------
    def run(self, argv: list[str]) -> int:
        numbers = [SYSCALLS[name] for name in NAMES]
        executable = _resolve(argv[0])
        ready_read, ready_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(ready_write)
            os.read(ready_read, 1)
            try:
                _install_filter(numbers)
                os.execv(executable, argv)
            except OSError as exc:
                os.write(2, f"hold_tracer: cannot run {argv[0]}: {exc}\n".encode())
                os._exit(127)
        os.close(ready_read)
        self.main_pid = pid
        self.counts[pid] = [0] * len(NAMES)
        try:
            _ptrace(PTRACE_SEIZE, pid, 0, OPTIONS)
        except OSError as exc:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            _write(self.held_fd, f"ERROR ptrace: {exc}\n")
            return 125
        self.running.add(pid)
        # Non-dumpable from here on: the pipeline (its child, same user) cannot open this
        # process's descriptors through /proc and write to the harness's channel. The child was
        # forked dumpable, so the seize above was allowed; its execve resets its own flag.
        LIBC.prctl(PR_SET_DUMPABLE, 0, None, 0, 0)
        os.write(ready_write, b"x")
        os.close(ready_write)
        while True:
            event = self.next_event()
            if event is None:
                break
            self.handle(*event)
        status = self.main_status
        if status is None:
            return 125
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.WEXITSTATUS(status)


def _write(fd: int, line: str) -> None:
    try:
        os.write(fd, line.encode("utf-8", "replace"))
    except OSError:
        pass


def main(argv: list[str]) -> int:
    try:
        split = argv.index("--")
    except ValueError:
        split = len(argv)
    options, command = argv[:split], argv[split + 1 :]
    fds = sites_spec = None
    for index, option in enumerate(options[:-1]):
        if option == "--fds":
            fds = options[index + 1]
        if option == "--sites":
            sites_spec = options[index + 1]
    if fds is None or sites_spec is None or not command:
        os.write(2, b"usage: hold_tracer.py --fds HELD_W,GO_R --sites SITES -- ARGV...\n")
        return 2
    held_fd, go_fd = (int(fd) for fd in fds.split(","))
    for fd in (held_fd, go_fd):  # the pipeline must not reach the harness's channel
        os.set_inheritable(fd, False)
    try:
        sites = parse_sites(sites_spec)
    except ValueError as exc:
        _write(held_fd, f"ERROR {exc}\n")
        return 125
    code = Tracer(sites, held_fd, go_fd).run(command)
    if 128 < code < 128 + 65:
        # End as the pipeline did, so that its init reports the signal, not a number.
        import _signal

        _signal.signal(code - 128, _signal.SIG_DFL)
        os.kill(os.getpid(), code - 128)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
