"""The run's init writes its report as JSON without the json module, and the harness waits for a
run's end without polling: both are on the path of every pipeline run."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from kfm_conformance import run_init
from kfm_conformance.sandbox import wait_exited


@pytest.mark.parametrize(
    "value",
    [
        {"init": "started"},
        {
            "exit": 0,
            "signal": None,
            "timed_out": False,
            "stragglers": [],
            "main_exited_after_s": 0.25,
        },
        {"exit": None, "signal": 9, "timed_out": True, "stragglers": ["sh -c 'sleep 60' &"]},
        {"stragglers": ['python "quoted" back\\slash', "tab\there\nnewline\x00nul\x1f", "é ü 中"]},
        {"error": "fork: [Errno 11] Resource temporarily unavailable"},
        {"stragglers": ["lone \udcff surrogate"]},  # a command line is decoded with "replace"
    ],
)
def test_the_init_report_line_is_json_that_reads_back_the_same(value: dict[str, object]) -> None:
    line = run_init.json_line(value)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == value


def test_wait_exited_returns_when_the_process_ends_and_not_before() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        began = time.monotonic()
        assert wait_exited(sleeper, 0.3) is False
        assert time.monotonic() - began >= 0.29
        assert sleeper.returncode is None
    finally:
        sleeper.kill()
    assert wait_exited(sleeper, 10) is True
    assert sleeper.returncode == -9


def test_wait_exited_on_a_process_reaped_already_does_not_wait() -> None:
    done = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    done.wait()
    began = time.monotonic()
    assert wait_exited(done, 10) is True
    assert time.monotonic() - began < 5
    assert done.returncode == 3
