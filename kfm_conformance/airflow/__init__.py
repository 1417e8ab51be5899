"""Airflow 3 DAGs as pipelines: the ``[airflow]`` profile table and the harness's DAG runner.

A profile with an ``[airflow]`` table describes a DAG instead of a command::

    [airflow]
    dag_file = "dags/ingest.py"        # relative to the profile's directory
    dag_id = "kfm_ingest"
    python = "{cache_dir}/airflow-venv/bin/python"   # optional; default: the harness's own
    tasks = ["ingest"]                 # optional: whose outcome counts (default: every task)
    outcome_xcom = "kfm_outcome"       # optional: XCom key that says published / not_modified
    warm = true                        # optional: use the warm runner when one is running

    [airflow.outcomes]                 # optional: which failure is which permanent outcome
    "EmptyPayload" = "invalid_upstream"     # regular expression on "ExceptionClass: message"

Every pipeline run is one DAG run through :mod:`kfm_conformance.airflow.dag_runner`, a
standalone script that the Airflow environment's interpreter runs (that environment does not
have kfm-conformance installed); its exit code is the profile's code for the outcome Airflow's
states give (see the runner's docstring and the README's "Certify an Airflow DAG").

:func:`airflow_argv` builds the runner's command (``Profile.argv`` delegates to it);
:func:`prepare_airflow` migrates the metadata DB template once per Airflow version (cached in
the cache dir) and returns the environment the runs need; :class:`WarmRunner` is the warm
runner's server, one per session.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from kfm_conformance.verdict import ConfigurationError

if TYPE_CHECKING:
    from kfm_conformance.profile import Profile

#: Variable naming the Airflow interpreter; wins over the profile's ``python``.
PYTHON_ENV = "KFM_AIRFLOW_PYTHON"
#: Variable through which the runs find the metadata DB template.
TEMPLATE_ENV = "KFM_AIRFLOW_DB_TEMPLATE"
#: Variable through which the runs find the session's warm runner.
WARM_ENV = "KFM_AIRFLOW_WARM_RUNNER"

_templates: dict[str, Path] = {}


def cache_dir() -> Path:
    """``$KFM_CACHE_DIR``, else ``$HOME/.cache/kfm-conformance`` (as the setup scripts)."""
    env = os.environ.get("KFM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kfm-conformance"


def runner_script() -> Path:
    """The DAG runner script shipped in this package."""
    return Path(str(resources.files("kfm_conformance.airflow").joinpath("dag_runner.py")))


@dataclass(frozen=True)
class AirflowSpec:
    """The ``[airflow]`` table of a profile, resolved."""

    profile_path: Path
    dag_file: Path
    dag_id: str
    python: str
    tasks: tuple[str, ...] = ()
    outcomes: dict[str, str] = field(default_factory=dict)
    outcome_xcom: str = "kfm_outcome"
    warm: bool = True

    @classmethod
    def of(cls, profile: Profile) -> AirflowSpec | None:
        """The profile's DAG, or None when it describes a command."""
        table = profile.raw.get("airflow")
        if not isinstance(table, dict):
            return None
        base = profile.profile_dir
        dag_file = Path(str(table["dag_file"])).expanduser()
        if not dag_file.is_absolute():
            dag_file = base / dag_file
        python = os.environ.get(PYTHON_ENV) or str(table.get("python") or sys.executable)
        python = os.path.expanduser(
            python.replace("{cache_dir}", str(cache_dir())).replace("{profile_dir}", str(base))
        )
        return cls(
            profile_path=profile.path,
            dag_file=dag_file,
            dag_id=str(table["dag_id"]),
            python=python,
            tasks=tuple(table.get("tasks", ())),
            outcomes=dict(table.get("outcomes", {})),
            outcome_xcom=str(table.get("outcome_xcom", "kfm_outcome")),
            warm=bool(table.get("warm", True)),
        )

    def check(self) -> None:
        """One line, exit 2, when the interpreter or the DAG file is missing."""
        if not self.dag_file.is_file():
            raise ConfigurationError(
                f"{self.profile_path}: airflow.dag_file: not found: {self.dag_file}"
            )
        if "/" in self.python and not Path(self.python).exists():
            raise ConfigurationError(
                f"{self.profile_path}: airflow.python: not found: {self.python} "
                "(scripts/setup-airflow.sh installs Airflow there, or set KFM_AIRFLOW_PYTHON)"
            )

    def runner_args(self, exit_codes: dict[str, int]) -> list[str]:
        """The DAG runner's options (everything but the interpreter and the script)."""
        args = ["--dag-file", str(self.dag_file), "--dag-id", self.dag_id]
        for task in self.tasks:
            args += ["--task", task]
        for pattern, outcome in self.outcomes.items():
            args += ["--outcome", f"{pattern}={outcome}"]
        if self.outcome_xcom != "kfm_outcome":
            args += ["--outcome-xcom", self.outcome_xcom]
        args += ["--exit-codes", json.dumps(exit_codes, separators=(",", ":"), sort_keys=True)]
        return args


