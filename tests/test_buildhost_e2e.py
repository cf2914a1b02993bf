"""``fleet build --build-host`` on the lab: built by the host's engine, pulled back thin.

The classic lab host builds the demo framework; the controller's engine (this machine's)
then holds the same image IDs, loaded (not built) from only the layers it lacked.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.images import daemon
from fleet.images.spec import chain_ids
from fleet.lab import nodes as lab
from tests.conftest import LabFixture, host_sh, run_json
from tests.framework import FrameworkProject

pytestmark = [pytest.mark.lab]


@pytest.fixture
def project(tmp_path: Path) -> Iterator[FrameworkProject]:
    created = FrameworkProject.create(tmp_path / "fw", f"fleet-test-bh-{uuid.uuid4().hex[:8]}")
    yield created
    created.remove_images()


def _classic_host(env: LabFixture) -> str:
    return next(h.name for h in env.lab.hosts if h.engine == "classic")


def _commit(project: FrameworkProject, message: str) -> None:
    (project.root / "framework" / "RELEASE").write_text(message + "\n")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", message)


def _build(
    capsys: pytest.CaptureFixture[str], env: LabFixture, project: FrameworkProject, host: str
) -> dict[str, Any]:
    code, document = run_json(
        capsys,
        "build",
        "--project",
        str(project.root),
        "--build-host",
        host,
        "-i",
        str(env.inventory),
    )
    assert code == 0, document
    return document


def _remote(env: LabFixture, host: str, reference: str) -> tuple[str, str]:
    """(ID, parent) of the host's image: a build leaves a parent, a load none."""
    out = host_sh(
        env, host, "docker", "image", "inspect", "--format", "{{.Id}} {{.Parent}}", reference
    )
    image_id, _, parent = out.strip().partition(" ")
    return image_id, parent


def _remote_layers(env: LabFixture, host: str, reference: str) -> list[str]:
    out = host_sh(
        env, host, "docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", reference
    )
    layers: list[str] = json.loads(out)
    return layers


def _layer_count(client: Any, reference: str) -> int:
    found = daemon.find_image(client, reference)
    assert found is not None, reference
    return len(found.diff_ids)


def test_build_host_builds_there_and_pulls_back_only_missing_layers(
    lab_env: LabFixture, project: FrameworkProject, capsys: pytest.CaptureFixture[str]
) -> None:
    host = _classic_host(lab_env)
    local = daemon.connect()
    lab.ensure_layer1_image(local)  # layer 1 is on the controller, maybe not on the host
    had_layer1 = bool(_remote(lab_env, host, lab.LAYER1_IMAGE)[0])

    # Version 1: both layers built on the host.
    _commit(project, "v1")
    first = _build(capsys, lab_env, project, host)
    reference, base_ref = first["reference"], project.repository + "_base:latest"
    assert first["build_host"] == host
    assert [layer["action"] for layer in first["layers"]] == ["present", "built", "built"]
    assert (first["upstream_shipped"] is None) == had_layer1
    if not had_layer1:
        # Shipped by name; its one layer only when no other image there had it already.
        assert first["upstream_shipped"]["layers_sent"] in (0, 1)
        assert _remote(lab_env, host, lab.LAYER1_IMAGE)[0]

    # The host's engine ran the build (the image has its build parent there); the
    # controller's engine only loaded it (no parent), under the same ID.
    remote_id, remote_parent = _remote(lab_env, host, reference)
    assert remote_id == first["image_id"]
    assert remote_parent.startswith("sha256:")
    mine = daemon.find_image(local, reference)
    assert mine is not None and mine.config_digest == remote_id
    assert daemon.image_parent(local, reference) == ""
    assert daemon.find_image(local, base_ref) is not None
    assert daemon.find_image(local, base_ref).config_digest == _remote(lab_env, host, base_ref)[0]  # type: ignore[union-attr]

    # Only the layers the controller lacked came back: never layer 1 (it has it), and of
    # the framework image only its own layers (the base came just before).
    base_total, total = _layer_count(local, base_ref), _layer_count(local, reference)
    upstream_total = _layer_count(local, lab.LAYER1_IMAGE)
    pulled = first["pulled_back"]
    assert pulled["base"]["layers_total"] == base_total
    assert 1 <= pulled["base"]["layers_pulled"] <= base_total - upstream_total
    assert pulled["framework"]["layers_total"] == total
    assert pulled["framework"]["layers_pulled"] == total - base_total
    assert first["layers_pulled"] == pulled["base"]["layers_pulled"] + (total - base_total)

    # The same commit again: reused on the host, nothing read or pulled.
    again = _build(capsys, lab_env, project, host)
    assert again["image_id"] == first["image_id"]
    assert again["layers"][2]["action"] == "reused"
    assert again["upstream_shipped"] is None
    for role in ("base", "framework"):
        assert again["pulled_back"][role]["layers_pulled"] == 0
        assert again["pulled_back"][role]["bytes_read"] == 0

    # Version 2: the base is reused; exactly the thin framework layers come back.
    _commit(project, "v2")
    second = _build(capsys, lab_env, project, host)
    assert [layer["action"] for layer in second["layers"]] == ["present", "reused", "built"]
    assert second["upstream_shipped"] is None
    assert second["pulled_back"]["base"]["layers_pulled"] == 0
    # The thin part: the layers of version 2 not in version 1 (the host's build cache
    # reuses the unchanged steps, e.g. WORKDIR), which are its top layers.
    old_chains = set(chain_ids(_remote_layers(lab_env, host, reference)))
    new_chains = chain_ids(_remote_layers(lab_env, host, second["reference"]))
    fresh = [i for i, chain in enumerate(new_chains) if chain not in old_chains]
    assert fresh and fresh == list(range(len(new_chains) - len(fresh), len(new_chains)))
    framework = second["pulled_back"]["framework"]
    assert framework["layers_pulled"] == len(fresh)
    increment = second["layers"][2]["increment"]
    assert 0 < framework["bytes_pulled"] <= increment + (256 << 10)
    # The host cut its docker save (python3 there): the layers the controller has did not
    # cross; what did is the thin layers plus the save's small files (configs, json).
    assert 0 < framework["bytes_read"] <= increment + (512 << 10)
    remote_id, remote_parent = _remote(lab_env, host, second["reference"])
    assert remote_id == second["image_id"] and remote_parent
    mine = daemon.find_image(local, second["reference"])
    assert mine is not None and mine.config_digest == remote_id
    assert daemon.image_parent(local, second["reference"]) == ""

    # The controller's store is the record: fleet images lists both versions.
    code, listed = run_json(capsys, "images", "--project", str(project.root))
    assert code == 0
    versions = {v["tag"]: v["image_id"] for v in listed["versions"]}
    assert versions == {first["tag"]: first["image_id"], second["tag"]: second["image_id"]}
