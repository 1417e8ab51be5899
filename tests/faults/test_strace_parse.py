"""strace output becomes typed system-call records: paths resolved from ``-y`` annotations and
relative names, per-thread ordinals as strace's ``when=`` counts them, threads told from
processes, kills and injections recognised. Synthetic traces in strace 6's exact format, plus a
live trace where strace works (marker ``faults``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kfm_conformance.faults import strace
from kfm_conformance.faults.crash import select_crash_points
from kfm_conformance.faults.strace import decode_string, parse_trace, split_args
from kfm_conformance.verdict import NotApplicable, SkipKind

WD = "/sandbox/wd"

#: A small correct publication, as ``strace -f -y -o`` prints it (paths are synthetic).
PUBLICATION = f"""\
100 openat(AT_FDCWD<{WD}>, "/usr/lib/python3.11/json/__init__.py", O_RDONLY|O_CLOEXEC) = 3</usr/lib/python3.11/json/__init__.py>
100 openat(AT_FDCWD<{WD}>, ".state/state.json", O_RDONLY|O_CLOEXEC) = -1 ENOENT (No such file or directory)
100 openat(AT_FDCWD<{WD}>, ".state/lock", O_WRONLY|O_CREAT|O_APPEND|O_CLOEXEC, 0666) = 3<{WD}/.state/lock>
100 write(2<pipe:[4242]>, "fetching\\n", 9) = 9
100 clone3({{flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM, child_tid=0x7f}} => {{parent_tid=[101]}}, 88) = 101
101 openat(AT_FDCWD<{WD}>, "/usr/lib/libzstd.so", O_RDONLY|O_CLOEXEC) = 5</usr/lib/libzstd.so>
100 openat(AT_FDCWD<{WD}>, "{WD}/out/.data.parquet.ab12cd34.tmp", O_RDWR|O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC, 0600) = 4<{WD}/out/.data.parquet.ab12cd34.tmp>
100 write(4<{WD}/out/.data.parquet.ab12cd34.tmp>, "PAR1\\25\\4\\25\\200"..., 4096 <unfinished ...>
101 write(5<socket:[77]>, "x", 1) = 1
100 <... write resumed>) = 4096
100 write(4<{WD}/out/.data.parquet.ab12cd34.tmp>, "\\0\\0"..., 4096) = 4096
100 write(4<{WD}/out/.data.parquet.ab12cd34.tmp>, "PAR1", 4) = 4
100 fsync(4<{WD}/out/.data.parquet.ab12cd34.tmp>) = 0
100 rename("{WD}/out/.data.parquet.ab12cd34.tmp", "out/data.parquet") = 0
100 openat(AT_FDCWD<{WD}>, "out", O_RDONLY|O_CLOEXEC) = 4<{WD}/out>
100 fsync(4<{WD}/out>) = 0
100 openat(AT_FDCWD<{WD}>, "{WD}/.state/.state.json.zz99yy88.tmp", O_RDWR|O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC, 0600) = 4<{WD}/.state/.state.json.zz99yy88.tmp>
100 write(4<{WD}/.state/.state.json.zz99yy88.tmp>, "{{\\"etag\\": null}}", 14) = 14
100 fsync(4<{WD}/.state/.state.json.zz99yy88.tmp>) = 0
100 renameat2(AT_FDCWD<{WD}>, ".state/.state.json.zz99yy88.tmp", AT_FDCWD<{WD}>, ".state/state.json", RENAME_NOREPLACE) = 0
100 openat(AT_FDCWD<{WD}>, ".state", O_RDONLY|O_CLOEXEC) = 4<{WD}/.state>
100 fsync(4<{WD}/.state>) = 0
100 unlinkat(AT_FDCWD<{WD}>, "out/.scratch", 0) = -1 ENOENT (No such file or directory)
101 +++ exited with 0 +++
100 +++ exited with 0 +++
"""  # noqa: E501


def test_paths_are_resolved_and_ordinals_are_per_thread() -> None:
    trace = parse_trace(PUBLICATION, WD)
    lock = next(c for c in trace.calls if c.path == f"{WD}/.state/lock")
    assert lock.kind == "create" and lock.ordinal == 3 and "O_CREAT" in lock.flags
    missing = trace.calls[1]
    assert missing.errno == "ENOENT" and missing.path == f"{WD}/.state/state.json"
    worker_open = next(c for c in trace.calls if c.tid == 101 and c.name == "openat")
    assert worker_open.ordinal == 1  # the worker's own first openat, not the process's fifth
    writes = [c for c in trace.calls if c.name == "write" and c.tid == 100]
    assert [w.ordinal for w in writes] == [1, 2, 3, 4, 5]
    rename = next(c for c in trace.calls if c.name == "rename")
    assert rename.paths == (f"{WD}/out/.data.parquet.ab12cd34.tmp", f"{WD}/out/data.parquet")
    renameat2 = next(c for c in trace.calls if c.name == "renameat2")
    assert renameat2.target == f"{WD}/.state/state.json"
    assert "RENAME_NOREPLACE" in renameat2.flags
    assert trace.group_of(101) == trace.group_of(100) == 100
    assert trace.endings == {101: "exited with 0", 100: "exited with 0"}


def test_unfinished_and_resumed_halves_make_one_call_in_order_of_entry() -> None:
    trace = parse_trace(PUBLICATION, WD)
    first_data = [c for c in trace.calls if c.name == "write" and c.path and "ab12" in c.path]
    assert first_data[0].result == "4096" and first_data[0].finished
    socket_write = next(c for c in trace.calls if c.tid == 101 and c.name == "write")
    assert socket_write.seq > first_data[0].seq  # entered after the unfinished write
    assert socket_write.paths == ()  # a socket is no file


def test_steps_within_the_working_directory_ignore_everything_else() -> None:
    steps = parse_trace(PUBLICATION, WD).steps_within(Path(WD))
    shown = [s.describe(Path(WD)) for s in steps]
    assert shown == [
        "openat(.state/lock)",
        "openat(out/.data.parquet.ab12cd34.tmp)",
        "write(out/.data.parquet.ab12cd34.tmp)",
        "write(out/.data.parquet.ab12cd34.tmp)",
        "write(out/.data.parquet.ab12cd34.tmp)",
        "fsync(out/.data.parquet.ab12cd34.tmp)",
        "rename(out/.data.parquet.ab12cd34.tmp -> out/data.parquet)",
        "fsync(out)",
        "openat(.state/.state.json.zz99yy88.tmp)",
        "write(.state/.state.json.zz99yy88.tmp)",
        "fsync(.state/.state.json.zz99yy88.tmp)",
        "renameat2(.state/.state.json.zz99yy88.tmp -> .state/state.json)",
        "fsync(.state)",
        "unlinkat(out/.scratch)",
    ]


def test_crash_points_cover_every_rename_sync_create_unlink_and_first_middle_last_write() -> None:
    points, unreachable = select_crash_points(parse_trace(PUBLICATION, WD), Path(WD))
    assert not unreachable
    whys = [p.why for p in points]
    assert whys == [
        "create",
        "create",
        "first write of 3",
        "middle write of 3",
        "last write of 3",
        "fsync",
        "rename",
        "fsync of a directory",
        "create",
        "only write",
        "fsync",
        "rename",
        "fsync of a directory",
        "unlink",
    ]
    assert all(p.site.exact for p in points)
    assert points[2].site == strace_site("write", 2)  # the tracee's second write (after stderr)


def strace_site(name: str, ordinal: int) -> object:
    from kfm_conformance.faults.crash import KillSite

    return KillSite(name, ordinal, True)


def test_a_step_another_thread_would_preempt_is_aimed_at_an_equivalent_call() -> None:
    text = f"""\
