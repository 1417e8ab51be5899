"""Installed like any package: a wheel built from this tree, installed into a fresh virtual
environment, certifies the reference pipeline.

This is what catches package data left out of the wheel (it once lacked
``kfm_conformance/suite/pytest.ini``, so every installed certification failed with "the test
run exited 4"). The virtual environment sees the machine's site-packages for the dependencies
(``--system-site-packages``: no network needed to install), but the wheel's own
``kfm_conformance`` must be the one imported: the test proves it is, from a working directory
outside the source tree, with no ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, (argv, done.stdout[-3000:], done.stderr[-3000:])
    return done.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding the wheel built from this tree."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    # Build from a copy, so the build leaves no build/ or egg-info in the tree.
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(
        REPO / "kfm_conformance",
        source / "kfm_conformance",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    dist = root / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)],
        cwd=root,
        env=env,
    )
    wheels = sorted(dist.glob("kfm_conformance-*.whl"))
    assert len(wheels) == 1, wheels
    target = root / "venv"
    _run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(target)],
        cwd=root,
        env=env,
    )
    python = target / "bin" / "python"
    # --ignore-installed: never touch the machine's own (editable) install of the harness.
    _run(
        [
            sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
            "--no-deps", "--no-index", "--ignore-installed", str(wheels[0]),
        ],
        cwd=root,
        env=env,
    )  # fmt: skip
    return target


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def test_the_wheel_carries_the_suites_data_files(venv: Path, tmp_path: Path) -> None:
    code = (
        "import kfm_conformance, pathlib; root = pathlib.Path(kfm_conformance.__file__).parent; "
        "print(root); "
        "print(*sorted(p.relative_to(root).as_posix() for p in root.rglob('*') "
        "if p.is_file() and p.suffix != '.py' and '__pycache__' not in p.parts), sep='\\n')"
    )
    lines = _run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path, env=_clean_env())
    installed_root, *files = lines.splitlines()
    assert Path(installed_root).is_relative_to(venv), installed_root
    assert not Path(installed_root).is_relative_to(REPO)
    expected = sorted(
        p.relative_to(REPO / "kfm_conformance").as_posix()
        for p in (REPO / "kfm_conformance").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    )
    assert "suite/pytest.ini" in expected
    assert files == expected


def test_the_installed_harness_certifies_the_reference(venv: Path, tmp_path: Path) -> None:
    report_dir = tmp_path / "report"
    done = subprocess.run(
        [
            str(venv / "bin" / "kfm-conformance"), "certify",
            "--profile", str(REPO / "reference" / "profile.toml"),
            "--only", "deterministic-output",
            "--report-dir", str(report_dir),
        ],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout, done.stderr[-3000:])
    assert "CERTIFIED" in done.stdout and "NOT CERTIFIED" not in done.stdout
    assert (report_dir / "report.json").is_file()
