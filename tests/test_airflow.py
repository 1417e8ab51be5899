"""Airflow 3 DAGs as pipelines: the ``[airflow]`` profile keys, the DAG runner's outcome rules,
the reference DAG certified, and each known-bad DAG in ``fixtures/airflow/`` refused.

The DAG tests need the Airflow environment that ``scripts/setup-airflow.sh`` installs
(``KFM_AIRFLOW_PYTHON`` names another); without it they skip, and under CI they fail.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import REPO, _toml, certify, guarantee_row, load_report, openlineage_spec

from kfm_conformance import airflow as kfm_airflow
from kfm_conformance.guarantees import CATALOGUE as CATALOGUE_OF_GUARANTEES
from kfm_conformance.profile import load_profile
from kfm_conformance.verdict import ConfigurationError

AIRFLOW_FIXTURES = REPO / "fixtures" / "airflow"
REFERENCE_DAG_PROFILE = REPO / "reference" / "airflow" / "profile.toml"
CATALOGUE: list[dict[str, Any]] = tomllib.loads((AIRFLOW_FIXTURES / "catalogue.toml").read_text())[
    "dag"
]


def _runner() -> ModuleType:
    """The DAG runner script, imported as a module (it needs only the standard library)."""
    spec = importlib.util.spec_from_file_location("kfm_dag_runner", kfm_airflow.runner_script())
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def airflow_python() -> str:
    """The Airflow interpreter; skip (or, under CI, fail) when it is not installed."""
    python = os.environ.get(kfm_airflow.PYTHON_ENV) or str(
        kfm_airflow.cache_dir() / "airflow-venv" / "bin" / "python"
    )
    if Path(python).is_file():
        return python
    message = f"Airflow is not installed at {python} (run scripts/setup-airflow.sh)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


# -- the profile keys ---------------------------------------------------------------------------


def _write_profile(tmp_path: Path, airflow: dict[str, Any], **pipeline: Any) -> Path:
    data = {
        "pipeline": {"name": "dag", "output": "out/data.parquet", **pipeline},
        "airflow": airflow,
    }
    path = tmp_path / "profile.toml"
    path.write_text(_toml(data))
    return path


def test_an_airflow_profile_needs_no_command_and_runs_the_dag_runner(tmp_path: Path) -> None:
    python = airflow_python()
    dag = tmp_path / "dag.py"
    dag.write_text("# a DAG\n")
    profile = load_profile(
        _write_profile(
            tmp_path,
            {
                "dag_file": "dag.py",
                "dag_id": "d",
                "python": python,
                "tasks": ["ingest"],
                "outcomes": {"^Empty": "invalid_upstream"},
                "warm": False,
            },
        )
    )
    assert profile.command == ()
    argv = profile.argv(src="http://127.0.0.1:1/x", workdir=tmp_path / "run")
    assert argv[:2] == [python, str(kfm_airflow.runner_script())]
    assert argv[argv.index("--dag-file") + 1] == str(dag)
    assert argv[argv.index("--task") + 1] == "ingest"
    assert argv[argv.index("--outcome") + 1] == "^Empty=invalid_upstream"
    assert "--db-template" in argv  # migrated once, cached per Airflow version
    assert argv[-1] == "--cold"


def test_without_airflow_a_profile_still_needs_its_command(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[pipeline]\nname = "p"\noutput = "o.parquet"\n')
    with pytest.raises(ConfigurationError, match=r"pipeline\.command: missing required key"):
        load_profile(path)


@pytest.mark.parametrize(
    ("airflow", "message"),
    [
        ({"dag_id": "d"}, r"airflow\.dag_file: missing required key"),
        ({"dag_file": "x.py", "dag_id": "d", "colour": 1}, r"airflow\.colour: unknown key"),
        (
            {"dag_file": "x.py", "dag_id": "d", "outcomes": {"E": "published"}},
            r"airflow\.outcomes\.E",
        ),
    ],
)
def test_bad_airflow_tables_get_one_line(
    tmp_path: Path, airflow: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_profile(_write_profile(tmp_path, airflow))


def test_a_missing_airflow_interpreter_is_named(tmp_path: Path) -> None:
    (tmp_path / "dag.py").write_text("")
    path = _write_profile(
        tmp_path, {"dag_file": "dag.py", "dag_id": "d", "python": str(tmp_path / "nope/python")}
    )
    with pytest.raises(ConfigurationError, match=r"airflow\.python: not found"):
        load_profile(path).check_command()


# -- the runner's outcome rules (no Airflow needed) -------------------------------------------


class InvalidUpstream(Exception):
    pass


def _spec(*outcomes: str) -> Any:
    runner = _runner()
    args = runner.parse_args(
        ["--dag-file", "d.py", "--dag-id", "d", "--exit-codes", '{"io_error": 99}']
        + [a for o in outcomes for a in ("--outcome", o)]
    )
    return runner, runner.Spec(args)


def test_a_declared_mapping_names_the_permanent_outcome() -> None:
    runner, spec = _spec("^InvalidUpstream:=invalid_upstream")
    assert runner._error_outcome(spec, InvalidUpstream("empty")) == "invalid_upstream"
    assert spec.code("invalid_upstream") == 65
    assert spec.code("io_error") == 99


def test_an_error_message_may_name_its_outcome_and_anything_else_is_internal() -> None:
    runner, spec = _spec()
    assert runner._error_outcome(spec, RuntimeError("upstream_refused: 404")) == "upstream_refused"
    assert runner._error_outcome(spec, RuntimeError("boom")) is None
    assert spec.code(None) == 70  # never a success code


def test_lineage_wanted_follows_the_provider_rule() -> None:
    runner = _runner()
    assert runner.lineage_wanted({"OPENLINEAGE_URL": "http://x"})
    assert not runner.lineage_wanted({})
    assert not runner.lineage_wanted(
        {"OPENLINEAGE_URL": "http://x", "AIRFLOW__OPENLINEAGE__DISABLED": "true"}
    )


# -- DAGs under the harness (need Airflow) ------------------------------------------------------


def _dag_profile(tmp_path: Path, entry: dict[str, Any]) -> Path:
    data = tomllib.loads((AIRFLOW_FIXTURES / "profile.toml").read_text())
    stem = Path(entry["file"]).stem
    data["pipeline"]["name"] = stem.replace("_", "-")
    data["pipeline"]["env"].update(entry.get("env", {}))
    data["airflow"]["dag_file"] = str(AIRFLOW_FIXTURES / entry["file"])
    data["airflow"]["dag_id"] = stem
    if "tasks" in entry:
        data["airflow"]["tasks"] = entry["tasks"]
    path = tmp_path / f"{stem}.toml"
    path.write_text(_toml(data))
    return path


#: Every guarantee. The reference DAG declares no lakeFS, so promotion is "not declared".
EVERY_GUARANTEE = tuple(g.id for g in CATALOGUE_OF_GUARANTEES)
NOT_DECLARED_BY_THE_REFERENCE_DAG = ("promotion",)


def _certify(
    profile: Path, guarantees: list[str], tmp_path: Path, *, isolation: str = "auto"
) -> tuple[int, dict[str, Any], str]:
    """Certify a DAG profile. ``isolation="none"`` lets the warm runner serve the runs (it
    parses the DAG outside any sandbox, so only this project's own DAGs are run that way)."""
    airflow_python()
    report_dir = tmp_path / "report"
    code, out, err = certify(
        "certify",
        "--profile",
        str(profile),
        "--report-dir",
        str(report_dir),
        "--only",
        *guarantees,
        "-j",
        "2",
        "--openlineage-schemas",
        str(openlineage_spec()),
        "--isolation",
        isolation,
        timeout=1800,
    )
    return code, load_report(report_dir), out + err[-3000:]


#: What the contained DAG test runs: a publication, a failure mapped to its declared code, and
#: the check that no process of a run outlives it. Every guarantee is certified through the
#: warm runner below; under namespaces each DAG run is a cold Airflow start (about 7 s of CPU),
#: so the whole of exit-codes (28 runs) cost this test 280 s on two loaded cores.
CONTAINED_DAG_CHECKS = (
    "exit-codes/nothing-of-a-run-goes-on-after-it-exits",
    "exit-codes/an-upstream-that-refuses-connections-is-transient",
)


def test_the_reference_dag_is_certified_contained(tmp_path: Path) -> None:
    """Under namespaces every DAG run is a cold run in its own sandbox, and passes."""
    code, report, output = _certify(REFERENCE_DAG_PROFILE, list(CONTAINED_DAG_CHECKS), tmp_path)
    assert report["isolated"] is True, output
    row = guarantee_row(report, "exit-codes")
    assert sorted(s["check_id"] for s in row["scenarios"]) == sorted(CONTAINED_DAG_CHECKS), output
    assert row["verdict"] == "pass", output
    assert code == 0, output


def test_the_reference_dag_is_certified_on_every_guarantee_through_the_warm_runner(
    tmp_path: Path,
) -> None:
    """Every guarantee, the crash and disk-error campaigns included: a traced run's worker is
    held until strace has attached to it, so injections land where the recording aimed."""
    code, report, output = _certify(
        REFERENCE_DAG_PROFILE, list(EVERY_GUARANTEE), tmp_path, isolation="none"
    )
    verdicts = {g: guarantee_row(report, g)["verdict"] for g in EVERY_GUARANTEE}
    expected = {
        g: "skip" if g in NOT_DECLARED_BY_THE_REFERENCE_DAG else "pass" for g in EVERY_GUARANTEE
    }
    assert verdicts == expected, output
    for guarantee in NOT_DECLARED_BY_THE_REFERENCE_DAG:
        kinds = {s["skip_kind"] for s in guarantee_row(report, guarantee)["scenarios"]}
        assert kinds == {"not-declared"}, kinds
    assert "unisolated" in output, output
    assert code == 0, output
    campaigns = [
        s["evidence"]["crash_campaign"]
        for s in guarantee_row(report, "atomic-publication")["scenarios"]
        if "crash_campaign" in s["evidence"]
    ]
    assert len(campaigns) == 2, output
    for campaign in campaigns:
        # Held workers are attached at one point, so the recording's per-thread counts aim the
        # injections: most land exactly (a call another thread reaches first may not).
        assert campaign["strace_points_landed_as_aimed"] > campaign["strace_points"] // 2
        killed = [p for p in campaign["points"] if p["kind"] == "strace" and p["landed"]]
        # A worker killed by strace ends its run the way a killed command does: by SIGKILL.
        assert {p["exit_code"] for p in killed} == {-9}, sorted({p["exit_code"] for p in killed})


def test_a_traced_warm_run_carries_its_strace_command() -> None:
    client = ["python", "dag_runner.py", "--dag-id", "d", "--client", "kfm-airflow-1"]
    wrapper = ["strace", "--seccomp-bpf", "-f", "-o", "/t/trace", "-e", "trace=write"]
    carried = kfm_airflow.carry_wrapper(client, wrapper)
    assert carried is not None
    assert carried[: len(client)] == client
    assert carried[len(client)] == "--trace-with"
    assert json.loads(carried[len(client) + 1]) == wrapper
    assert kfm_airflow.carry_wrapper(client, []) is None
    assert kfm_airflow.carry_wrapper([*client[:4], "--cold"], wrapper) is None


def test_the_client_attaches_strace_to_the_held_worker_without_kernel_filtering() -> None:
    wrapper = ["/usr/bin/strace", "--seccomp-bpf", "-f", "-o", "/t/trace", "-e", "trace=write"]
    argv = _runner()._attach_argv(wrapper, 4242)
    expected = ["/usr/bin/strace", "-q", "-f", "-o", "/t/trace", "-e", "trace=write"]
    assert argv == [*expected, "-p", "4242"]


@pytest.mark.parametrize("entry", CATALOGUE, ids=[e["file"] for e in CATALOGUE])
def test_a_known_bad_dag_is_refused_on_its_guarantee(entry: dict[str, Any], tmp_path: Path) -> None:
    # Our own known-bad DAGs run through the warm runner (unisolated): a second apiece, not 8 s.
    code, report, output = _certify(
        _dag_profile(tmp_path, entry), [entry["guarantee"]], tmp_path, isolation="none"
    )
    row = guarantee_row(report, entry["guarantee"])
    verdicts = [s["verdict"] for s in row["scenarios"]]
    assert row["verdict"] == "fail", (verdicts, output)
    assert "error" not in verdicts, [s["message"] for s in row["scenarios"]]
    refused = [s for s in row["scenarios"] if s["verdict"] == "fail"]
    for scenario in refused:
        assert scenario["evidence"]["runs"], "a refusal must carry the runs as evidence"
        assert any(not f["ok"] for f in scenario["findings"])
    if "check" in entry:
        broken_checks = {f["check"] for s in refused for f in s["findings"] if not f["ok"]}
        assert entry["check"] in broken_checks, (entry["check"], sorted(broken_checks))
    assert code == 1
