"""Run the real services as local processes on loopback, from cached builds.

``scripts/build-services.sh`` builds Marquez, lakeFS and the OpenTelemetry Collector into
the cache dir (``$KFM_CACHE_DIR`` or ``$HOME/.cache/kfm-conformance``);
:class:`LocalServices` starts them on free loopback ports, waits for their health checks
under a deadline, and stops them again.

Housekeeping:

* Every start gets a fresh temp dir (``kfm-services-*``) for configs, logs, lakeFS data
  and the Collector's output files; ``stop()`` removes it (set ``KFM_KEEP_SERVICE_DIRS=1``
  to keep it for debugging).
* Children run in their own session/process group and, when started from the main
  thread, with ``PR_SET_PDEATHSIG`` so the kernel kills them if this process dies.
* Their pids are recorded in ``<cache>/run/local-<pid>.json``; a later start reaps what a
  crashed session left behind (checking each pid's start time, so a recycled pid is
  never killed).
* Marquez gets a PostgreSQL cluster of its own per start: ``initdb`` under the temp dir
  (as the ``postgres`` user when running as root, since PostgreSQL refuses root), the
  server run as a child like the others (``postgres -D ...``: in the foreground, so it is
  reaped like them), on a free loopback port with its socket in the temp dir, and a
  ``marquez`` role that owns its database (PostgreSQL 15 lets only the owner create tables
  in ``public``). Nothing of it outlives the start: the temp dir holds the data.
* Marquez is one shaded jar built from source (``marquez/<version>/marquez-<version>.jar``),
  run with GraphQL and search off; it is ready when its admin ``/healthcheck`` answers 200
  (which includes its database check) and its API answers. Its first and only boot runs
  Marquez's Flyway migrations against the empty database.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import (
    COLLECTOR_READY_LINE,
    COLLECTOR_VERSION,
    LAKEFS_VERSION,
    MARQUEZ_VERSION,
    SERVICE_NAMES,
    Endpoints,
    LakeFSAccess,
    ServiceError,
    check_wanted,
    collector_config,
    default_cache_dir,
    http_status,
    marquez_config,
    tail_text_file,
)
from .ports import LOOPBACK, free_ports, port_is_open

__all__ = ["BuildPaths", "LocalServices", "missing_builds"]

log = logging.getLogger(__name__)

PG_SUPERUSER = "postgres"
MARQUEZ_DB = "marquez"
MARQUEZ_ROLE = "marquez"
BUILD_HINT = "run `scripts/build-services.sh {service}` first"
_PR_SET_PDEATHSIG = 1
_TMP_PREFIX = "kfm-services-"


# --------------------------------------------------------------------------- builds


@dataclass(frozen=True)
class BuildPaths:
    """Where ``scripts/build-services.sh`` leaves each build inside the cache dir."""

    cache_dir: Path

    @property
    def marquez_jar(self) -> Path:
        return self.cache_dir / "marquez" / MARQUEZ_VERSION / f"marquez-{MARQUEZ_VERSION}.jar"

    @property
    def lakefs_bin(self) -> Path:
        return self.cache_dir / "lakefs" / f"v{LAKEFS_VERSION}" / "bin" / "lakefs"

    @property
    def collector_bin(self) -> Path:
        build = self.cache_dir / "collector" / f"v{COLLECTOR_VERSION}"
        return build / "otelcol-kfm" / "otelcol-kfm"

    @property
    def run_dir(self) -> Path:
        return self.cache_dir / "run"

    def missing(self, wanted: Iterable[str] = SERVICE_NAMES) -> dict[str, str]:
        """Map each wanted service whose build (or runtime) is missing to the reason."""
        out: dict[str, str] = {}
        for service in sorted(check_wanted(wanted)):
            reason = self._missing_one(service)
            if reason:
                out[service] = reason
        return out

    def _missing_one(self, service: str) -> str | None:
        hint = BUILD_HINT.format(service=service)
        if service == "marquez":
            if not self.marquez_jar.is_file():
                return (
                    f"Marquez {MARQUEZ_VERSION} is not built ({self.marquez_jar} missing): {hint}"
                )
            if shutil.which("java") is None:
                return "Marquez needs `java` (17+) on PATH"
            if _postgres_bin_dir() is None:
                return f"Marquez needs the Debian `postgresql` package (initdb, postgres): {hint}"
            if os.geteuid() == 0 and _postgres_account() is None:
                return (
                    "Marquez's PostgreSQL cannot run as root and there is no `postgres` "
                    f"account to run it as: {hint}"
                )
            return None
        if service == "lakefs":
            if not os.access(self.lakefs_bin, os.X_OK):
                return f"lakeFS v{LAKEFS_VERSION} is not built ({self.lakefs_bin} missing): {hint}"
            return None
        if not os.access(self.collector_bin, os.X_OK):
            return (
                f"the OpenTelemetry Collector {COLLECTOR_VERSION} is not built "
                f"({self.collector_bin} missing): {hint}"
            )
        return None


def missing_builds(
    cache_dir: Path | None = None, wanted: Iterable[str] = SERVICE_NAMES
) -> dict[str, str]:
    """Which of ``wanted`` cannot be started locally, and why (empty when all can)."""
    return BuildPaths(cache_dir or default_cache_dir()).missing(wanted)


# --------------------------------------------------------------------------- processes

_libc: Any = None


def _load_libc() -> Any:
    global _libc
    if _libc is None:
        with contextlib.suppress(OSError):
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def _make_preexec(pdeathsig: bool) -> Callable[[], None]:
    """A preexec_fn for the child: die with the parent (Linux), see module docstring.

    subprocess runs it after switching to ``user``/``group``; that order matters, since
    Linux clears the parent-death signal when a process changes its credentials.
    """
    libc = _load_libc() if pdeathsig and sys.platform.startswith("linux") else None
    parent = os.getpid()

    def preexec() -> None:  # runs in the child between fork and exec
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)

    return preexec


def _proc_start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot) from /proc, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so split after its ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _same_process_alive(pid: int, start_ticks: int | None) -> bool:
    ticks = _proc_start_ticks(pid)
    if ticks is None:
        return False
    if _is_zombie(pid):
        return False
    return start_ticks is None or ticks == start_ticks


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :].startswith("Z")


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


@dataclass
class _Child:
    service: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    start_ticks: int | None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


# --------------------------------------------------------------------------- postgres


def _postgres_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<v>/bin`` that has ``initdb`` and ``postgres``."""
    root = Path("/usr/lib/postgresql")
    best: tuple[int, Path] | None = None
    if root.is_dir():
        for child in root.iterdir():
            bin_dir = child / "bin"
            if (
                child.name.isdigit()
                and (bin_dir / "postgres").exists()
                and (bin_dir / "initdb").exists()
            ):
                candidate = (int(child.name), bin_dir)
                if best is None or candidate[0] > best[0]:
                    best = candidate
    return best[1] if best else None


