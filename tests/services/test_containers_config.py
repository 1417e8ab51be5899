"""Unit tests of the containers provider's configuration (no Docker engine needed).

Also keeps the human-readable templates under services/ in step with the Python config
builders that the providers use.
"""

from __future__ import annotations

import json
import os
import socket
import string
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from kfm_conformance.services import get_provider
from kfm_conformance.services.base import (
    COLLECTOR_READY_LINE,
    COLLECTOR_VERSION,
    LAKEFS_VERSION,
    MARQUEZ_VERSION,
    ServiceError,
    collector_config,
    marquez_config,
)
from kfm_conformance.services.containers import (
    COLLECTOR_CONFIG_FILE,
    COLLECTOR_IMAGE,
    LAKEFS_IMAGE,
    LAKEFS_QUICKSTART_ACCESS,
    MARQUEZ_CONFIG_FILE,
    MARQUEZ_IMAGE,
    POSTGRES_IMAGE,
    ContainerServices,
    ContainerSpec,
    Mount,
    container_plan,
    docker_available,
    prepare_workdir,
    span_files,
)
from kfm_conformance.services.local import LocalServices

REPO = Path(__file__).resolve().parents[2]
ALL = {"marquez", "lakefs", "collector"}


def _by_service(plan: list[ContainerSpec]) -> dict[str, ContainerSpec]:
    return {spec.service: spec for spec in plan}


def test_images_are_pinned() -> None:
    assert (
        MARQUEZ_IMAGE
        == f"marquezproject/marquez:{MARQUEZ_VERSION}"
        == "marquezproject/marquez:0.51.1"
    )
    assert POSTGRES_IMAGE == "postgres:14"
    assert LAKEFS_IMAGE.rsplit(":", 1) == ["treeverse/lakefs", LAKEFS_VERSION]
    assert COLLECTOR_IMAGE.rsplit(":", 1) == [
        "otel/opentelemetry-collector-contrib",
        COLLECTOR_VERSION,
    ]
    for image in (MARQUEZ_IMAGE, POSTGRES_IMAGE, LAKEFS_IMAGE, COLLECTOR_IMAGE):
        assert not image.endswith(":latest")


def test_plan_order_and_subsets(tmp_path: Path) -> None:
    plan = container_plan(ALL, tmp_path, db_password="pw")
    assert [s.service for s in plan] == ["marquez-db", "marquez", "lakefs", "collector"]
    assert [s.service for s in container_plan({"lakefs"}, tmp_path, db_password="pw")] == ["lakefs"]
    assert not any(
        s.needs_network for s in container_plan({"lakefs", "collector"}, tmp_path, db_password="")
    )
    with pytest.raises(ValueError):
        container_plan({"kafka"}, tmp_path, db_password="pw")


def test_marquez_and_postgres_share_a_network(tmp_path: Path) -> None:
    specs = _by_service(container_plan({"marquez"}, tmp_path, db_password="s3cret"))
    db, marquez = specs["marquez-db"], specs["marquez"]
    assert db.image == "postgres:14" and marquez.image == "marquezproject/marquez:0.51.1"
    assert db.needs_network and marquez.needs_network
    assert marquez.env["POSTGRES_HOST"] in db.network_aliases
    assert db.env["POSTGRES_PASSWORD"] == marquez.env["POSTGRES_PASSWORD"] == "s3cret"
    assert db.env["POSTGRES_USER"] == marquez.env["POSTGRES_USER"] == "marquez"
    assert db.env["POSTGRES_DB"] == marquez.env["POSTGRES_DB"] == "marquez"
    assert db.wait is not None and db.wait.kind == "log" and db.wait.occurrences == 2
    # The config Marquez reads is the one mounted from the workdir.
    (config_mount,) = marquez.mounts
    assert config_mount == Mount(
        str(tmp_path / MARQUEZ_CONFIG_FILE), marquez.env["MARQUEZ_CONFIG"], "ro"
    )
    assert set(marquez.ports) == {5000, 5001}
    assert marquez.wait is not None
    assert (marquez.wait.kind, marquez.wait.port, marquez.wait.path) == (
        "http",
        5001,
        "/healthcheck",
    )


