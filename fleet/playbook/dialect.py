"""Ansible's way of writing a task, read: module names (short, or with Ansible's collection
prefix), their arguments written as one string (the free form), and the modules fleet does
not have, each with the fleet step nearest to it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fleet.errors import PlaybookError

# The prefixes of Ansible's own module names (its fully qualified collection names).
PREFIXES = ("ansible.builtin.", "ansible.legacy.")

# Ansible's modules fleet does not have, and what to write instead.
NEAREST: Mapping[str, str] = {
    "raw": "command (fleet reaches hosts over SSH; no Python is needed for command)",
    "script": "copy the script, then command",
    "blockinfile": "copy (the whole file) or template",
    "replace": "copy (the whole file) or template",
    "package": "command with the package manager, or provision's install list",
    "yum": "command with the package manager",
    "dnf": "command with the package manager",
    "systemd_service": "systemd (the same module, by its older name)",
    "user": "command: [useradd, ...]",
    "group": "command: [groupadd, ...]",
    "stat": "command: [stat, ...] with register",
    "get_url": "command: [curl, ...] with creates",
    "uri": "command: [curl, ...]",
    "unarchive": "command: [tar, ...] with creates",
    "git": "build (fleet builds images from the project's git checkout)",
    "fetch": "command with register (its stdout)",
    "slurp": "command: [base64, FILE] with register",
    "setup": "nothing: fleet gathers the facts its steps need itself",
    "gather_facts": "nothing: fleet gathers the facts its steps need itself",
    "reboot": "command (and expect the host to come back); deploy keeps the framework running",
    "mount": "command: [mount, ...]",
    "sysctl": "command: [sysctl, ...]",
    "include_tasks": "the tasks themselves, in this playbook",
    "import_tasks": "the tasks themselves, in this playbook",
    "include_role": "the role's tasks, in this playbook",
    "import_role": "the role's tasks, in this playbook",
    "import_playbook": "run the other playbook with its own 'fleet play'",
    "include_vars": "vars_files",
    "docker_container": "deploy (it runs the image's labelled command)",
    "docker_image": "build, push",
    "community.docker.docker_container": "deploy (it runs the image's labelled command)",
    "community.docker.docker_image": "build, push",
}

# Arguments that Ansible's free form (``file: path=/x state=directory``) may name.
_KV = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)
# The free-form parameters of command and shell (``command: ls chdir=/tmp``).
_COMMAND_PARAMS = ("chdir", "creates", "removes", "executable", "stdin", "stdin_add_newline")
# What a no_log result shows instead of its output: Ansible's own words.
NO_LOG = (
    "the output has been hidden due to the fact that 'no_log: true' was specified for this result"
)


def canonical(key: str) -> str:
    """A task key without Ansible's collection prefix (``ansible.builtin.copy`` -> copy)."""
    for prefix in PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def looks_like_module(key: str) -> bool:
    """Whether an unknown task key names a module: Ansible's, or a collection's."""
    return canonical(key) in NEAREST or key in NEAREST or key.count(".") >= 2


def refusal(key: str) -> str:
    """Why a module is refused, and what to write instead."""
    name = canonical(key)
    nearest = NEAREST.get(name) or NEAREST.get(key)
    said = f"the module '{key}' is not one fleet has"
    return f"{said}; nearest: {nearest}" if nearest else said


def free_form(step: str, text: str) -> dict[str, Any]:
    """A module's arguments written as one string, the way Ansible reads it.

    command and shell: the string is the command; ``chdir=``, ``creates=`` and the other
    free-form parameters are taken out of it. Every other module: ``key=value`` words.
    """
    if step in ("command", "shell"):
        args: dict[str, Any] = {}
        kept: list[str] = []
        for word in _split_keeping(text):
            match = _KV.match(word.strip())
            if match and match.group(1) in _COMMAND_PARAMS:
                args[match.group(1)] = _unquote(match.group(2))
            else:
                kept.append(word)
        args["cmd"] = "".join(kept).strip()
        return args
    if step == "debug" and not _KV.match(text.strip()):
        return {"msg": text}
    parsed: dict[str, Any] = {}
    for word in _split_keeping(text):
        match = _KV.match(word.strip())
        if not match:
            raise PlaybookError(
                f"'{word.strip()}' is not key=value (the free form of '{step}')",
                fix=f"write the arguments as a mapping: {step}: {{key: value}}",
            )
        parsed[match.group(1)] = _unquote(match.group(2))
    return parsed


def _split_keeping(text: str) -> list[str]:
    """``text`` in words, each with the spaces after it, as Ansible splits a free form: a
    quoted string or a ``{{ }}``/``{% %}`` template is part of its word, spaces and all."""
    words: list[str] = []
    current = ""
    quote = ""
    depth = 0
    index = 0
    while index < len(text):
        pair = text[index : index + 2]
        char = text[index]
        if quote:
            quote = "" if char == quote else quote
        elif pair in ("{{", "{%"):
            depth += 1
            current += pair
            index += 2
            continue
        elif pair in ("}}", "%}") and depth:
            depth -= 1
            current += pair
            index += 2
            continue
        elif char in "\"'" and not depth:
            quote = char
        elif char.isspace() and not depth and current.strip():
            # The spaces after a word stay with it, so what is kept reads as written.
            while index < len(text) and text[index].isspace():
                current += text[index]
                index += 1
            words.append(current)
            current = ""
            continue
        current += char
        index += 1
    if current:
        words.append(current)
    return words


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text
