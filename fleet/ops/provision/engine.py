"""The Docker engine's configuration, ``/etc/docker/daemon.json``: merged, never overwritten.

fleet sets what a GPU host needs of its engine and keeps every other key as it is:

- ``live-restore: true``: the engine can restart (an upgrade, a configuration change)
  without stopping the framework's container in the middle of a training job;
- log rotation for the ``json-file`` and ``local`` drivers (``log-opts`` ``max-size`` and
  ``max-file``): a training service logs for months;
- the ``nvidia`` runtime, when the host has the NVIDIA Container Toolkit's
  ``nvidia-container-runtime`` and the engine does not know it yet (what ``nvidia-ctk
  runtime configure --runtime=docker`` writes);
- when asked, ``data-root`` (a big disk for images and containers), only while the engine
  holds none: what it holds would stay behind in the old root (preflight refuses).

A key the operator set to another value is kept and reported. The engine re-reads
``live-restore`` and ``runtimes`` on SIGHUP (a reload, nothing stops); log options need a
restart, which the host program makes only once live-restore is on or nothing runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DAEMON_JSON = "/etc/docker/daemon.json"
DAEMON_JSON_MODE = 0o644

# What dockerd re-reads on SIGHUP, of the keys fleet sets; any other change needs a restart.
RELOADABLE = frozenset({"live-restore", "runtimes"})

# The drivers whose log-opts take max-size and max-file.
ROTATING_DRIVERS = frozenset({"json-file", "local"})

NVIDIA_RUNTIME = {"path": "nvidia-container-runtime", "args": []}


@dataclass(frozen=True)
class EngineSettings:
    """``fleet_provision.engine``: what fleet sets in daemon.json (``engine: false``: none)."""

    manage: bool = True
    live_restore: bool = True
    log_max_size: str = "100m"
    log_max_file: int = 3
    restart_timeout: int = 60  # seconds the engine has to answer after a restart
    # Docker's data-root (images, containers, volumes), e.g. a big disk; "": the engine's.
    data_root: str = ""


class DaemonJsonError(ValueError):
    """daemon.json is not a JSON object: fleet refuses to touch it (the engine would not
    start with it either)."""


@dataclass(frozen=True)
class EngineConfig:
    """What fleet would make of daemon.json: the new text (None: nothing to change), what it
    sets, what it keeps of the operator's that differs, and whether it needs a restart."""

    content: bytes | None
    sets: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    restart: bool = False
    # live-restore as the file says it after the merge (None: the file does not say).
    live_restore: bool | None = None
    # The data-root the change moves the engine to ("": it stays where it is).
    new_root: str = ""


def loaded(current: bytes | None) -> dict[str, Any]:
    """daemon.json as a dict ({} when there is none); :class:`DaemonJsonError` when it is
    not a JSON object."""
    if current is None or not current.strip():
        return {}
    try:
        document = json.loads(current)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DaemonJsonError(f"{DAEMON_JSON} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise DaemonJsonError(f"{DAEMON_JSON} is not a JSON object (a {type(document).__name__})")
    return document


def merged(
    current: bytes | None,
    wish: EngineSettings,
    *,
    running_driver: str = "",
    runtimes: frozenset[str] = frozenset(),
    has_nvidia_runtime: bool = False,
    engine_root: str = "",
) -> EngineConfig:
    """daemon.json with what fleet sets merged in (pure).

    ``running_driver``: the engine's logging driver now (daemon.json may not name one);
    ``runtimes``: the engine's runtimes now; ``has_nvidia_runtime``: whether the host has
    the toolkit's ``nvidia-container-runtime``; ``engine_root``: its data-root now.
    """
    document = loaded(current)
    if not wish.manage:
        return EngineConfig(None)
    sets: list[str] = []
    kept: list[str] = []
    changed: set[str] = set()  # the top-level keys fleet sets
    if "live-restore" not in document:
        document["live-restore"] = wish.live_restore
        sets.append(f"live-restore: {json.dumps(wish.live_restore)}")
        changed.add("live-restore")
    elif document["live-restore"] != wish.live_restore:
        kept.append(f"live-restore is {json.dumps(document['live-restore'])} (yours, kept)")
    driver = str(document.get("log-driver") or running_driver or "json-file")
    if driver in ROTATING_DRIVERS:
        options = document.get("log-opts", {})
        if not isinstance(options, Mapping):
            kept.append("log-opts is not an object (yours, kept)")
        else:
            wanted = {"max-size": wish.log_max_size, "max-file": str(wish.log_max_file)}
            missing = {k: v for k, v in wanted.items() if k not in options}
            if missing:
                document["log-opts"] = {**options, **missing}
                sets += [f"log-opts.{k}: {v}" for k, v in missing.items()]
                changed.add("log-opts")
    elif "log-opts" not in document:
        kept.append(f"log-driver {driver} rotates on its own terms (not set)")
    if has_nvidia_runtime and "nvidia" not in runtimes:
        known = document.get("runtimes", {})
        if not isinstance(known, Mapping):
            kept.append("runtimes is not an object (yours, kept)")
        elif "nvidia" not in known:
            document["runtimes"] = {**known, "nvidia": NVIDIA_RUNTIME}
            sets.append("runtimes.nvidia: nvidia-container-runtime")
            changed.add("runtimes")
    new_root = _data_root(document, wish.data_root, engine_root, sets, kept)
    if new_root:
        changed.add("data-root")
    said = document.get("live-restore")
    live = said if isinstance(said, bool) else None
    if not changed:
        return EngineConfig(None, kept=tuple(kept), live_restore=live)
    content = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
    restart = bool(changed - RELOADABLE)
    return EngineConfig(content, tuple(sets), tuple(kept), restart, live, new_root)


def _data_root(
    document: dict[str, Any], wanted: str, engine_root: str, sets: list[str], kept: list[str]
) -> str:
    """Sets ``data-root`` in ``document`` when asked and the engine is elsewhere; returns it
    ("" when nothing moves). A data-root the file names otherwise is the operator's: kept."""
    if not wanted:
        return ""
    said = document.get("data-root")
    if said is not None:
        if said != wanted:
            kept.append(f"data-root is {json.dumps(said)} (yours, kept)")
        return ""
    if engine_root == wanted:  # the engine was started with it (a --data-root flag)
        return ""
    document["data-root"] = wanted
    sets.append(f"data-root: {wanted}")
    return wanted
