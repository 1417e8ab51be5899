"""``pytest --kfm-profile FILE`` in a team's own pytest collects the packaged suite, selects
by guarantee tag with ``-m``/``-k``, runs under xdist, and gives the CLI's verdicts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import scenario_records

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "fixtures" / "profile.toml"
#: Passes and skips (the fixture's profile declares no lakeFS repository), at a fraction of
#: the cost of a guarantee with slow upstreams (with exit-codes the test took about 2.5 min).
GUARANTEES = ["empty-rejection", "promotion"]


def run(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def verdicts_from_results(directory: Path) -> dict[str, str]:
    return {r["check_id"]: r["verdict"] for r in scenario_records(directory)}


def test_plugin_and_cli_give_the_same_verdicts(tmp_path: Path) -> None:
    project = tmp_path / "team-project"  # a project with no tests of its own
    project.mkdir()
    results = tmp_path / "plugin-results"
    plugin = run(
        [
            "-m", "pytest",
            "--kfm-profile", str(PROFILE),
            "--kfm-seed", "99",
            "--kfm-results", str(results),
            "-m", " or ".join(GUARANTEES),
            "-n", "2",
            "-p", "no:cacheprovider",
        ],
        cwd=project,
    )  # fmt: skip
    assert plugin.returncode == 0, plugin.stdout[-3000:] + plugin.stderr[-2000:]
    assert " passed" in plugin.stdout  # pytest's own summary line
    from_plugin = verdicts_from_results(results)

    report_dir = tmp_path / "cli-report"
    cli = run(
        [
            "-m", "kfm_conformance.cli", "certify",
            "--profile", str(PROFILE),
            "--seed", "99",
            "--only", *GUARANTEES,
            "-j", "2",
            "--report-dir", str(report_dir),
        ],
        cwd=tmp_path,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stdout + cli.stderr[-2000:]
    report = json.loads((report_dir / "report.json").read_text())
    from_cli = {s["check_id"]: s["verdict"] for g in report["guarantees"] for s in g["scenarios"]}

    assert from_plugin, "the plugin ran no scenario"
    assert {c.split("/")[0] for c in from_plugin} == set(GUARANTEES)
    assert from_plugin == from_cli
    assert {"pass", "skip"} <= set(from_cli.values()), from_cli


def test_selection_by_tag_and_keyword_and_explicit_paths(tmp_path: Path) -> None:
    project = tmp_path / "team-project"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_own.py").write_text("def test_own():\n    assert True\n")
    base = ["-m", "pytest", "--kfm-profile", str(PROFILE), "-p", "no:cacheprovider"]

    def collected(*extra: str) -> list[str]:
        done = run([*base, "--collect-only", "-q", *extra], cwd=project)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return [line for line in done.stdout.splitlines() if "::" in line]

    everything = collected()
    assert len(everything) > 20 and all("test_guarantees.py::" in n for n in everything)
    assert not any("test_own" in n for n in everything), "no paths named: the suite replaces them"
    tagged = collected("-m", "exit-codes")
    assert tagged and len(tagged) < len(everything)
    keyword = collected("-k", "empty_answer")
    assert keyword and all("empty_answer" in n for n in keyword)
    own = collected("tests")
    assert len(own) == 1 and own[0].endswith("test_own.py::test_own"), "paths named: only those"
    both = collected("tests", "--kfm-suite")
    assert own[0] in both and len(both) == len(everything) + 1
