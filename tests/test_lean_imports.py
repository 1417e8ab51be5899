"""The CLI's processes skip jsonschema's ``iri`` grammars (2 s of CPU each) and still check
every format the harness uses; a pytest session that only has the plugin installed is left
alone."""

from __future__ import annotations

import os
import subprocess
import sys

from kfm_conformance import LEAN_IMPORTS_ENV

PROBE = """
import sys

import kfm_conformance.cli  # noqa: F401  (imports jsonschema through the capture layer)
from jsonschema import FormatChecker
checker = FormatChecker()
assert not checker.conforms("not a uri", "uri")
assert checker.conforms("https://example.org/x", "uri")
assert not checker.conforms("2024-13-99T99:00:00Z", "date-time")
assert checker.conforms("2024-01-02T03:04:05Z", "date-time")
assert not checker.conforms("nope", "uuid")
print(sys.modules.get("rfc3987_syntax", "absent"))
"""


def _env_without_mark() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != LEAN_IMPORTS_ENV}


def test_the_cli_skips_the_iri_grammars_and_keeps_the_formats_it_checks() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        env=_env_without_mark(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in ("None", "absent")  # blocked, or not installed here


def test_a_process_the_cli_did_not_start_is_left_alone() -> None:
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, kfm_conformance.plugin\n"
            "print(sys.modules.get('rfc3987_syntax', 'absent') is not None)",
        ],
        capture_output=True,
        text=True,
        env=_env_without_mark(),
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "True", check.stderr
