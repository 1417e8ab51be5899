"""Bad input to the harness gets one clear line naming the problem, exit 2, no traceback."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
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


def test_unknown_check_id(tmp_path: Path) -> None:
    code, _, err = certify(
        "certify", "--profile", str(_profile(tmp_path, GOOD)), "--only", "lineage/no-such-check"
    )
    assert code == 2
    assert "--only: unknown check ID 'lineage/no-such-check'" in _one_line(err)


def test_usage_error_is_one_line(tmp_path: Path) -> None:
    code, _, err = certify("certify")
    assert code == 2
    assert _one_line(err) == (
        "kfm-conformance: certify: the following arguments are required: --profile"
    )
    code, _, err = certify("certify", "--profile", "p.toml", "-o", "out")
    assert code == 2
    assert _one_line(err) == "kfm-conformance: unrecognized arguments: -o out"


@pytest.mark.parametrize(
    ("option", "env", "says"),
    [
        (["-j", "two"], {}, "--jobs: 'two' is neither a number nor auto (default from $KFM_JOBS)"),
        (["-j", "0"], {}, "--jobs: must be at least 1"),
        ([], {"KFM_JOBS": "-3"}, "--jobs: must be at least 1"),
    ],
)
def test_bad_jobs_is_one_line_and_exit_2(
    tmp_path: Path, option: list[str], env: dict[str, str], says: str
) -> None:
    code, _, err = certify("certify", "--profile", str(_profile(tmp_path, GOOD)), *option, env=env)
    assert code == 2
    assert _one_line(err) == f"kfm-conformance: {says}"


def test_jobs_auto_is_one_per_usable_cpu_up_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    from kfm_conformance import cli

    monkeypatch.setattr(cli, "usable_cpus", lambda: 2)
    assert cli.parse_jobs("auto") == 2
    assert cli.parse_jobs(" AUTO ") == 2
    monkeypatch.setattr(cli, "usable_cpus", lambda: 64)
    assert cli.parse_jobs("auto") == cli.MAX_AUTO_JOBS
    assert cli.parse_jobs("12") == 12
    assert cli.parse_jobs(3) == 3


def test_hanging_pipeline_fails_at_its_timeout_with_evidence(tmp_path: Path) -> None:
    sleeper = "import time; print('working', flush=True); time.sleep(600)"
    text = GOOD.replace('"-c", "pass"', f'"-c", "{sleeper}"')
    text += "timeout_s = 1.5\n"
    report_dir = tmp_path / "r"
    code, _, err = certify(
        "certify",
        "--profile",
        str(_profile(tmp_path, text)),
        "--report-dir",
        str(report_dir),
        "--only",
        "exit-codes",
        # Every run sleeps until its timeout: four at a time cost no more CPU than one.
        "-j",
        "4",
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


# -- issue 10 §6: input that once gave a traceback, a hang or an out-of-memory --------------------
DEEP = "x = " + "[" * 100_000 + "]" * 100_000 + "\n"
DEEP_INLINE = "x = " + "{a=" * 100_000 + "1" + "}" * 100_000 + "\n"
LONG_DOTTED_KEY = ".".join(["a"] * 100_000) + " = 1\n"
LONG_HEADER = "[" + ".".join(["a"] * 100_000) + "]\n"


def _env_table(values: dict[str, str]) -> str:
    return "[pipeline.env]\n" + "".join(f'{k} = "{v}"\n' for k, v in values.items())


@pytest.mark.parametrize(
    ("text", "names"),
    [
        pytest.param(GOOD + "[limits]\n" + DEEP, "nested more than 32", id="nested-100000-deep"),
        pytest.param(DEEP_INLINE + GOOD, "nested more than 32", id="inline-tables-100000-deep"),
        pytest.param(GOOD + LONG_DOTTED_KEY, "dotted key of more than", id="dotted-key"),
        pytest.param(GOOD + LONG_HEADER, "dotted key of more than", id="table-header"),
        pytest.param(GOOD + "timeout_s = nan\n", "pipeline.timeout_s: must be a finite", id="nan"),
        pytest.param(GOOD + "timeout_s = inf\n", "pipeline.timeout_s: must be a finite", id="inf"),
        pytest.param(GOOD + "timeout_s = -inf\n", "pipeline.timeout_s", id="minus-inf"),
        pytest.param(GOOD + "timeout_s = 0\n", "pipeline.timeout_s", id="zero"),
        pytest.param(GOOD + "timeout_s = -0.5\n", "pipeline.timeout_s", id="negative"),
        pytest.param(
            GOOD + "[limits]\nfetch_timeout_s = nan\n", "limits.fetch_timeout_s", id="limit-nan"
        ),
        pytest.param(
            GOOD.replace('"out/data.parquet"', '"out/\\u0000x.parquet"'),
            "pipeline.output: contains a NUL byte",
            id="nul-in-output",
        ),
        pytest.param(
            GOOD.replace('"out/data.parquet"', '"out/x\\nparquet"'),
            "pipeline.output: a path must not hold control characters",
            id="newline-in-output",
        ),
        pytest.param(
            GOOD.replace('"pass"', '"pa\\u0000ss"'),
            "pipeline.command[2]: contains a NUL byte",
            id="nul-in-argument",
        ),
        pytest.param(
            GOOD + _env_table({"X": "a\\u0000b"}),
            "pipeline.env.X: contains a NUL byte",
            id="nul-in-env-value",
        ),
        pytest.param(
            GOOD + _env_table({'"X\\u0000Y"': "ab"}),
            "the key contains a NUL byte",
            id="nul-in-env-name",
        ),
        pytest.param(
            GOOD + _env_table({'"X=Y"': "ab"}), "not a variable name", id="equals-in-env-name"
        ),
        pytest.param(
            GOOD.replace('name = "p"', 'name = "p\\u0000"'),
            "pipeline.name: contains a NUL byte",
            id="nul-in-name",
        ),
        pytest.param(
            GOOD.replace('name = "p"', 'name = "p\\n"'),
            "pipeline.name: 'p\\n' is not a name",
            id="newline-in-name",
        ),
        pytest.param(
            GOOD.replace('"{python}"', '"{src.__class__}"'),
            "only a bare name is allowed",
            id="attribute-placeholder",
        ),
        pytest.param(
            GOOD.replace('"{python}"', '"{python[0]}"'),
            "only a bare name is allowed",
            id="index-placeholder",
        ),
        pytest.param(
            GOOD.replace('"{python}"', '"{python!r}"'),
            "only a bare name is allowed",
            id="conversion-placeholder",
        ),
        pytest.param(
            GOOD.replace('"pass"', '"print({})"'), "unknown placeholder {}", id="empty-braces"
        ),
        pytest.param(
            GOOD.replace('"pass"', '"x = {"'), "a '{' with no closing '}'", id="lone-brace"
        ),
        pytest.param(
            GOOD + _env_table({"BIG": "a" * 200_000}),
            "exec accepts at most",
            id="one-variable-over-exec-limit",
        ),
        pytest.param(
            GOOD + _env_table({f"V{i}": "a" * 100_000 for i in range(6)}),
            "the command and environment take",
            id="environment-over-exec-budget",
        ),
        pytest.param(
            GOOD + "[limits]\nmax_body_bytes = " + "9" * 5000 + "\n",
            "bad TOML",
            id="integer-of-5000-digits",
        ),
        pytest.param(GOOD + '"a\\nb" = 1\n', 'pipeline."a\\nb": unknown key', id="newline-key"),
    ],
)
def test_hostile_profile_is_one_line_and_exit_2(tmp_path: Path, text: str, names: str) -> None:
    code, _, err = certify(
        "certify", "--profile", str(_profile(tmp_path, text)), "--report-dir", str(tmp_path / "r"),
        timeout=120,
    )  # fmt: skip
    assert code == 2, err[-2000:]
    line = _one_line(err)
    assert names in line, line
    assert "profile.toml" in line


def test_literal_braces_are_allowed(tmp_path: Path) -> None:
    from kfm_conformance.profile import load_profile

    text = GOOD.replace('"pass"', '"print({{1: 2}})"')
    profile = load_profile(_profile(tmp_path, text))
    assert profile.argv(src="s", workdir=tmp_path, python="py")[2] == "print({1: 2})"


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "too-big", "directory"])
def test_profile_that_is_not_a_small_regular_file(tmp_path: Path, kind: str) -> None:
    if kind == "fifo":
        path = tmp_path / "profile.toml"
        os.mkfifo(path)  # opening it would block until a writer came
        expected = "profile is a FIFO"
    elif kind == "dev-zero":
        path = Path("/dev/zero")  # never ends
        expected = "profile is a character device"
    elif kind == "too-big":
        path = _profile(tmp_path, GOOD + "# " + "x" * (1 << 20) + "\n")
        expected = "at most 1048576"
    else:
        path = tmp_path / "profile.toml"
        path.mkdir()
        expected = "profile is a directory"
    code, _, err = certify("certify", "--profile", str(path), timeout=60)
    assert code == 2, err[-2000:]
    assert expected in _one_line(err)


def test_report_dir_below_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    for report_dir, expected in (
        (tmp_path / "a-file" / "r", "--report-dir: cannot create"),
        (tmp_path / "a-file", "--report-dir:"),
    ):
        code, _, err = certify(
            "certify", "--profile", str(_profile(tmp_path, GOOD)), "--report-dir", str(report_dir)
        )
        assert code == 2, err[-2000:]
        assert expected in _one_line(err)


def _file_size_limit(limit: int) -> Callable[[], None]:
    """A child whose files cannot grow past ``limit`` bytes: the disk is as good as full
    (Python ignores SIGXFSZ, so a write past it fails with EFBIG)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _certify_limited(limit: int, *args: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "kfm_conformance.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        preexec_fn=_file_size_limit(limit),
    )
    return done.returncode, done.stdout, done.stderr


