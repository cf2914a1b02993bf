"""The ``--json`` documents of the demo's commands, recorded: a change to fleet's insides
leaves them byte for byte as they were (after what differs between any two runs is masked).

The documents of a fresh lab's run (build, push, deploy twice, audit, a play of
``playbooks/rollout.yml``, images, facts, ps, rollback) are compared with
``tests/fixtures/json/*.json``. ``FLEET_RECORD_JSON=1`` writes them instead: record with
the code whose output is the reference, then run the test on the change.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LabFixture, project_options, run_json
from tests.framework import ROOT, FrameworkProject, built_project

pytestmark = pytest.mark.lab

FIXTURES = Path(__file__).parent / "fixtures" / "json"
RECORD = os.environ.get("FLEET_RECORD_JSON") == "1"

# Keys whose values differ between any two runs (or machines): masked whole when a word of
# the key is one of these (``bytes_sent``, ``RunningFor``), or the key is listed whole.
_VOLATILE_WORDS = frozenset(
    [
        "seconds",
        "elapsed",
        "time",
        "date",
        "created",
        "since",
        "started",
        "finished",
        "expires",
        "age",
        "rate",
        "bytes",
        "size",
        "sent",
        "free",
        "took",
        "pid",
        "port",
        "duration",
        "address",
        "token",
        "by",
        "controller",
        "uptime",
        "speed",
        "total",
        "needed",
        "kernel",
        # how many layers a host lacked depends on what earlier tests of the session shipped
        "layers",
    ]
)
_VOLATILE_KEYS = frozenset({"api_version", "engine_version", "RunningFor", "Status"})


def _volatile(key: str) -> bool:
    words = re.sub(r"([a-z])([A-Z])", r"\1_\2", key).lower().split("_")
    return key in _VOLATILE_KEYS or any(word in _VOLATILE_WORDS for word in words)


# Within text: what differs between runs, and what it becomes.
_MASKS = (
    (re.compile(r"sha256:[0-9a-f]{12,64}"), "sha256:<digest>"),
    (re.compile(r"\b\d+ bytes\b"), "<n> bytes"),
    # IDs and commits, short (7) or whole: any run of 7+ hex digits, numbers too.
    (re.compile(r"\b[0-9a-f]{7,64}\b"), "<hex>"),
    (re.compile(r"\b\d+/\d+ layers\b"), "<n>/<n> layers"),
    # the lab engines' Debian builds (another machine may install newer ones)
    (re.compile(r"\b\d+\.\d+\.\d+\+dfsg\d*\b"), "<engine>"),
    # docker ps' ages: "4 seconds ago", "Up About a minute (healthy)".
    (re.compile(r"(?:Less than a|About an?|an?|\d+) (?:second|minute|hour|day|week)s?\b"), "<age>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?"), "<time>"),
    (re.compile(r"\d+(?:\.\d+)?\s?(?:B|KiB|MiB|GiB|kB|MB|GB)(?:/s)?\b"), "<size>"),
    (re.compile(r"\b\d+(?:\.\d+)?m?s\b"), "<duration>"),
    (re.compile(r"\b\d+:\d\d(?::\d\d)?\b"), "<clock>"),
    (re.compile(r"fleet-test-\d+(?:-\w+)?"), "<lab>"),
    (re.compile(r"/tmp/[^\s\"':,)]+"), "<tmp>"),
    (re.compile(r"v\d+\.\d+-\d+-g[0-9a-f]+"), "<describe>"),
)


def masked(value: Any, repository: str, key: str = "") -> Any:
    """``value`` with what differs between runs replaced by placeholders (keys kept)."""
    if isinstance(value, dict):
        return {
            (k.replace(repository, "<repo>") if isinstance(k, str) else k): masked(
                v, repository, str(k)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [masked(v, repository, key) for v in value]
    if _volatile(key) and value not in (None, "", [], {}):
        return f"<{type(value).__name__}>"
    if key == "Labels" and isinstance(value, str):
        # docker ps prints a container's labels in Go's map order: a new order each time.
        value = ",".join(sorted(value.split(",")))
    if isinstance(value, str):
        text = value.replace(repository, "<repo>")
        for pattern, placeholder in _MASKS:
            text = pattern.sub(placeholder, text)
        return text
    return value


def check(name: str, document: dict[str, Any], repository: str) -> None:
    """Compare (or record) one command's document."""
    text = json.dumps(masked(document, repository), indent=1, sort_keys=False) + "\n"
    path = FIXTURES / f"{name}.json"
    if RECORD:
        FIXTURES.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"no recorded document {path}: record it with FLEET_RECORD_JSON=1"
    assert text == path.read_text(), f"the --json document of {name!r} changed"


@pytest.fixture(scope="module")
def project(
    lab_env: LabFixture, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FrameworkProject]:
    repository = f"fleet-test-json-{uuid.uuid4().hex[:6]}"
    root = tmp_path_factory.mktemp("fw") / "cauchy"
    yield from built_project(lab_env, root, repository, ["v1", "v2"])


def test_the_demo_s_json_documents_stay_as_recorded(
    lab_env: LabFixture, fast_inventory: Path, project: FrameworkProject, capsys: Any
) -> None:
    v1, v2 = project.built
    options = project_options(fast_inventory, project)
    repository = project.repository
    play_options = [*options, "-e", f"project={project.root}"]
    steps: list[tuple[str, list[str], int]] = [
        ("build", ["build", "--project", str(project.root)], 0),
        ("push", ["push", "all", f"{repository}:{v1}", *options], 0),
        ("deploy_v1", ["deploy", "all", v1, *options], 0),
        ("deploy_again", ["deploy", "all", v1, *options], 0),
        ("audit_behind", ["audit", "all", "--expect", "latest", *options], 2),
        ("play_rollout", ["play", str(ROOT / "playbooks" / "rollout.yml"), *play_options], 0),
        ("audit", ["audit", "all", "--expect", "latest", *options], 0),
        ("images", ["images", "--project", str(project.root)], 0),
        ("facts", ["facts", "all", "-i", str(fast_inventory)], 0),
        ("ps", ["ps", "all", *options], 0),
        ("rollback", ["rollback", "all", *options], 0),
    ]
    for name, argv, expected in steps:
        code, document = run_json(capsys, *argv)
        assert code == expected, (name, document)
        check(name, document, repository)
    assert v2 != v1
