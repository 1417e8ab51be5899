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
