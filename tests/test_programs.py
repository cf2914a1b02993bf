"""The programs fleet runs on hosts (fleet/data/remote): linted, parseable, all in use.

They run end to end on the lab's hosts in the e2e tests of the modules that send them;
here each is checked as a file: shellcheck on the expanded text of the shell ones (POSIX
sh, as hosts run them), a parse by dash, a compile of the Python ones, and no program
that no module sends.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fleet import programs

FLEET = Path(__file__).resolve().parents[1] / "fleet"
SHELL = [name for name in programs.names() if name.endswith(".sh")]
PYTHON = [name for name in programs.names() if name.endswith(".py")]


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: scripts/setup.sh installs it")
    return found


def test_every_program_is_a_shell_or_python_program() -> None:
    assert SHELL and PYTHON
    assert sorted(SHELL + PYTHON) == programs.names()


@pytest.mark.parametrize("name", SHELL)
def test_shell_programs_pass_shellcheck_as_posix_sh(name: str) -> None:
    ran = subprocess.run(
        [_tool("shellcheck"), "-s", "sh", "-"],
        input=programs.program(name),
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout


@pytest.mark.parametrize("name", SHELL)
def test_shell_programs_parse_in_dash(name: str) -> None:
    ran = subprocess.run(
        [_tool("dash"), "-n", "-c", programs.program(name)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr


@pytest.mark.parametrize("name", PYTHON)
def test_python_programs_compile(name: str) -> None:
    compile(programs.program(name), name, "exec")


def test_includes_are_expanded_and_parts_are_not_copied() -> None:
    state = programs.program("image_state.sh")
    target = programs.program("image_target.sh")
    assert "#@include" not in state and target in state
    assert target in programs.program("image_load.sh")


def test_every_program_is_sent_by_some_module() -> None:
    sources = "\n".join(p.read_text() for p in FLEET.rglob("*.py") if "data" not in p.parts)
    included = "\n".join(
        (FLEET / "data" / "remote" / name).read_text() for name in programs.names()
    )
    unused = [
        name
        for name in programs.names()
        if f'program("{name}")' not in sources and f"#@include {name}" not in included
    ]
    assert unused == []


def test_the_health_probe_asks_the_engine_only_when_given_a_container(tmp_path: Path) -> None:
    """fleet ps gives no name (it read the state a moment before); a deploy's wait does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    # A docker of our own on PATH: it records its arguments and says the container runs.
    docker = bin_dir / "docker"
    docker.write_text(f'#!/bin/sh\necho "$*" >>{calls}\necho running\n')
    docker.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    script = programs.program("health.sh")
    probe = ["sh", "-c", script, "fleet-health", "", ""]
    assert subprocess.run(probe, env=env, capture_output=True, text=True, check=True).stdout == ""
    assert not calls.exists()
    named = subprocess.run([*probe[:-1], "c1"], env=env, capture_output=True, text=True, check=True)
    assert named.stdout == "state running\n"
    assert calls.read_text() == "inspect --type container --format {{.State.Status}} c1\n"
