"""ansible-core as the oracle of fleet's Ansible vocabulary, on the lab.

Each playbook here (and the shipped ``playbooks/prepare.yml``) runs twice with
``ansible-playbook`` and twice with ``fleet play``, on the same lab hosts, each tool in its
own directory (``oracle_root``). Compared:
- the per-host recap counts of each run (the second run shows idempotency);
- the hosts' resulting state: every path's type, mode, owner, group, and a file's content
  or a link's target;
- the registered results the playbooks write down (``argv.json``...): the keys Ansible
  documents for the module, and their values where they are deterministic.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import LabFixture, host_run, run_cli, run_json
from tests.test_inventory_ansible import _oracle

ANSIBLE_PLAYBOOK = _oracle("ansible-playbook")
ROOT = Path(__file__).resolve().parents[1]
BOOKS = ROOT / "tests" / "fixtures" / "playbooks" / "ansible"
PREPARE = ROOT / "playbooks" / "prepare.yml"
pytestmark = [
    pytest.mark.lab,
    pytest.mark.ansible_oracle,
    pytest.mark.skipif(
        ANSIBLE_PLAYBOOK is None and not os.environ.get("CI"),
        reason="ansible-core is not installed (pip install 'fleet[test]')",
    ),
]
RECAP = re.compile(
    r"^(?P<host>\S+)\s*: ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)"
    r"\s+ignored=(?P<ignored>\d+)",
    re.M,
)
COUNTS = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")
# The registered keys Ansible documents for command and shell, and the common ones.
COMMAND_KEYS = frozenset(
    {"cmd", "rc", "stdout", "stdout_lines", "stderr", "stderr_lines", "start", "end", "delta"}
) | {"changed", "failed", "msg"}
# Keys whose values differ from run to run (times) or by tool on purpose (none yet).
UNSTABLE = frozenset({"start", "end", "delta"})


def ansible_play(
    env: LabFixture, book: Path, variables: dict[str, str], *options: str
) -> dict[str, dict]:
    """``ansible-playbook`` on the lab; each host's recap counts."""
    if ANSIBLE_PLAYBOOK is None:
        pytest.fail("ansible-core is not installed: scripts/setup.sh installs it")
    extra = json.dumps({**variables, "ansible_python_interpreter": "/usr/bin/python3"})
    environment = {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
    }
    ran = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", str(env.inventory), str(book), "-e", extra, *options],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
    recap = {m["host"]: {key: int(m[key]) for key in COUNTS} for m in RECAP.finditer(ran.stdout)}
    assert recap, (
        f"ansible-playbook printed no recap (exit {ran.returncode}):\n{ran.stdout}\n{ran.stderr}"
    )
    return recap


def fleet_play(
    capsys, env: LabFixture, book: Path, variables: dict[str, str], *options: str
) -> dict[str, dict]:
    """``fleet play`` on the lab; each host's recap counts."""
    extra = [arg for key, value in variables.items() for arg in ("-e", f"{key}={value}")]
    code, doc = run_json(capsys, "play", str(book), "-i", str(env.inventory), *extra, *options)
    assert code in (0, 2), doc
    recap: Any = doc["recap"]
    return {host: {key: counts[key] for key in COUNTS} for host, counts in recap.items()}


def both(
    ansible: Callable[[], dict[str, dict]],
    fleet: Callable[[], dict[str, dict]],
    *,
    together: bool = True,
) -> dict[str, dict[str, dict]]:
    """Each tool's recap of one step, the two run side by side (ansible-playbook in a
    thread, fleet here: each tool works in its own directories, or on its own host) unless
    ``together`` is false (a playbook that changes what both would see: a service)."""
    if not together:
        return {"ansible": ansible(), "fleet": fleet()}
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(ansible)
        mine = fleet()
        return {"ansible": running.result(), "fleet": mine}


# find's view of a tree: path, type, mode, owner, group, a link's target.
_FIND = r"%P\t%y\t%m\t%u\t%g\t%l\n"