def test_a_report_dir_that_takes_no_write_is_refused_before_the_run(tmp_path: Path) -> None:
    code, _, err = _certify_limited(
        1000, "certify", "--profile", str(_profile(tmp_path, GOOD)),
        "--report-dir", str(tmp_path / "r"), "--only", "promotion",
    )  # fmt: skip
    assert code == 2, err[-2000:]
    line = _one_line(err)
    assert "--report-dir: cannot write in" in line and "File too large" in line, line
    assert not (tmp_path / "r" / "pytest.log").exists()  # refused before anything ran


def test_a_report_dir_that_fills_up_after_the_run_keeps_what_was_written(tmp_path: Path) -> None:
    """Every file of a run with only skipped scenarios is under 20 KB, except report.html:
    writing it fails as on a full disk. One line, exit 2, and the files already written stay."""
    report_dir = tmp_path / "r"
    code, _, err = _certify_limited(
        20_000, "certify", "--profile", str(_profile(tmp_path, GOOD)),
        "--report-dir", str(report_dir), "--only", "promotion",
    )  # fmt: skip
    assert code == 2, err[-3000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("kfm-conformance: --report-dir: cannot write report.html"), last
    assert "File too large" in last and "kept report.json" in last, last
    report = json.loads((report_dir / "report.json").read_text())
    assert report["counts"]["skip"] > 0
    assert (report_dir / "junit.xml").is_file() and (report_dir / "pytest.log").is_file()
    assert not list(report_dir.glob(".*.part")) and not (report_dir / "report.html").exists()


def _can_mount_tmpfs() -> bool:
    try:
        done = subprocess.run(
            ["unshare", "--mount", "--map-root-user", "sh", "-c", "mount -t tmpfs t /mnt"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="no user+mount namespace to mount a tmpfs")
def test_a_really_full_report_dir(tmp_path: Path) -> None:
    """A 64 KiB tmpfs filled to the brim, then one with room for the run but not the reports:
    ENOSPC before the run and after it, each one line."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    profile = _profile(tmp_path, GOOD)
    cli = f"{sys.executable} -m kfm_conformance.cli certify --profile {profile} --only promotion"
    script = (
        f"mount -t tmpfs -o size=64k tmpfs {mount} && "
        f"(dd if=/dev/zero of={mount}/fill bs=4k count=64 2>/dev/null; true) && "
        f"{cli} --report-dir {mount}/r; echo before=$?; umount {mount}; "
        f"mount -t tmpfs -o size=48k tmpfs {mount} && {cli} --report-dir {mount}/r; "
        "echo after=$?"
    )
    done = subprocess.run(
        ["unshare", "--mount", "--map-root-user", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out, err = done.stdout, done.stderr
    assert "Traceback" not in err
    assert "before=2" in out and "after=2" in out, (out, err[-2000:])
    lines = [line for line in err.splitlines() if line.startswith("kfm-conformance: ")]
    assert "cannot write in" in lines[0] and "No space left on device" in lines[0], lines
    assert "cannot write report" in lines[-1] and "; kept " in lines[-1], lines
