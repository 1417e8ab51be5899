"""Run the real services as containers with testcontainers (for CI that has Docker).

The configuration (images, commands, environment, ports, mounts, wait strategies) is
built by pure functions into :class:`ContainerSpec` values, so it can be checked without
a Docker engine; :class:`ContainerServices` only turns specs into running containers.
testcontainers (4.x) is imported lazily, when a container is actually started.

Layout: Marquez with ``postgres:14`` on one private network; lakeFS in quickstart mode
(fixed quickstart credentials, port 8000, ready when ``/_health`` answers); the contrib
Collector with a mounted config and a writable output dir whose files the harness reads,
ready when its log says "Everything is ready".
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from .base import (
    COLLECTOR_READY_LINE,
    COLLECTOR_VERSION,
    LAKEFS_VERSION,
    MARQUEZ_VERSION,
    Endpoints,
    LakeFSAccess,
    ServiceError,
    check_wanted,
    collector_config,
    http_status,
    marquez_config,
)
from .ports import port_is_open

__all__ = [
    "COLLECTOR_IMAGE",
    "LAKEFS_IMAGE",
    "LAKEFS_QUICKSTART_ACCESS",
    "MARQUEZ_IMAGE",
    "POSTGRES_IMAGE",
    "ContainerServices",
    "ContainerSpec",
    "Mount",
    "WaitSpec",
    "collector_spec",
    "container_plan",
    "docker_available",
    "lakefs_spec",
    "marquez_specs",
    "prepare_workdir",
]

MARQUEZ_IMAGE = f"marquezproject/marquez:{MARQUEZ_VERSION}"
POSTGRES_IMAGE = "postgres:14"
LAKEFS_IMAGE = f"treeverse/lakefs:{LAKEFS_VERSION}"
COLLECTOR_IMAGE = f"otel/opentelemetry-collector-contrib:{COLLECTOR_VERSION}"

MARQUEZ_PORT = 5000
MARQUEZ_ADMIN_PORT = 5001
POSTGRES_PORT = 5432
MARQUEZ_DB_ALIAS = "marquez-db"
LAKEFS_PORT = 8000
OTLP_HTTP_PORT = 4318
OTLP_GRPC_PORT = 4317

# Paths inside the containers.
MARQUEZ_CONFIG_PATH = "/opt/kfm/marquez.yml"
COLLECTOR_CONFIG_PATH = "/etc/kfm/collector.yaml"
COLLECTOR_OUT_DIR = "/kfm-out"

# Files under the per-start host workdir.
MARQUEZ_CONFIG_FILE = "marquez.yml"
COLLECTOR_CONFIG_FILE = "collector.yaml"
COLLECTOR_OUT_SUBDIR = "collector-out"
TRACES_FILE = "traces.jsonl"
METRICS_FILE = "metrics.jsonl"

#: lakeFS quickstart mode only accepts its fixed, documented credentials.
LAKEFS_QUICKSTART_ACCESS = ("AKIAIOSFOLQUICKSTART", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")

POSTGRES_READY_LINE = "database system is ready to accept connections"


@dataclass(frozen=True)
class WaitSpec:
    """When a container counts as started.

    ``kind="http"``: GET ``path`` on the host port mapped to container ``port`` until the
    status is in ``status_codes``. ``kind="log"``: until ``log_line`` has appeared
    ``occurrences`` times in the container's output.
    """

    kind: Literal["http", "log"]
    port: int | None = None
    path: str = "/"
    status_codes: tuple[int, ...] = (200,)
    log_line: str | None = None
    occurrences: int = 1
    timeout_s: float = 180.0


@dataclass(frozen=True)
class Mount:
    """A bind mount of a host path into the container."""

    host_path: str
    container_path: str
    mode: Literal["ro", "rw"] = "ro"


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to start one container, independent of testcontainers."""

    service: str
    """``marquez`` | ``marquez-db`` | ``lakefs`` | ``collector``."""
    image: str
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[int, ...] = ()
    wait: WaitSpec | None = None
    mounts: tuple[Mount, ...] = ()
    network_aliases: tuple[str, ...] = ()
    needs_network: bool = False
    user: str | None = None


# --------------------------------------------------------------------------- specs