def tree(env: LabFixture, host: str, root: str) -> list[str]:
    """What is under ``root`` on ``host``: one line per path, with a file's sha256 (the
    registered results written as ``NAME.json`` are compared by :func:`registered`)."""
    listed = host_run(env, host, "find", root, "-mindepth", "1", "-printf", _FIND)
    assert listed.ok, listed.stderr
    # A file's content may name the root too (the test's roots are plain paths).
    script = (
        'cd "$1" && find . -type f | while read -r f; do '
        'printf "%s " "$f"; sed "s|$1|ROOT|g" "$f" | sha256sum; done'
    )
    sums = host_run(env, host, "sh", "-c", script, "sh", root)
    digest = {
        line.split()[0].removeprefix("./"): line.split()[1] for line in sums.stdout.splitlines()
    }
    return sorted(
        # A link's target names the root: each tool has its own; a backup's name holds a
        # pid and a time.
        BACKUP.sub(
            ".PID.TIME~", f"{line.replace(root, 'ROOT')}\t{digest.get(line.split(chr(9))[0], '')}"
        )
        for line in listed.stdout.splitlines()
        if ".json\t" not in line
    )


BACKUP = re.compile(r"\.[0-9]+\.[0-9]{4}-[0-9]{2}-[0-9]{2}@[0-9]{2}:[0-9]{2}:[0-9]{2}~")


def registered(env: LabFixture, host: str, root: str) -> dict[str, dict]:
    """The registered results a playbook wrote down as ``NAME.json`` (its root as ROOT)."""
    found = host_run(env, host, "sh", "-c", 'cd "$1" 2>/dev/null && grep -l . *.json', "sh", root)
    documents = {}
    for name in found.stdout.split():
        text = host_run(env, host, "cat", f"{root}/{name}").stdout
        documents[name] = json.loads(text.replace(root, "ROOT"))
    return documents


def _comparable(document: dict) -> dict:
    keys = (COMMAND_KEYS & document.keys()) if "rc" in document else document.keys()
    return {k: document[k] for k in sorted(keys) if k not in UNSTABLE}


@pytest.mark.parametrize(
    ("book", "root_var", "own"),
    [
        (BOOKS / "commands.yml", "oracle_root", ()),
        (BOOKS / "files.yml", "oracle_root", ()),
        (BOOKS / "blocks.yml", "oracle_root", ()),
        (BOOKS / "lines.yml", "oracle_root", ()),
        (BOOKS / "waits.yml", "oracle_root", ()),
        (BOOKS / "services.yml", "oracle_root", ()),
        (BOOKS / "recurse.yml", "oracle_root", ()),
        (BOOKS / "become.yml", "oracle_root", ()),
        # A crontab is the host's: each tool edits its own user's and its own file.
        (BOOKS / "cron.yml", "oracle_root", ("cron_user", "cron_file")),
        (PREPARE, "data_root", ()),
    ],
    ids=[
        *("commands", "files", "blocks", "lines", "waits", "services", "recurse", "become"),
        *("cron", "prepare"),
    ],
)
def test_fleet_does_what_ansible_does(
    capsys, lab_env: LabFixture, book: Path, root_var: str, own: tuple[str, ...]
) -> None:
    base = f"/tmp/fleet-oracle-{uuid.uuid4().hex[:8]}"
    roots = {"ansible": f"{base}/ansible", "fleet": f"{base}/fleet"}
    names = {tool: f"fleet-oracle-{tool}" for tool in roots}
    variables = {
        tool: {root_var: roots[tool], **{key: names[tool] for key in own}} for tool in roots
    }
    for host in lab_env.lab.hosts:
        for name in names.values() if own else ():
            host_run(lab_env, host.name, "useradd", "-M", "-s", "/usr/sbin/nologin", name)
    # A service is the host's: the two tools take turns there.
    together = book.name != "services.yml"

    def step(*options: str) -> dict[str, dict[str, dict]]:
        return both(
            lambda: ansible_play(lab_env, book, variables["ansible"], *options),
            lambda: fleet_play(capsys, lab_env, book, variables["fleet"], *options),
            together=together,
        )

    try:
        # Check mode first, on hosts that have nothing yet: the same report, nothing made.
        checked = step("--check")
        assert checked["fleet"] == checked["ansible"], checked
        for host in lab_env.lab.hosts:
            assert not host_run(lab_env, host.name, "test", "-e", base).ok, host.name
        first, second = step(), step()
        runs = {tool: [first[tool], second[tool]] for tool in ("ansible", "fleet")}
        # Each playbook passes under Ansible (its failures are ignored or rescued ones):
        # the comparisons below are of work done, not of two tools failing alike. (In
        # check mode a task may fail for want of what an earlier one would have made.)
        for recap in runs["ansible"]:
            assert all(c["failed"] == 0 and c["ok"] > 1 for c in recap.values()), recap
        for first_or_second in (0, 1):
            assert runs["fleet"][first_or_second] == runs["ansible"][first_or_second], (
                f"run {first_or_second + 1}: fleet {runs['fleet'][first_or_second]} "
                f"ansible {runs['ansible'][first_or_second]}"
            )
        for host in (h.name for h in lab_env.lab.hosts):
            states = {tool: tree(lab_env, host, root) for tool, root in roots.items()}
            assert states["fleet"] == states["ansible"], host
            results = {tool: registered(lab_env, host, root) for tool, root in roots.items()}
            assert results["fleet"].keys() == results["ansible"].keys(), host
            for name, document in results["ansible"].items():
                assert _comparable(results["fleet"][name]) == _comparable(document), (host, name)
    finally:
        for host in lab_env.lab.hosts:
            host_run(lab_env, host.name, "rm", "-rf", base)
            for name in names.values() if own else ():
                host_run(lab_env, host.name, "crontab", "-r", "-u", name)
                host_run(lab_env, host.name, "userdel", name)
                host_run(lab_env, host.name, "rm", "-f", f"/etc/cron.d/{name}")


