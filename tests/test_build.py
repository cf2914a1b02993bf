"""fleet build and fleet images: settings and labels without an engine, builds with one.

The engine tests build this repository's demo framework (Dockerfile.base, Dockerfile,
framework/, external/) in temporary git repositories, on the lab's local layer-1 image,
under repository names unique to the test session, and remove those images afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.cli import ArgumentParser
from fleet.cli import build as build_cli
from fleet.errors import (
    EXIT_BAD_FILE,
    EXIT_BAD_OPTIONS,
    EXIT_ERROR,
    BuildError,
    FleetError,
    ProjectError,
    UsageError,
)
from fleet.images import build as images
from fleet.images import daemon, gitinfo
from fleet.images.context import context_digest, context_files, with_labels
from fleet.images.project import Project, framework_build_args, framework_labels, load_project
from fleet.images.runspec import parse_docker_cmd

ROOT = Path(__file__).resolve().parents[1]
LAYER1 = "fleet-lab-layer1:bookworm"
SESSION = uuid.uuid4().hex[:8]
REMOTE = "https://alice:s3cret-token@git.example.com/lab/cauchy.git"
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Test Author",
        "GIT_AUTHOR_EMAIL": "author@example.com",
        "GIT_AUTHOR_DATE": "2026-01-02T03:04:05+00:00",
        "GIT_COMMITTER_NAME": "Test Author",
        "GIT_COMMITTER_EMAIL": "author@example.com",
        "GIT_COMMITTER_DATE": "2026-01-02T03:04:05+00:00",
    }
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True
    )
    return result.stdout.strip()


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def make_project(
    path: Path,
    repository: str,
    *,
    commits: int = 1,
    remote: str | None = None,
    image_settings: dict[str, Any] | None = None,
) -> Path:
    """A git repository holding the demo framework, with ``commits`` commits."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    path.mkdir(parents=True)
    for name in ("Dockerfile", "Dockerfile.base"):
        shutil.copy(ROOT / name, path / name)
    for name in ("framework", "external"):
        shutil.copytree(ROOT / name, path / name, ignore=ignore)
    settings = yaml.safe_load((ROOT / "inventory/group_vars/all.yml").read_text())
    settings["fleet_image"] |= {"repository": repository, **(image_settings or {})}
    write_settings(path, settings)
    git(path, "init", "-q", "-b", "main")
    if remote:
        git(path, "remote", "add", "origin", remote)
    commit_all(path, "the demo framework")
    for number in range(1, commits):
        (path / "framework" / "CHANGES").write_text(f"change {number}\n")
        commit_all(path, f"change {number}")
    return path


def write_settings(project: Path, settings: dict[str, Any]) -> None:
    target = project / "inventory/group_vars/all.yml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(settings, sort_keys=False))


def run_cli(*argv: str) -> int:
    """``fleet build``/``fleet images`` as fleet's main() runs them: exit code, errors."""
    parser = ArgumentParser(prog="fleet")
    build_cli.register(parser.add_subparsers(dest="command", parser_class=ArgumentParser))
    try:
        args: argparse.Namespace = parser.parse_args(list(argv))
        code: int = args.handler(args)
    except FleetError as exc:
        return exc.exit_code
    return code


# --- no engine ----------------------------------------------------------------------------


def test_project_settings_from_the_inventory(tmp_path: Path) -> None:
    project = load_project(make_project(tmp_path / "p", "cauchy-x"))
    assert project.repository == "cauchy-x"
    assert project.base_reference == "cauchy-x_base:latest"
    assert project.tag_prefix == "0.2"
    assert project.upstream_reference() == LAYER1
    assert project.base_build_args == (("APT_PACKAGES", ""), ("PIP_PACKAGES", ""))
    assert project.context == ("framework",)
    assert project.run_spec.name == "cauchy_service"
    assert project.health.path == "/health"