def marquez_specs(workdir: Path, *, db_password: str) -> tuple[ContainerSpec, ContainerSpec]:
    """PostgreSQL 14 and Marquez, on one network (the database as ``marquez-db``)."""
    db = ContainerSpec(
        service="marquez-db",
        image=POSTGRES_IMAGE,
        env={
            "POSTGRES_USER": "marquez",
            "POSTGRES_PASSWORD": db_password,
            "POSTGRES_DB": "marquez",
        },
        ports=(POSTGRES_PORT,),
        # The image logs the line once for its init server and once for the real one.
        wait=WaitSpec(kind="log", log_line=POSTGRES_READY_LINE, occurrences=2, timeout_s=120),
        network_aliases=(MARQUEZ_DB_ALIAS,),
        needs_network=True,
    )
    marquez = ContainerSpec(
        service="marquez",
        image=MARQUEZ_IMAGE,
        env={
            "MARQUEZ_CONFIG": MARQUEZ_CONFIG_PATH,
            "MARQUEZ_PORT": str(MARQUEZ_PORT),
            "MARQUEZ_ADMIN_PORT": str(MARQUEZ_ADMIN_PORT),
            "POSTGRES_HOST": MARQUEZ_DB_ALIAS,
            "POSTGRES_PORT": str(POSTGRES_PORT),
            "POSTGRES_DB": "marquez",
            "POSTGRES_USER": "marquez",
            "POSTGRES_PASSWORD": db_password,
            "SEARCH_ENABLED": "false",
        },
        ports=(MARQUEZ_PORT, MARQUEZ_ADMIN_PORT),
        wait=WaitSpec(kind="http", port=MARQUEZ_ADMIN_PORT, path="/healthcheck", timeout_s=240),
        mounts=(Mount(str(workdir / MARQUEZ_CONFIG_FILE), MARQUEZ_CONFIG_PATH, "ro"),),
        needs_network=True,
    )
    return db, marquez


def marquez_container_config(db_password: str) -> dict[str, Any]:
    """The Marquez config mounted into its container (listens on all interfaces)."""
    return marquez_config(
        port=MARQUEZ_PORT,
        admin_port=MARQUEZ_ADMIN_PORT,
        db_url=f"jdbc:postgresql://{MARQUEZ_DB_ALIAS}:{POSTGRES_PORT}/marquez",
        db_user="marquez",
        db_password=db_password,
        bind_host="0.0.0.0",
    )


def lakefs_spec() -> ContainerSpec:
    """lakeFS in quickstart mode (local KV and blockstore inside the container)."""
    return ContainerSpec(
        service="lakefs",
        image=LAKEFS_IMAGE,
        command=("run", "--quickstart"),
        env={"LAKEFS_STATS_ENABLED": "false", "LAKEFS_EMAIL_SUBSCRIPTION_ENABLED": "false"},
        ports=(LAKEFS_PORT,),
        wait=WaitSpec(
            kind="http", port=LAKEFS_PORT, path="/_health", status_codes=(200, 204), timeout_s=120
        ),
    )


def collector_container_config() -> dict[str, Any]:
    """The Collector config mounted into its container."""
    return collector_config(
        http_endpoint=f"0.0.0.0:{OTLP_HTTP_PORT}",
        grpc_endpoint=f"0.0.0.0:{OTLP_GRPC_PORT}",
        traces_path=f"{COLLECTOR_OUT_DIR}/{TRACES_FILE}",
        metrics_path=f"{COLLECTOR_OUT_DIR}/{METRICS_FILE}",
    )


def collector_spec(workdir: Path, *, user: str | None = None) -> ContainerSpec:
    """The contrib Collector, config mounted read-only and an output dir read-write.

    ``user`` ("uid:gid") runs the Collector as the host user so that the files it writes
    belong to that user.
    """
    return ContainerSpec(
        service="collector",
        image=COLLECTOR_IMAGE,
        command=(f"--config={COLLECTOR_CONFIG_PATH}",),
        ports=(OTLP_HTTP_PORT, OTLP_GRPC_PORT),
        wait=WaitSpec(kind="log", log_line=COLLECTOR_READY_LINE, timeout_s=120),
        mounts=(
            Mount(str(workdir / COLLECTOR_CONFIG_FILE), COLLECTOR_CONFIG_PATH, "ro"),
            Mount(str(workdir / COLLECTOR_OUT_SUBDIR), COLLECTOR_OUT_DIR, "rw"),
        ),
        user=user,
    )


