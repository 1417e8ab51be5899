"""The held run (kfm_conformance/faults/hold.py, hold_tracer.py): one run stopped at each crash
point while the harness copies its working directory.

What is checked: the seccomp program stops exactly the traced calls; a hold stops the run
before the held call and with every other thread stopped (a thread that keeps writing does not
move while the harness looks); holds are counted per thread as strace's ``when=`` counts; and a
pipeline cannot forge a hold through anything it can reach.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from kfm_conformance.faults import hold, hold_tracer
from kfm_conformance.faults.crash import same_file_name
from kfm_conformance.isolation import choose
from kfm_conformance.profile import load_profile
from kfm_conformance.sandbox import Sandbox

needs_hold = pytest.mark.skipif(not hold.supported(), reason="held runs need Linux on x86_64")


def run_bpf(program: list[tuple[int, int, int, int]], arch: int, nr: int) -> int:
    """A small interpreter for the three instructions the filter uses."""
    accumulator = 0
    pc = 0
    while True:
        code, jt, jf, k = program[pc]
        if code == hold_tracer.BPF_LD_W_ABS:
            accumulator = {0: nr, 4: arch}[k]
            pc += 1
        elif code == hold_tracer.BPF_JEQ_K:
            pc += 1 + (jt if accumulator == k else jf)
        elif code == hold_tracer.BPF_RET_K:
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")


def test_the_filter_stops_each_traced_call_with_its_index_and_lets_others_through() -> None:
    numbers = list(hold_tracer.SYSCALLS.values())
    program = hold_tracer.filter_program(numbers)
    x86_64 = hold_tracer.AUDIT_ARCH_X86_64
    for index, number in enumerate(numbers):
        assert run_bpf(program, x86_64, number) == hold_tracer.SECCOMP_RET_TRACE | index
    for untraced in (0, 3, 59, 231):  # read, close, execve, exit_group
        assert run_bpf(program, x86_64, untraced) == hold_tracer.SECCOMP_RET_ALLOW
    # Another architecture's numbers mean other calls: never stopped.
    assert run_bpf(program, 0x40000003, 1) == hold_tracer.SECCOMP_RET_ALLOW


def test_sites_and_tracer_lines_are_parsed_strictly() -> None:
    assert hold_tracer.parse_sites("write:3,openat:17") == {("write", 3): 0, ("openat", 17): 1}
    with pytest.raises(ValueError):
        hold_tracer.parse_sites("write:x")
    with pytest.raises(ValueError):
        hold_tracer.parse_sites("execve:1")
    assert hold.parse_line("HELD 2 41 write /w/out/a\t/w/out/b") == hold.Hold(
        2, 41, "write", ("/w/out/a", "/w/out/b")
    )
    assert hold.parse_line("HELD 0 7 clone") == hold.Hold(0, 7, "clone", ())
    assert hold.parse_line("ERROR ptrace: Operation not permitted") == (
        "ptrace: Operation not permitted"
    )
    assert hold.parse_line("HELD x 7 write") is None
    assert hold.parse_line("something else") is None


def test_names_that_differ_only_in_random_tokens_are_the_same_file() -> None:
    assert same_file_name(".state/download.GasJtF/body", ".state/download.yEamiM/body")
    assert same_file_name("out/.data.parquet.k2j9x0aa.tmp", "out/.data.parquet.q8w7e6rr.tmp")
    assert same_file_name("out/#9995263", "out/#9995057")  # O_TMPFILE files, by inode
    assert same_file_name("out/.data.csv.4.1796324965.tmp", "out/.data.csv.7.1796324964.tmp")
    assert not same_file_name("out/data.csv", "out/data.tsv")
    assert not same_file_name("out/data.parquet", "out/data.parquet.tmp")


def _profile(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "pipeline.py"
    script.write_text(textwrap.dedent(body))
    profile = tmp_path / "profile.toml"
    profile.write_text(
        "[pipeline]\n"
        'name = "held"\n'
        f'command = ["{{python}}", "{script}", "{{src}}"]\n'
        'output = "out/data.txt"\n'
        "timeout_s = 30\n"
    )
    return profile


THREADED = """
    import os, threading, time
    os.makedirs("out", exist_ok=True)
    stop = threading.Event()
    def busy():
        with open("out/busy.log", "w") as log:
            while not stop.is_set():
                log.write("x" * 10)
                log.flush()
                time.sleep(0.001)
    worker = threading.Thread(target=busy)
    worker.start()
    time.sleep(0.05)
    with open("out/.data.txt.tmp", "w") as f:
        f.write("first\\n"); f.flush()
        f.write("second\\n"); f.flush()
        os.fsync(f.fileno())
    os.replace("out/.data.txt.tmp", "out/data.txt")
    stop.set()
    worker.join()