def test_fleet_yml_wins_and_defaults_apply(tmp_path: Path) -> None:
    root = make_project(tmp_path / "My Framework", "ignored")
    (root / "fleet.yml").write_text("fleet_run: {command: [python, x.py]}\n")
    project = load_project(root, tag_prefix="1.4")
    assert project.settings_path == root / "fleet.yml"
    assert project.repository == "my-framework"
    assert project.tag_prefix == "1.4"
    assert project.base_reference == "my-framework_base:latest"
    # Without the setting, layer 1 is Dockerfile.base's default.
    assert project.upstream_reference() == "pytorch/pytorch:2.3.1-cuda12.1-cudnn8-runtime"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fleet_image: {tag_prefix: 0.10}\n", "read as a number"),
        ("fleet_image: {repository: Cauchy}\n", "not a valid image repository name"),
        ("fleet_image: {repo: cauchy}\n", r"fleet_image\.repo: unknown setting"),
        ("fleet_image: {context: framework}\n", "expected a list of project paths"),
        ("fleet_image: {context: [../elsewhere]}\n", "not a path inside the project"),
        ("fleet_image: {base_build_args: [A]}\n", "expected a mapping NAME: VALUE"),
        ("fleet_run: {port: eighty}\n", "fleet_run.port"),
        ("fleet_image: [\n", "fleet.yml:2:1: not valid YAML"),
        ("- a list\n", "expected a mapping of variables"),
    ],
)
def test_bad_settings_are_project_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "fleet.yml").write_text(text)
    with pytest.raises(ProjectError, match=message) as caught:
        load_project(tmp_path)
    assert caught.value.exit_code == EXIT_BAD_FILE


def test_a_bad_tag_prefix_option_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        load_project(make_project(tmp_path / "p", "x-y"), tag_prefix="a b")
    assert run_cli("build", "--project", str(tmp_path / "p"), "--tag-prefix", "a b") == 5
    assert run_cli("build", "--no-such-option") == EXIT_BAD_OPTIONS