def container_plan(
    wanted: set[str],
    workdir: Path,
    *,
    db_password: str,
    user: str | None = None,
) -> list[ContainerSpec]:
    """The containers to start for ``wanted``, in start order (database before Marquez)."""
    wanted = check_wanted(wanted)
    plan: list[ContainerSpec] = []
    if "marquez" in wanted:
        plan.extend(marquez_specs(workdir, db_password=db_password))
    if "lakefs" in wanted:
        plan.append(lakefs_spec())
    if "collector" in wanted:
        plan.append(collector_spec(workdir, user=user))
    return plan


def span_files(workdir: Path, wanted: set[str]) -> tuple[str, ...]:
    """Host paths of the file exporter's trace output."""
    if "collector" not in wanted:
        return ()
    return (str(workdir / COLLECTOR_OUT_SUBDIR / TRACES_FILE),)


def prepare_workdir(workdir: Path, wanted: set[str], *, db_password: str) -> None:
    """Write the config files and output dir that the specs mount."""
    workdir.mkdir(parents=True, exist_ok=True)
    if "marquez" in wanted:
        path = workdir / MARQUEZ_CONFIG_FILE
        path.write_text(json.dumps(marquez_container_config(db_password), indent=2))
        path.chmod(0o644)  # read by the container's user
    if "collector" in wanted:
        (workdir / COLLECTOR_CONFIG_FILE).write_text(
            json.dumps(collector_container_config(), indent=2)
        )
        (workdir / COLLECTOR_CONFIG_FILE).chmod(0o644)
        out = workdir / COLLECTOR_OUT_SUBDIR
        out.mkdir(exist_ok=True)
        out.chmod(0o777)  # writable whatever user the image runs as
    workdir.chmod(0o755)


# --------------------------------------------------------------------------- docker


