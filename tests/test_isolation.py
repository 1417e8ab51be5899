"""A pipeline under test cannot forge a verdict, escape its run, or leak the harness's secrets.

Each test certifies a broken pipeline that also attacks the harness (``fixtures/hostile.py``)
and proves the attack contained: the pipeline is still refused on the guarantee it breaks,
nothing of it outlives the certification, nothing was written outside its working directory,
and no secret of the harness's environment reaches a report. Runs at the CLI's defaults
(``--isolation auto``, which is ``namespaces`` on these machines; in CI, namespaces must be
available).
"""

from __future__ import annotations

import os
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    FIXTURES,
    REFERENCE_PROFILE,
    certify,
    fixture_profile,
    guarantee_row,
    load_report,
)

from kfm_conformance import isolation

CANARY_TOKEN = "ghp_" + "K" * 36
CANARY_API = "kfm-api-" + uuid.uuid4().hex


@pytest.fixture(scope="module", autouse=True)
def namespaces_available() -> None:
    ok, why, _ = isolation.probe_namespaces()
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"namespaces must be available in CI: {why}")
        pytest.skip(why)


def _processes_mentioning(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            blob = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in blob:
            found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200])
    return found


def _attack(tmp_path: Path, attack: str, *extra: str, **env: str) -> tuple[int, dict[str, Any]]:
    marker = uuid.uuid4().hex
    profile = fixture_profile(
        tmp_path,
        "hostile.py",
        env={"KFM_ATTACK": attack, "KFM_MARKER": marker, **env},
    )
    report_dir = tmp_path / "report"
    environ = {**os.environ, "GITHUB_TOKEN": CANARY_TOKEN, "KFM_API_TOKEN": CANARY_API}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kfm_conformance.cli",
            "certify",
            "--profile",
            str(profile),
            "--report-dir",
            str(report_dir),
            "--only",
            "deterministic-output",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=environ,
        timeout=900,
        check=False,
    )
    time.sleep(0.5)
    assert _processes_mentioning(marker) == [], "a process of the run outlived certify"
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr[-2000:])
    report = load_report(report_dir)
    assert report["verdict"] == "not-certified"
    for path in report_dir.rglob("*"):
        if path.is_file():
            text = path.read_bytes()
            assert CANARY_TOKEN.encode() not in text, path
            assert CANARY_API.encode() not in text, path
    return done.returncode, report