def test_lakefs_runs_quickstart_and_waits_on_health() -> None:
    spec = _by_service(container_plan({"lakefs"}, Path("/unused"), db_password=""))["lakefs"]
    assert spec.command == ("run", "--quickstart")
    assert spec.ports == (8000,)
    assert spec.wait is not None
    assert (spec.wait.kind, spec.wait.port, spec.wait.path) == ("http", 8000, "/_health")
    assert spec.env["LAKEFS_STATS_ENABLED"] == "false"
    assert not spec.mounts
    assert LAKEFS_QUICKSTART_ACCESS[0] == "AKIAIOSFOLQUICKSTART"


def test_collector_mounts_config_and_a_writable_output_dir(tmp_path: Path) -> None:
    spec = _by_service(container_plan({"collector"}, tmp_path, db_password="", user="1000:1000"))[
        "collector"
    ]
    config_mount, out_mount = spec.mounts
    assert spec.command == (f"--config={config_mount.container_path}",)
    assert config_mount.host_path == str(tmp_path / COLLECTOR_CONFIG_FILE)
    assert config_mount.mode == "ro" and out_mount.mode == "rw"
    assert set(spec.ports) == {4317, 4318}
    assert spec.wait is not None and spec.wait.kind == "log"
    assert spec.wait.log_line == COLLECTOR_READY_LINE == "Everything is ready"
    assert spec.user == "1000:1000"
    # What the harness reads on the host is what the exporter writes in the container.
    (traces_host,) = span_files(tmp_path, {"collector"})
    assert traces_host.startswith(out_mount.host_path + "/")
    prepare_workdir(tmp_path, {"collector"}, db_password="")
    config = json.loads((tmp_path / COLLECTOR_CONFIG_FILE).read_text())
    exported = config["exporters"]["file/traces"]["path"]
    assert exported == out_mount.container_path + traces_host[len(out_mount.host_path) :]
    assert config["exporters"]["file/traces"]["format"] == "json"
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert config["service"]["telemetry"]["metrics"]["level"] == "none"
    assert Path(out_mount.host_path).is_dir()
    assert Path(out_mount.host_path).stat().st_mode & 0o777 == 0o777


def test_prepare_workdir_writes_marquez_config(tmp_path: Path) -> None:
    prepare_workdir(tmp_path, {"marquez"}, db_password="pw")
    config = json.loads((tmp_path / MARQUEZ_CONFIG_FILE).read_text())
    assert config["db"]["url"] == "jdbc:postgresql://marquez-db:5432/marquez"
    assert config["db"]["password"] == "pw"
    assert config["server"]["applicationConnectors"][0]["bindHost"] == "0.0.0.0"
    assert config["migrateOnStartup"] is True
    assert not (tmp_path / COLLECTOR_CONFIG_FILE).exists()


def test_specs_are_immutable(tmp_path: Path) -> None:
    spec = container_plan({"lakefs"}, tmp_path, db_password="")[0]
    with pytest.raises(AttributeError):
        spec.image = "other"  # type: ignore[misc]


# --------------------------------------------------------------------------- docker probe


def test_docker_available_false_without_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    assert docker_available() is False
    monkeypatch.setenv("DOCKER_HOST", "ssh://somewhere")
    assert docker_available() is False


def _fake_engine(path: str, reply: bytes) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def serve() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nOK", True),
        (b"HTTP/1.0 500 Internal Server Error\r\n\r\n", False),
    ],
)
def test_docker_available_pings_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reply: bytes, expected: bool
) -> None:
    sock = str(tmp_path / "docker.sock")
    thread = _fake_engine(sock, reply)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    assert docker_available() is expected
    thread.join(timeout=5)


