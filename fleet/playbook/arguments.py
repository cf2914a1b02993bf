"""Each step's and module's arguments: their names and types, which are required, which
exclude each other, Ansible's other names for them, and which are expressions rather than
templates. Read by the task checker (:mod:`fleet.playbook.task`).
"""

from __future__ import annotations

from collections.abc import Mapping

_STR = (str,)
_NUM = (int, float)
_ANY = (str, int, float, bool, list, dict)
# How push and deploy ship the image (fleet push --via/--registry/--max-rate*).
_SHIPPING: Mapping[str, tuple[type, ...]] = {
    "via": _STR,
    "registry": _STR,
    "max_rate": (str, int),
    "max_rate_per_host": (str, int),
}
# Each step's arguments: name -> accepted types. Values may also be templated strings.
STEPS: Mapping[str, Mapping[str, tuple[type, ...]]] = {
    "build": {"project": _STR, "rebuild_base": (bool,), "rebuild": (bool,), "tag_prefix": _STR},
    "push": {
        "image": _STR,
        "project": _STR,
        "compress": _STR,
        "min_free": (str, int),
        **_SHIPPING,
    },
    "provision": {"skip_base": (bool,)},
    "deploy": {"version": _STR, "project": _STR, "compress": _STR, "wait": _NUM, **_SHIPPING},
    "rollback": {"to": _STR, "project": _STR, "wait": _NUM},
    "prune": {"keep": (int,), "project": _STR},
    "audit": {"expect": _STR, "project": _STR, "history": (int,)},
    "exec": {"command": (list,), "shell": _STR},
    "dir": {"path": _STR, "mode": (str, int), "owner": _STR, "group": _STR},
    # fleet's cron (schedule: a file /etc/cron.d/fleet-NAME) or Ansible's (the time fields).
    "cron": {
        "name": _STR,
        "schedule": _STR,
        "job": _STR,
        "minute": (str, int),
        "hour": (str, int),
        "day": (str, int),
        "month": (str, int),
        "weekday": (str, int),
        "special_time": _STR,
        "state": _STR,
        "user": _STR,
        "cron_file": _STR,
        "disabled": (bool,),
    },
    # Ansible's modules (fleet.playbook.modules), with Ansible's arguments.
    "command": {
        "cmd": _STR,
        "argv": (list,),
        "chdir": _STR,
        "creates": _STR,
        "removes": _STR,
        "stdin": _STR,
        "stdin_add_newline": (bool,),
    },
    "shell": {
        "cmd": _STR,
        "chdir": _STR,
        "creates": _STR,
        "removes": _STR,
        "stdin": _STR,
        "stdin_add_newline": (bool,),
        "executable": _STR,
    },
    "file": {
        "path": _STR,
        "state": _STR,
        "mode": (str, int),
        "owner": _STR,
        "group": _STR,
        "src": _STR,
        "force": (bool,),
        "recurse": (bool,),
    },
    "copy": {
        "dest": _STR,
        "content": _STR,
        "src": _STR,
        "mode": (str, int),
        "owner": _STR,
        "group": _STR,
        "backup": (bool,),
    },
    "template": {
        "src": _STR,
        "dest": _STR,
        "mode": (str, int),
        "owner": _STR,
        "group": _STR,
        "backup": (bool,),
    },
    "lineinfile": {
        "path": _STR,
        "line": _STR,
        "regexp": _STR,
        "state": _STR,
        "insertafter": _STR,
        "insertbefore": _STR,
        "firstmatch": (bool,),
        "search_string": _STR,
        "backrefs": (bool,),
        "create": (bool,),
        "mode": (str, int),
        "owner": _STR,
        "group": _STR,
    },
    "wait_for": {
        "path": _STR,
        "port": (int, str),
        "host": _STR,
        "state": _STR,
        "timeout": (int, float, str),
        "delay": (int, float, str),
        "sleep": (int, float, str),
        "search_regex": _STR,
        "msg": _STR,
    },
    "apt": {
        "name": (str, list),
        "state": _STR,
        "update_cache": (bool,),
        "cache_valid_time": (int,),
        "install_recommends": (bool,),
        "purge": (bool,),
        "autoremove": (bool,),
        "lock_timeout": (int,),
    },
    "service": {"name": _STR, "state": _STR, "enabled": (bool,)},
    "systemd": {"name": _STR, "state": _STR, "enabled": (bool,), "daemon_reload": (bool,)},
    "debug": {"msg": _ANY, "var": _STR, "verbosity": (int,)},
    "set_fact": {},  # any variable names (checked on their own)
    "assert": {
        "that": (str, list, bool),
        "fail_msg": _ANY,
        "msg": _ANY,
        "success_msg": _ANY,
        "quiet": (bool,),
    },
    "fail": {"msg": _ANY},
    "ping": {"data": _STR},
    "pause": {"seconds": (int, float, str), "minutes": (int, float, str)},
}
REQUIRED: Mapping[str, tuple[str, ...]] = {
    "dir": ("path",),
    "copy": ("dest",),
    "cron": ("name",),
    "shell": ("cmd",),
    "file": ("path",),
    "template": ("src", "dest"),
    "lineinfile": ("path",),
    "service": ("name",),
    "assert": ("that",),
}
# Arguments of which exactly one is given.
ONE_OF: Mapping[str, tuple[tuple[str, ...], str]] = {
    "exec": (("command", "shell"), "give either command (a list) or shell (a string)"),
    "command": (("cmd", "argv"), "give the command: free form, cmd (a string) or argv (a list)"),
    "copy": (("content", "src"), "give either content or src (a file beside the playbook)"),
    "debug": (("msg", "var"), "give msg or var, not both"),
}
# The arguments that are expressions (a when), not templates: compiled as conditions.
EXPRESSIONS: Mapping[str, frozenset[str]] = {
    "debug": frozenset({"var"}),
    "assert": frozenset({"that"}),
}
# Steps that act on the whole fleet at once (their own outcome, no changed_when).
FLEET_WIDE_STEPS = frozenset({"build", "push", "provision", "deploy", "rollback", "prune", "audit"})
# Ansible's other names of an argument.
ALIASES: Mapping[str, Mapping[str, str]] = {
    "file": {"dest": "path", "name": "path"},
    "cron": {"dom": "day", "dow": "weekday"},
    "systemd": {"daemon-reload": "daemon_reload"},
    "apt": {
        "pkg": "name",
        "package": "name",
        "update-cache": "update_cache",
        "install-recommends": "install_recommends",
    },
    "lineinfile": {"dest": "path", "name": "path", "regex": "regexp"},
    "copy": {"path": "dest"},
    "template": {"path": "dest"},
}
CONTROLLER_STEPS = frozenset({"build"})