#: Whether the warm runner may be used. The warm server parses the DAG file (runs its
#: top-level code) and forks the DAG runs outside any sandbox, so under namespaces isolation
#: the plugin turns it off: each DAG run is then a cold run, contained like any pipeline run.
WARM_ALLOWED = True


def airflow_argv(profile: Profile, *, src: str, workdir: Path) -> list[str] | None:
    """The command of one pipeline run of the profile's DAG, or None for a plain command.

    ``src`` and ``workdir`` reach the run as ``SRC`` and its cwd (the sandbox sets both).
    """
    spec = AirflowSpec.of(profile)
    if spec is None:
        return None
    spec.check()
    argv = [spec.python, str(runner_script()), *spec.runner_args(profile.exit_codes.as_dict())]
    argv += ["--db-template", str(db_template(spec.python))]
    if not spec.warm or not WARM_ALLOWED:
        return [*argv, "--cold"]
    if workdir != profile.profile_dir:  # a run (check_command asks with the profile's dir)
        server = WarmRunner.for_profile(profile, spec, argv)
        argv += ["--client", server.address]
    return argv


def carry_wrapper(argv: list[str], wrapper: list[str]) -> list[str] | None:
    """A warm run's command when a wrapper (strace) should trace it, or None for any other run.

    strace in front of a warm client would trace the client, not the DAG run, which happens in
    a worker the warm runner forks. So the client carries the strace command instead
    (``--trace-with``) and attaches it to its worker, held at a fixed point until strace is
    there (see the runner's docstring); recordings and injections thus count the same calls.
    """
    if not wrapper or "--client" not in argv:
        return None
    return [*argv, "--trace-with", json.dumps(wrapper, separators=(",", ":"))]


def airflow_version(python: str) -> str:
    """The apache-airflow-core version installed for ``python``."""
    try:
        done = subprocess.run(
            [
                python,
                "-c",
                "from importlib.metadata import version; print(version('apache-airflow-core'))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigurationError(f"airflow.python: cannot run {python}: {exc}") from None
    if done.returncode != 0 or not done.stdout.strip():
        raise ConfigurationError(f"airflow.python: Airflow is not installed for {python}")
    return done.stdout.strip()


def db_template(python: str) -> Path:
    """The migrated metadata DB for this interpreter's Airflow, made once and cached."""
    if python in _templates:
        return _templates[python]
    version = airflow_version(python)
    folder = cache_dir() / "airflow-db" / version
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir()) / f"kfm-airflow-db-{os.getuid()}" / version
        folder.mkdir(parents=True, exist_ok=True)
    target = folder / "airflow.db"
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_file():
            env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
            done = subprocess.run(
                [python, str(runner_script()), "--make-db-template", str(target)],
                capture_output=True,
                text=True,
                env=env,
                timeout=600,
                check=False,
            )
            if done.returncode != 0 or not target.is_file():
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                raise ConfigurationError(
                    f"airflow: migrating the metadata DB template failed: {tail[0]}"
                )
    _templates[python] = target
    return target


class WarmRunner:
    """The session's warm DAG runner: ``dag_runner.py --serve`` (see its docstring).

    Started in the background on the first run of a profile in this process; until it is
    ready, runs take the cold path (the client finds nobody listening). Stopped at exit, and
    it stops by itself when this process is gone.
    """

    _running: ClassVar[dict[str, WarmRunner]] = {}

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.address = f"kfm-airflow-{os.getpid()}-{secrets.token_hex(8)}"
        # The server's own temp dir (its AIRFLOW_HOME goes there), removed when it is stopped:
        # a server is killed, so it cannot remove what it made itself.
        self.tmp = tempfile.mkdtemp(prefix="kfm-airflow-server-")
        self.process = subprocess.Popen(
            [*argv, "--serve", self.address],
            env={**env, "TMPDIR": self.tmp},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        atexit.register(self.stop)

    @classmethod
    def for_profile(cls, profile: Profile, spec: AirflowSpec, argv: list[str]) -> WarmRunner:
        key = json.dumps([str(profile.path), profile.digest, argv])
        server = cls._running.get(key)
        if server is None or server.process.poll() is not None:
            from kfm_conformance.sandbox import PASSTHROUGH_ENV

            # The runs' own scrubbed environment, never the harness's (its secrets).
            env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
            env.update(profile.env)
            server = cls(argv, env)
            cls._running[key] = server
        return server

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def prepare_airflow(profile: Profile) -> dict[str, str]:
    """Once per session, before the first run: the DB template, and the env the runs need.

    Migrates (or finds cached) the metadata DB template. Returns ``{}`` for a profile without
    ``[airflow]``. The warm runner starts by itself on the first run.
    """
    spec = AirflowSpec.of(profile)
    if spec is None:
        return {}
    spec.check()
    return {TEMPLATE_ENV: str(db_template(spec.python))}


def describe(profile: Profile) -> dict[str, Any] | None:
    """What a report says about the DAG under test."""
    spec = AirflowSpec.of(profile)
    if spec is None:
        return None
    return {"dag_file": str(spec.dag_file), "dag_id": spec.dag_id, "tasks": list(spec.tasks)}
