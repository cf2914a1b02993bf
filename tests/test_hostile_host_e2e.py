"""A compromised host cannot hurt the controller or the other hosts.

lab2's ``docker`` is shadowed by a script (``/usr/local/bin`` comes first on the PATH of an
SSH session) that answers every call with what a hostile host might send: more output than
fleet reads, megabytes of invalid UTF-8, JSON nested 10,000 deep. Each read-only command
runs in its own process, so its peak memory (``wait4``) is that run's alone: lab2 must be
``failed`` with a reason that says what was wrong, lab1 must be answered as usual, and the
controller's memory must stay bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from tests.conftest import LabFixture, host_run

pytestmark = [pytest.mark.lab, pytest.mark.hostile]

# Shadowed on lab2 (``/usr/local/bin`` comes first on the PATH of an SSH session): the
# docker CLI, and python3, which the gather scripts use to read the engine's socket.
SHADOWED = ("docker", "python3")
_NESTED = "/usr/bin/python3 -c \"print('{\\\"a\\\":' * 10000 + '1' + '}' * 10000)\""
# The hostile answers; each ignores its arguments.
ANSWERS = {
    # 96 MiB on stdout: more than any stream fleet holds (64 MiB).
    "flood": "head -c 100663296 /dev/zero | tr '\\0' 'x'",
    # 20 MiB of invalid UTF-8 in lines: more than a gather script's output may be (16 MiB).
    "garbage": "head -c 10485760 /dev/urandom | od -An -v -tx1 | sed 's/^/\\xff\\xfe/'",
    # An engine that looks alive, then JSON nested 10,000 deep where each section expects JSON.
    "nested": "for s in engine containers images; do echo @@$s; [ $s = engine ] && "
    "echo 26.1.5 && echo '@@engine_rc 0'; " + _NESTED + "; done; echo @@end",
}
COMMANDS = {
    "facts": ["facts"],
    "ps": ["ps"],
    "audit": ["audit", "--repository", "cauchy"],
}
# Peak resident memory of one fleet run against the hostile host (the flood's 64 MiB cap,
# the interpreter, rich, paramiko): a leak of the whole 96 MiB flood, or of a quadratic
# parse, would pass it.
MAX_RSS_MIB = 400


@pytest.fixture
def hostile(lab_env: LabFixture, request: pytest.FixtureRequest) -> Iterator[str]:
    script = f"#!/bin/sh\n{ANSWERS[request.param]}\n".encode()
    paths = [f"/usr/local/bin/{name}" for name in SHADOWED]
    for path in paths:
        installed = host_run(
            lab_env, "lab2", "sh", "-c", 'cat > "$1" && chmod 0755 "$1"', "x", path, stdin=script
        )
        assert installed.ok, installed
    try:
        yield request.param
    finally:
        host_run(lab_env, "lab2", "rm", "-f", *paths)


# Runs fleet as its own child and reports that child's peak RSS (KiB) on the fd argv[1]. A process
# forked straight from pytest would count pytest's own peak too: Linux keeps the largest
# resident set a process had, and a child starts as a copy of its parent (exec records
# the copy's high-water mark). Forked from this small launcher instead, fleet counts only
# itself.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.close(int(sys.argv[1]))
    os.execv(sys.executable, [sys.executable, "-m", "fleet", *sys.argv[2:]])
_, status, usage = os.wait4(pid, 0)
os.write(int(sys.argv[1]), str(usage.ru_maxrss).encode())
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_fleet(*argv: str) -> tuple[int, dict[str, object], str, int]:
    """``python -m fleet ARGV --json`` in its own process: (code, JSON, stderr, peak RSS KiB)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        read_rss, write_rss = os.pipe()
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, str(write_rss), *argv, "--json"],
            stdout=out,
            stderr=err,
            pass_fds=(write_rss,),
        )
        os.close(write_rss)
        with os.fdopen(read_rss, "rb") as rss_pipe:
            rss = rss_pipe.read()
        proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read().decode(errors="replace")
    try:
        document = json.loads(stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"not JSON:\n{stdout[:2000]!r}\nstderr:\n{stderr[-2000:]}") from None
    assert rss.isdigit(), f"the launcher reported no peak RSS: {rss!r}; stderr: {stderr[-2000:]}"
    return proc.returncode, document, stderr, int(rss)


@pytest.mark.parametrize("hostile", list(ANSWERS), indirect=True)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_hostile_host_fails_alone_with_the_reason(
    lab_env: LabFixture, hostile: str, command: str
) -> None:
    code, document, err, rss_kib = run_fleet(
        *COMMANDS[command], "lab1:lab2", "-i", str(lab_env.inventory), "--retry-file", "/dev/null"
    )
    hosts = document["hosts"]
    assert isinstance(hosts, dict)
    assert "Traceback" not in err, err
    assert hosts["lab1"]["outcome"] in ("ok", "changed", "failed"), hosts["lab1"]
    if command != "audit":  # lab1 runs no framework of 'cauchy': drift is its honest answer
        assert hosts["lab1"]["outcome"] == "ok", hosts["lab1"]
    lab2 = hosts["lab2"]
    assert lab2["outcome"] == "failed", lab2
    reason = str(lab2.get("reason") or lab2.get("details"))
    assert "internal error" not in reason, reason
    expected = {
        "flood": ("more than 64 MiB", "fleet reads", "another shape"),
        "garbage": (
            "more than 64 MiB",
            "fleet reads",
            "another shape",
            "not JSON",
            "not answering",
        ),
        "nested": ("nested too deep", "another shape", "RecursionError", "not answering"),
    }[hostile]
    assert any(word in reason for word in expected), reason[:3000]
    assert len(reason) < 4000, f"a reason of {len(reason)} characters: {reason[:3000]}"
    assert code == 2, (code, document)
    assert rss_kib < MAX_RSS_MIB * 1024, f"peak RSS {rss_kib // 1024} MiB"