def test_a_module_fleet_lacks_is_refused_before_any_host_is_touched(
    capsys, lab_env: LabFixture, tmp_path: Path
) -> None:
    marker = f"/tmp/fleet-oracle-untouched-{uuid.uuid4().hex[:8]}"
    book = tmp_path / "book.yml"
    book.write_text(
        "- hosts: all\n  tasks:\n"
        f"    - ansible.builtin.file: {{path: {marker}, state: touch}}\n"
        "    - ansible.builtin.blockinfile: {path: /etc/hosts, block: x}\n"
    )
    code, out, err = run_cli(capsys, "play", str(book), "-i", str(lab_env.inventory))
    assert code == 4, (out, err)
    assert "book.yml:4" in err and "'ansible.builtin.blockinfile' is not one fleet has" in err
    assert "nearest: copy" in err
    for host in lab_env.lab.hosts:
        assert not host_run(lab_env, host.name, "test", "-e", marker).ok


PACKAGES = ("hello", "tree")


def _packages(env: LabFixture, host: str) -> list[str]:
    """The packages' dpkg states and manual marks on ``host``."""
    states = host_run(
        env, host, "dpkg-query", "-W", "-f", r"${Package} ${db:Status-Abbrev}\n", *PACKAGES
    )
    manual = host_run(env, host, "apt-mark", "showmanual", *PACKAGES)
    return [*sorted(states.stdout.splitlines()), "manual: " + " ".join(manual.stdout.split())]


