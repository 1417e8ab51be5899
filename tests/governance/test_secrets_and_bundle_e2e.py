"""End to end: a pipeline that leaks its secrets (stdout, stderr, request headers) is
certified with ``--bundle`` and ``--sign-key``; no report or bundle file holds a secret, the
bundle verifies, its cucumber JSON lost no scenario under xdist, and every report carries the
provenance."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import tomli_w

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"

CANARY = "kfm-canary-5f3a9c1e7b2d"  # declared secret (pipeline.secret_env)
CREDENTIAL = "lakefs-canary-0d9e8f7a6b"  # a known credential variable, not declared

LEAKY = f'''"""The fixture pipeline, but it prints its secrets and sends them as headers."""
import os
import sys

sys.path.insert(0, {str(FIXTURES)!r})
from kfm_fixture import Pipeline


class Leaky(Pipeline):
    def fetch(self, url, headers):
        secret = os.environ["KFM_CANARY"]
        print(f"token={{secret}}")
        print(f"lakefs={{os.environ['LAKEFS_SECRET_ACCESS_KEY']}}", file=sys.stderr)
        headers = {{**headers, "X-Canary": secret, "Authorization": f"Bearer {{secret}}"}}
        return super().fetch(url, headers)


if __name__ == "__main__":
    Leaky().main()
'''


def cli(*args: str, timeout: float = 600) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "kfm_conformance.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("leaky")
    (root / "leaky.py").write_text(LEAKY)
    profile = {
        "pipeline": {
            "name": "leaky",
            "command": ["{python}", "{profile_dir}/leaky.py", "{src}"],
            "output": "out/data.parquet",
            "timeout_s": 60,
            "state": [".state"],
            "secret_env": ["KFM_CANARY"],
            "env": {
                "KFM_CANARY": CANARY,
                "LAKEFS_SECRET_ACCESS_KEY": CREDENTIAL,
                "KFM_FETCH_TIMEOUT_S": "2",
            },
        },
        "limits": {"fetch_timeout_s": 2},
    }
    (root / "profile.toml").write_text(tomli_w.dumps(profile))
    assert cli("keygen", str(root / "signing"))[0] == 0
    code, out, err = cli(
        "certify",
        "--profile", str(root / "profile.toml"),
        "--only", "empty-rejection",
        "-j", "2",
        "--seed", "1234",
        "--report-dir", str(root / "report"),
        "--bundle", str(root / "bundle"),
        "--sign-key", str(root / "signing.pem"),
    )  # fmt: skip
    return {"root": root, "code": code, "out": out, "err": err}


def _all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_the_run_is_certified_and_bundled(run: dict[str, Any]) -> None:
    assert run["code"] == 0, (run["out"], run["err"][-3000:])
    assert "CERTIFIED (core)" in run["out"]
    assert "bundle:" in run["out"] and "signed by sha256:" in run["out"]


def test_no_secret_in_any_report_or_bundle_file(run: dict[str, Any]) -> None:
    root: Path = run["root"]
    checked = 0
    for directory in (root / "report", root / "bundle"):
        for path in _all_files(directory):
            data = path.read_bytes()
            assert CANARY.encode() not in data, path
            assert CREDENTIAL.encode() not in data, path
            checked += 1
    assert checked > 20
    assert CANARY not in run["out"] + run["err"]


def test_the_leaks_were_there_and_masked(run: dict[str, Any]) -> None:
    """The canary really went through stdout, stderr and headers: it is masked, not absent."""
    report = json.loads((run["root"] / "report" / "report.json").read_text())
    scenarios = [s for g in report["guarantees"] for s in g["scenarios"]]
    runs = [r for s in scenarios for r in s["evidence"].get("runs", [])]
    assert any("token=***" in r["stdout_tail"] for r in runs)
    assert any("lakefs=***" in r["stderr_tail"] for r in runs)
    headers = [x["headers"] for s in scenarios for x in s["evidence"].get("http", [])]
    assert any(h.get("x-canary") == "***" for h in headers), headers[:2]
    assert any(h.get("authorization") == "Bearer ***" for h in headers)


def test_the_bundle_verifies_with_the_signing_key(run: dict[str, Any]) -> None:
    root: Path = run["root"]
    code, out, _ = cli("verify", str(root / "bundle"), "--key", str(root / "signing.pub.pem"))
    assert code == 0, out


def test_cucumber_json_kept_every_scenario_under_xdist(run: dict[str, Any]) -> None:
    root: Path = run["root"]
    report = json.loads((root / "bundle" / "report.json").read_text())
    cucumber = json.loads((root / "bundle" / "cucumber.json").read_text())
    elements = [e for feature in cucumber for e in feature["elements"]]
    scenarios = [s for g in report["guarantees"] for s in g["scenarios"]]
    assert len(elements) == len(scenarios) > 0
    assert report["problems"] == []


def test_every_report_carries_the_provenance(run: dict[str, Any]) -> None:
    root: Path = run["root"]
    report = json.loads((root / "report" / "report.json").read_text())
    prov = report["provenance"]
    for key in (
        "harness_version", "git_commit", "inventory_sha256", "pipeline_command",
        "profile_sha256", "python", "platform", "os", "started_at", "ended_at", "services",
        "seed", "replay", "run_id", "tools",
    ):  # fmt: skip
        assert prov.get(key) not in (None, ""), key
    assert prov["seed"] == 1234 and prov["seed_source"] == "given"
    assert "--seed 1234" in prov["replay"]
    assert prov["services"]["versions"]["scripted-origin"].startswith("pytest-httpserver")
    markdown = (root / "report" / "report.md").read_text()
    html = (root / "report" / "report.html").read_text()
    for text in (markdown, html):
        assert prov["inventory_sha256"] in text
        assert prov["run_id"] in text
        assert "1234" in text


def test_tar_gz_bundle(run: dict[str, Any], tmp_path: Path) -> None:
    """A second, quick run straight into a .tar.gz (one guarantee's first scenarios)."""
    root: Path = run["root"]
    out = tmp_path / "evidence.tgz"
    code, stdout, err = cli(
        "certify",
        "--profile", str(root / "profile.toml"),
        "--only", "empty-rejection",
        "-j", "2",
        "--report-dir", str(tmp_path / "report"),
        "--bundle", str(out),
    )  # fmt: skip
    assert code == 0, (stdout, err[-2000:])
    with tarfile.open(out) as tar:
        for member in tar.getmembers():
            if member.isfile():
                data = tar.extractfile(member).read()
                assert CANARY.encode() not in data and CREDENTIAL.encode() not in data
    assert cli("verify", str(out))[0] == 0
