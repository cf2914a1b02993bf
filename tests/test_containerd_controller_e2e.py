"""End to end on the lab: a controller whose engine keeps its images in containerd's store
(Docker 29's default) pushes to a classic and a containerd host, reading the layers from
its content store, and then only the thin layer a new version adds. The layers the
controller built are gzip blobs there: they go as they are stored, to both hosts."""

from __future__ import annotations

import gc
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.lab import nodes as lab
from tests.conftest import LabFixture, host_sh, run_json

pytestmark = pytest.mark.lab

REPOSITORY = "fleet-test-ctrd"
DOCKERFILES = {
    "1": "FROM fleet-lab-layer1:bookworm\nRUN head -c 3000000 /dev/urandom > /opt/weights\n"
    "RUN echo v1 > /opt/release\n",
    "2": f"FROM {REPOSITORY}:1\nRUN echo v2 > /opt/release\n",
}


@pytest.fixture(scope="module")
def controller(
    lab_env: LabFixture, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[lab.ControllerEngine]:
    directory = tmp_path_factory.mktemp("controller")
    engine = lab.controller_engine(lab_env.lab.name, directory)
    # Layer 1 from this machine's engine (no registry here), then two versions built on it.
    engine.load("fleet-lab-layer1:bookworm")
    client = engine.client()
    try:
        for tag, dockerfile in DOCKERFILES.items():
            context = directory / f"context-{tag}"
            context.mkdir()
            (context / "Dockerfile").write_text(dockerfile)
            client.images.build(path=str(context), tag=f"{REPOSITORY}:{tag}", rm=True)
    finally:
        client.close()
    for host in lab_env.lab.hosts:
        host_sh(
            lab_env, host.name, "docker", "image", "rm", "-f", f"{REPOSITORY}:1", f"{REPOSITORY}:2"
        )
    yield engine
    lab.remove_controller_engine(engine)
    shutil.rmtree(directory, ignore_errors=True)


def test_a_containerd_controller_ships_from_its_content_store(
    lab_env: LabFixture,
    controller: lab.ControllerEngine,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in controller.environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(Path(str(controller.root)).parent / "cache"))
    argv = ["-i", str(lab_env.inventory), "--retry-file", "/dev/null"]
    code, doc = run_json(capsys, "push", "all", f"{REPOSITORY}:1", *argv)
    assert code == 0, doc
    for host, row in doc["hosts"].items():
        assert row["outcome"] == "changed", row
        assert row["details"]["source"] == "local store", row  # not docker save
        # Layer 1 came from a docker load (a plain tar blob); the two built are gzip'd.
        assert row["details"]["layers_as_stored"] == 2, row
        release = host_sh(
            lab_env, host, "docker", "run", "--rm", f"{REPOSITORY}:1", "cat", "/opt/release"
        )
        assert release.strip() == "v1"
    code, doc = run_json(capsys, "push", "all", f"{REPOSITORY}:2", *argv)
    assert code == 0, doc
    for host, row in doc["hosts"].items():
        assert row["details"]["layers_sent"] == 1, row  # only the new version's layer
        assert row["details"]["layers_as_stored"] == 1, row
        assert row["details"]["bytes_sent"] < 64 << 10, row
        release = host_sh(
            lab_env, host, "docker", "run", "--rm", f"{REPOSITORY}:2", "cat", "/opt/release"
        )
        assert release.strip() == "v2"
    code, doc = run_json(capsys, "push", "all", f"{REPOSITORY}:2", *argv)
    assert code == 0 and {r["outcome"] for r in doc["hosts"].values()} == {"ok"}, doc
    for host in lab_env.lab.hosts:
        host_sh(
            lab_env, host.name, "docker", "image", "rm", "-f", f"{REPOSITORY}:1", f"{REPOSITORY}:2"
        )


def test_a_user_who_cannot_read_the_content_store_ships_from_a_docker_save_copy(
    lab_env: LabFixture,
    controller: lab.ControllerEngine,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # As a docker-group user on Docker 29 sees it: the engine's root is not readable.
    monkeypatch.setenv("DOCKER_HOST", controller.environment["DOCKER_HOST"])
    monkeypatch.setenv("FLEET_ENGINE_ROOT", str(tmp_path / "not-readable"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the copy goes
    argv = ["-i", str(lab_env.inventory), "--retry-file", "/dev/null"]
    code, doc = run_json(capsys, "push", "all", f"{REPOSITORY}:2", *argv)
    assert code == 0, doc
    for host, row in doc["hosts"].items():
        assert row["outcome"] == "changed", row
        assert row["details"]["source"] == "docker save copy", row
        assert "cannot read" in row["details"]["source_why"], row
        assert "read with docker save" in row["reason"], row
        assert row["details"]["layers_as_stored"] >= 1, row  # the blobs, as docker save gave
        release = host_sh(
            lab_env, host, "docker", "run", "--rm", f"{REPOSITORY}:2", "cat", "/opt/release"
        )
        assert release.strip() == "v2"
    gc.collect()
    assert not list(tmp_path.glob("fleet-save-*")), "the copy is removed after the push"
    for host in lab_env.lab.hosts:
        host_sh(lab_env, host.name, "docker", "image", "rm", "-f", f"{REPOSITORY}:2")