def _postgres_account() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return None


def _run(
    cmd: list[str], *, timeout: float = 60.0, check: bool = True, user: int | None = None
) -> str:
    result = subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        user=user,
        group=_gid_of(user),
        extra_groups=[] if user is not None else None,
    )
    if check and result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        raise RuntimeError(f"{' '.join(cmd)} exited {result.returncode}: {output}")
    return result.stdout


def _gid_of(uid: int | None) -> int | None:
    return None if uid is None else pwd.getpwuid(uid).pw_gid


@dataclass
class _Postgres:
    """Marquez's own PostgreSQL cluster under the start's temp dir (see the module docstring)."""

    bin_dir: Path
    base: Path
    port: int
    run_as: int | None
    """uid the server runs as (``postgres`` when this process is root), None: as ourselves."""

    @property
    def version(self) -> str:
        return self.bin_dir.parent.name

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "socket"

    @classmethod
    def create(cls, workdir: Path) -> _Postgres:
        bin_dir = _postgres_bin_dir()
        if bin_dir is None:
            raise RuntimeError("no PostgreSQL server under /usr/lib/postgresql")
        run_as: int | None = None
        if os.geteuid() == 0:
            account = _postgres_account()
            if account is None:
                raise RuntimeError("PostgreSQL refuses root and there is no `postgres` account")
            run_as = account.pw_uid
        pg = cls(bin_dir=bin_dir, base=workdir / "postgresql", port=free_ports(1)[0], run_as=run_as)
        pg.socket_dir.mkdir(parents=True, mode=0o700)
        if run_as is not None:
            # The server's user must reach its directories inside our private temp dir:
            # its group may traverse the temp dir (not list or read it), no one else.
            gid = _gid_of(run_as) or 0
            os.chown(workdir, -1, gid)
            os.chmod(workdir, 0o710)
            for path in (pg.base, pg.socket_dir):
                os.chown(path, run_as, gid)
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(pg.data_dir),
                "-U",
                PG_SUPERUSER,
                "-E",
                "UTF8",
                "--locale=C",
                # Only the socket (in a directory no one else may enter) is trusted; TCP on
                # loopback needs the role's password.
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "--no-instructions",
            ],
            timeout=120,
            user=run_as,
        )
        return pg

    def argv(self) -> list[str]:
        """The server in the foreground: loopback only, no fsync (a throwaway database)."""
        return [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self.socket_dir),
            "-c",
            f"listen_addresses={LOOPBACK}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]

    def ready(self) -> bool:
        done = subprocess.run(
            [
                str(self.bin_dir / "pg_isready"),
                "-q",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                PG_SUPERUSER,
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )
        return done.returncode == 0

    def psql(self, *statements: str) -> None:
        cmd = [str(self.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        cmd += ["-h", str(self.socket_dir), "-p", str(self.port), "-U", PG_SUPERUSER]
        cmd += ["-d", "postgres"]
        for statement in statements:
            cmd += ["-c", statement]
        _run(cmd, timeout=60)

    def create_marquez_db(self, password: str) -> None:
        """The Marquez role with ``password``, owning its database."""
        quoted = password.replace("'", "''")
        self.psql(
            f"CREATE ROLE {MARQUEZ_ROLE} LOGIN PASSWORD '{quoted}'",
            # On PostgreSQL 15+ only the owner may create tables in `public`.
            f"CREATE DATABASE {MARQUEZ_DB} OWNER {MARQUEZ_ROLE}",
        )


# --------------------------------------------------------------------------- provider


@dataclass
class _Session:
    workdir: Path
    children: dict[str, _Child] = field(default_factory=dict)
    endpoints: Endpoints = field(default_factory=Endpoints)
    pg: _Postgres | None = None


class LocalServices:
    """The ``local`` provider: the real services as child processes on 127.0.0.1.

    ``start_timeout`` bounds the wait for all health checks (seconds). The first Marquez
    start runs its database migrations and is slower than later ones.
    """

    name = "local"

    def __init__(
        self,
        cache_dir: Path | None = None,
        *,
        start_timeout: float = 180.0,
        keep_workdir: bool | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.paths = BuildPaths(self.cache_dir)
        self.start_timeout = start_timeout
        if keep_workdir is None:
            keep_workdir = os.environ.get("KFM_KEEP_SERVICE_DIRS", "") not in ("", "0")
        self.keep_workdir = keep_workdir
        self.timings: dict[str, float] = {}
        self._health_checks: dict[str, Callable[[], bool]] = {}
        self._session: _Session | None = None
        self._lock = threading.Lock()
        self._pidfile = self.paths.run_dir / f"local-{os.getpid()}.json"

    # ------------------------------------------------------------------ protocol

    def start(self, wanted: set[str]) -> Endpoints:
        wanted = check_wanted(wanted)
        with self._lock:
            if self._session is not None:
                raise RuntimeError("LocalServices already started; stop() it first")
            missing = self.paths.missing(wanted)
            if missing:
                service, reason = next(iter(sorted(missing.items())))
                raise ServiceError(reason, service=service)
            t0 = time.monotonic()
            reap_stale_sessions(self.paths.run_dir)
            workdir = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX))
            session = _Session(workdir=workdir)
            self._session = session
            self.timings = {}
            try:
                self._start_all(session, wanted)
            except BaseException:
                self._stop_session(session)
                self._session = None
                raise
            self.timings["total"] = time.monotonic() - t0
            self._write_pidfile(session)
            summary = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())
            log.info("local services up: %s", summary)
            print(f"[kfm-conformance] local services up ({summary})", file=sys.stderr)
            return session.endpoints

    def health(self) -> dict[str, bool]:
        session = self._session
        if session is None:
            return {}
        return {
            service: self._healthy(session, service)
            for service in session.children
            if service in SERVICE_NAMES
        }

    def log_tail(self, service: str, lines: int = 50) -> str:
        session = self._session
        if session is None or service not in session.children:
            return ""
        return tail_text_file(session.children[service].log_path, lines)

    def versions(self) -> dict[str, str]:
        out = {
            "marquez": MARQUEZ_VERSION,
            "lakefs": LAKEFS_VERSION,
            "collector": COLLECTOR_VERSION,
        }
        session = self._session
        if session is not None:
            out = {k: v for k, v in out.items() if k in session.children}
            if session.pg is not None:
                out["postgresql"] = session.pg.version
        return out

    def stop(self) -> None:
        with self._lock:
            session, self._session = self._session, None
            if session is not None:
                self._stop_session(session)

    # ------------------------------------------------------------------ extras

    def pids(self) -> dict[str, int]:
        """Pids of the running children, Marquez's ``postgresql`` included (for tests and
        diagnostics)."""
        session = self._session
        return {} if session is None else {s: c.pid for s, c in session.children.items()}

    @property
    def workdir(self) -> Path | None:
        return None if self._session is None else self._session.workdir

    def __enter__(self) -> LocalServices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ starting

    def _start_all(self, session: _Session, wanted: set[str]) -> None:
        # Launch everything first, then wait: boots overlap. Marquez goes last because
        # its launch blocks on PostgreSQL, which the others need not wait for.
        waiters: dict[str, Callable[[float], None]] = {}
        launched_at: dict[str, float] = {}
        for service in ("lakefs", "collector", "marquez"):
            if service in wanted:
                launched_at[service] = time.monotonic()
                waiters[service] = getattr(self, f"_launch_{service}")(session)
                self._write_pidfile(session)
        deadline = time.monotonic() + self.start_timeout
        for service, wait in waiters.items():
            wait(deadline)
            self.timings[service] = time.monotonic() - launched_at[service]

    def _spawn(
        self,
        session: _Session,
        service: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        user: int | None = None,
    ) -> _Child:
        log_path = session.workdir / f"{service}.log"
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        pdeathsig = threading.current_thread() is threading.main_thread()
        with open(log_path, "ab") as log_file:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=str(cwd or session.workdir),
                env=full_env,
                start_new_session=True,
                preexec_fn=_make_preexec(pdeathsig),
                close_fds=True,
                user=user,
                group=_gid_of(user),
                extra_groups=[] if user is not None else None,
            )
        child = _Child(service, popen, log_path, _proc_start_ticks(popen.pid))
        session.children[service] = child
        return child

    def _wait(
        self,
        child: _Child,
        deadline: float,
        ready: Callable[[], bool],
        what: str,
    ) -> None:
        while True:
            if not child.alive():
                raise ServiceError(
                    f"{child.service} exited with code {child.popen.returncode} while starting "
                    f"(log: {child.log_path})",
                    service=child.service,
                    log_tail=tail_text_file(child.log_path, 60),
                )
            if ready():
                return
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{child.service} not ready within {self.start_timeout:.0f}s "
                    f"(waited for {what}; log: {child.log_path})",
                    service=child.service,
                    log_tail=tail_text_file(child.log_path, 60),
                )
            time.sleep(0.2)

    # marquez ----------------------------------------------------------------

    def _launch_marquez(self, session: _Session) -> Callable[[float], None]:
        t0 = time.monotonic()
        password = secrets.token_urlsafe(18)
        pg_child: _Child | None = None
        try:
            pg = _Postgres.create(session.workdir)
            session.pg = pg
            pg_child = self._spawn(session, "postgresql", pg.argv(), user=pg.run_as, cwd=pg.base)
            self._write_pidfile(session)
            self._wait(pg_child, time.monotonic() + self.start_timeout, pg.ready, "pg_isready")
            pg.create_marquez_db(password)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            raise ServiceError(
                f"PostgreSQL for Marquez failed: {exc}",
                service="marquez",
                log_tail=tail_text_file(pg_child.log_path if pg_child else None, 30),
            ) from exc
        except ServiceError as exc:  # the server exited or never got ready
            raise ServiceError(
                f"PostgreSQL for Marquez: {exc.message}", service="marquez", log_tail=exc.log_tail
            ) from exc
        self.timings["postgresql"] = time.monotonic() - t0
        self._health_checks["postgresql"] = pg.ready

        port, admin_port = free_ports(2)
        cfg = marquez_config(
            port=port,
            admin_port=admin_port,
            db_url=f"jdbc:postgresql://{LOOPBACK}:{pg.port}/{MARQUEZ_DB}",
            db_user=MARQUEZ_ROLE,
            db_password=password,
        )
        cfg_path = session.workdir / "marquez.yml"
        _write_private(cfg_path, json.dumps(cfg, indent=2))
        argv = [
            shutil.which("java") or "java",
            "-Duser.timezone=UTC",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Xss1m",
            "-Xmx1g",
            "-jar",
            str(self.paths.marquez_jar),
            "server",
            str(cfg_path),
        ]
        child = self._spawn(session, "marquez", argv)
        url = f"http://{LOOPBACK}:{port}"
        session.endpoints = _replace(session.endpoints, marquez_url=url)
        admin = f"http://{LOOPBACK}:{admin_port}"

        def healthy() -> bool:
            return http_status(f"{admin}/healthcheck") == 200

        def ready() -> bool:
            return healthy() and http_status(f"{url}/api/v1/namespaces") == 200

        self._health_checks["marquez"] = healthy
        return lambda deadline: self._wait(child, deadline, ready, f"{admin}/healthcheck")

    # lakefs -----------------------------------------------------------------

    def _launch_lakefs(self, session: _Session) -> Callable[[float], None]:
        base = session.workdir / "lakefs"
        for sub in ("db", "blocks", "cache"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        (port,) = free_ports(1)
        access = LakeFSAccess(
            endpoint=f"http://{LOOPBACK}:{port}",
            access_key_id="AKIAKFM" + secrets.token_hex(7).upper(),
            secret_access_key=secrets.token_urlsafe(30),
        )
        config = {
            "listen_address": f"{LOOPBACK}:{port}",
            "logging": {"format": "text", "level": "INFO"},
            "database": {"type": "local", "local": {"path": str(base / "db")}},
            "blockstore": {"type": "local", "local": {"path": str(base / "blocks")}},
            "committed": {"local_cache": {"dir": str(base / "cache")}},
            "stats": {"enabled": False},
            "email_subscription": {"enabled": False},
            "security": {"check_latest_version": False},
        }
        cfg_path = session.workdir / "lakefs.yaml"
        _write_private(cfg_path, json.dumps(config, indent=2))
        env = {
            "LAKEFS_INSTALLATION_USER_NAME": "kfm-admin",
            "LAKEFS_INSTALLATION_ACCESS_KEY_ID": access.access_key_id,
            "LAKEFS_INSTALLATION_SECRET_ACCESS_KEY": access.secret_access_key,
            "LAKEFS_AUTH_ENCRYPT_SECRET_KEY": secrets.token_urlsafe(32),
            "LAKEFS_LISTEN_ADDRESS": f"{LOOPBACK}:{port}",
            "LAKEFS_DATABASE_LOCAL_PATH": str(base / "db"),
            "LAKEFS_BLOCKSTORE_LOCAL_PATH": str(base / "blocks"),
            "LAKEFS_STATS_ENABLED": "false",
        }
        argv = [
            str(self.paths.lakefs_bin),
            "--config",
            str(cfg_path),
            "--local-settings",
            "run",
        ]
        child = self._spawn(session, "lakefs", argv, env=env, cwd=base)
        session.endpoints = _replace(session.endpoints, lakefs=access)

        def ready() -> bool:
            status = http_status(f"{access.endpoint}/_health")
            return status is not None and 200 <= status < 300

        self._health_checks["lakefs"] = ready
        return lambda deadline: self._wait(child, deadline, ready, f"{access.endpoint}/_health")

    # collector --------------------------------------------------------------

    def _launch_collector(self, session: _Session) -> Callable[[float], None]:
        base = session.workdir / "collector"
        base.mkdir(parents=True, exist_ok=True)
        http_port, grpc_port = free_ports(2)
        traces = base / "traces.jsonl"
        metrics = base / "metrics.jsonl"
        cfg = collector_config(
            http_endpoint=f"{LOOPBACK}:{http_port}",
            grpc_endpoint=f"{LOOPBACK}:{grpc_port}",
            traces_path=str(traces),
            metrics_path=str(metrics),
        )
        cfg_path = session.workdir / "collector.yaml"
        _write_private(cfg_path, json.dumps(cfg, indent=2))
        argv = [str(self.paths.collector_bin), f"--config={cfg_path}"]
        child = self._spawn(session, "collector", argv, cwd=base)
        session.endpoints = _replace(
            session.endpoints,
            otlp_http_endpoint=f"http://{LOOPBACK}:{http_port}",
            span_files=(*session.endpoints.span_files, str(traces)),
        )

        def ready() -> bool:
            return COLLECTOR_READY_LINE in tail_text_file(child.log_path, 400)

        self._health_checks["collector"] = lambda: (
            port_is_open(http_port) and port_is_open(grpc_port)
        )
        return lambda deadline: self._wait(child, deadline, ready, repr(COLLECTOR_READY_LINE))

    # ------------------------------------------------------------------ health/stop

    def _healthy(self, session: _Session, service: str) -> bool:
        child = session.children.get(service)
        if child is None or not child.alive():
            return False
        if service == "marquez" and not self._healthy(session, "postgresql"):
            return False
        check = self._health_checks.get(service)
        try:
            return bool(check()) if check else True
        except Exception:  # noqa: BLE001 - a failing probe means unhealthy
            return False

    def _stop_session(self, session: _Session) -> None:
        t0 = time.monotonic()
        # Marquez before its database; PostgreSQL with SIGINT (its "fast" shutdown).
        database = [c for c in session.children.values() if c.service == "postgresql"]
        _terminate([c for c in session.children.values() if c.service != "postgresql"])
        _terminate(database, first=signal.SIGINT)
        session.children.clear()
        self._health_checks.clear()
        with contextlib.suppress(OSError):
            self._pidfile.unlink()
        if not self.keep_workdir:
            shutil.rmtree(session.workdir, ignore_errors=True)
        self.timings["stop"] = time.monotonic() - t0

    def _write_pidfile(self, session: _Session) -> None:
        self.paths.run_dir.mkdir(parents=True, exist_ok=True)
        data = {
            "owner_pid": os.getpid(),
            "owner_start": _proc_start_ticks(os.getpid()),
            "workdir": str(session.workdir),
            "children": [
                {"service": c.service, "pid": c.pid, "start": c.start_ticks}
                for c in session.children.values()
            ],
        }
        tmp = self._pidfile.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self._pidfile)


