"""The durability lint reads the publication protocol off a trace: each synthetic trace below
breaks one rule (or none), and exactly the matching checks fail, at the right level."""

from __future__ import annotations

from pathlib import Path

from kfm_conformance.faults.lint import Layout, lint_trace
from kfm_conformance.faults.strace import parse_trace
from kfm_conformance.verdict import Finding, Level

WD = "/sandbox/wd"
LAYOUT = Layout(Path(WD), "out/data.parquet", (".state",))

TEMP = f"{WD}/out/.data.parquet.k2j9x0aa.tmp"
STATE_TEMP = f"{WD}/.state/.state.json.q8w7e6rr.tmp"

LOCK = f'1 openat(AT_FDCWD<{WD}>, ".state/lock", O_WRONLY|O_CREAT, 0666) = 3<{WD}/.state/lock>'
DATA = [
    f'1 openat(AT_FDCWD<{WD}>, "{TEMP}", O_RDWR|O_CREAT|O_EXCL, 0600) = 4<{TEMP}>',
    f'1 write(4<{TEMP}>, "PAR1"..., 4096) = 4096',
    f'1 write(4<{TEMP}>, "PAR1", 4) = 4',
]
DATA_SYNC = f"1 fsync(4<{TEMP}>) = 0"
DATA_RENAME = f'1 rename("{TEMP}", "out/data.parquet") = 0'
DATA_DIR_SYNC = f"1 fsync(5<{WD}/out>) = 0"
STATE = [
    f'1 openat(AT_FDCWD<{WD}>, "{STATE_TEMP}", O_RDWR|O_CREAT|O_EXCL, 0600) = 4<{STATE_TEMP}>',
    f'1 write(4<{STATE_TEMP}>, "{{}}", 2) = 2',
]
STATE_SYNC = f"1 fsync(4<{STATE_TEMP}>) = 0"
STATE_RENAME = f'1 rename("{STATE_TEMP}", ".state/state.json") = 0'
STATE_DIR_SYNC = f"1 fsync(5<{WD}/.state>) = 0"

GOOD = [
    LOCK,
    *DATA,
    DATA_SYNC,
    DATA_RENAME,
    DATA_DIR_SYNC,
    *STATE,
    STATE_SYNC,
    STATE_RENAME,
    STATE_DIR_SYNC,
]


def lint(lines: list[str], **options: object) -> dict[str, Finding]:
    trace = parse_trace("\n".join(lines) + "\n", WD)
    findings = lint_trace(trace, LAYOUT, context="the run", **options)  # type: ignore[arg-type]
    return {f.check: f for f in findings}


def broken(findings: dict[str, Finding]) -> set[str]:
    return {check for check, f in findings.items() if not f.ok}


def test_the_durable_protocol_passes_every_check() -> None:
    findings = lint(GOOD)
    assert broken(findings) == set()
    assert set(findings) == {
        "protocol.no-in-place-write",
        "protocol.rename-onto-output",
        "protocol.temp-fsynced",
        "protocol.dir-fsynced",
        "protocol.state-after-data",
        "protocol.state-replaced-by-rename",
        "protocol.state-temp-fsynced",
        "protocol.state-dir-fsynced",
    }


def test_writing_the_output_in_place_is_refused() -> None:
    out = f"{WD}/out/data.parquet"
    findings = lint(
        [
            LOCK,
            f'1 openat(AT_FDCWD<{WD}>, "out/data.parquet", O_WRONLY|O_CREAT|O_TRUNC, 0666) '
            f"= 4<{out}>",
            f'1 write(4<{out}>, "PAR1"..., 4096) = 4096',
            f"1 fsync(4<{out}>) = 0",
            *STATE,
            STATE_SYNC,
            STATE_RENAME,
            STATE_DIR_SYNC,
        ]
    )
    assert broken(findings) == {"protocol.no-in-place-write", "protocol.rename-onto-output"}
    assert findings["protocol.no-in-place-write"].level is Level.REQUIRED
    assert "openat(out/data.parquet)" in findings["protocol.no-in-place-write"].observed


def test_a_temp_file_on_another_file_system_is_refused_for_the_copy_into_the_output() -> None:
    shm = "/dev/shm/kfm-x1y2z3.tmp"
    out = f"{WD}/out/data.parquet"
    findings = lint(
        [
            LOCK,
            f'1 openat(AT_FDCWD<{WD}>, "{shm}", O_RDWR|O_CREAT|O_EXCL, 0600) = 4<{shm}>',
            f'1 write(4<{shm}>, "PAR1"..., 4096) = 4096',
            f"1 fsync(4<{shm}>) = 0",
            f'1 rename("{shm}", "{out}") = -1 EXDEV (Invalid cross-device link)',
            f'1 openat(AT_FDCWD<{WD}>, "{out}", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) '
            f"= 5<{out}>",
            f"1 sendfile(5<{out}>, 4<{shm}>, NULL, 8388608) = 4096",
            *STATE,
            STATE_SYNC,
            STATE_RENAME,
        ]
    )
    assert {"protocol.no-in-place-write", "protocol.rename-onto-output"} <= broken(findings)
    assert "EXDEV" in findings["protocol.no-in-place-write"].message
    assert findings["protocol.no-in-place-write"].level is Level.REQUIRED