def test_auto_provider_falls_back_to_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    provider = get_provider("auto")
    assert isinstance(provider, LocalServices)
    assert get_provider("containers").name == "containers"


def test_container_services_without_engine_is_a_service_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    provider = ContainerServices()
    with pytest.raises(ServiceError, match="Docker"):
        provider.start({"lakefs"})
    provider.stop()
    assert provider.health() == {}
    assert provider.versions()["lakefs"] == LAKEFS_VERSION


# --------------------------------------------------------------------------- templates


def _render(template: Path, values: dict[str, Any]) -> Any:
    yaml = pytest.importorskip("yaml")
    text = string.Template(template.read_text()).substitute(values)
    return yaml.safe_load(text)


def test_collector_template_matches_builder() -> None:
    values = {
        "http_endpoint": "127.0.0.1:4318",
        "grpc_endpoint": "127.0.0.1:4317",
        "traces_path": "/tmp/t.jsonl",
        "metrics_path": "/tmp/m.jsonl",
        "flush_interval": "200ms",
    }
    rendered = _render(REPO / "services" / "collector" / "config.yaml.tmpl", values)
    assert rendered == collector_config(**values)


def test_marquez_template_matches_builder() -> None:
    values: dict[str, Any] = {
        "port": 5000,
        "admin_port": 5001,
        "db_url": "jdbc:postgresql://127.0.0.1:5432/marquez",
        "db_user": "marquez",
        "db_password": "pw",
        "bind_host": "127.0.0.1",
    }
    rendered = _render(REPO / "services" / "marquez" / "marquez.yml.tmpl", values)
    assert rendered == marquez_config(**values)


# --------------------------------------------------------------------------- pins


def _assignments(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier() and key.isupper():
            out[key] = value.strip()
    return out


def test_pins_agree_across_files() -> None:
    versions = _assignments(REPO / "services" / "VERSIONS")
    script = _assignments(REPO / "scripts" / "build-services.sh")
    for key, pinned in (
        ("MARQUEZ_VERSION", MARQUEZ_VERSION),
        ("LAKEFS_VERSION", LAKEFS_VERSION),
        ("COLLECTOR_VERSION", COLLECTOR_VERSION),
    ):
        assert versions[key] == script[key] == pinned, key
    assert versions["POSTGRES_CONTAINER_IMAGE"] == POSTGRES_IMAGE

    manifest = (REPO / "services" / "collector" / "manifest.yaml").read_text()
    module_versions = [
        line.split()[-1] for line in manifest.splitlines() if line.strip().startswith("- gomod:")
    ]
    assert module_versions
    allowed = {f"v{COLLECTOR_VERSION}", f"v{versions['COLLECTOR_CORE_STABLE_VERSION']}"}
    assert set(module_versions) <= allowed

    go_mod = (REPO / "services" / "lakefs" / "go.mod").read_text()
    assert f"github.com/treeverse/lakefs v{LAKEFS_VERSION}" in go_mod
    assert "tool github.com/treeverse/lakefs/cmd/lakefs" in go_mod

    pom = (REPO / "services" / "marquez" / "pom.xml").read_text()
    assert f"<marquez.version>{MARQUEZ_VERSION}</marquez.version>" in pom


# --------------------------------------------------------------------------- build script


def test_building_marquez_without_its_source_says_so_in_one_line(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        KFM_CACHE_DIR=str(tmp_path / "cache"),
        KFM_MARQUEZ_SOURCE=str(tmp_path / "no-such-source"),
    )
    script = str(REPO / "scripts" / "build-services.sh")
    done = subprocess.run(
        ["bash", script, "marquez"], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"no Marquez {MARQUEZ_VERSION} source" in lines[0] and "--marquez-source" in lines[0]
    assert not (tmp_path / "cache").exists()  # nothing was built or downloaded
    done = subprocess.run(
        ["bash", script, "--marquez-source"], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
