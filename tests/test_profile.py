"""The profile contract: defaults, placeholders and validation."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from kfm_conformance.profile import BLUEPRINT_EXIT_CODES, ExitCodes, load_profile
from kfm_conformance.verdict import ConfigurationError


def test_defaults_are_the_blueprint_table(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[pipeline]\nname="p"\ncommand=["{python}","{profile_dir}/x.py","{src}"]\n'
                    'output="out/d.parquet"\n')
    profile = load_profile(path)
    assert profile.exit_codes.as_dict() == BLUEPRINT_EXIT_CODES
    assert profile.limits.max_body_bytes is None
    argv = profile.argv(src="http://h/x", workdir=tmp_path, python="py")
    assert argv == ["py", f"{tmp_path}/x.py", "http://h/x"]
    assert len(profile.digest) == 64


def test_declared_codes_override(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[pipeline]\nname="p"\ncommand=["x"]\noutput="o.parquet"\n'
                    "[exit_codes]\nupstream_transient = 11\n")
    assert load_profile(path).exit_codes.upstream_transient == 11


def test_a_failure_may_not_share_a_success_code(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[pipeline]\nname="p"\ncommand=["x"]\noutput="o.parquet"\n'
                    "[exit_codes]\nio_error = 0\n")
    with pytest.raises(ConfigurationError, match=r"exit_codes\.io_error"):
        load_profile(path)


def test_exit_codes_have_one_field_per_outcome_defaulting_to_the_blueprint() -> None:
    assert [f.name for f in fields(ExitCodes)] == list(BLUEPRINT_EXIT_CODES)
    assert ExitCodes().as_dict() == BLUEPRINT_EXIT_CODES
