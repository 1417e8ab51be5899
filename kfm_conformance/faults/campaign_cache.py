"""One crash campaign per (profile, case) per certification, shared by the scenarios that
judge it.

The update campaign is judged by two guarantees: ``atomic-publication`` (the output after each
kill, convergence) and ``idempotency`` (what the run-state claims after each kill). Both
scenarios ask for the same campaign (same profile, same versions, same seed), so it runs once:
the first scenario to ask runs it; any other, in the same process or in another pytest-xdist
worker of the same run, waits for it and reads its result back. Workers find each other
through a directory holding one lock file and one JSON file per campaign: ``campaigns/`` in
the run's results directory (``--kfm-results``, which the CLI removes at the end and hides
from every run), else, for the suite run by hand under xdist, one in the temp dir named after
the run's id (``PYTEST_XDIST_TESTRUNUID``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfm_conformance.faults.crash import CampaignResult

#: Environment variable pytest-xdist sets on its workers: one id per test run.
RUN_ID_ENV = "PYTEST_XDIST_TESTRUNUID"

_memory: dict[str, tuple[CampaignResult, str]] = {}
_memory_lock = threading.Lock()
_shared_directory: Path | None = None


def use_results_directory(results: Path) -> None:
    """Share campaigns through ``results/campaigns`` (the plugin calls this per process)."""
    global _shared_directory
    _shared_directory = results / "campaigns"


@dataclass(frozen=True)
class Shared:
    """A campaign and who ran it: ``reused_from`` is ``None`` for the scenario that ran it."""

    result: CampaignResult
    reused_from: str | None


def campaign_key(**parts: Any) -> str:
    """A stable key for a campaign's inputs."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _directory() -> Path | None:
    if _shared_directory is not None:
        _shared_directory.mkdir(exist_ok=True)
        return _shared_directory
    run_id = os.environ.get(RUN_ID_ENV)
    if not run_id:
        return None
    safe = "".join(c for c in run_id if c.isalnum())[:40]
    path = Path(tempfile.gettempdir()) / f"kfm-campaigns-{safe}"
    path.mkdir(exist_ok=True)
    return path


def shared_campaign(key: str, owner: str, compute: Callable[[], CampaignResult]) -> Shared:
    """The campaign for ``key``: computed here (``owner`` names this scenario), or the result
    another scenario of this run computed."""
    with _memory_lock:
        if key in _memory:
            result, first = _memory[key]
            return Shared(result, first)
        directory = _directory()
        if directory is None:
            result = compute()
            _memory[key] = (result, owner)
            return Shared(result, None)
        with (directory / f"{key}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another worker computing it: wait for it
            stored = directory / f"{key}.json"
            if stored.is_file():
                data = json.loads(stored.read_text(encoding="utf-8"))
                result = CampaignResult.from_json(data["result"])
                _memory[key] = (result, data["owner"])
                return Shared(result, data["owner"])
            result = compute()
            temp = stored.with_suffix(".tmp")
            temp.write_text(json.dumps({"owner": owner, "result": result.to_json()}))
            temp.replace(stored)
            _memory[key] = (result, owner)
            return Shared(result, None)
