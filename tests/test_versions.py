"""One version, one commit: a tag that would move to another commit is refused, --retag moves it
on purpose and says so, and the audit names both commits of a host that runs the other one.

The seed's tag is ``<prefix>.<commit count>``, unique only along one line of history: a branch
cut one commit back and given one commit of its own reaches the same count as main.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.images import daemon
from tests.conftest import (
    LabFixture,
    host_run,
    project_options,
    run_cli,
    run_json,
    run_project_json,
)
from tests.framework import FrameworkProject

pytestmark = [pytest.mark.lab, pytest.mark.docker]


@pytest.fixture(scope="module")
def project(
    lab_env: LabFixture, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FrameworkProject]:
    """9.0.1 and 9.0.2 on main; a branch 'feature' cut at 9.0.1 with one commit of its own."""
    repository = f"fleet-test-versions-{uuid.uuid4().hex[:6]}"
    built = FrameworkProject.create(tmp_path_factory.mktemp("fw") / "cauchy", repository)
    # A container name and port of its own: the lab's other framework deployments (shared
    # by other modules) keep running beside it.
    built.write_settings({"name": "versions_service", "port": 8349})
    built.commit_and_build("one")
    built.commit_and_build("two on main")
    built.git("checkout", "-q", "-b", "feature", "HEAD~1")
    (built.root / "framework" / "RELEASE").write_text("two on feature\n")
    built.git("commit", "-q", "-am", "two on feature")
    yield built
    for host in ("lab1", "lab2"):
        host_run(
            lab_env,
            host,
            "sh",
            "-c",
            'docker ps -aq --filter "label=io.fleet.framework=$1" | xargs -r docker rm -f',
            "clear",
            repository,
        )
    built.remove_images()


def _commit(project: FrameworkProject, ref: str) -> str:
    return project.git("rev-parse", ref).strip()


def _image_commit(reference: str) -> str:
    labels = daemon.connect().images.get(reference).labels or {}
    return str(labels.get("org.opencontainers.image.revision", ""))


@pytest.mark.hostile
def test_a_tag_of_another_commit_is_refused_then_moved_on_purpose(
    lab_env: LabFixture, project: FrameworkProject, capsys
) -> None:
    main, feature = _commit(project, "main"), _commit(project, "feature")
    reference = f"{project.repository}:9.0.2"
    assert _image_commit(reference) == main
    # lab1 runs main's 9.0.2: the audit below must tell it apart from feature's.
    code, deployed = run_project_json(capsys, lab_env.inventory, project, "deploy", "lab1", "9.0.2")
    assert code == 0, deployed

    code, _, err = run_cli(capsys, "build", "--project", str(project.root))
    assert code == 4, err
    for evidence in (
        main[:12],
        feature[:7],
        "branch main",
        "branch feature",
        "--retag",
        "tag_prefix",
    ):
        assert evidence in err, (evidence, err)
    assert _image_commit(reference) == main  # nothing moved, nothing built

    code, result = run_json(capsys, "build", "--project", str(project.root), "--retag")
    assert code == 0, result
    assert _image_commit(reference) == feature
    code, listed = run_json(capsys, "images", "--project", str(project.root))
    assert code == 0
    by_commit = {v["commit"]: v for v in listed["versions"]}  # type: ignore[index]
    assert by_commit[feature]["moved_from"] == main and by_commit[feature]["tagged"]
    assert not by_commit[main]["tagged"]  # the old image stays, untagged

    code, audited = run_json(capsys, "audit", "lab1", *project_options(lab_env.inventory, project))
    row = audited["hosts"]["lab1"]["details"]  # type: ignore[index]
    reasons = {r["code"]: r["message"] for r in row["reasons"]}
    assert code == 2 and "other_commit" in reasons, row
    assert main[:12] in reasons["other_commit"] and feature[:12] in reasons["other_commit"]
    assert "on main" in reasons["other_commit"] and "on feature" in reasons["other_commit"]


def test_a_rebuild_of_the_same_commit_needs_no_retag(project: FrameworkProject, capsys) -> None:
    project.git("checkout", "-q", "main")
    try:
        code, _, err = run_cli(capsys, "build", "--project", str(project.root), "--rebuild")
        # main's 9.0.2 lost its tag to feature above (or never did, if run alone): either way
        # main's own commit may take 9.0.2 only by --retag when feature's image holds it.
        holder = _image_commit(f"{project.repository}:9.0.2")
        if holder == _commit(project, "feature"):
            assert code == 4 and "--retag" in err
        else:
            assert code == 0, err
        (project.root / "framework" / "RELEASE").write_text("uncommitted\n")
        code, _, err = run_cli(
            capsys, "build", "--project", str(project.root), "--tag-prefix", "9.1"
        )
        assert code == 0, err  # a dirty build of a commit under a fresh prefix: nothing to move
    finally:
        project.git("checkout", "-q", "--", ".")
        project.git("checkout", "-q", "feature")


def test_the_settings_tag_prefix_fix_works(
    project: FrameworkProject, tmp_path: Path, capsys
) -> None:
    code, _, err = run_cli(
        capsys, "build", "--project", str(project.root), "--tag-prefix", "9.0-feature"
    )
    assert code == 0, err
    assert _image_commit(f"{project.repository}:9.0-feature.2") == _commit(project, "feature")
