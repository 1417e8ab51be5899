"""``[limits] concurrent_runs = "serialized"`` is the declaration that turns the two-runs
scenarios on; without it they are skipped as "not declared"; another value is bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfm_conformance.profile import parse_profile
from kfm_conformance.verdict import ConfigurationError

PIPELINE = {"name": "p", "command": ["true"], "output": "out/data.parquet"}


def test_serialized_runs_are_declared() -> None:
    profile = parse_profile(
        {"pipeline": PIPELINE, "limits": {"concurrent_runs": "serialized"}}, Path("p.toml")
    )
    assert profile.limits.concurrent_runs == "serialized"
    assert profile.summary()["limits"] == {"concurrent_runs": "serialized"}


def test_without_the_declaration_nothing_is_declared() -> None:
    assert parse_profile({"pipeline": PIPELINE}, Path("p.toml")).limits.concurrent_runs is None


def test_another_value_is_refused_with_one_line() -> None:
    with pytest.raises(ConfigurationError) as raised:
        parse_profile({"pipeline": PIPELINE, "limits": {"concurrent_runs": "yes"}}, Path("p.toml"))
    assert "limits.concurrent_runs" in str(raised.value) and "\n" not in str(raised.value)


def test_a_run_that_cannot_be_waited_for_raises_after_the_others_end() -> None:
    """Two runs at once: when the harness cannot wait for one of them (its init never
    started), the scenario gets the harness's error, not a judge that sees one run of two."""
    from typing import Any, cast

    from kfm_conformance.faults.concurrency import _wait_all
    from kfm_conformance.verdict import HarnessError

    ended: list[str] = []

    class Ends:
        def wait(self) -> str:
            ended.append("ok")
            return "result"

    class CannotStart:
        def wait(self) -> Any:
            raise HarnessError("the run's init did not start")

    with pytest.raises(HarnessError, match="did not start"):
        _wait_all(cast(Any, [CannotStart(), Ends()]))
    assert ended == ["ok"]
    assert _wait_all(cast(Any, [Ends(), Ends()])) == ["result", "result"]
