"""The demo framework service: in a thread (no engine), then in its image in a container."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from fleet.errors import FleetError
from fleet.images import build as images
from fleet.images import daemon
from fleet.images.project import load_project

ROOT = Path(__file__).resolve().parents[1]
LAYER1 = "fleet-lab-layer1:bookworm"


def load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kernels() -> ModuleType:
    return load_module("cauchy_kernels", ROOT / "external" / "cauchy_kernels" / "__init__.py")


@pytest.fixture(scope="module")
def service_module(kernels: ModuleType) -> ModuleType:
    return load_module("cauchy_services", ROOT / "framework" / "cauchy_services.py")


def get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of a GET; HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def wait_until_answering(url: str, deadline_seconds: float = 30.0) -> tuple[int, dict[str, Any]]:
    """Poll ``url`` until it answers at all (any HTTP status), or fail at the deadline."""
    deadline = time.monotonic() + deadline_seconds
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return get(url, timeout=2.0)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = exc
            time.sleep(0.1)
    pytest.fail(f"{url} did not answer within {deadline_seconds:g} s: {last}")


@pytest.fixture
def serve(service_module: ModuleType) -> Iterator[Any]:
    servers: list[Any] = []

    def start(*, fail_health: bool = False) -> str:
        server = service_module.Service(("127.0.0.1", 0), fail_health=fail_health)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# --- no engine ----------------------------------------------------------------------------


def test_the_kernels(kernels: ModuleType) -> None:
    assert kernels.cauchy_pdf(0.0) == pytest.approx(1 / math.pi)
    assert kernels.cauchy_cdf(1.0) == pytest.approx(0.75)
    assert kernels.cauchy_kernel([0.0, 0.0], [1.0, 1.0]) == pytest.approx(1 / 3)
    assert kernels.self_test()
    with pytest.raises(ValueError, match="scale"):
        kernels.cauchy_pdf(0.0, scale=0)


def test_health_version_and_kernels(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAUCHY_VERSION", "v1.2-3-gabc")
    monkeypatch.setenv("CAUCHY_TAG", "0.2.7")
    monkeypatch.setenv("CAUCHY_COMMIT", "a" * 40)
    monkeypatch.setenv("CAUCHY_BUILD_DATE", "2026-11-28T10:00:00Z")
    base = serve()
    assert get(f"{base}/health") == (200, {"status": "ok", "kernels": "1.0.0"})
    status, version = get(f"{base}/version")
    assert status == 200
    assert version["version"] == "v1.2-3-gabc"
    assert version["tag"] == "0.2.7"
    assert version["commit"] == "a" * 40
    assert version["build_date"] == "2026-11-28T10:00:00Z"
    assert version["kernels"] == "1.0.0"
    status, value = get(f"{base}/cauchy?x=1")
    assert status == 200
    assert value["cdf"] == pytest.approx(0.75)
    assert get(f"{base}/cauchy?x=one")[0] == 400
    assert get(f"{base}/nothing")[0] == 404


def test_the_service_can_fail_its_health_check(
    serve: Any, service_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    status, body = get(f"{serve(fail_health=True)}/health")
    assert status == 503
    assert body["status"] == "failing"
    monkeypatch.setenv("CAUCHY_FAIL_HEALTH", "1")
    assert service_module.parse_args([]).fail_health
    monkeypatch.setenv("CAUCHY_FAIL_HEALTH", "0")
    assert not service_module.parse_args([]).fail_health
    assert service_module.parse_args(["--fail-health", "--port", "1"]).port == 1


# --- in a container -----------------------------------------------------------------------


def git(repo: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Test Author",
        "GIT_AUTHOR_EMAIL": "author@example.com",
        "GIT_COMMITTER_NAME": "Test Author",
        "GIT_COMMITTER_EMAIL": "author@example.com",
    }
    subprocess.run(["git", "-C", str(repo), *args], capture_output=True, env=env, check=True)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, images.BuildResult]]:
    """The demo framework built from a temporary git repository; removed afterwards."""
    try:
        client = daemon.connect()
    except FleetError as exc:
        pytest.fail(f"{exc}\n(deselect engine tests with -m 'not docker')")
    repository = f"fleet-test-demo-{uuid.uuid4().hex[:8]}"
    root = tmp_path_factory.mktemp("demo") / "project"
    root.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("Dockerfile", "Dockerfile.base"):
        shutil.copy(ROOT / name, root / name)
    for name in ("framework", "external"):
        shutil.copytree(ROOT / name, root / name, ignore=ignore)
    settings = yaml.safe_load((ROOT / "inventory/group_vars/all.yml").read_text())
    settings["fleet_image"]["repository"] = repository
    (root / "fleet.yml").write_text(yaml.safe_dump(settings))
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "demo")
    try:
        yield client, images.build(client, load_project(root))
    finally:
        for reference in (f"{repository}:0.2.1", f"{repository}_base:latest"):
            try:
                client.images.remove(reference, force=True)
            except Exception:  # never built: nothing to remove
                continue
        client.close()


@pytest.fixture
def run_container(built: tuple[Any, images.BuildResult]) -> Iterator[Any]:
    client, result = built
    containers: list[Any] = []
    spec = result.project.run_spec

    def run(environment: dict[str, str] | None = None) -> str:
        """Start the service as the run spec says, published on a free loopback port."""
        container = client.containers.run(
            result.reference,
            [*spec.command, "--port", str(spec.port)],
            detach=True,
            environment=environment or {},
            ports={f"{spec.port}/tcp": ("127.0.0.1", None)},
        )
        containers.append(container)
        container.reload()
        binding = container.attrs["NetworkSettings"]["Ports"][f"{spec.port}/tcp"][0]
        return f"http://127.0.0.1:{binding['HostPort']}"

    yield run
    for container in containers:
        container.remove(force=True)


@pytest.mark.docker
def test_the_image_serves_health_and_version(
    built: tuple[Any, images.BuildResult], run_container: Any
) -> None:
    _, result = built
    base = run_container()
    status, health = wait_until_answering(f"{base}/health")
    assert (status, health["status"]) == (200, "ok")
    status, version = get(f"{base}/version")
    assert status == 200
    labels = result.labels
    assert version["commit"] == labels["org.opencontainers.image.revision"]
    assert version["version"] == labels["org.label-schema.version"]
    assert version["tag"] == labels["io.fleet.tag"] == "0.2.1"
    assert version["build_date"] == labels["org.label-schema.build-date"]
    assert version["kernels"] == "1.0.0"  # the vendored library of layer 2


@pytest.mark.docker
def test_the_image_fails_its_health_check_on_request(run_container: Any) -> None:
    base = run_container({"CAUCHY_FAIL_HEALTH": "1"})
    status, health = wait_until_answering(f"{base}/health")
    assert status == 503
    assert health["status"] == "failing"
