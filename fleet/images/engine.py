"""The controller's Docker engine, read over its Unix socket with the standard library.

For read-only questions on a fast path (``fleet audit``): importing docker-py costs about
0.2 s of CPU, more than the question. Only a local ``unix://`` engine is spoken to here;
for any other ``DOCKER_HOST`` (tcp, TLS, ssh) :func:`get_json` answers None and callers
use docker-py.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.parse
from collections.abc import Mapping
from typing import Any

from fleet.errors import EngineError

DEFAULT_SOCKET = "/var/run/docker.sock"
_TIMEOUT = 30.0


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=_TIMEOUT)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(_TIMEOUT)
        sock.connect(self._path)
        self.sock = sock


def socket_path() -> str | None:
    """The engine's Unix socket from ``DOCKER_HOST``, or None when it is not a Unix one."""
    host = os.environ.get("DOCKER_HOST", "")
    if not host:
        return DEFAULT_SOCKET
    if host.startswith("unix://"):
        return host.removeprefix("unix://")
    return None


def get_json(path: str, query: Mapping[str, Any] | None = None) -> Any | None:
    """``GET path`` on the local engine, decoded; None when the engine is not a local socket."""
    sock = socket_path()
    if sock is None:
        return None
    target = path
    if query:
        target += "?" + urllib.parse.urlencode(
            {k: v if isinstance(v, str) else json.dumps(v) for k, v in query.items()}
        )
    connection = _UnixConnection(sock)
    try:
        connection.request("GET", target, headers={"Host": "docker"})
        answer = connection.getresponse()
        body = answer.read()
    except OSError as exc:
        raise EngineError(
            f"cannot reach the Docker engine at {sock}: {exc.strerror or exc}",
            fix="start it (scripts/start-engine.sh), or point DOCKER_HOST at a running engine",
        ) from exc
    finally:
        connection.close()
    if answer.status != 200:
        raise EngineError(
            f"the Docker engine answered {answer.status} to GET {path}: {body[:200]!r}"
        )
    return json.loads(body)
