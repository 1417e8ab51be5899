"""End to end: a pipeline that leaks its secrets (stdout, stderr, request headers) is
certified with ``--bundle`` and ``--sign-key``; no report or bundle file holds a secret, the
bundle verifies, its cucumber JSON lost no scenario under xdist, and every report carries the
provenance.

The secrets: a declared ``secret_env`` value, a known credential variable, a sensitive-named
``[pipeline.env]`` variable that is not declared, and the harness's own ``GITHUB_TOKEN`` and
``KFM_API_TOKEN``, which the pipeline hunts for in its ancestors' ``/proc/PID/environ``. It
prints each in every form (literal, JSON, URL-encoded, base64 at each offset, HTTP Basic), and
every file under the report directory and the bundle is searched for every form.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import tomli_w

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"

CANARY = "kfm-canary-5f3a9c1e7b2d"  # declared secret (pipeline.secret_env)
CREDENTIAL = "lakefs-canary-0d9e8f7a6b"  # a known credential variable, not declared
PROFILE_PASSWORD = 'pw/"canary"+&=?9c1e'  # [pipeline.env] UPSTREAM_PASSWORD: sensitive name
GITHUB_TOKEN = "ghp_" + "Kf9canary0GitHub1Token2Value3xyzABCD"  # the harness's environment
KFM_API_TOKEN = "kfm-api-canary-77e1c0ffee"  # the harness's environment
SECRETS = {
    "declared": CANARY,
    "credential": CREDENTIAL,
    "profile-password": PROFILE_PASSWORD,
    "github-token": GITHUB_TOKEN,
    "kfm-api-token": KFM_API_TOKEN,
}

LEAKY = f'''"""The fixture pipeline, but it prints its secrets in every encoding, sends them as
headers, and hunts for the harness's tokens in its ancestors' environments."""
import base64
import json
import os
import sys
from urllib.parse import quote, quote_plus

sys.path.insert(0, {str(FIXTURES)!r})
from kfm_fixture import Pipeline

WANTED = ("GITHUB_TOKEN", "KFM_API_TOKEN")


def ancestors_secrets():
    """What a hostile pipeline can read of the harness: /proc/PID/environ up the tree."""
    found, pid = {{}}, os.getppid()
    while pid > 1:
        try:
            with open(f"/proc/{{pid}}/environ", "rb") as handle:
                for item in handle.read().split(b"\\0"):
                    name, _, value = item.decode(errors="replace").partition("=")
                    if name in WANTED:
                        found[name] = value
            with open(f"/proc/{{pid}}/stat") as handle:
                pid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return found


def every_form(label, secret):
    raw = secret.encode()
    yield f"{{label}} literal={{secret}}"
    yield f"{{label}} json={{json.dumps({{'v': secret}})}}"
    yield f"{{label}} quote={{quote(secret, safe='')}} plus={{quote_plus(secret)}}"
    for offset in range(3):
        blob = b"<" * offset + raw + b">tail"
        yield f"{{label}} b64={{base64.b64encode(blob).decode()}}"
        yield f"{{label}} b64url={{base64.urlsafe_b64encode(blob).decode()}}"
    yield f"{{label}} basic=Basic {{base64.b64encode(b'user:' + raw).decode()}}"


class Leaky(Pipeline):
    def fetch(self, url, headers):
        secret = os.environ["KFM_CANARY"]
        print(f"token={{secret}}")
        print(f"lakefs={{os.environ['LAKEFS_SECRET_ACCESS_KEY']}}", file=sys.stderr)
        stolen = ancestors_secrets()
        print("found in ancestors: " + ",".join(sorted(stolen)))
        leaks = {{"password": os.environ["UPSTREAM_PASSWORD"], **stolen}}
        for label, value in leaks.items():
            for line in every_form(label, value):
                print(line)
                print(line, file=sys.stderr)
        headers = {{**headers, "X-Canary": secret, "Authorization": f"Bearer {{secret}}"}}
        for name, value in stolen.items():
            headers[f"X-Stolen-{{name}}"] = value
        return super().fetch(url, headers)


if __name__ == "__main__":
    Leaky().main()
'''


def cli(*args: str, timeout: float = 600) -> tuple[int, str, str]:
    """The real CLI, with the harness's environment holding tokens a pipeline must not leak."""
    env = {**os.environ, "GITHUB_TOKEN": GITHUB_TOKEN, "KFM_API_TOKEN": KFM_API_TOKEN}
    done = subprocess.run(
        [sys.executable, "-m", "kfm_conformance.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    return done.returncode, done.stdout, done.stderr


def _stable_base64(secret: bytes) -> list[str]:
    """For each offset of ``secret`` in a larger string, the base64 characters that do not
    depend on its neighbours: those that agree between all-zero and all-one neighbours."""
    runs = []
    for offset in range(3):
        low = base64.b64encode(b"\0" * offset + secret + b"\0\0\0").decode()
        high = base64.b64encode(b"\xff" * offset + secret + b"\xff\xff\xff").decode()
        same = "".join(a if a == b else "\n" for a, b in zip(low, high, strict=True))
        runs += [run for run in same.split("\n") if len(run) >= 8]
    return runs + [r.replace("+", "-").replace("/", "_") for r in runs]


def forms(secret: str) -> list[str]:
    """Every form of ``secret`` that must not be in any file the harness writes."""
    found = {
        secret,
        json.dumps(secret)[1:-1],
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        *_stable_base64(secret.encode()),
    }
    return sorted(found)


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
                "UPSTREAM_PASSWORD": PROFILE_PASSWORD,
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
    """grep every file the harness wrote for every form of every secret."""
    root: Path = run["root"]
    checked = 0
    leaks = []
    for directory in (root / "report", root / "bundle"):
        for path in _all_files(directory):
            data = path.read_bytes()
            for label, secret in SECRETS.items():
                for form in forms(secret):
                    if form.encode() in data:
                        leaks.append(f"{path.relative_to(root)}: {label} as {form!r}")
            checked += 1
    assert not leaks, leaks[:20]
    assert checked > 20
    assert (root / "bundle" / "profile.toml").is_file()
    for secret in SECRETS.values():
        assert secret not in run["out"] + run["err"]


def test_the_leaks_were_there_and_masked(run: dict[str, Any]) -> None:
    """The canary really went through stdout, stderr and headers: it is masked, not absent."""
    report = json.loads((run["root"] / "report" / "report.json").read_text())
    scenarios = [s for g in report["guarantees"] for s in g["scenarios"]]
    runs = [r for s in scenarios for r in s["evidence"].get("runs", [])]
    assert any("token=***" in r["stdout_tail"] for r in runs)
    assert any("lakefs=***" in r["stderr_tail"] for r in runs)
    leaked = [r["stdout_tail"] for r in runs if "password literal=" in r["stdout_tail"]]
    assert leaked, "the pipeline printed nothing"
    for line in leaked[0].splitlines():
        if line.startswith("password "):
            assert "***" in line, line
    found = [line for line in leaked[0].splitlines() if line.startswith("found in ancestors")]
    for name in ("GITHUB_TOKEN", "KFM_API_TOKEN"):
        if found and name in found[0]:  # reachable without isolation: then it must be masked
            lines = [x for x in leaked[0].splitlines() if x.startswith(f"{name} ")]
            assert lines and all("***" in x for x in lines), lines
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
