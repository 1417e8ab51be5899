"""Shared helpers for the harness's own tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"
REFERENCE_PROFILE = REPO / "reference" / "profile.toml"
#: The official OpenLineage schemas: shared test data beside the repository, never copied in.
OPENLINEAGE_SPEC = REPO.parent / "shared" / "openlineage-spec"

pytest_plugins = ["pytester"]

# The suite runs under ``pytest -n 2``: a certification it starts without ``-j`` runs one
# scenario at a time, so that two of them never run four scenarios on two cores.
os.environ.setdefault("KFM_JOBS", "1")


def fixture_profile(
    tmp_path: Path, script: str, *, base: str = "profile.toml", **overrides: Any
) -> Path:
    """Write the fixtures' profile (``base``, in fixtures/) for one known-bad script (absolute
    path, in tmp only)."""
    data = tomllib.loads((FIXTURES / base).read_text())
    data["pipeline"]["command"] = ["{python}", str(FIXTURES / script), "{src}"]
    data["pipeline"]["name"] = Path(script).stem.replace("_", "-")
    data["pipeline"].update(overrides)
    path = tmp_path / f"{Path(script).stem}.toml"
    path.write_text(_toml(data))
    return path


def openlineage_spec() -> Path:
    """The OpenLineage schema cache (``KFM_OPENLINEAGE_SCHEMAS``, else the shared copy beside
    the repository); when it is absent a test fails under CI, else skips."""
    configured = os.environ.get("KFM_OPENLINEAGE_SCHEMAS")
    spec = Path(configured) if configured else OPENLINEAGE_SPEC
    if (spec / "OpenLineage.json").is_file():
        return spec
    message = f"the OpenLineage schemas are not at {spec}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def openlineage_schema_dir() -> Path:
    """:func:`openlineage_spec` as a fixture, for tests in subfolders."""
    return openlineage_spec()


def _toml(data: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(data)


def certify(
    *args: str,
    cwd: Path | None = None,
    timeout: float = 900,
    env: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    """Run the real CLI in a child process (``env`` added to this one's environment);
    return (exit code, stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "kfm_conformance.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        check=False,
        env={**os.environ, **env} if env else None,
    )
    return done.returncode, done.stdout, done.stderr


def scenario_records(results_dir: Path) -> list[dict[str, Any]]:
    """The scenario results a plugin run wrote (``--kfm-results``), without authenticating
    them: each record's body (the CLI authenticates them with its key)."""
    found = []
    for path in sorted(results_dir.glob("scenarios-*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                if record.get("kind") == "result":
                    found.append(record["body"])
    return found


def load_report(report_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((report_dir / "report.json").read_text())
    return data


def guarantee_row(report: dict[str, Any], guarantee: str) -> dict[str, Any]:
    for row in report["guarantees"]:
        if row["id"] == guarantee:
            return row
    raise AssertionError(f"{guarantee} not in report: {[r['id'] for r in report['guarantees']]}")
