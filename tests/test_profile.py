"""The profile contract: defaults, placeholders and validation."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from kfm_conformance.profile import (
    BLUEPRINT_EXIT_CODES,
    ExitCodes,
    check_toml_shape,
    expand_placeholders,
    load_profile,
)
from kfm_conformance.verdict import ConfigurationError


def test_defaults_are_the_blueprint_table(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[pipeline]\nname="p"\ncommand=["{python}","{profile_dir}/x.py","{src}"]\n'
        'output="out/d.parquet"\n'
    )
    profile = load_profile(path)
    assert profile.exit_codes.as_dict() == BLUEPRINT_EXIT_CODES
    assert profile.limits.max_body_bytes is None
    argv = profile.argv(src="http://h/x", workdir=tmp_path, python="py")
    assert argv == ["py", f"{tmp_path}/x.py", "http://h/x"]
    assert len(profile.digest) == 64


def test_declared_codes_override(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[pipeline]\nname="p"\ncommand=["x"]\noutput="o.parquet"\n'
        "[exit_codes]\nupstream_transient = 11\n"
    )
    assert load_profile(path).exit_codes.upstream_transient == 11


def test_a_failure_may_not_share_a_success_code(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[pipeline]\nname="p"\ncommand=["x"]\noutput="o.parquet"\n[exit_codes]\nio_error = 0\n'
    )
    with pytest.raises(ConfigurationError, match=r"exit_codes\.io_error"):
        load_profile(path)


def test_exit_codes_have_one_field_per_outcome_defaulting_to_the_blueprint() -> None:
    assert [f.name for f in fields(ExitCodes)] == list(BLUEPRINT_EXIT_CODES)
    assert ExitCodes().as_dict() == BLUEPRINT_EXIT_CODES


@pytest.mark.parametrize(
    ("template", "expanded"),
    [
        ("{python}", "PY"),
        ("{profile_dir}/x.py", "/p/x.py"),
        ("--url={src}&w={workdir}", "--url=S&w=/w"),
        ("{{src}}", "{src}"),
        ("a}}b{{c", "a}b{c"),
        ("no braces", "no braces"),
        ("", ""),
    ],
)
def test_placeholders_expand_strictly(template: str, expanded: str) -> None:
    values = {"python": "PY", "profile_dir": "/p", "src": "S", "workdir": "/w"}
    assert expand_placeholders(template, values) == expanded


@pytest.mark.parametrize(
    "template",
    ["{src.__class__}", "{python[0]}", "{src!r}", "{src:>9}", "{}", "{0}", "{x}", "{", "}", "a{b"],
)
def test_anything_else_with_a_brace_is_refused(template: str) -> None:
    with pytest.raises(ValueError):
        expand_placeholders(template, {"src": "S", "python": "PY"})


@pytest.mark.parametrize(
    "text",
    [
        'x = "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["\n',  # brackets inside a string
        "x = '" + "{" * 40 + "'\n",
        'x = """\n' + "[" * 40 + '\n"""\n',
        "# " + "[" * 40 + "\n",
        "v = [" + ", ".join(["1.5"] * 100) + "]\n",  # many floats, one dot each
        'url = "http://a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f.g"\n',
        "a.b.c = 1\n[x.y]\nz = 1979-05-27T07:32:00.999\n",
    ],
)
def test_the_shape_scan_passes_ordinary_toml(text: str) -> None:
    assert check_toml_shape(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "x = " + "[" * 33 + "]" * 33,
        "x = " + "{a=" * 33 + "1" + "}" * 33,
        ".".join(["a"] * 33) + " = 1",
        "[" + ".".join(["a"] * 33) + "]",
        " . ".join(['"q"'] * 33) + " = 1",
    ],
)
def test_the_shape_scan_refuses_deep_toml(text: str) -> None:
    assert check_toml_shape(text) is not None


def test_nesting_just_under_the_bound_loads(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[pipeline]\nname="p"\ncommand=["x"]\noutput="o.parquet"\n'
        "[pipeline.env]\n"  # depth 2 + a value: within every bound
        'A = "1"\n'
    )
    assert load_profile(path).env == {"A": "1"}
