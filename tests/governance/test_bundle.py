"""The evidence bundle: layout, manifest, Ed25519 signature, and a verifier that names any
file that was edited, added or removed (directory and .tar.gz; exit 0 ok, 1 tampered,
2 usage)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from governance_helpers import hostile_report

from kfm_conformance.redact import Redactor
from kfm_conformance.report import bundle, cucumber
from kfm_conformance.report.writers import write_reports


def cli(*args: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "kfm_conformance.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("keys")
    code, out, err = cli("keygen", str(root / "signing"))
    assert code == 0, err
    private, public = root / "signing.pem", root / "signing.pub.pem"
    assert private.stat().st_mode & 0o077 == 0, "the private key is readable by others"
    assert "fingerprint: sha256:" in out
    return private, public


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    write_reports(hostile_report(), root)
    (root / "junit.xml").write_text("<testsuites/>")
    (root / "cucumber.json").write_text("[]")
    (root / "pytest.log").write_text("8 passed\n")
    return root


def make(out: Path, report_dir: Path, key: Path | None = None) -> Path:
    data = json.loads((report_dir / "report.json").read_text())
    profile = report_dir / "profile.toml"
    profile.write_text('[pipeline]\nname = "x"\n')
    return bundle.write_bundle(
        out,
        report_dir,
        data,
        redactor=Redactor([]),
        profile_path=profile,
        sign_key=bundle.load_private_key(key) if key else None,
    )


def test_layout_and_manifest(tmp_path: Path, report_dir: Path) -> None:
    out = make(tmp_path / "bundle", report_dir)
    for name in ("report.json", "report.html", "report.md", "junit.xml", "cucumber.json"):
        assert (out / name).is_file(), name
    assert (out / "logs" / "pytest.log").is_file() and (out / "profile.toml").is_file()
    index = json.loads((out / "evidence" / "index.json").read_text())
    assert len(index) == 3
    failing = next(i for i in index if i["verdict"] == "fail")
    folder = out / failing["dir"]
    for name in ("scenario.json", "http.json", "runs.json", "lineage_events.json"):
        assert (folder / name).is_file(), name
    assert {"spans.json", "crash_points.json", "otlp_traces.json"} <= {
        p.name for p in folder.iterdir()
    }
    assert "evidence" not in json.loads((folder / "scenario.json").read_text())
    listed = {
        line.split("  ", 1)[1]: line.split("  ", 1)[0]
        for line in (out / "MANIFEST").read_text().splitlines()
    }
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert set(listed) == files - {"MANIFEST"}
    for rel, digest in listed.items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest
    # sha256sum can check it without this tool
    if shutil.which("sha256sum"):
        done = subprocess.run(["sha256sum", "--quiet", "-c", "MANIFEST"], cwd=out, check=False)
        assert done.returncode == 0


def test_check_slug_is_a_safe_unique_folder_name() -> None:
    slug = bundle.check_slug("exit-codes/each-answer[status-429-with-retry-after-1,a/b]")
    assert slug == "exit-codes--each-answer-status-429-with-retry-after-1-a--b"
    long = bundle.check_slug("x/" + "a" * 300)
    assert len(long) <= 120
    assert bundle.check_slug("x/" + "a" * 300 + "1") != bundle.check_slug("x/" + "a" * 300 + "2")


def test_signed_directory_verifies_and_every_edit_is_named(
    tmp_path: Path, report_dir: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    out = make(tmp_path / "bundle", report_dir, private)
    assert (out / "MANIFEST.sig").is_file() and (out / "MANIFEST.pub").is_file()
    code, stdout, _ = cli("verify", str(out), "--key", str(public))
    assert code == 0, stdout
    assert "signature good" in stdout

    evidence_file = next((out / "evidence").rglob("http.json"))
    rel = evidence_file.relative_to(out).as_posix()
    edits = {
        "modified": lambda root: (root / rel).write_text("{}"),
        "removed": lambda root: (root / rel).unlink(),
        "added": lambda root: (root / "evidence" / "extra.json").write_text("{}"),
        "manifest": lambda root: (root / "MANIFEST").write_text(
            (root / "MANIFEST").read_text().replace(rel, rel + "x")
        ),
        "manifest-line-dropped": lambda root: (root / "MANIFEST").write_text(
            "".join((root / "MANIFEST").read_text().splitlines(True)[1:])
        ),
        "signature": lambda root: (root / "MANIFEST.sig").write_bytes(b"\0" * 64),
        "signature-removed": lambda root: (root / "MANIFEST.sig").unlink(),
        "html": lambda root: (root / "report.html").write_text("<p>all good</p>"),
    }
    expected_names = {
        "modified": rel,
        "removed": rel,
        "added": "evidence/extra.json",
        "manifest": "MANIFEST",
        "manifest-line-dropped": "MANIFEST",
        "signature": "MANIFEST.sig",
        "signature-removed": "MANIFEST.sig",
        "html": "report.html",
    }
    for name, edit in edits.items():
        copy = tmp_path / f"tampered-{name}"
        shutil.copytree(out, copy)
        edit(copy)
        code, stdout, _ = cli("verify", str(copy), "--key", str(public))
        assert code == 1, (name, stdout)
        assert "TAMPERED" in stdout and expected_names[name] in stdout, (name, stdout)


def test_a_bundle_re_signed_by_someone_else_fails_with_the_real_key(
    tmp_path: Path, report_dir: Path, keys: tuple[Path, Path]
) -> None:
    public = keys[1]
    other = tmp_path / "other"
    assert cli("keygen", str(other))[0] == 0
    forged = make(tmp_path / "forged", report_dir, Path(str(other) + ".pem"))
    assert cli("verify", str(forged))[0] == 0  # self-consistent...
    code, stdout, _ = cli("verify", str(forged), "--key", str(public))
    assert code == 1 and "MANIFEST.sig" in stdout  # ...but not signed by the key we trust


def test_unsigned_bundle_with_a_key_demanded_fails(
    tmp_path: Path, report_dir: Path, keys: tuple[Path, Path]
) -> None:
    out = make(tmp_path / "bundle", report_dir)
    assert cli("verify", str(out))[0] == 0
    code, stdout, _ = cli("verify", str(out), "--key", str(keys[1]))
    assert code == 1 and "not signed" in stdout


def test_tar_gz_bundle_is_reproducible_and_verified(
    tmp_path: Path, report_dir: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    out = make(tmp_path / "evidence.tar.gz", report_dir, private)
    with tarfile.open(out) as tar:
        names = tar.getnames()
        assert all(n == "evidence" or n.startswith("evidence/") for n in names)
        assert "evidence/MANIFEST" in names and "evidence/MANIFEST.sig" in names
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
    assert cli("verify", str(out), "--key", str(public))[0] == 0

    # Rewrite the archive with one byte changed in one evidence file.
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(out) as source, tarfile.open(tampered, "w:gz") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isfile() else None
            if member.name.endswith("report.md"):
                data = data.replace(b"NOT CERTIFIED", b"CERTIFIED") if data else data
                member.size = len(data or b"")
            target.addfile(member, io.BytesIO(data) if data is not None else None)
    code, stdout, _ = cli("verify", str(tampered), "--key", str(public))
    assert code == 1 and "report.md" in stdout


def test_links_in_a_bundle_are_refused(tmp_path: Path, report_dir: Path) -> None:
    out = make(tmp_path / "bundle", report_dir)
    (out / "evidence" / "link.json").symlink_to(out / "report.json")
    code, stdout, _ = cli("verify", str(out))
    assert code == 1 and "link.json" in stdout


def test_verify_usage_errors_exit_2(tmp_path: Path) -> None:
    assert cli("verify", str(tmp_path / "missing"))[0] == 2
    (tmp_path / "file.txt").write_text("x")
    assert cli("verify", str(tmp_path / "file.txt"))[0] == 2
    (tmp_path / "bundle").mkdir()
    (tmp_path / "key.pem").write_text("not a key")
    assert cli("verify", str(tmp_path / "bundle"), "--key", str(tmp_path / "key.pem"))[0] == 2
    # an empty directory is not a usage error: it is a bundle with its MANIFEST gone
    assert cli("verify", str(tmp_path / "bundle"))[0] == 1


def test_keygen_never_overwrites(tmp_path: Path) -> None:
    assert cli("keygen", str(tmp_path / "k"))[0] == 0
    code, _, err = cli("keygen", str(tmp_path / "k.pem"))
    assert code == 2 and "exists" in err


def test_bundle_target_that_is_not_a_bundle_is_refused(tmp_path: Path) -> None:
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("x")
    with pytest.raises(bundle.ConfigurationError):
        bundle.check_target(tmp_path / "precious")


def test_cucumber_comparison_names_dropped_scenarios(tmp_path: Path) -> None:
    results = [
        {"check_id": "a/x", "nodeid": "t.py::test_x", "steps": [{"status": "passed"}]},
        {"check_id": "a/y", "nodeid": "t.py::test_y", "steps": [{"status": "passed"}]},
        {"check_id": "a/z", "nodeid": "t.py::test_z", "steps": []},  # never reached a step
    ]
    path = tmp_path / "cucumber.json"
    path.write_text(json.dumps([{"uri": "a.feature", "elements": [{"id": "test_x"}]}]))
    problems = cucumber.cucumber_problems(path, results)
    assert len(problems) == 1 and "a/y" in problems[0] and "a/z" not in problems[0]
    path.write_text(
        json.dumps([{"uri": "a.feature", "elements": [{"id": "test_x"}, {"id": "test_y"}]}])
    )
    assert cucumber.cucumber_problems(path, results) == []
    assert cucumber.cucumber_problems(tmp_path / "missing.json", results)