def test_fleet_installs_packages_as_ansible_does(capsys, lab_env: LabFixture) -> None:
    book = BOOKS / "packages.yml"
    hosts = {"ansible": lab_env.lab.hosts[0].name, "fleet": lab_env.lab.hosts[1].name}
    root = f"/tmp/fleet-oracle-{uuid.uuid4().hex[:8]}"
    variables = {"oracle_root": root}

    def purge() -> None:
        for host in hosts.values():
            remove = ["apt-get", "-y", "-q", "purge", *PACKAGES]
            host_run(lab_env, host, *remove)
            host_run(lab_env, host, "rm", "-rf", root)

    # Ansible's apt needs python3-apt (it would install it, but fails check mode without
    # it): both hosts get it, and a fresh cache, first.
    for host in hosts.values():
        ready = host_run(
            lab_env,
            host,
            "sh",
            "-c",
            "apt-get -q update && DEBIAN_FRONTEND=noninteractive apt-get -y -q install python3-apt",
        )
        assert ready.ok, ready.stderr
    purge()
    try:
        checked = both(
            lambda: ansible_play(lab_env, book, variables, "--check", "--limit", hosts["ansible"]),
            lambda: fleet_play(
                capsys, lab_env, book, variables, "--check", "--limit", hosts["fleet"]
            ),
        )
        assert checked["fleet"][hosts["fleet"]] == checked["ansible"][hosts["ansible"]], checked
        assert all("hello ii" not in line for h in hosts.values() for line in _packages(lab_env, h))
        for run in (1, 2):
            recaps = both(
                lambda: ansible_play(lab_env, book, variables, "--limit", hosts["ansible"]),
                lambda: fleet_play(capsys, lab_env, book, variables, "--limit", hosts["fleet"]),
            )
            ansible, fleet = recaps["ansible"][hosts["ansible"]], recaps["fleet"][hosts["fleet"]]
            assert ansible["failed"] == 0 and ansible["ok"] > 1, ansible
            assert fleet == ansible, f"run {run}: fleet {fleet} ansible {ansible}"
        states = {tool: _packages(lab_env, host) for tool, host in hosts.items()}
        assert states["fleet"] == states["ansible"]
        assert "hello ii " in states["fleet"][0] + " ", states
        results = {tool: registered(lab_env, host, root) for tool, host in hosts.items()}
        assert results["fleet"] == results["ansible"]
        assert results["fleet"]["installed.json"]["keys"] == [
            "cache_updated",
            "cache_update_time",
        ]
    finally:
        purge()


# Selections of tags; each on fresh directories, compared by recap and by what was made.
SELECTIONS = (
    (),
    ("--tags", "setup"),
    ("--tags", "slow"),
    ("--skip-tags", "slow"),
    ("--tags", "debugging"),
    ("--tags", "tagged"),
    ("--tags", "untagged"),
    ("--skip-tags", "always"),
    ("--tags", "never,deploy"),
    ("--skip-tags", "all"),
)


def test_tags_select_tasks_and_blocks_as_ansible_does(capsys, lab_env: LabFixture) -> None:
    book = BOOKS / "tags.yml"
    host = lab_env.lab.hosts[0].name
    base = f"/tmp/fleet-oracle-{uuid.uuid4().hex[:8]}"
    try:
        for index, selection in enumerate(SELECTIONS):
            roots = {tool: f"{base}/{index}/{tool}" for tool in ("ansible", "fleet")}
            for root in roots.values():  # there even when the task making it is skipped
                assert host_run(lab_env, host, "mkdir", "-p", root).ok
            limit = ("--limit", host, *selection)
            recaps = both(
                lambda: ansible_play(lab_env, book, {"oracle_root": roots["ansible"]}, *limit),
                lambda: fleet_play(capsys, lab_env, book, {"oracle_root": roots["fleet"]}, *limit),
            )
            assert recaps["fleet"] == recaps["ansible"], selection
            made = {tool: tree(lab_env, host, root) for tool, root in roots.items()}
            assert made["fleet"] == made["ansible"], selection
    finally:
        host_run(lab_env, host, "rm", "-rf", base)


def _local_tree(root: Path) -> list[str]:
    """The controller's view of ``root``, as :func:`tree` lists a host's."""
    return sorted(
        f"{path.relative_to(root)}\t{oct(path.stat().st_mode & 0o7777)}\t"
        + (path.read_text() if path.is_file() else "")
        for path in root.rglob("*")
    )