def test_labels_equal_the_git_facts(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", "cauchy-l", commits=3, remote=REMOTE)
    project = load_project(root)
    facts = gitinfo.read(root)
    labels = framework_labels(
        project,
        facts,
        build_date="2026-11-28T10:00:00Z",
        base_reference=project.base_reference,
        base_id="sha256:" + "b" * 64,
        inputs="sha256:" + "c" * 64,
    )
    check_labels(labels, project, facts, tag="0.2.3")
    assert labels["org.opencontainers.image.base.digest"] == "sha256:" + "b" * 64
    assert labels["org.label-schema.build-date"] == "2026-11-28T10:00:00Z"
    build_args = framework_build_args(labels)
    assert build_args["VCS_REVISION"] == facts.commit
    assert build_args["BASE_IMAGE"] == "cauchy-l_base:latest"


def check_labels(
    labels: dict[str, str] | Any, project: Project, facts: gitinfo.GitFacts, *, tag: str
) -> None:
    schema, oci = "org.label-schema.", "org.opencontainers.image."
    reference = f"{project.repository}:{tag}"
    assert labels[f"{schema}schema-version"] == "1.0"
    assert ISO_UTC.fullmatch(labels[f"{schema}build-date"])
    assert labels[f"{oci}created"] == labels[f"{schema}build-date"]
    assert labels[f"{schema}name"] == labels[f"{oci}title"] == project.repository
    assert labels[f"{schema}vcs-ref"] == facts.short_commit
    assert labels[f"{oci}revision"] == facts.commit
    assert labels[f"{schema}vcs-branch"] == (facts.branch or "")
    assert labels[f"{schema}version"] == labels[f"{oci}version"] == facts.version
    assert labels[f"{schema}vcs-url"] == labels[f"{oci}source"]
    assert labels[f"{oci}base.name"] == project.base_reference
    assert labels[f"{schema}description"] == labels[f"{oci}description"] == project.description
    assert labels[f"{schema}vendor"] == labels[f"{oci}vendor"] == project.vendor
    assert labels["io.fleet.framework"] == project.repository
    assert labels["io.fleet.tag"] == tag
    assert labels["io.fleet.commit-count"] == str(facts.commit_count)
    assert labels["io.fleet.dirty"] == ("true" if facts.dirty else "false")
    assert labels["io.fleet.detached"] == ("true" if facts.detached else "false")
    command = labels["org.label-schema.docker.cmd"]
    assert parse_docker_cmd(command, reference) == project.run_spec
    if facts.remote_url:
        assert labels[f"{oci}source"] == "https://git.example.com/lab/cauchy.git"
        assert labels[f"{oci}url"] == "https://git.example.com/lab/cauchy"
    assert not any("s3cret" in value or "alice" in value for value in labels.values())


def test_the_context_digest_follows_content_only(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", "cauchy-d")

    def digest(args: dict[str, str] | None = None) -> str:
        files = context_files(root, "Dockerfile.base", ["external"])
        return context_digest(files, args or {})

    first = digest()
    module = root / "external" / "cauchy_kernels" / "__init__.py"
    os.utime(module, (0, 0))
    (root / "external" / "cauchy_kernels" / "__pycache__").mkdir()
    (root / "external" / "cauchy_kernels" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert digest() == first
    assert digest({"PIP_PACKAGES": "scipy"}) != first
    module.write_text(module.read_text() + "\n# changed\n")
    assert digest() != first
    names = [name for name, _ in context_files(root, "Dockerfile.base", ["external"])]
    assert names[0] == "Dockerfile.base"
    assert "external/cauchy_kernels/__init__.py" in names
    assert not any("__pycache__" in name for name in names)


def test_labels_become_one_dockerfile_instruction() -> None:
    labels = {"a.b": 'x "y" $HOME \\z', "multi": "one\ntwo"}
    text, rest = with_labels("FROM scratch\n", labels)
    assert text.endswith('LABEL "a.b"="x \\"y\\" \\$HOME \\\\z"\n')
    assert text.count("LABEL") == 1
    assert rest == {"multi": "one\ntwo"}
    escaped = "# syntax=docker/dockerfile:1\n# escape=`\nFROM scratch\n"
    assert with_labels(escaped, labels) == (escaped, labels)


def test_a_missing_context_path_or_dockerfile_is_a_project_error(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", "cauchy-m")
    with pytest.raises(ProjectError, match="models is missing"):
        context_files(root, "Dockerfile", ["framework", "models"])
    (root / "Dockerfile").unlink()
    with pytest.raises(ProjectError, match="Dockerfile is missing"):
        context_files(root, "Dockerfile", ["framework"])


def test_outside_a_git_repository_build_exits_4(tmp_path: Path) -> None:
    for name in ("Dockerfile", "Dockerfile.base"):
        shutil.copy(ROOT / name, tmp_path / name)
    assert run_cli("build", "--project", str(tmp_path)) == EXIT_BAD_FILE
    git(tmp_path, "init", "-q")
    assert run_cli("build", "--project", str(tmp_path)) == EXIT_BAD_FILE
    assert run_cli("build", "--project", str(tmp_path / "missing")) == EXIT_BAD_FILE


# --- with the engine ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    try:
        client = daemon.connect()
    except FleetError as exc:
        pytest.fail(f"{exc}\n(deselect engine tests with -m 'not docker')")
    if not client.images.list(name=LAYER1):
        pytest.fail(
            f"the layer-1 image {LAYER1} is missing: create it with mmdebstrap + docker "
            "import (scripts/setup.sh does)"
        )
    yield client
    client.close()


@pytest.fixture(scope="module")
def repositories(engine: Any) -> Iterator[list[str]]:
    """Repository names used by the tests; their images are removed at the end."""
    names: list[str] = []
    yield names
    for name in names:
        remove_images(engine, name)


def remove_images(client: Any, repository: str) -> None:
    """Remove every image of ``repository`` and its base, children before parents."""
    for _ in range(5):
        found = client.images.list(filters={"label": f"io.fleet.base={repository}"})
        found += client.images.list(filters={"label": f"io.fleet.framework={repository}"})
        if not found:
            return
        framework_first = sorted(found, key=lambda image: "io.fleet.framework" not in image.labels)
        for image in framework_first:
            try:
                client.images.remove(image.id, force=True)
            except Exception:  # a parent still in use: removed in the next round
                continue


@pytest.fixture
def new_repository(repositories: list[str]) -> Iterator[str]:
    name = f"fleet-test-{SESSION}-{len(repositories)}"
    repositories.append(name)
    yield name


@pytest.mark.docker
def test_build_tags_labels_and_reuses(engine: Any, new_repository: str, tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", new_repository, commits=2, remote=REMOTE)
    project = load_project(root)
    steps: list[tuple[str, str]] = []
    result = images.build(
        engine, project, images.BuildOptions(on_step=lambda *step: steps.append(step))
    )

    facts = gitinfo.read(root)
    assert result.tag == "0.2.2"
    assert result.reference == f"{new_repository}:0.2.2"
    assert result.base.action == "built"
    assert result.base.reason == "it does not exist yet"
    assert result.framework.action == "built"
    assert [layer for layer, _ in steps] == ["base", "framework"]
    image = engine.images.get(result.reference)
    assert image.id == result.image_id
    check_labels(image.labels, project, facts, tag="0.2.2")
    assert image.labels["org.opencontainers.image.base.digest"] == result.base.image_id
    assert dict(result.labels) == {key: image.labels[key] for key in result.labels}
    env = dict(item.split("=", 1) for item in image.attrs["Config"]["Env"])
    assert env["CAUCHY_COMMIT"] == facts.commit
    assert env["CAUCHY_TAG"] == "0.2.2"

    upstream, base, framework = result.layers
    assert upstream.reference == LAYER1
    assert upstream.action == "present"
    assert upstream.size and upstream.increment == upstream.size
    assert base.size == upstream.size + (base.increment or 0)
    assert framework.size == base.size + (framework.increment or 0)
    assert 0 < (base.increment or 0) < 1_000_000
    assert any("Step" in line for line in result.log)

    started = time.monotonic()
    again = images.build(engine, project)
    assert time.monotonic() - started < 120  # a hang guard: "reused" below is the real check
    assert again.base.action == "reused"
    assert again.base.image_id == result.base.image_id
    assert again.framework.action == "reused"
    assert again.image_id == result.image_id
    assert again.log == ()

    (root / "framework" / "CHANGES").write_text("third\n")
    commit_all(root, "third")
    third = images.build(engine, project)
    assert third.tag == "0.2.3"
    assert third.base.action == "reused"
    assert third.framework.action == "built"

    versions = daemon.list_versions(engine, new_repository)
    assert [version.tag for version in versions] == ["0.2.3", "0.2.2"]
    newest = versions[0]
    assert newest.image_id == third.image_id
    assert newest.commit == gitinfo.read(root).commit
    assert newest.branch == "main"
    assert not newest.dirty
    assert newest.tagged
    assert newest.commit_count == 3
    assert newest.size == third.framework.size
    assert parse_docker_cmd(newest.docker_cmd, newest.reference) == project.run_spec


@pytest.mark.docker
def test_the_base_is_rebuilt_only_when_its_inputs_change(
    engine: Any, new_repository: str, tmp_path: Path
) -> None:
    root = make_project(tmp_path / "p", new_repository)
    first = images.build(engine, load_project(root))
    assert first.base.action == "built"

    def build_again(reason: str | None, *, rebuild_base: bool = False) -> images.BuildResult:
        result = images.build(
            engine, load_project(root), images.BuildOptions(rebuild_base=rebuild_base)
        )
        if reason is None:
            assert result.base.action == "reused"
        else:
            assert result.base.action == "built"
            assert reason in result.base.reason
        return result

    (root / "framework" / "CHANGES").write_text("framework only\n")
    commit_all(root, "framework only")
    assert build_again(None).base.image_id == first.base.image_id

    kernels = root / "external" / "cauchy_kernels" / "__init__.py"
    kernels.write_text(kernels.read_text() + "\nEXTRA = 1\n")
    commit_all(root, "external changed")
    changed = build_again("its context or its build arguments changed")
    assert changed.base.image_id != first.base.image_id
    assert changed.framework.action == "built"
    assert changed.labels["org.opencontainers.image.base.digest"] == changed.base.image_id
    build_again(None)

    dockerfile = root / "Dockerfile.base"
    dockerfile.write_text(dockerfile.read_text() + "\nRUN true\n")
    commit_all(root, "Dockerfile.base changed")
    build_again("Dockerfile.base")
    build_again(None)

    settings = yaml.safe_load((root / "inventory/group_vars/all.yml").read_text())
    settings["fleet_image"]["base_build_args"]["EXTRA_ARG"] = "1"
    write_settings(root, settings)
    commit_all(root, "build arguments changed")
    build_again("build arguments")

    forced = build_again("--rebuild-base", rebuild_base=True)
    assert forced.framework.action == "built"
    assert forced.framework.reason == "the commit, its base image or its settings changed"


@pytest.mark.docker
def test_dirty_trees_and_detached_heads_still_build(
    engine: Any, new_repository: str, tmp_path: Path
) -> None:
    root = make_project(tmp_path / "p", new_repository, commits=2)
    clean = images.build(engine, load_project(root))

    (root / "framework" / "CHANGES").write_text("uncommitted\n")
    dirty = images.build(engine, load_project(root))
    facts = gitinfo.read(root)
    assert facts.dirty
    assert dirty.tag == clean.tag == "0.2.2"
    assert dirty.framework.action == "built"
    assert dirty.framework.reason == "the work tree has uncommitted changes"
    assert dirty.labels["io.fleet.dirty"] == "true"
    assert dirty.labels["org.label-schema.version"].endswith("-dirty")
    assert images.build(engine, load_project(root)).framework.action == "built"
    versions = daemon.list_versions(engine, new_repository)
    assert versions[0].dirty and versions[0].tagged
    assert not versions[-1].tagged  # the clean build lost its tag to the dirty one

    git(root, "checkout", "-q", "--", ".")
    git(root, "checkout", "-q", "--detach", "HEAD~1")
    detached = images.build(engine, load_project(root))
    assert detached.tag == "0.2.1"
    assert detached.labels["io.fleet.detached"] == "true"
    assert detached.labels["org.label-schema.vcs-branch"] == ""
    assert daemon.list_versions(engine, new_repository)[-1].branch is None


@pytest.mark.docker
def test_cli_build_and_images_print_json(
    engine: Any, new_repository: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_project(tmp_path / "p", new_repository, remote=REMOTE)
    assert run_cli("build", "--project", str(root), "--tag-prefix", "7", "--json") == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["reference"] == f"{new_repository}:7.1"
    assert [layer["role"] for layer in document["layers"]] == ["upstream", "base", "framework"]
    assert [layer["action"] for layer in document["layers"]] == ["present", "built", "built"]
    assert document["git"]["remote_url"] == "https://git.example.com/lab/cauchy.git"
    assert "s3cret" not in captured.out
    assert "building" in captured.err

    assert run_cli("images", "--project", str(root), "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["repository"] == new_repository
    assert [version["tag"] for version in listed["versions"]] == ["7.1"]
    assert listed["versions"][0]["image_id"] == document["image_id"]

    assert run_cli("build", "--project", str(root), "--tag-prefix", "7") == 0
    out = capsys.readouterr().out
    assert f"{new_repository}:7.1" in out
    assert "reused" in out
    assert run_cli("images", "--repository", new_repository) == 0
    assert "7.1" in capsys.readouterr().out


@pytest.mark.docker
def test_a_failing_build_carries_its_log(
    engine: Any, new_repository: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_project(tmp_path / "p", new_repository)
    dockerfile = root / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "RUN echo broken-step-output && false\n")
    commit_all(root, "break the build")
    with pytest.raises(BuildError) as caught:
        images.build(engine, load_project(root))
    error = caught.value
    assert error.layer == "framework"
    assert error.exit_code == EXIT_ERROR
    assert any("broken-step-output" in line for line in error.log)
    assert "broken-step-output" in str(error)
    assert "Dockerfile" in (error.fix or "")

    capsys.readouterr()
    assert run_cli("build", "--project", str(root)) == EXIT_ERROR
    assert "build log of" in capsys.readouterr().err


@pytest.mark.docker
def test_a_missing_upstream_image_names_the_fix(
    engine: Any, new_repository: str, tmp_path: Path
) -> None:
    missing = f"fleet-test-missing-{SESSION}:none"
    root = make_project(tmp_path / "p", new_repository, image_settings={"upstream_image": missing})
    with pytest.raises(BuildError) as caught:
        images.build(engine, load_project(root))
    assert caught.value.layer == "base"
    assert "fleet_image.upstream_image" in (caught.value.fix or "")
    assert missing in (caught.value.fix or "")


@pytest.mark.docker
def test_label_values_survive_the_dockerfile_quoting(
    engine: Any, new_repository: str, tmp_path: Path
) -> None:
    root = make_project(tmp_path / "p", new_repository)
    settings = yaml.safe_load((root / "inventory/group_vars/all.yml").read_text())
    settings["fleet_run"]["env"] = {"TRICKY": 'a $HOME "b" \\c `d` $(e)', "LINES": "one\ntwo"}
    settings["fleet_image"]["description"] = 'quotes " and $dollars'
    write_settings(root, settings)
    commit_all(root, "tricky labels")
    project = load_project(root)
    result = images.build(engine, project)
    labels = engine.images.get(result.reference).labels
    assert labels["org.label-schema.description"] == 'quotes " and $dollars'
    command = labels["org.label-schema.docker.cmd"]
    assert command == project.run_spec.render(result.reference)
    assert parse_docker_cmd(command, result.reference) == project.run_spec