200 openat(AT_FDCWD<{WD}>, "/lib/a.so", O_RDONLY) = 3</lib/a.so>
200 openat(AT_FDCWD<{WD}>, "/lib/b.so", O_RDONLY) = 3</lib/b.so>
200 clone3({{flags=CLONE_VM|CLONE_THREAD}}, 88) = 201
200 write(3<{WD}/out/body.tmp>, "x", 1) = 1
200 openat(AT_FDCWD<{WD}>, "/lib/c.so", O_RDONLY) = 3</lib/c.so>
201 openat(AT_FDCWD<{WD}>, "{WD}/out/.data.tmp", O_RDWR|O_CREAT|O_EXCL, 0600) = 4<{WD}/out/.data.tmp>
"""  # noqa: E501
    points, unreachable = select_crash_points(parse_trace(text, WD), Path(WD))
    create = next(p for p in points if p.why == "create")
    # The worker's first openat would be preempted by the main thread's first openat; the main
    # thread's third openat (between the previous step and this one) leaves the same files.
    assert create.site.syscall == "openat" and create.site.ordinal == 3
    assert not create.site.exact and not unreachable


def test_kills_and_injections_are_recognised() -> None:
    text = f"""\
300 write(3<{WD}/out/x.tmp>, "a", 1) = -1 ENOSPC (No space left on device) (INJECTED)
300 rename("out/x.tmp", "out/data.parquet") = ?
300 +++ killed by SIGKILL +++
"""
    trace = parse_trace(text, WD)
    assert trace.injected()[0].errno == "ENOSPC"
    assert trace.cut_off()[0].name == "rename" and not trace.cut_off()[0].finished
    assert trace.killed


def test_a_call_never_resumed_counts_as_cut_off() -> None:
    text = f"300 fsync(3<{WD}/out/x.tmp> <unfinished ...>\n301 +++ killed by SIGKILL +++\n"
    trace = parse_trace(text, WD)
    assert trace.calls[0].name == "fsync" and trace.calls[0].result is None
    assert trace.calls[0].path == f"{WD}/out/x.tmp"


def test_annotations_strings_and_arguments() -> None:
    assert split_args('3<TCP:[127.0.0.1:1->127.0.0.1:80]>, "a,b"..., 4') == [
        "3<TCP:[127.0.0.1:1->127.0.0.1:80]>",
        '"a,b"...',
        "4",
    ]
    assert decode_string(r'"caf\303\251 \"q\" \x41\n"') == 'café "q" A\n'
    assert decode_string("AT_FDCWD") is None
    deleted = parse_trace(f'5 write(3<{WD}/out/t.tmp (deleted)>, "", 0) = 0\n', WD)
    assert deleted.calls[0].path == f"{WD}/out/t.tmp"


def test_relative_names_follow_the_threads_current_directory() -> None:
    text = (
        '7 openat(AT_FDCWD</elsewhere>, "x", O_RDONLY) = -1 ENOENT (No such file)\n'
        '7 unlink("out/old.tmp") = 0\n'
    )
    trace = parse_trace(text, WD)
    assert trace.calls[1].path == "/elsewhere/out/old.tmp"


def test_missing_strace_is_unavailable_not_a_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(strace.STRACE_ENV, "")
    strace.probe.cache_clear()
    try:
        assert not strace.probe().ok
        with pytest.raises(NotApplicable) as raised:
            strace.require_strace()
        assert raised.value.kind is SkipKind.UNAVAILABLE
        assert raised.value.reason.startswith("strace unavailable: ")
    finally:
        strace.probe.cache_clear()


needs_strace = pytest.mark.skipif(not strace.probe().ok, reason="strace unavailable here")

PROGRAM = """
import os, threading
fd = os.open("a.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"a")
os.write(fd, b"a")
def worker():
    other = os.open("b.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for i in range(3):
        os.write(other, b"b")
t = threading.Thread(target=worker)
t.start()
t.join()
os.write(fd, b"a")
os.fsync(fd)
os.close(fd)
os.replace("a.tmp", "a.txt")
"""


def _traced(tmp_path: Path, *inject: str) -> tuple[subprocess.CompletedProcess[bytes], Path]:
    trace_file = tmp_path.parent / f"{tmp_path.name}.trace"
    argv = [*strace.wrapper(trace_file, inject=inject), sys.executable, "-c", PROGRAM]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, check=False, timeout=60)
    return done, trace_file


@pytest.mark.faults
@needs_strace
def test_a_live_trace_parses(tmp_path: Path) -> None:
    done, trace_file = _traced(tmp_path)
    assert done.returncode == 0, done.stderr
    steps = strace.read_trace(trace_file, tmp_path).steps_within(tmp_path)
    kinds = [(s.name, s.describe(tmp_path)) for s in steps]
    assert ("fsync", "fsync(a.tmp)") in kinds
    assert any(name.startswith("rename") and "a.tmp -> a.txt" in shown for name, shown in kinds)
    assert sum(1 for name, shown in kinds if name == "write" and shown == "write(b.txt)") == 3


def _frozen_and_killed(tmp_path: Path, name: str, ordinal: int) -> tuple[int, Path, bool]:
    """Run PROGRAM with ``freeze_at(name, ordinal)``, kill its process group as soon as the
    growing trace shows the frozen call entered; (exit status, trace file, seen)."""
    trace_file = tmp_path.parent / f"{tmp_path.name}.trace"
    argv = [*strace.wrapper(trace_file, inject=[strace.freeze_at(name, ordinal)])]
    argv += [sys.executable, "-c", PROGRAM]
    process = subprocess.Popen(argv, cwd=tmp_path, start_new_session=True)
    watch = strace.EntryWatch(name, ordinal)
    seen = False
    deadline = time.monotonic() + 30
    offset = 0
    while process.poll() is None and time.monotonic() < deadline:
        data = trace_file.read_bytes()[offset:] if trace_file.exists() else b""
        offset += len(data)
        if watch.feed(data):
            seen = True
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.001)
    return process.wait(timeout=30), trace_file, seen


@pytest.mark.faults
@needs_strace
def test_a_frozen_call_killed_by_the_harness_never_executes(tmp_path: Path) -> None:
    """The crash campaign's kill: strace holds the worker's own third write on entry (under
    the kernel filter where strace has it), the harness kills the run, and that write never
    happened, though the process's third write was the worker's first."""
    status, trace_file, seen = _frozen_and_killed(tmp_path, "write", 3)
    assert seen and status == -9
    trace = strace.read_trace(trace_file, tmp_path)
    (cut,) = [c for c in trace.cut_off() if c.name == "write"]
    assert cut.path == str(tmp_path / "b.txt") and cut.ordinal == 3
    assert (tmp_path / "b.txt").read_bytes() == b"bb"
    assert (tmp_path / "a.tmp").read_bytes() == b"aa"
    assert not (tmp_path / "a.txt").exists()


@pytest.mark.faults
@needs_strace
def test_an_error_is_counted_per_thread_under_the_kernel_filter(tmp_path: Path) -> None:
    """``error=`` at ``when=3`` fails the worker's own third write in an injected run that the
    kernel filters (where strace supports it), as it does without the filter."""
    done, trace_file = _traced(tmp_path, strace.fail_at("write", "EIO", 3))
    assert done.returncode != 0
    failed = strace.read_trace(trace_file, tmp_path).injected()
    assert failed, "no call failed"
    assert failed[0].path == str(tmp_path / "b.txt") and failed[0].ordinal == 3
    assert all(c.ordinal == 3 and c.errno == "EIO" for c in failed)  # each tracee's third
    assert (tmp_path / "b.txt").read_bytes() == b"bb"


def test_only_signal_injections_go_without_the_kernel_filter(tmp_path: Path) -> None:
    """``--seccomp-bpf`` (where strace supports it) filters recordings, freezes, errors and
    delays; strace 6.1 drops a ``signal=`` injection under it, so such a run is not filtered."""
    seccomp = strace.probe().seccomp
    for inject in ([], [strace.freeze_at("write", 1)], [strace.fail_at("write", "EIO", 2)]):
        assert ("--seccomp-bpf" in strace.wrapper(tmp_path / "t", inject=inject)) == seccomp
    killed = strace.wrapper(tmp_path / "t", inject=["write:signal=SIGKILL:when=1"])
    assert "--seccomp-bpf" not in killed


def test_the_entry_watch_finds_the_frozen_call_of_any_one_tracee() -> None:
    """Entries are counted per tracee; the frozen call is seen as the unterminated last line
    or as an unfinished line; resumed lines, signals and exits are not entries."""
    watch = strace.EntryWatch("write", 2)
    assert not watch.feed(b'10 write(3</w/a>, "a", 1) = 1\n11 write(4</w/b>, "b", 1')
    assert not watch.feed(b' <unfinished ...>\n10 openat(AT_FDCWD</w>, "x", O_RDONLY) = 5\n')
    assert not watch.feed(b"11 <... write resumed>) = 1\n12 --- SIGCHLD ---\n")
    assert not watch.feed(b"12 +++ exited with 0 +++\n")
    assert not watch.feed(b"10 wri")
    assert watch.feed(b'te(3</w/a>, "a", 1')  # tracee 10's second write, held on entry
    assert watch.counts == {10: 1, 11: 1} and watch.entered_by == 10
    unfinished = strace.EntryWatch("rename", 1)
    assert not unfinished.feed(b'7 renameat(AT_FDCWD</w>, "a", AT_FDCWD</w>, "b") = 0\n')
    assert unfinished.feed(b'8 rename("a.tmp", "a.txt" <unfinished ...>\n9 write(1, "", 0) = 0\n')


def test_a_kill_lands_only_where_it_was_aimed_and_by_the_harness() -> None:
    """The campaign's landing check, from a killed run's trace: the aimed call cut off after
    exactly the expected steps; a held call that only the run's timeout ended did not land."""
    from kfm_conformance.faults.crash import CrashPoint, KillSite, kill_landing
    from kfm_conformance.sandbox import RunResult

    trace = parse_trace(
        '9 openat(AT_FDCWD</w>, "x.tmp", O_WRONLY|O_CREAT|O_TRUNC, 0644) = 3</w/x.tmp>\n'
        '9 write(3</w/x.tmp>, "aa", 2) = 2\n'
        '9 write(3</w/x.tmp>, "bb", 2',
        "/w",
    )

    def run(*, timed_out: bool) -> RunResult:
        exit_code = None if timed_out else -9
        return RunResult("crash", [], exit_code, timed_out, 0.1, "", "", 0.0, 0.1)

    def landing(result: RunResult, aimed: CrashPoint) -> tuple[bool, str]:
        done = sum(1 for s in trace.steps_within(Path("/w")) if s.finished)
        return kill_landing(trace, result, aimed, Path("/w"), done)

    def point(index: int, ordinal: int) -> CrashPoint:
        site = KillSite("write", ordinal, exact=True)
        return CrashPoint(index, "write(x.tmp)", "last write", "x.tmp", site)

    landed, where = landing(run(timed_out=False), point(2, 2))
    assert landed and where == "write(x.tmp) after 2 steps"
    assert not landing(run(timed_out=False), point(1, 2))[0]
    landed, where = landing(run(timed_out=True), point(2, 2))
    assert not landed and "held until the run's timeout" in where
    landed, where = landing(run(timed_out=False), point(3, 3))
    assert not landed and where == "not reached: the run exited -9"


def test_the_sealed_strace_is_execute_only_and_made_again_when_its_folder_has_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy strace runs from cannot be read (so the tracer is not dumpable), and a copy
    whose folder went with an earlier session's temporary root is made again."""
    import shutil
    import stat

    source = tmp_path / "tool"
    source.write_bytes(b"#!/bin/sh\nexit 0\n")
    monkeypatch.setenv("KFM_RUN_TMP_ROOT", str(tmp_path))
    first = strace.sealed_executable(str(source))
    assert stat.S_IMODE(os.stat(first).st_mode) == 0o111
    assert strace.sealed_executable(str(source)) == first
    shutil.rmtree(Path(first).parent)
    again = strace.sealed_executable(str(source))
    assert again != first and os.path.isfile(again)
