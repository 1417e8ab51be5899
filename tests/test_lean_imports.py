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
print(sorted(n for n in ("isoduration", "webcolors", "uri_template") if sys.modules.get(n)))
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
    iri, unused = done.stdout.splitlines()
    assert iri in ("None", "absent")  # blocked, or not installed here
    assert unused == "[]"  # the checkers of formats no schema of the harness uses


def test_the_openlineage_model_loads_without_the_client_and_the_client_still_imports() -> None:
    """The model's classes come without openlineage.client's __init__ (its transports); a
    later ``from openlineage.client import ...`` in the same process still gets the client."""
    probe = (
        "import sys\n"
        "from kfm_conformance.capture.olmodel import default_model\n"
        "model = default_model()\n"
        "assert model.by_url, 'no classes'\n"
        "print(sorted(n for n in ('requests', 'httpx', 'openlineage.client.client')"
        " if n in sys.modules))\n"
        "from openlineage.client import OpenLineageClient, set_producer\n"
        "import openlineage.client as package\n"
        "print(OpenLineageClient.__name__, callable(set_producer), bool(package.__version__))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "OpenLineageClient True True"], done.stdout


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