# --------------------------------------------------------------------------- helpers


def _replace(endpoints: Endpoints, **changes: Any) -> Endpoints:
    from dataclasses import replace

    return replace(endpoints, **changes)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _terminate(
    children: list[_Child], grace: float = 10.0, first: signal.Signals = signal.SIGTERM
) -> None:
    """Signal each child's process group (``first``), then SIGKILL what is left after
    ``grace``."""
    for child in children:
        if child.alive():
            _kill_group(child.pid, first)
    deadline = time.monotonic() + grace
    for child in children:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            child.popen.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            _kill_group(child.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(timeout=5)
        # Anything else left in the group (none of these services fork, but be sure).
        _kill_group(child.pid, signal.SIGKILL)


def _read_pidfiles(run_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    out: list[tuple[Path, dict[str, Any]]] = []
    if not run_dir.is_dir():
        return out
    for path in sorted(run_dir.glob("local-*.json")):
        try:
            out.append((path, json.loads(path.read_text())))
        except (OSError, json.JSONDecodeError):
            with contextlib.suppress(OSError):
                path.unlink()
    return out


def _owner_alive(data: dict[str, Any]) -> bool:
    pid = data.get("owner_pid")
    return isinstance(pid, int) and _same_process_alive(pid, data.get("owner_start"))


def reap_stale_sessions(run_dir: Path) -> list[int]:
    """Kill children left by sessions whose owner process is gone; return their pids.

    A child is killed only if its pid still belongs to the same process (same start
    time); its whole process group goes (PostgreSQL's backends with their server). The
    dead session's temp dir (configs, logs, the PostgreSQL data) is removed.
    """
    killed: list[int] = []
    for path, data in _read_pidfiles(run_dir):
        if _owner_alive(data):
            continue
        for child in data.get("children", []):
            pid, ticks = child.get("pid"), child.get("start")
            if isinstance(pid, int) and _same_process_alive(pid, ticks):
                _kill_group(pid, signal.SIGKILL)
                killed.append(pid)
        workdir = data.get("workdir")
        if isinstance(workdir, str) and Path(workdir).name.startswith(_TMP_PREFIX):
            shutil.rmtree(workdir, ignore_errors=True)
        with contextlib.suppress(OSError):
            path.unlink()
    if killed:
        log.warning("reaped %d process(es) left by a crashed session: %s", len(killed), killed)
    return killed
