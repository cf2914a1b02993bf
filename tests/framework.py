"""Framework versions for end-to-end tests: the demo framework built from temporary git repos."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fleet.images import build as images
from fleet.images import daemon
from fleet.images.project import load_project
from fleet.lab import nodes as lab

ROOT = Path(__file__).resolve().parents[1]
_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
}


@dataclass
class FrameworkProject:
    """A git repository of the demo framework whose versions a test builds."""

    root: Path
    repository: str
    tag_prefix: str = "9.0"
    built: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, root: Path, repository: str) -> FrameworkProject:
        root.mkdir(parents=True)
        for name in ("Dockerfile", "Dockerfile.base", "framework", "external"):
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(source, root / name)
        project = cls(root, repository)
        project.write_settings({})
        project.git("init", "-q", "-b", "main")
        project.git("remote", "add", "origin", "https://example.invalid/lab/cauchy.git")
        return project

    def git(self, *argv: str) -> str:
        return subprocess.run(
            ["git", *argv], cwd=self.root, env=_ENV, check=True, capture_output=True, text=True
        ).stdout

    def write_settings(self, run_changes: Mapping[str, Any]) -> None:
        settings = yaml.safe_load((ROOT / "inventory" / "group_vars" / "all.yml").read_text())
        settings["fleet_image"] = {
            **settings["fleet_image"],
            "repository": self.repository,
            "tag_prefix": self.tag_prefix,
        }
        settings["fleet_run"] = {**settings["fleet_run"], **run_changes}
        (self.root / "fleet.yml").write_text(yaml.safe_dump(settings, sort_keys=False))

    def commit_and_build(self, message: str, run_changes: Mapping[str, Any] | None = None) -> str:
        """Commit (changing the service's text so layer 3 differs) and build; the tag."""
        if run_changes is not None:
            self.write_settings(run_changes)
        marker = self.root / "framework" / "RELEASE"
        marker.write_text(message + "\n")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        client = daemon.connect()
        lab.ensure_layer1_image(client)
        result = images.build(client, load_project(self.root))
        self.built.append(result.tag)
        return result.tag

    def remove_images(self) -> None:
        client = daemon.connect()
        for version in daemon.list_versions(client, self.repository):
            client.images.remove(version.image_id, force=True)
        for image in client.images.list(name=f"{self.repository}_base"):
            client.images.remove(image.id, force=True)


def build_with_label(base_ref: str, reference: str, labels: Mapping[str, str]) -> str:
    """An image FROM ``base_ref`` with extra labels (hostile run commands, for example)."""
    lines = [f"FROM {base_ref}"] + [f"LABEL {_quote(k)}={_quote(v)}" for k, v in labels.items()]
    return build_image(daemon.connect(), reference, "\n".join(lines) + "\n")


def build_image(
    client: Any, reference: str, dockerfile: str, files: Mapping[str, bytes] | None = None
) -> str:
    """Build ``reference`` on the controller's engine from ``dockerfile`` and context files."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in {"Dockerfile": dockerfile.encode(), **(files or {})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=reference, rm=True)
    return reference


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def built_project(
    env: Any, root: Path, repository: str, versions: Sequence[str]
) -> Iterator[FrameworkProject]:
    """A module's framework project with ``versions`` committed and built, the lab's
    framework containers cleared before and after, its images removed at the end."""
    from tests.conftest import clear_framework

    clear_framework(env)
    built = FrameworkProject.create(root, repository)
    for message in versions:
        built.commit_and_build(message)
    yield built
    clear_framework(env)
    built.remove_images()