def test_delegated_tasks_run_on_the_controller_as_ansibles_do(
    capsys, lab_env: LabFixture, tmp_path: Path
) -> None:
    book = BOOKS / "delegate.yml"
    base = f"/tmp/fleet-oracle-{uuid.uuid4().hex[:8]}"
    variables = {
        tool: {"oracle_root": f"{base}/{tool}", "controller_root": str(tmp_path / tool)}
        for tool in ("ansible", "fleet")
    }
    try:
        checked = both(
            lambda: ansible_play(lab_env, book, variables["ansible"], "--check"),
            lambda: fleet_play(capsys, lab_env, book, variables["fleet"], "--check"),
        )
        assert checked["fleet"] == checked["ansible"], checked
        assert not any(tmp_path.iterdir())
        for run in (1, 2):
            recaps = both(
                lambda: ansible_play(lab_env, book, variables["ansible"]),
                lambda: fleet_play(capsys, lab_env, book, variables["fleet"]),
            )
            assert all(c["failed"] == 0 for c in recaps["ansible"].values()), recaps
            assert recaps["fleet"] == recaps["ansible"], f"run {run}: {recaps}"
        controller = {tool: _local_tree(tmp_path / tool) for tool in variables}
        assert controller["fleet"] == controller["ansible"]
        assert any(
            line.startswith("lab1.txt\t0o640\tlab1 was here\nseen") for line in controller["fleet"]
        )
        for host in (h.name for h in lab_env.lab.hosts):
            roots = {tool: f"{base}/{tool}" for tool in variables}
            states = {tool: tree(lab_env, host, root) for tool, root in roots.items()}
            assert states["fleet"] == states["ansible"], host
            results = {tool: registered(lab_env, host, root) for tool, root in roots.items()}
            assert results["fleet"] == results["ansible"], host
            assert results["fleet"]["said.json"] == {"stdout": f"{host} was here", "rc": 0}
    finally:
        for host in lab_env.lab.hosts:
            host_run(lab_env, host.name, "rm", "-rf", base)


# The modules whose --diff is a file's content (fleet shows no diff of a path's state).
DIFFED = ("lineinfile", "copy", "template")


def _hunks(text: str) -> list[str]:
    """A diff's hunks: each ``@@`` line and the lines of its hunk (the files' headers are
    left out: each tool names files its way)."""
    found: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("@@"):
            inside = True
        elif (
            not inside
            or not line.startswith(("+", "-", " ", "\\"))
            or line.startswith(("---", "+++"))
        ):
            inside = False
            continue
        found.append(line)
    return found


def test_diffs_show_what_ansibles_do(capsys, lab_env: LabFixture) -> None:
    book = BOOKS / "lines.yml"
    host = lab_env.lab.hosts[0].name
    base = f"/tmp/fleet-oracle-{uuid.uuid4().hex[:8]}"
    names = [
        task["name"]
        for task in yaml.safe_load(book.read_text())[0]["tasks"]
        if any(key.rsplit(".", 1)[-1] in DIFFED for key in task)
    ]
    try:
        options = ("--diff", "--limit", host)
        extra = {"oracle_root": f"{base}/ansible", "ansible_python_interpreter": "/usr/bin/python3"}
        argv = [ANSIBLE_PLAYBOOK or "ansible-playbook", "-i", str(lab_env.inventory), str(book)]
        shown = subprocess.run(
            [*argv, "-e", json.dumps(extra), *options],
            capture_output=True,
            text=True,
            env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
            timeout=300,
            check=False,
        ).stdout
        ansible = {block.split("]", 1)[0]: _hunks(block) for block in shown.split("TASK [")[1:]}
        code, doc = run_json(
            capsys,
            "play",
            str(book),
            "-i",
            str(lab_env.inventory),
            "-e",
            f"oracle_root={base}/fleet",
            *options,
        )
        assert code == 0, doc
        fleet = {
            task["task"]: _hunks(str(task["hosts"][host]["details"].get("diff", "")))
            for task in doc["tasks"]
        }
        for name in names:
            # Ansible follows a content diff with its diff of the path's attributes (as
            # JSON: mode, owner); fleet shows the content's.
            assert fleet[name] == ansible[name][: len(fleet[name])], name
            rest = ansible[name][len(fleet[name]) :]
            assert not rest or rest[1:2] == [" {"], (name, rest)
        assert sum(map(len, fleet.values())) > 20  # diffs were shown, and compared
        assert any(line.startswith("\\ No newline") for line in fleet[names[1]])
    finally:
        host_run(lab_env, host, "rm", "-rf", base)
