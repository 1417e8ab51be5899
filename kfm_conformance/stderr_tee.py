"""A child's stderr passed through to ours, with its last lines kept, so that when the test run
fails (pytest exits 2, 3 or 4: a usage error, an internal error, a missing config file) the
report can say what broke. pytest writes those errors to stderr, not to the log on stdout.

Bounded: lines are cut at :data:`MAX_LINE` characters and only the last ``keep`` are kept.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

MAX_LINE = 2000
#: Lines that say what broke: pytest's ``ERROR:`` and ``INTERNALERROR>`` lines, and the last
#: line of a Python traceback (``ModuleNotFoundError: ...``).
_ERROR_LINE = re.compile(r"^(?:ERROR:|INTERNALERROR>|E\s{2,}|[A-Za-z_.]*(?:Error|Exception): )")


class StderrTee:
    """Forward everything written to :attr:`write_end` to ``sink`` as it comes, keeping the
    last ``keep`` lines. Give ``write_end`` to the child as its stderr; call :meth:`close`
    after it exited."""

    def __init__(
        self,
        sink: BinaryIO | None = None,
        keep: int = 200,
        forward: Callable[[str], bool] | None = None,
    ) -> None:
        self._sink = sink if sink is not None else sys.stderr.buffer
        #: Which complete lines reach the sink (default: all, as they come); every line is
        #: kept for :func:`failure_excerpt` either way.
        self._forward = forward
        read_end, self.write_end = os.pipe()
        self._read_end = read_end
        self.lines: deque[str] = deque(maxlen=keep)
        self._thread = threading.Thread(target=self._pump, name="stderr-tee", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self._read_end, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            if self._forward is None:
                self._emit(chunk)
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                text = line[:MAX_LINE].decode("utf-8", "replace").rstrip()
                self.lines.append(text)
                if self._forward is not None and self._forward(text):
                    self._emit(line[:MAX_LINE] + b"\n")
            pending = pending[-MAX_LINE:]
        if pending:
            self.lines.append(pending.decode("utf-8", "replace").rstrip())
        os.close(self._read_end)

    def _emit(self, data: bytes) -> None:
        try:
            self._sink.write(data)
            self._sink.flush()
        except (OSError, ValueError):
            pass

    def close(self, timeout_s: float = 5.0) -> None:
        """Close our copy of the write end and wait (bounded: a leftover grandchild may still
        hold it) for the rest of the child's output."""
        try:
            os.close(self.write_end)
        except OSError:
            pass
        self._thread.join(timeout_s)


def failure_excerpt(stderr_lines: list[str], log_path: Path | None = None, count: int = 4) -> str:
    """What broke, in one line: the error lines of the child's stderr, else those of its log,
    else the last lines of either; at most 800 characters."""
    log_lines: list[str] = []
    if log_path is not None:
        try:
            log_lines = log_path.read_text(errors="replace").splitlines()[-500:]
        except OSError:
            log_lines = []
    for lines in (stderr_lines, log_lines):
        errors = [line.strip() for line in lines if _ERROR_LINE.match(line)]
        if errors:
            return " / ".join(errors[-count:])[:800]
    for lines in (log_lines, stderr_lines):
        last = [line.strip() for line in lines if line.strip()][-count:]
        if last:
            return " / ".join(last)[:800]
    return "(it wrote nothing on stderr or in pytest.log)"