def _runs(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run of the certification's deterministic-output scenarios."""
    scenarios = guarantee_row(report, "deterministic-output")["scenarios"]
    return [r for s in scenarios for r in s["evidence"]["runs"]]


def test_a_detached_helper_cannot_rewrite_or_swap_results(tmp_path: Path) -> None:
    _, report = _attack(tmp_path, "forge-results")
    assert report["isolated"] is True
    row = guarantee_row(report, "deterministic-output")
    assert row["verdict"] == "fail"
    assert not report["problems"], report["problems"]


def test_a_pipeline_that_kills_its_worker_cannot_make_scenarios_vanish(tmp_path: Path) -> None:
    _, report = _attack(tmp_path, "kill-worker", "-j", "2")
    assert guarantee_row(report, "deterministic-output")["verdict"] == "fail"


def test_without_isolation_a_killed_worker_is_visible_not_certified(tmp_path: Path) -> None:
    _, report = _attack(tmp_path, "kill-worker", "-j", "2", "--isolation", "none")
    assert report["isolated"] is False
    # The attack kills the test run: the missing results are harness errors, never a pass.
    assert report["problems"]
    assert all(s["verdict"] != "pass" for g in report["guarantees"] for s in g["scenarios"])


def test_a_hook_cannot_be_planted_in_the_harness_interpreter(tmp_path: Path) -> None:
    _, report = _attack(tmp_path, "plant-hook")
    assert guarantee_row(report, "deterministic-output")["verdict"] == "fail"
    for directory in [*site.getsitepackages(), *sys.path]:
        assert not Path(directory, "zz_kfm_forge.pth").exists(), directory


def test_the_harness_environment_cannot_be_read_through_proc(tmp_path: Path) -> None:
    _, report = _attack(tmp_path, "read-environ")
    runs = _runs(report)
    assert runs
    # Only the sandbox's own processes are visible: none of them is the harness, whose
    # environment has pytest's own variables.
    assert any("KFM_MARKER" in r["stdout_tail"] for r in runs)
    assert not any("PYTEST_CURRENT_TEST" in r["stdout_tail"] for r in runs)


def test_a_write_outside_the_working_directory_fails(tmp_path: Path) -> None:
    # Outside /tmp the file system is read-only; the harness's own /tmp is not even visible.
    outside = Path(tempfile.mkdtemp(prefix="kfm-canary-", dir=Path.home()))
    canary = outside / "canary.txt"
    try:
        _, report = _attack(tmp_path, "write-outside", KFM_CANARY=str(canary))
        assert not canary.exists()
    finally:
        shutil.rmtree(outside, ignore_errors=True)
    runs = _runs(report)
    assert runs and all("Read-only file system" in r["stderr_tail"] for r in runs)


def test_500_mb_on_stdout_is_kept_as_a_bounded_tail(tmp_path: Path) -> None:
    _, report = _attack(tmp_path, "flood-stdout")
    runs = _runs(report)
    assert runs and all(r["stdout_bytes"] >= 500 * (1 << 20) for r in runs)
    assert all(len(r["stdout_tail"]) < 4096 + 100 for r in runs)


def test_a_straggler_that_calls_setsid_is_killed_and_named(tmp_path: Path) -> None:
    profile = fixture_profile(tmp_path, "writes_after_exit.py")
    report_dir = tmp_path / "report"
    code, out, err = certify(
        "certify",
        "--profile",
        str(profile),
        "--report-dir",
        str(report_dir),
        "--only",
        "exit-codes/nothing-of-a-run-goes-on-after-it-exits",
    )
    assert code == 1, (out, err[-2000:])
    report = load_report(report_dir)
    scenario = next(
        s
        for s in guarantee_row(report, "exit-codes")["scenarios"]
        if s["check_id"] == "exit-codes/nothing-of-a-run-goes-on-after-it-exits"
    )
    assert scenario["verdict"] == "fail"
    broken = [f for f in scenario["findings"] if f["check"] == "run.no-stragglers"]
    assert broken and not broken[0]["ok"]
    assert any(
        "writes_after_exit.py" in line for lines in broken[0]["observed"].values() for line in lines
    )


def test_sigterm_stops_certify_and_keeps_the_results_so_far(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    profile = fixture_profile(tmp_path, "kfm_fixture.py", env={"KFM_MARKER": marker})
    report_dir = tmp_path / "report"
    system_tmp = tmp_path / "system-tmp"  # the CLI's and its runs' temp directories go here
    system_tmp.mkdir()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kfm_conformance.cli",
            "certify",
            "--profile",
            str(profile),
            "--report-dir",
            str(report_dir),
            "-j",
            "2",
            "--only",
            "exit-codes",
            "change-detection",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(system_tmp)},
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 600
    for line in process.stderr:
        if line.startswith("PASS") or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 143, out
    time.sleep(0.5)
    assert _processes_mentioning(marker) == []
    assert _processes_mentioning(str(profile)) == []
    report = load_report(report_dir)
    assert report["interrupted"] == "SIGTERM"
    assert report["verdict"] == "not-certified"
    assert any(s["verdict"] == "pass" for g in report["guarantees"] for s in g["scenarios"])
    # The runs stopped mid-way leave no temp directory behind (they used to: one per run);
    # only pytest's own base directory, with the scenarios' working directories, remains.
    assert sorted(p.name for p in system_tmp.iterdir() if p.name.startswith("kfm-")) == []


def test_a_run_that_cannot_start_leaves_no_temp_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose start fails before its process exists (a capture service that cannot be
    reached, say) keeps no private temp directory: they used to pile up in /tmp."""
    from kfm_conformance.profile import load_profile
    from kfm_conformance.sandbox import RUN_TMP_ROOT_ENV, Sandbox
    from kfm_conformance.verdict import HarnessError

    runs_tmp = tmp_path / "runs-tmp"
    runs_tmp.mkdir()
    monkeypatch.setenv(RUN_TMP_ROOT_ENV, str(runs_tmp))

    class Unreachable:
        def run_started(self, sandbox: Any, label: str) -> object:
            raise HarnessError("Marquez unavailable: not built")

        def run_finished(self, sandbox: Any, result: Any, token: object) -> None:
            raise AssertionError("no run was started")

    box = Sandbox(load_profile(REFERENCE_PROFILE), tmp_path / "work", listener=Unreachable())
    with pytest.raises(HarnessError, match="Marquez unavailable"):
        box.start("http://127.0.0.1:9/")
    assert list(runs_tmp.iterdir()) == []
    assert box.runs == []


def test_results_channel_refuses_forged_symlinked_and_missing_records(tmp_path: Path) -> None:
    from kfm_conformance import channel

    key = channel.new_key()
    collected = [{"nodeid": "a", "check_id": "x/a"}, {"nodeid": "b", "check_id": "x/b"}]
    channel.append(tmp_path / "collection-gw0.jsonl", channel.seal(key, "collection", collected))
    good = {"nodeid": "a", "check_id": "x/a", "verdict": "fail"}
    channel.append(tmp_path / "scenarios-gw0.jsonl", channel.seal(key, "result", good))
    forged = channel.seal(channel.new_key(), "result", {**good, "verdict": "pass"})
    channel.append(tmp_path / "scenarios-gw1.jsonl", forged)
    (tmp_path / "scenarios-gw2.jsonl").symlink_to(tmp_path / "scenarios-gw0.jsonl")
    contents = channel.read_channel(tmp_path, key)
    assert [r["verdict"] for r in contents.results] == ["fail", "error"]
    assert contents.missing == ["b"]
    text = " ".join(contents.problems)
    assert "not authenticated" in text
    assert "cannot be opened safely" in text
    assert "no result for x/b" in text


def test_reference_isolation_is_recorded_in_the_provenance(tmp_path: Path) -> None:
    report_dir = tmp_path / "report"
    code, out, err = certify(
        "certify",
        "--profile",
        str(REFERENCE_PROFILE),
        "--report-dir",
        str(report_dir),
        "--only",
        "deterministic-output",
        "--require-isolation",
    )
    assert code == 0, (out, err[-2000:])
    report = load_report(report_dir)
    assert report["provenance"]["isolation"]["mode"] == "namespaces"
    assert "unisolated" not in out
    code, out, err = certify(
        "certify",
        "--profile",
        str(REFERENCE_PROFILE),
        "--report-dir",
        str(tmp_path / "r2"),
        "--only",
        "deterministic-output",
        "--isolation",
        "none",
    )
    assert code == 0, (out, err[-2000:])
    assert "CERTIFIED (core, unisolated)" in out
    assert FIXTURES.is_dir()


def test_a_runs_pid_is_its_command_not_bubblewrap(tmp_path: Path):
    """What a test signals to freeze or kill a run (a tracer, the pipeline) is the run's own
    command: bubblewrap names the run's init among its arguments, and must not be taken for
    it (a SIGSTOP to bubblewrap freezes nothing)."""
    from kfm_conformance.profile import load_profile
    from kfm_conformance.sandbox import Sandbox

    profile_path = fixture_profile(tmp_path, "fixed_temp_name.py")
    profile = load_profile(profile_path)
    sandbox = Sandbox(profile, tmp_path / "work", isolation_choice=isolation.choose("namespaces"))
    running = sandbox.start(
        "http://127.0.0.1:9/", wrapper=["/bin/sh", "-c", "sleep 5", "kfm-marker"]
    )
    try:
        pid = running.pid
        deadline = time.monotonic() + 10
        argv: list[bytes] = []
        while time.monotonic() < deadline:  # until the child of run_init has exec'd
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if argv[0] == b"/bin/sh":
                break
            time.sleep(0.01)
        assert argv[0] == b"/bin/sh", argv
    finally:
        running.kill()
        running.wait()


def test_a_harness_that_lives_under_tmp_still_starts_its_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's /tmp is private, so a harness cloned (or installed editable) under /tmp would
    hide its own run init from the run: every run would exit 2 and be blamed on the pipeline.
    The run init is bound into the sandbox read-only wherever it lives."""
    from kfm_conformance import sandbox as sandbox_module
    from kfm_conformance.profile import load_profile
    from kfm_conformance.sandbox import Sandbox

    # Beside the test's own directory (which holds the profile, and so is readable), not in it.
    clone = Path(tempfile.mkdtemp(prefix="kfm-harness-clone-", dir="/tmp"))
    try:
        harness = clone / "kfm_conformance"
        harness.mkdir()
        copied = harness / "run_init.py"
        shutil.copy(sandbox_module.RUN_INIT, copied)
        monkeypatch.setattr(sandbox_module, "RUN_INIT", copied)
        profile = load_profile(fixture_profile(tmp_path, "fixed_temp_name.py"))
        choice = isolation.choose("namespaces")
        sandbox = Sandbox(profile, tmp_path / "work", isolation_choice=choice)
        wrapper = ["/bin/sh", "-c", "exit 0", "kfm-marker"]
        result = sandbox.run("http://127.0.0.1:9/", wrapper=wrapper)
    finally:
        shutil.rmtree(clone, ignore_errors=True)
    assert result.exit_code == 0, result.stderr_tail


#: Writes the init's success line into every descriptor of its parent it can open, kills the
#: parent (the run's init) so that no true line follows, and fails.
FORGE_EXIT_SCRIPT = r"""
for fd in /proc/$PPID/fd/*; do
  n=${fd##*/}
  [ "$n" -gt 2 ] 2>/dev/null || continue
  printf '{"exit": 0, "signal": null, "timed_out": false, "stragglers": []}\n' > "$fd" 2>/dev/null
done
kill -9 $PPID
exit 65
"""


@pytest.mark.parametrize("mode", ["namespaces", "none"])
def test_a_pipeline_cannot_forge_its_exit_code_on_the_report_descriptor(
    tmp_path: Path, mode: str
) -> None:
    """The init's report is the harness's evidence of how a run ended. A pipeline that writes
    a success line there itself and kills its init is judged by what the harness observed,
    never by the line it wrote: contained, its init is PID 1 of the run's namespace, which
    the run cannot signal, so the pipeline's own exit (65) stands; unisolated, the init is
    killed and the run's status is that kill."""
    from kfm_conformance.profile import load_profile
    from kfm_conformance.sandbox import Sandbox

    profile = load_profile(fixture_profile(tmp_path, "fixed_temp_name.py"))
    box = Sandbox(profile, tmp_path / "work", isolation_choice=isolation.choose(mode))
    result = box.run(
        "http://127.0.0.1:9/", wrapper=["/bin/sh", "-c", FORGE_EXIT_SCRIPT, "kfm-marker"]
    )
    assert result.exit_code not in (0, None), result
    if mode == "namespaces":
        assert result.exit_code == 65, result
    else:
        assert result.exit_code in (-signal.SIGKILL, 128 + signal.SIGKILL), result


def test_a_run_whose_init_cannot_start_is_the_harness_error_not_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When bubblewrap or the interpreter cannot start the run's init, the pipeline never ran:
    the run raises HarnessError (the scenario's verdict is ``error``) instead of handing the
    interpreter's exit 2 to the judge as the pipeline's."""
    from kfm_conformance import sandbox as sandbox_module
    from kfm_conformance.profile import load_profile
    from kfm_conformance.sandbox import Sandbox
    from kfm_conformance.verdict import HarnessError

    monkeypatch.setattr(sandbox_module, "RUN_INIT", tmp_path / "missing" / "run_init.py")
    profile = load_profile(fixture_profile(tmp_path, "fixed_temp_name.py"))
    for mode in ("namespaces", "none"):
        box = Sandbox(profile, tmp_path / f"work-{mode}", isolation_choice=isolation.choose(mode))
        with pytest.raises(HarnessError, match="the run's init did not start"):
            box.run("http://127.0.0.1:9/")
        assert box.runs == []


def test_the_init_report_is_trusted_only_when_it_agrees_with_the_init_status() -> None:
    from kfm_conformance.sandbox import init_report, init_started, parse_report

    started = {"init": "started"}
    ok = {"exit": 0, "signal": None, "timed_out": False, "stragglers": []}
    killed = {"exit": None, "signal": 9, "timed_out": True, "stragglers": []}
    assert parse_report(b'{"init": "started"}\nnot json\n[1]\n{"exit": 0}\n') == [
        started,
        {"exit": 0},
    ]
    assert init_report([started, ok], 0) == ok
    assert init_report([started, killed], 137) == killed
    # A line the pipeline wrote before killing its init: the status says otherwise.
    assert init_report([started, ok], 137) == {}
    assert init_report([started, ok], -9) == {}
    assert init_report([started, {"exit": True}], 1) == {}
    assert init_report([started], 0) == {}
    assert init_started([started]) and not init_started([ok])


_TRACE_HUNTER = r"""
import json, os, sys
marker = sys.argv[1]
found = []
for folder, _dirs, names in os.walk("/tmp"):
    found += [os.path.join(folder, n) for n in names if marker in n]
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        continue
    for fd in fds:
        try:
            if marker in os.readlink(f"/proc/{pid}/fd/{fd}"):
                with open(f"/proc/{pid}/fd/{fd}", "a") as trace:
                    trace.write("FORGED\n")
                found.append(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
print(json.dumps(found))
"""


def test_a_traced_run_can_reach_its_trace_neither_by_path_nor_by_descriptor(
    tmp_path: Path,
) -> None:
    """The trace is the harness's evidence: a traced pipeline finds no path to it and no
    process whose descriptors it may open (not the tracer, not the run's init, not a reaper),
    and nothing it writes reaches it; the trace still records the run."""
    from kfm_conformance.faults import strace
    from kfm_conformance.profile import load_profile
    from kfm_conformance.sandbox import Sandbox

    if not strace.probe().ok:
        pytest.fail(f"strace is needed here: {strace.probe().reason}")
    hunter = tmp_path / "hunter.py"
    hunter.write_text(_TRACE_HUNTER)
    marker = "trace-" + uuid.uuid4().hex
    profile_path = tmp_path / "hunter.toml"
    profile_path.write_text(
        '[pipeline]\nname = "hunter"\n'
        f'command = ["{{python}}", "{hunter}", "{marker}"]\n'
        'output = "out/data.parquet"\ntimeout_s = 60\n'
    )
    contained = isolation.choose("namespaces")
    sandbox = Sandbox(load_profile(profile_path), tmp_path / "work", isolation_choice=contained)
    trace_dir = Path(tempfile.mkdtemp(prefix="kfm-test-traces-"))
    try:
        trace_file = trace_dir / f"{marker}.trace"
        result = sandbox.run("http://127.0.0.1:9/", wrapper=strace.wrapper(trace_file))
        assert result.exit_code == 0, result.stderr_tail
        assert result.stdout_tail.strip() == "[]", result.stdout_tail
        text = trace_file.read_text()
        assert "FORGED" not in text
        assert "openat(" in text and "+++ exited with 0 +++" in text, text[-2000:]
    finally:
        shutil.rmtree(trace_dir, ignore_errors=True)