def docker_available(timeout: float = 1.0) -> bool:
    """Whether a Docker engine answers ``/_ping`` (``DOCKER_HOST`` or the default socket)."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        if host.startswith("unix://"):
            path = host[len("unix://") :]
            if not os.path.exists(path):
                return False
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(path)
        elif host.startswith("tcp://"):
            parsed = urlparse(host)
            sock = socket.create_connection(
                (parsed.hostname or "127.0.0.1", parsed.port or 2375), timeout=timeout
            )
            if os.environ.get("DOCKER_TLS_VERIFY"):
                sock.close()
                return True  # TLS engine: reachable is the best cheap probe
        else:
            return False
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(64)
        status_line = reply.split(b"\r\n", 1)[0]
        return status_line.startswith(b"HTTP/") and status_line.split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


class ContainerServices:
    """The ``containers`` provider. Needs a Docker engine and ``testcontainers>=4``."""

    name = "containers"

    def __init__(self, *, start_timeout: float | None = None) -> None:
        self.start_timeout = start_timeout
        self._containers: dict[str, Any] = {}
        self._network: Any = None
        self._workdir: Path | None = None
        self._endpoints = Endpoints()
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ protocol

    def start(self, wanted: set[str]) -> Endpoints:
        wanted = check_wanted(wanted)
        if self._containers:
            raise RuntimeError("ContainerServices already started; stop() it first")
        if not docker_available():
            raise ServiceError("no Docker engine is reachable", service=sorted(wanted)[0])
        try:
            from testcontainers.core.container import DockerContainer
            from testcontainers.core.network import Network
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ServiceError(
                "the containers provider needs `pip install 'testcontainers>=4,<5'`",
                service=sorted(wanted)[0],
            ) from exc

        workdir = Path(tempfile.mkdtemp(prefix="kfm-containers-"))
        self._workdir = workdir
        password = secrets.token_urlsafe(18)
        prepare_workdir(workdir, wanted, db_password=password)
        user = f"{os.getuid()}:{os.getgid()}" if hasattr(os, "getuid") else None
        plan = container_plan(wanted, workdir, db_password=password, user=user)
        t0 = time.monotonic()
        try:
            if any(spec.needs_network for spec in plan):
                self._network = Network().create()
            for spec in plan:
                started = time.monotonic()
                container = DockerContainer(spec.image)
                if spec.command:
                    container.with_command(list(spec.command))
                for key, value in spec.env.items():
                    container.with_env(key, value)
                if spec.ports:
                    container.with_exposed_ports(*spec.ports)
                for mount in spec.mounts:
                    container.with_volume_mapping(mount.host_path, mount.container_path, mount.mode)
                if spec.needs_network and self._network is not None:
                    container.with_network(self._network)
                    if spec.network_aliases:
                        container.with_network_aliases(*spec.network_aliases)
                if spec.user:
                    container.with_kwargs(user=spec.user)
                container.start()
                self._containers[spec.service] = container
                if spec.wait is not None:
                    self._wait(spec, container)
                self.timings[spec.service] = time.monotonic() - started
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - t0
        self._endpoints = self._build_endpoints(wanted, workdir)
        return self._endpoints

    def health(self) -> dict[str, bool]:
        out: dict[str, bool] = {}
        ep = self._endpoints
        if "marquez" in self._containers:
            admin = self._url("marquez", MARQUEZ_ADMIN_PORT)
            out["marquez"] = admin is not None and http_status(f"{admin}/healthcheck") == 200
        if "lakefs" in self._containers and ep.lakefs is not None:
            status = http_status(f"{ep.lakefs.endpoint}/_health")
            out["lakefs"] = status is not None and 200 <= status < 300
        if "collector" in self._containers:
            hostport = self._host_port("collector", OTLP_HTTP_PORT)
            out["collector"] = hostport is not None and port_is_open(hostport[1], hostport[0])
        return out

    def log_tail(self, service: str, lines: int = 50) -> str:
        container = self._containers.get(service)
        if container is None:
            return ""
        try:
            stdout, stderr = container.get_logs()
        except Exception:  # noqa: BLE001 - logs are best effort
            return ""
        text = (stdout or b"").decode("utf-8", "replace") + (stderr or b"").decode(
            "utf-8", "replace"
        )
        return "\n".join(text.splitlines()[-lines:])

    def versions(self) -> dict[str, str]:
        images = {
            "marquez": MARQUEZ_IMAGE,
            "postgresql": POSTGRES_IMAGE,
            "lakefs": LAKEFS_IMAGE,
            "collector": COLLECTOR_IMAGE,
        }
        return {k: v.rsplit(":", 1)[1] for k, v in images.items()}

    def stop(self) -> None:
        for service in reversed(list(self._containers)):
            with contextlib.suppress(Exception):
                self._containers[service].stop()
        self._containers.clear()
        if self._network is not None:
            with contextlib.suppress(Exception):
                self._network.remove()
            self._network = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self._endpoints = Endpoints()

    # ------------------------------------------------------------------ internals

    def _host_port(self, service: str, port: int) -> tuple[str, int] | None:
        container = self._containers.get(service)
        if container is None:
            return None
        try:
            return str(container.get_container_host_ip()), int(container.get_exposed_port(port))
        except Exception:  # noqa: BLE001 - not mapped (yet)
            return None

    def _url(self, service: str, port: int) -> str | None:
        hostport = self._host_port(service, port)
        return None if hostport is None else f"http://{hostport[0]}:{hostport[1]}"

    def _wait(self, spec: ContainerSpec, container: Any) -> None:
        wait = spec.wait
        assert wait is not None
        timeout = self.start_timeout or wait.timeout_s
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if wait.kind == "http":
                assert wait.port is not None
                url = self._url(spec.service, wait.port)
                if url is not None and http_status(url + wait.path) in wait.status_codes:
                    return
            else:
                assert wait.log_line is not None
                if self.log_tail(spec.service, 100_000).count(wait.log_line) >= wait.occurrences:
                    return
            with contextlib.suppress(Exception):
                container.reload()
                if getattr(container, "status", "running") in ("exited", "dead"):
                    break
            time.sleep(0.5)
        raise ServiceError(
            f"container {spec.image} not ready within {timeout:.0f}s",
            service=spec.service,
            log_tail=self.log_tail(spec.service, 60),
        )

    def _build_endpoints(self, wanted: set[str], workdir: Path) -> Endpoints:
        lakefs = None
        if "lakefs" in wanted:
            url = self._url("lakefs", LAKEFS_PORT)
            assert url is not None
            lakefs = LakeFSAccess(url, *LAKEFS_QUICKSTART_ACCESS)
        return Endpoints(
            marquez_url=self._url("marquez", MARQUEZ_PORT) if "marquez" in wanted else None,
            otlp_http_endpoint=(
                self._url("collector", OTLP_HTTP_PORT) if "collector" in wanted else None
            ),
            lakefs=lakefs,
            span_files=span_files(workdir, wanted),
        )
