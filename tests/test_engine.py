"""The controller's engine read without docker-py: the same versions docker-py lists."""

from __future__ import annotations

import uuid

import pytest

from fleet.images import daemon, engine, labels
from fleet.ops import audit
from tests.framework import build_image


def test_only_a_local_socket_is_spoken_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.5:2376")
    assert engine.socket_path() is None
    assert engine.get_json("/images/json") is None
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")
    assert engine.socket_path() == "/run/user/1000/docker.sock"
    monkeypatch.delenv("DOCKER_HOST")
    assert engine.socket_path() == engine.DEFAULT_SOCKET


def test_a_summary_becomes_a_version() -> None:
    summary = {
        "Id": "sha256:ab",
        "Created": 1_796_000_000,
        "RepoTags": ["cauchy:0.2.7"],
        "Size": 12,
        "Labels": {labels.LABEL_TAG: "0.2.7", labels.LABEL_COMMIT_COUNT: "7"},
    }
    version = labels.image_version("cauchy", summary)
    assert (version.reference, version.commit_count, version.tagged) == ("cauchy:0.2.7", 7, True)
    assert version.created == "2026-11-30T00:53:20Z"


@pytest.mark.docker
def test_local_versions_equal_docker_py_s() -> None:
    client = daemon.connect()
    repository = f"fleet-test-engine-{uuid.uuid4().hex[:6]}"
    built = []
    try:
        for count in (3, 4):
            dockerfile = (
                f"FROM scratch\nLABEL {labels.LABEL_FRAMEWORK}={repository} "
                f"{labels.LABEL_TAG}=0.1.{count} {labels.LABEL_COMMIT_COUNT}={count}\n"
            )
            built.append(build_image(client, f"{repository}:0.1.{count}", dockerfile))
        fast = audit.local_versions(repository)
        assert [v.tag for v in fast] == ["0.1.4", "0.1.3"]
        assert fast == daemon.list_versions(client, repository)
    finally:
        for tag in built:
            client.images.remove(tag, force=True)
        client.close()