"""


@needs_hold
@pytest.mark.parametrize("isolation", ["none", "namespaces"])
def test_a_hold_stops_the_whole_run_before_the_held_call(tmp_path: Path, isolation: str) -> None:
    if isolation == "namespaces" and shutil.which("bwrap") is None:
        pytest.skip("bwrap is not installed")
    profile = load_profile(_profile(tmp_path, THREADED))
    box = Sandbox(profile, tmp_path / "box", isolation_choice=choose(isolation))
    seen: list[tuple[hold.Hold, dict[str, bytes], int]] = []

    def look(held: hold.Hold) -> None:
        out = box.workdir / "out"
        files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
        before = len(files.get("busy.log", b""))
        import time

        time.sleep(0.1)  # the busy thread writes every millisecond when it runs
        after = (out / "busy.log").stat().st_size if (out / "busy.log").exists() else 0
        seen.append((held, files, after - before))

    # The main thread's writes: its 1st and 2nd ``write`` (the busy thread counts its own),
    # its first fsync and its first rename.
    run = hold.run_held(
        box,
        "http://127.0.0.1:9/unused",
        [("write", 2), ("fsync", 1), ("rename", 1)],
        look,
        label="held",
    )
    assert run.error is None and run.result.exit_code == 0, run.result.stderr_tail
    assert [h.site for h, _, _ in seen] == [0, 1, 2]
    by_site = {h.site: (h, files, moved) for h, files, moved in seen}
    # Held before its 2nd write: only the first line is in the temp file (or the busy
    # thread's 2nd write came first: then nothing of the main thread's is there yet).
    second = by_site[0][1].get(".data.txt.tmp")
    assert second in (b"first\n", b"", None)
    # Before the fsync both lines are written; before the rename the output is not there.
    assert by_site[1][1][".data.txt.tmp"] == b"first\nsecond\n"
    assert "data.txt" not in by_site[2][1] and ".data.txt.tmp" in by_site[2][1]
    assert by_site[2][0].syscall == "rename"
    assert [p.rsplit("/", 1)[-1] for p in by_site[2][0].paths] == [".data.txt.tmp", "data.txt"]
    # No thread moved while the harness looked.
    assert all(moved == 0 for _, _, moved in seen), [m for _, _, m in seen]
    assert (box.workdir / "out" / "data.txt").read_bytes() == b"first\nsecond\n"


FORGER = """
    import os, sys
    # Try every descriptor this process has, and every one of its parent's it can open.
    line = b"HELD 0 1 write /forged\\n"
    for fd in range(3, 64):
        try:
            os.write(fd, line)
        except OSError:
            pass
    for parent in {os.getppid(), 1}:
        try:
            names = os.listdir(f"/proc/{parent}/fd")
        except OSError:
            continue
        for name in names:
            try:
                with open(f"/proc/{parent}/fd/{name}", "wb", buffering=0) as f:
                    f.write(line)
            except OSError:
                pass
    os.makedirs("out", exist_ok=True)
    open("out/data.txt", "w").write("done\\n")
"""


@needs_hold
def test_a_contained_pipeline_cannot_forge_a_hold(tmp_path: Path) -> None:
    """Contained (the sandbox drops every capability): an unisolated run as root could read
    any process's descriptors, as it could do anything else (see run_init)."""
    if shutil.which("bwrap") is None:
        pytest.skip("bwrap is not installed")
    profile = load_profile(_profile(tmp_path, FORGER))
    box = Sandbox(profile, tmp_path / "box", isolation_choice=choose("namespaces"))
    seen: list[hold.Hold] = []
    run = hold.run_held(
        box, "http://127.0.0.1:9/unused", [("rename", 50)], seen.append, label="held"
    )
    assert run.result.exit_code == 0, run.result.stderr_tail
    assert seen == [] and run.holds == []


def test_a_held_directory_is_copied_as_a_kill_would_leave_it(tmp_path: Path) -> None:
    """Files with their times, links as links, a FIFO as a FIFO (never opened: reading one
    blocks), a socket left out; and digesting a directory with a FIFO does not block."""
    import os
    import socket
    import stat

    from kfm_conformance.faults.crash import copy_workdir, workdir_digest

    source, target = tmp_path / "held", tmp_path / "copy"
    (source / "out").mkdir(parents=True)
    (source / "out" / "data.txt").write_text("whole\n")
    os.utime(source / "out" / "data.txt", (1_700_000_000, 1_700_000_000))
    os.symlink("data.txt", source / "out" / "current")
    os.mkfifo(source / "out" / "pipe")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(source / "out" / "sock"))
    try:
        copy_workdir(source, target)
        assert workdir_digest(source) != workdir_digest(tmp_path / "empty-does-not-exist")
    finally:
        listener.close()
    copied = target / "out"
    assert sorted(p.name for p in copied.iterdir()) == ["current", "data.txt", "pipe"]
    assert (copied / "data.txt").read_text() == "whole\n"
    assert (copied / "data.txt").stat().st_mtime == 1_700_000_000
    assert os.readlink(copied / "current") == "data.txt"
    assert stat.S_ISFIFO(os.lstat(copied / "pipe").st_mode)
