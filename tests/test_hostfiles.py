"""The host helper that makes every change fleet makes to files as root, run here.

It is the same program the hosts run (``python3 -I -c``), run by this machine's python3
against directories a test plays a container in: names swapped for links at every
component, before and during the change.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from fleet.ops import hostfiles

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the helper chowns to root")


def run(argv: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=stdin, capture_output=True, check=False, timeout=30)


def test_a_path_walks_from_the_writable_tree_that_holds_it_else_its_own_directory() -> None:
    roots = ("/data", "/scratch/models")
    assert hostfiles.root_of("/data/projects/app.env", roots) == "/data"
    assert hostfiles.root_of("/data", roots) == "/data"
    assert hostfiles.root_of("/scratch/models/x/y", roots) == "/scratch/models"
    assert hostfiles.root_of("/etc/cron.d/fleet-x", roots) == "/etc/cron.d"
    assert hostfiles.root_of("/datasets/x", roots) == "/datasets"  # a sibling, not inside
    assert hostfiles.root_of("/x", roots) == "/"


@pytest.mark.hostile
def test_a_file_is_written_through_no_name_planted_in_a_shared_directory(tmp_path: Path) -> None:
    shared = tmp_path / "projects"
    shared.mkdir()
    shared.chmod(0o2775)  # group-writable, not sticky: a member may plant names here
    victim = tmp_path / "victim"
    victim.write_text("victim\n")
    target = shared / "app.env"
    target.symlink_to(victim)  # the name itself is a link: replaced, never written through
    argv = hostfiles.write_argv(str(shared), str(target), 0o640, "any", owner=hostfiles.LEAVE)
    ran = run(argv, b"new\n")
    assert ran.returncode == 0, ran.stderr
    assert victim.read_text() == "victim\n" and victim.stat().st_mode & 0o777 != 0o640
    assert not target.is_symlink() and target.read_text() == "new\n"
    assert target.stat().st_mode & 0o777 == 0o640
    assert os.listdir(shared) == ["app.env"]  # no temporary file left
    # A failing step (a mode that is not octal) leaves the target as it was, no temp file.
    bad = [*argv[:-3], "0999", *argv[-2:]]
    failed = run(bad, b"other\n")
    assert failed.returncode == 1 and target.read_text() == "new\n"
    assert os.listdir(shared) == ["app.env"]


@pytest.mark.hostile
@pytest.mark.parametrize("depth", [1, 2])
def test_a_link_at_any_component_below_the_root_is_refused(tmp_path: Path, depth: int) -> None:
    data = tmp_path / "data"
    (data / "projects" / "shared").mkdir(parents=True)
    etc = tmp_path / "etc"
    etc.mkdir()
    etc.chmod(0o755)
    # A container swapped one directory of the path for a link to the host's /etc.
    swapped = data / "projects" if depth == 1 else data / "projects" / "shared"
    swapped.rename(tmp_path / "moved")
    swapped.symlink_to(etc)
    path = str(data / "projects" / "shared" / "app.env")
    for argv in (
        hostfiles.write_argv(str(data), path, 0o644, "any"),
        hostfiles.dir_argv(str(data), path, 0o777, "0:0", create=True),
        hostfiles.fix_argv(str(data), path, 0o777, "0:0"),
        hostfiles.stat_argv(str(data), path, content=True),
    ):
        ran = run(argv, b"x\n")
        assert ran.returncode == 3, (argv[4], ran.stderr)
        assert f"{swapped} is a symbolic link below {data}".encode() in ran.stderr
    assert os.listdir(etc) == [] and etc.stat().st_mode & 0o7777 == 0o755


@pytest.mark.hostile
def test_a_file_is_read_for_its_diff_only_through_its_own_name(tmp_path: Path) -> None:
    victim = tmp_path / "shadow"
    victim.write_text("root:$6$hash:19000::::::\n")
    planted = tmp_path / "app.env"
    planted.symlink_to(victim)  # what the name holds when the diff reads it
    ran = run(hostfiles.stat_argv(str(tmp_path), str(planted), content=True))
    found = hostfiles.PathInfo.parse(ran.stdout.decode())
    assert found.kind == "symbolic link" and found.content is None
    assert victim.read_bytes().hex().encode() not in ran.stdout
    real = tmp_path / "real.env"
    real.write_text("mine\n")
    ran = run(hostfiles.stat_argv(str(tmp_path), str(real), content=True))
    found = hostfiles.PathInfo.parse(ran.stdout.decode())
    assert (found.kind, found.content) == ("regular file", b"mine\n")
    assert hostfiles.PathInfo.parse(
        run(hostfiles.stat_argv(str(tmp_path), str(tmp_path / "none"))).stdout.decode()
    ) == hostfiles.PathInfo("absent")


@as_root
def test_a_write_that_expects_what_it_read_keeps_a_concurrent_edit(tmp_path: Path) -> None:
    target = tmp_path / "crontab"
    target.write_bytes(b"old\n")
    seen = hashlib.sha256(b"old\n").hexdigest()
    target.write_bytes(b"edited meanwhile\n")
    ran = run(hostfiles.write_argv(str(tmp_path), str(target), 0o600, seen), b"new\n")
    assert ran.returncode == 3 and b"changed since its facts were read" in ran.stderr
    assert target.read_bytes() == b"edited meanwhile\n"
    seen = hashlib.sha256(b"edited meanwhile\n").hexdigest()
    ran = run(hostfiles.write_argv(str(tmp_path), str(target), 0o600, seen), b"new\n")
    assert ran.returncode == 0, ran.stderr
    assert (target.read_bytes(), target.stat().st_uid, target.stat().st_mode & 0o7777) == (
        b"new\n",
        0,
        0o600,
    )


@as_root
def test_a_file_is_fixed_through_itself_and_a_link_there_is_refused(tmp_path: Path) -> None:
    script = tmp_path / "aicron.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o777)
    ran = run(hostfiles.fix_argv(str(tmp_path), str(script), 0o755, "0:0"))
    assert ran.returncode == 0, ran.stderr
    assert script.stat().st_mode & 0o7777 == 0o755
    victim = tmp_path / "victim"
    victim.write_text("v\n")
    victim.chmod(0o600)
    script.unlink()
    script.symlink_to(victim)
    ran = run(hostfiles.fix_argv(str(tmp_path), str(script), 0o755, "0:0"))
    assert ran.returncode == 3 and b"is not a regular file" in ran.stderr
    assert victim.stat().st_mode & 0o7777 == 0o600
