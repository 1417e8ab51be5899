"""Bad input to the harness gets one clear line naming the problem, exit 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import certify


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _profile(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profile.toml"
    path.write_text(text)
    return path


GOOD = """
[pipeline]
name = "p"
command = ["{python}", "-c", "pass"]
output = "out/data.parquet"
"""


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[pipeline\nname=", "bad TOML"),
        ('[pipeline]\nname = "p"\noutput = "o"\n', "pipeline.command: missing required key"),
        (GOOD + 'colour = "blue"\n', "pipeline.colour: unknown key"),
        (GOOD.replace('"out/data.parquet"', '"../escape.parquet"'), "pipeline.output"),
        (GOOD + "timeout_s = -1\n", "pipeline.timeout_s"),
        (GOOD + "[exit_codes]\ninvalid_upstream = 0\n", "exit_codes.invalid_upstream"),
        (GOOD + "[exit_codes]\nio_error = 300\n", "exit_codes.io_error"),
        (GOOD.replace('"{python}"', '"no-such-program-kfm"'), "program not found"),
        (GOOD.replace('"{python}"', '"{pythn}"'), "bad placeholder"),
    ],
)
def test_bad_profile_is_one_line_and_exit_2(tmp_path: Path, text: str, names: str) -> None:
    code, _, err = certify(
        "certify", "--profile", str(_profile(tmp_path, text)), "--report-dir", str(tmp_path / "r")
    )
    assert code == 2
    line = _one_line(err)
    assert names in line, line
    assert "profile.toml" in line or "program" in line


def test_missing_profile(tmp_path: Path) -> None:
    code, _, err = certify("certify", "--profile", str(tmp_path / "nope.toml"))
    assert code == 2
    assert "profile not found" in _one_line(err)


def test_unknown_guarantee(tmp_path: Path) -> None:
    code, _, err = certify(
        "certify", "--profile", str(_profile(tmp_path, GOOD)), "--only", "no-such-guarantee"
    )
    assert code == 2
    assert "unknown guarantee 'no-such-guarantee'" in _one_line(err)


def test_usage_error_is_one_line(tmp_path: Path) -> None:
    code, _, err = certify("certify")
    assert code == 2
    assert "--profile" in _one_line(err)


def test_hanging_pipeline_fails_at_its_timeout_with_evidence(tmp_path: Path) -> None:
    sleeper = "import time; print('working', flush=True); time.sleep(600)"
    text = GOOD.replace('"-c", "pass"', f'"-c", "{sleeper}"')
    text += "timeout_s = 1.5\n"
    report_dir = tmp_path / "r"
    code, _, err = certify(
        "certify", "--profile", str(_profile(tmp_path, text)), "--report-dir", str(report_dir),
        "--only", "exit-codes",
    )
    assert code == 1, err
    import json

    report = json.loads((report_dir / "report.json").read_text())
    scenarios = [s for g in report["guarantees"] for s in g["scenarios"]]
    hung = [s for s in scenarios if "did not finish within its timeout" in s["message"]]
    assert hung, [s["message"] for s in scenarios]
    run = hung[0]["evidence"]["runs"][-1]
    assert run["timed_out"] is True and run["exit_code"] is None
    assert "working" in run["stdout_tail"]
    assert all(s["verdict"] in ("fail", "skip") for s in scenarios)
