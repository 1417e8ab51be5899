"""pytest's own errors (on stderr) reach the report: the tee forwards a child's stderr and keeps
its last lines, and the excerpt picks the lines that say what broke."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from kfm_conformance.stderr_tee import StderrTee, failure_excerpt

CHILD = (
    "import sys\n"
    "print('PASS  some/check (0.1s)', file=sys.stderr)\n"
    "print(\"ERROR: Config file 'suite/pytest.ini' not found.\", file=sys.stderr)\n"
    "sys.stderr.write('x' * 100000)\n"  # one long line with no newline: bounded
    "sys.exit(4)\n"
)


def test_the_tee_forwards_and_keeps_the_error_line(tmp_path: Path) -> None:
    sink = io.BytesIO()
    tee = StderrTee(sink=sink)
    try:
        done = subprocess.run([sys.executable, "-c", CHILD], stderr=tee.write_end, check=False)
    finally:
        tee.close()
    assert done.returncode == 4
    assert b"ERROR: Config file" in sink.getvalue()  # forwarded as it came
    assert len(sink.getvalue()) > 100000
    lines = list(tee.lines)
    assert all(len(line) <= 2000 for line in lines)
    excerpt = failure_excerpt(lines, tmp_path / "missing.log")
    assert excerpt == "ERROR: Config file 'suite/pytest.ini' not found."


def test_the_excerpt_falls_back_to_the_log(tmp_path: Path) -> None:
    log = tmp_path / "pytest.log"
    log.write_text("collected 3 items\nINTERNALERROR> KeyError: 'x'\nlast line\n")
    assert failure_excerpt([], log) == "INTERNALERROR> KeyError: 'x'"
    log.write_text("just\nsome\nlines\n")
    assert failure_excerpt([], log) == "just / some / lines"
    assert "wrote nothing" in failure_excerpt([], tmp_path / "none.log")
