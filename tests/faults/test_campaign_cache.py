"""A crash campaign runs once per certification: a second scenario asking for the same one
(same key) gets the first one's result, in the same process or, through the run's directory,
in another pytest-xdist worker."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from kfm_conformance.faults import campaign_cache
from kfm_conformance.faults.campaign_cache import campaign_key, shared_campaign
from kfm_conformance.faults.crash import CampaignResult

REPO = Path(__file__).resolve().parents[2]


def result(case: str = "update") -> CampaignResult:
    return CampaignResult(
        case=case,
        recording_steps=["rename(a -> b)"],
        recording_exit=0,
        recording_problem=None,
        points=[],
        unreachable=[],
        duration_s=1.5,
    )


def test_the_key_depends_on_every_input() -> None:
    assert campaign_key(case="update", seed=1) == campaign_key(seed=1, case="update")
    assert campaign_key(case="update", seed=1) != campaign_key(case="update", seed=2)


def test_in_one_process_the_second_asker_reuses_the_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(campaign_cache.RUN_ID_ENV, raising=False)
    monkeypatch.setattr(campaign_cache, "_memory", {})
    calls: list[str] = []

    def compute() -> CampaignResult:
        calls.append("ran")
        return result()

    first = shared_campaign("k", "scenario A", compute)
    second = shared_campaign("k", "scenario B", compute)
    assert calls == ["ran"]
    assert first.reused_from is None and second.reused_from == "scenario A"
    assert second.result is first.result


def test_another_worker_reads_the_result_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run_id = f"test{tmp_path.name}".replace("_", "")
    monkeypatch.setenv(campaign_cache.RUN_ID_ENV, run_id)
    monkeypatch.setattr(campaign_cache, "_memory", {})
    # The shared directory lives in the temp dir: this test's own, not the machine's /tmp.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    shared_campaign("k2", "scenario A", result)
    program = (
        "from kfm_conformance.faults.campaign_cache import shared_campaign\n"
        "def fail():\n    raise SystemExit('computed again')\n"
        "shared = shared_campaign('k2', 'scenario B', fail)\n"
        "print(shared.reused_from, shared.result.case, shared.result.duration_s)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env={**os.environ, campaign_cache.RUN_ID_ENV: run_id},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["scenario", "A", "update", "1.5"]


def test_under_the_cli_campaigns_are_shared_in_the_results_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The CLI's results directory is removed at the end and hidden from runs: nothing is left
    in the temp dir, whatever the run's id."""
    run_id = f"test{tmp_path.name}".replace("_", "") + "results"
    monkeypatch.setenv(campaign_cache.RUN_ID_ENV, run_id)
    monkeypatch.setattr(campaign_cache, "_memory", {})
    monkeypatch.setattr(campaign_cache, "_shared_directory", None)
    campaign_cache.use_results_directory(tmp_path)
    shared_campaign("k3", "scenario A", result)
    assert (tmp_path / "campaigns" / "k3.json").is_file()
    assert not (Path(tempfile.gettempdir()) / f"kfm-campaigns-{run_id}").exists()