def test_a_temp_file_in_a_write_ahead_directory_is_fine() -> None:
    """The blueprint's seed: ``.wal/out.parquet`` renamed onto ``out/data.parquet``."""
    wal = f"{WD}/.wal/out.parquet"
    findings = lint(
        [
            LOCK,
            f'1 openat(AT_FDCWD<{WD}>, ".wal/out.parquet", O_WRONLY|O_CREAT|O_TRUNC, 0666) '
            f"= 4<{wal}>",
            f'1 write(4<{wal}>, "PAR1", 4) = 4',
            f"1 fsync(4<{wal}>) = 0",
            '1 rename(".wal/out.parquet", "out/data.parquet") = 0',
            DATA_DIR_SYNC,
            *STATE,
            STATE_SYNC,
            STATE_RENAME,
            STATE_DIR_SYNC,
        ]
    )
    assert broken(findings) == set()


def test_an_anonymous_tmpfile_linked_then_renamed_is_followed_by_inode() -> None:
    """O_TMPFILE: written and fdatasynced through its descriptor, linkat-ed to a temporary name,
    renamed over the output. The fsync is of that inode, whatever name it had then."""
    anon = f"{WD}/out/#9988556"
    findings = lint(
        [
            LOCK,
            f'1 openat(AT_FDCWD<{WD}>, "out", O_WRONLY|O_CLOEXEC|O_TMPFILE, 0644) '
            f"= 4<{anon}>(deleted)",
            f'1 write(4<{anon}>(deleted), "PAR1", 4) = 4',
            f"1 fdatasync(4<{anon}>(deleted)) = 0",
            f'1 linkat(AT_FDCWD<{WD}>, "/proc/self/fd/4", AT_FDCWD<{WD}>, "out/.tmp-link", '
            "AT_SYMLINK_FOLLOW) = 0",
            '1 rename("out/.tmp-link", "out/data.parquet") = 0',
            DATA_DIR_SYNC,
            *STATE,
            STATE_SYNC,
            STATE_RENAME,
            STATE_DIR_SYNC,
        ]
    )
    assert broken(findings) == set()
    assert findings["protocol.temp-fsynced"].ok


def test_an_fsync_of_another_file_does_not_count_for_the_renamed_one() -> None:
    anon = f"{WD}/out/#9988556"
    findings = lint(
        [
            f'1 openat(AT_FDCWD<{WD}>, "out", O_WRONLY|O_CLOEXEC|O_TMPFILE, 0644) '
            f"= 4<{anon}>(deleted)",
            f'1 write(4<{anon}>(deleted), "PAR1", 4) = 4',
            f'1 linkat(AT_FDCWD<{WD}>, "/proc/self/fd/4", AT_FDCWD<{WD}>, "out/.tmp-link", '
            "AT_SYMLINK_FOLLOW) = 0",
            f'1 openat(AT_FDCWD<{WD}>, "out/other", O_WRONLY|O_CREAT, 0644) = 5<{WD}/out/other>',
            f"1 fsync(5<{WD}/out/other>) = 0",
            '1 rename("out/.tmp-link", "out/data.parquet") = 0',
            DATA_DIR_SYNC,
        ]
    )
    assert broken(findings) == {"protocol.temp-fsynced"}


def test_a_sqlite_state_touched_early_and_committed_after_the_data_is_fine() -> None:
    db, journal = f"{WD}/.state/state.db", f"{WD}/.state/state.db-journal"
    findings = lint(
        [
            f'1 openat(AT_FDCWD<{WD}>, ".state/state.db", O_RDWR|O_CREAT, 0644) = 3<{db}>',
            f'1 openat(AT_FDCWD<{WD}>, ".state/state.db-journal", O_RDWR|O_CREAT, 0644) '
            f"= 6<{journal}>",
            f'1 write(6<{journal}>, "\\0", 512) = 512',
            f'1 write(3<{db}>, "SQLite format 3", 4096) = 4096',
            f"1 fsync(3<{db}>) = 0",
            f'1 unlinkat(AT_FDCWD<{WD}>, ".state/state.db-journal", 0) = 0',
            *DATA,
            DATA_SYNC,
            DATA_RENAME,
            DATA_DIR_SYNC,
            f'1 openat(AT_FDCWD<{WD}>, ".state/state.db-journal", O_RDWR|O_CREAT, 0644) '
            f"= 6<{journal}>",
            f'1 write(6<{journal}>, "\\0", 512) = 512',
            f"1 fsync(6<{journal}>) = 0",
            f'1 write(3<{db}>, "\\0\\0", 4096) = 4096',
            f"1 fsync(3<{db}>) = 0",
            f'1 unlinkat(AT_FDCWD<{WD}>, ".state/state.db-journal", 0) = 0',
        ]
    )
    assert broken(findings) == set()


def test_a_scratch_download_in_the_state_directory_before_the_data_is_fine() -> None:
    body = f"{WD}/.state/body.json"
    findings = lint(
        [
            LOCK,
            f'1 openat(AT_FDCWD<{WD}>, ".state/body.json", O_WRONLY|O_CREAT|O_TRUNC, 0644) '
            f"= 5<{body}>",
            f'1 write(5<{body}>, "[{{}}]", 4) = 4',
            *DATA,
            DATA_SYNC,
            DATA_RENAME,
            DATA_DIR_SYNC,
            *STATE,
            STATE_SYNC,
            STATE_RENAME,
            STATE_DIR_SYNC,
        ]
    )
    assert broken(findings) == set()  # a scratch file nothing reads first is no state claim


def test_missing_fsyncs_are_recommendations() -> None:
    findings = lint([LOCK, *DATA, DATA_RENAME, *STATE, STATE_RENAME])
    assert broken(findings) == {
        "protocol.temp-fsynced",
        "protocol.dir-fsynced",
        "protocol.state-temp-fsynced",
        "protocol.state-dir-fsynced",
    }
    assert all(findings[c].level is Level.RECOMMENDED for c in broken(findings))


def test_an_fsync_before_the_last_write_does_not_count() -> None:
    findings = lint([LOCK, *DATA[:2], DATA_SYNC, DATA[2], DATA_RENAME, DATA_DIR_SYNC])
    assert broken(findings) == {"protocol.temp-fsynced"}


def test_state_written_before_the_data_is_a_recommendation() -> None:
    findings = lint(
        [
            LOCK,
            *STATE,
            STATE_SYNC,
            STATE_RENAME,
            STATE_DIR_SYNC,
            *DATA,
            DATA_SYNC,
            DATA_RENAME,
            DATA_DIR_SYNC,
        ]
    )
    assert broken(findings) == {"protocol.state-after-data"}
    assert findings["protocol.state-after-data"].level is Level.RECOMMENDED
    assert findings["protocol.state-after-data"].observed == [
        "rename(.state/.state.json.q8w7e6rr.tmp -> .state/state.json)"
    ]


def test_a_state_temp_prepared_early_but_renamed_after_the_data_is_fine() -> None:
    findings = lint(
        [
            LOCK,
            *STATE,
            STATE_SYNC,
            *DATA,
            DATA_SYNC,
            DATA_RENAME,
            DATA_DIR_SYNC,
            STATE_RENAME,
            STATE_DIR_SYNC,
        ]
    )
    assert broken(findings) == set()


def test_state_written_in_place_after_the_data_is_a_recommendation() -> None:
    state = f"{WD}/.state/state.json"
    findings = lint(
        [
            LOCK,
            f'1 openat(AT_FDCWD<{WD}>, ".state/state.json", O_RDONLY|O_CLOEXEC) = 3<{state}>',
            *DATA,
            DATA_SYNC,
            DATA_RENAME,
            DATA_DIR_SYNC,
            f'1 openat(AT_FDCWD<{WD}>, ".state/state.json", O_WRONLY|O_CREAT|O_TRUNC, 0666) '
            f"= 4<{state}>",
            f'1 write(4<{state}>, "{{}}", 2) = 2',
        ]
    )
    assert broken(findings) == {"protocol.state-replaced-by-rename"}
    assert findings["protocol.state-replaced-by-rename"].level is Level.RECOMMENDED


def test_a_run_that_left_the_output_alone_need_not_rename_onto_it() -> None:
    findings = lint([LOCK, *STATE, STATE_SYNC, STATE_RENAME, STATE_DIR_SYNC], output_changed=False)
    assert broken(findings) == set()
    assert "protocol.rename-onto-output" not in findings


def test_without_declared_state_everything_outside_the_output_directory_is_state() -> None:
    layout = Layout(Path(WD), "out/data.parquet", None)
    assert layout.is_state(f"{WD}/.state/state.json")
    assert layout.is_state(f"{WD}/state.json")
    assert not layout.is_state(f"{WD}/out/.data.parquet.tmp")
    assert not layout.is_state(f"{WD}/out/data.parquet")
    assert not layout.is_state("/elsewhere/state.json")
