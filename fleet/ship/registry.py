"""The registry an image travels through when hosts pull it instead of being sent it.

Two kinds (``fleet push --via registry``):

- an existing registry the hosts reach themselves (Harbor, distribution, a pull-through
  mirror): the controller's engine pushes the image there with its own credentials
  (``docker login`` on the controller; fleet never reads, prints or stores them), and
  each host pulls it with its own;
- a registry on the controller, for hosts that reach no registry: Debian's
  ``docker-registry`` (distribution 2.8) on ``127.0.0.1``, its blobs kept between runs
  (:func:`cache_storage`), reverse-tunnelled over each host's SSH connection to the host's own
  ``127.0.0.1:PORT``. Engines allow plain HTTP to ``127.0.0.0/8``, so hosts need no TLS
  and no daemon configuration (checked on Docker 20.10 classic and 26.1 containerd).
  Each tunnel ends in a :class:`Relay`, a loopback port on the controller that counts
  (and, with ``--max-rate``, limits) the bytes each host pulls.

What a host pulls is what the controller pushed, whoever else reaches the registry:

- Hosts pull by the manifest digest the push returned (``NAME@sha256:...``), never by a
  tag, and the pulled image is verified before it gets its real name.
- A tunnel's end on the host is reachable by anything on the host's loopback (every
  ``--network host`` container). The :class:`Relay` behind it therefore lets through only
  what a pull of the one published repository needs (``GET``/``HEAD`` of ``/v2/`` and of
  that repository's manifests and blobs by digest), and only with the relay's own random
  :class:`Credential`; everything else is answered 401/403/405 and never reaches the
  registry. The relay checks the credential, not the registry: distribution's htpasswd
  wants bcrypt hashes (another package on the controller) and would let every holder of
  the credential push too. The controller's engine pushes straight to the registry on
  the controller's own loopback, where it stays unauthenticated (the engine needs a TCP
  address): a user of the controller can read it while it runs, and what anyone pushes
  there changes nothing a host pulls (below).
- The registry's delete API is off. Its cache cannot be poisoned: it stores blobs and
  manifests under the digest of their content (checked on upload, and again by the
  engine on every pull), and the only thing a push by someone else can change, a tag,
  is never what a host pulls.

The per-host steps (pull, verify, name, remove the pull's name) live in
:mod:`fleet.ship.pull`, beside the SSH path they replace (:mod:`fleet.ship.push`).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from fleet.errors import RegistryError, UsageError, tail_lines
from fleet.ship.bandwidth import Throttle

DEFAULT_BINARY = "/usr/bin/docker-registry"
# The repository prefix in the controller's own registry: its names say who put them there.
LOOPBACK_PREFIX = "fleet"
_START_TIMEOUT = 20.0
_COPY_CHUNK = 1 << 16
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# A pull's request heads are a few hundred bytes; a bigger one is not a pull.
_MAX_HEAD = 16 << 10
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VISIBLE = re.compile(r"[\t\x20-\x7e]*")
_HEAD_BYTES = re.compile(rb"[\t\r\n\x20-\x7e]*")
# A line end other than CRLF: some servers end a head at "\n\n", where the relay would not.
_BARE_LINE_END = re.compile(rb"(?<!\r)\n|\r(?!\n|$)")


@runtime_checkable
class Forwarding(Protocol):
    """A transport that can listen on the host's loopback for the controller (``ssh -R``)."""

    def forward_remote(self, port: int, target: tuple[str, int]) -> int: ...

    def cancel_forward(self, port: int) -> None: ...


# -- names ------------------------------------------------------------------------------
def parse_address(url: str) -> str:
    """A registry URL as image names spell it: ``host[:port][/prefix]``, without scheme.

    Credentials in the URL are refused: they would end up in process lists, logs and
    shell history. The engine's own ``docker login`` is the place for them.
    """
    text = url.strip()
    for scheme in ("https://", "http://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
    text = text.rstrip("/")
    host = text.split("/", 1)[0]
    if "@" in host:
        raise UsageError(
            "--registry must not carry credentials",
            fix="log in on the controller with 'docker login HOST' (and on each host for "
            "private registries); fleet uses the engines' own credentials",
        )
    if not text or any(c in text for c in " ?#\\") or not re.fullmatch(r"[A-Za-z0-9._:/-]+", text):
        raise UsageError(f"--registry {url!r} is not a registry address like harbor.lab/ml")
    if not ("." in host or ":" in host or host == "localhost"):
        raise UsageError(
            f"--registry {url!r} does not name a registry host",
            fix="give the host, e.g. harbor.lab:5000/ml or docker.io/lab",
        )
    return text


def repository_path(ref: str) -> tuple[str, str]:
    """``(path, tag)`` of ``repo:tag`` without its registry host (``lab/cauchy``, ``1``)."""
    repo, _, tag = ref.rpartition(":")
    if not repo or "/" in tag:
        repo, tag = ref, "latest"
    first, _, rest = repo.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        repo = rest
    return repo, tag


@dataclass(frozen=True)
class Location:
    """Where an image is published: the name the controller pushes, and how hosts reach it.

    ``tunnel`` is the controller's registry address that each host gets on its own
    loopback (the name hosts pull then carries the host's port); None when the hosts
    reach ``address`` themselves.
    """

    address: str
    tunnel: tuple[str, int] | None = None

    def name_for(self, ref: str, host_port: int | None = None, digest: str | None = None) -> str:
        """The name of ``ref`` in this registry, as the controller (or a host) says it.

        With ``digest``: the name that pulls exactly that manifest, ``NAME@sha256:...``.
        """
        path, tag = repository_path(ref)
        address = self.address
        if host_port is not None:
            prefix = address.partition("/")[2]
            address = f"127.0.0.1:{host_port}" + (f"/{prefix}" if prefix else "")
        return f"{address}/{path}@{digest}" if digest else f"{address}/{path}:{tag}"

    def repository(self, ref: str) -> str:
        """The repository ``ref`` is published in, as the registry's API says it."""
        path, _ = repository_path(ref)
        prefix = self.address.partition("/")[2]
        return f"{prefix}/{path}" if prefix else path

    @property
    def description(self) -> str:
        """For results: which registry (never credentials: addresses carry none)."""
        return "controller (tunnelled)" if self.tunnel else self.address


# -- the controller's registry ---------------------------------------------------------
def cache_storage() -> Path:
    """Where the controller's registry keeps its blobs between runs.

    ``$FLEET_REGISTRY_CACHE`` or ``~/.cache/fleet/registry``: kept, so that the next
    publish pushes only the layers it lacks (the engine asks before it uploads a blob).
    Safe to delete at any time.
    """
    return Path(os.environ.get("FLEET_REGISTRY_CACHE") or "~/.cache/fleet/registry").expanduser()


class LoopbackRegistry:
    """A ``docker-registry serve`` on ``127.0.0.1``.

    A context manager: the process and its temporary directory are gone when the block
    ends, whatever happened inside. Its blobs live there too, unless ``storage`` names a
    directory that outlives the process (see :func:`cache_storage`).
    """

    def __init__(
        self,
        binary: str = DEFAULT_BINARY,
        start_timeout: float = _START_TIMEOUT,
        storage: Path | None = None,
    ):
        self.binary = binary
        self.start_timeout = start_timeout
        self.storage = storage
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> LoopbackRegistry:
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            raise RegistryError(
                f"{self.binary} is not installed on the controller",
                fix="apt-get install docker-registry (scripts/setup.sh does), or use "
                "--registry URL / --via ssh",
            )
        self._dir = Path(tempfile.mkdtemp(prefix="fleet-registry-"))
        storage = self.storage or self._dir / "storage"
        storage.mkdir(mode=0o700, parents=True, exist_ok=True)
        config = self._dir / "config.yml"
        # Port 0: the kernel picks a free port, and the registry says which in its log.
        config.write_text(
            "version: 0.1\n"
            "log: {level: info, accesslog: {disabled: true}}\n"
            f"storage: {{filesystem: {{rootdirectory: {json.dumps(str(storage))}}}, "
            "delete: {enabled: false}}\n"
            "http: {addr: '127.0.0.1:0'}\n"
        )
        log_path = self._dir / "registry.log"
        # The upload-state secret of this one process; set so that no warning is logged.
        env = {**os.environ, "REGISTRY_HTTP_SECRET": secrets.token_hex(16)}
        with log_path.open("wb") as log:
            # Its own session: a Ctrl-C on the terminal must not kill it under hosts that
            # are finishing their pull; stop() ends it.
            self.process = subprocess.Popen(
                [self.binary, "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        try:
            self.port = self._wait_listening(log_path)
            self._wait_answering()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self, log_path: Path) -> int:
        deadline = time.monotonic() + self.start_timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            text = log_path.read_text(errors="replace")
            found = _LISTENING.search(text)
            if found:
                return int(found.group(1))
            if self.process.poll() is not None:
                raise RegistryError(
                    f"docker-registry exited with {self.process.returncode} on start:\n"
                    + tail_lines(text)
                )
            time.sleep(0.05)
        raise RegistryError(
            f"docker-registry did not start listening within {self.start_timeout:g}s:\n"
            + tail_lines(log_path.read_text(errors="replace"))
        )

    def _wait_answering(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        url = f"http://{self.address}/v2/"
        last = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.05)
        raise RegistryError(f"docker-registry on {self.address} does not answer: {last}")

    def stop(self) -> None:
        """End the process and remove its temporary directory (idempotent)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> LoopbackRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Credential:
    """A random user and password that one relay asks for (HTTP basic); never printed."""

    user: str
    password: str = field(repr=False)

    @classmethod
    def generate(cls) -> Credential:
        return cls(f"fleet-{secrets.token_hex(4)}", secrets.token_urlsafe(32))

    @property
    def basic(self) -> str:
        """``base64(user:password)``: a docker config's ``auth``, the header's value."""
        return base64.b64encode(f"{self.user}:{self.password}".encode()).decode("ascii")


# A refusal's status -> its reason phrase, the registry's error code and message.
_REFUSALS = {
    400: ("Bad Request", "UNSUPPORTED", "malformed request"),
    401: ("Unauthorized", "UNAUTHORIZED", "authentication required"),
    403: ("Forbidden", "DENIED", "requested access to the resource is denied"),
    405: ("Method Not Allowed", "UNSUPPORTED", "the operation is unsupported"),
}


def refusal_answer(status: int) -> bytes:
    """The relay's whole answer to a refused request, as the registry words its own."""
    phrase, code, message = _REFUSALS[status]
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": None}]})
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        "Content-Type: application/json; charset=utf-8",
        "Docker-Distribution-Api-Version: registry/2.0",
    ]
    if status == 401:
        # The challenge that makes docker and containerd send the credential they hold.
        lines.append('WWW-Authenticate: Basic realm="fleet"')
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", body]
    return "\r\n".join(lines).encode("ascii")


class Relay:
    """A loopback port on the controller that hands a host's pull requests to ``target``.

    The host's end of the tunnel forwards here, and anything on the host's loopback can
    connect to that end. So each request is checked before it reaches the registry
    (:meth:`check`): only ``GET``/``HEAD`` of ``/v2/`` and of ``repository``'s manifests
    and blobs by digest, with no body, carrying ``credential``. The first refused request
    of a connection is answered (401 with a challenge, 403 or 405) and the connection
    closed; nothing it sent reaches the registry.

    What flows towards the host (the registry's answers: manifests and layers) is copied
    as it comes, counted in ``bytes_out`` and held to ``throttle``.
    """

    def __init__(
        self,
        target: tuple[str, int],
        repository: str,
        throttle: Throttle | None = None,
        credential: Credential | None = None,
    ) -> None:
        self.target = target
        self.throttle = throttle
        self.credential = credential or Credential.generate()
        self.bytes_out = 0
        self.refused = 0
        self._paths = re.compile(
            rf"/v2/|/v2/{re.escape(repository)}/(?:manifests|blobs)/sha256:[0-9a-f]{{64}}"
        )
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    def check(self, head: bytes) -> int | None:
        """The status a request head (up to its blank line) is refused with, or None.

        Strict, so that the relay and the registry cannot disagree on where a request ends:
        CRLF line ends only, visible ASCII, no folded lines, and no body at all (a pull
        sends none), so the next request starts right after the blank line.
        """
        if len(head) > _MAX_HEAD or not head.endswith(b"\r\n\r\n"):
            return 400
        try:
            lines = head[:-4].decode("ascii").split("\r\n")
        except UnicodeDecodeError:
            return 400
        if not all(_VISIBLE.fullmatch(line) for line in lines):
            return 400
        request = lines[0].split(" ")
        if len(request) != 3 or request[2] not in ("HTTP/1.1", "HTTP/1.0"):
            return 400
        method, target, _ = request
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not _HEADER_NAME.fullmatch(name):
                return 400
            headers.setdefault(name.lower(), []).append(value.strip(" \t"))
        if "transfer-encoding" in headers or headers.get("content-length", ["0"]) != ["0"]:
            return 400
        offered = headers.get("authorization", [])
        scheme, _, token = offered[0].partition(" ") if len(offered) == 1 else ("", "", "")
        expected = self.credential.basic.encode("ascii")
        if scheme.lower() != "basic" or not hmac.compare_digest(token.strip().encode(), expected):
            return 401
        if method not in ("GET", "HEAD"):
            return 405
        if not self._paths.fullmatch(target):
            return 403
        return None

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        responses: threading.Thread | None = None
        if not self._track(client):
            return
        try:
            for head in _request_heads(client):
                status = self.check(head)
                if status is not None:
                    with self._lock:
                        self.refused += 1
                    if upstream is None:  # no answer of the registry's can be under way
                        client.sendall(refusal_answer(status))
                    return
                if upstream is None:
                    upstream = socket.create_connection(self.target, timeout=10)
                    upstream.settimeout(None)
                    if not self._track(upstream):
                        return
                    responses = threading.Thread(
                        target=self._copy, args=(upstream, client), daemon=True
                    )
                    responses.start()
                upstream.sendall(head)
        except OSError:
            pass
        finally:
            # HTTP keeps both directions of a connection together: one ends, both end.
            ends = [end for end in (client, upstream) if end is not None]
            for end in ends:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
            if responses is not None:
                responses.join()
            with self._lock:
                self._sockets.difference_update(ends)
            for end in ends:
                end.close()

    def _track(self, sock: socket.socket) -> bool:
        """Remember ``sock`` for :meth:`close`; False (and closed) when the relay is closed."""
        with self._lock:
            if not self._closed.is_set():
                self._sockets.add(sock)
                return True
        sock.close()
        return False

    def _copy(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(_COPY_CHUNK):
                if self.throttle is not None:
                    self.throttle.take(len(data))
                with self._lock:
                    self.bytes_out += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop listening and cut the connections still open."""
        self._closed.set()
        # shutdown() wakes the thread blocked in accept(); close() alone would leave the
        # port listening until one more connection came.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            open_sockets = list(self._sockets)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _request_heads(sock: socket.socket) -> Iterator[bytes]:
    """Each request head a client sends, up to and with its blank line, until it stops.

    Bytes no request head has (a TLS handshake: engines try HTTPS first; a line end other
    than CRLF), or a head that grows past the limit, are yielded at once as they are, to
    be refused: a client that tried HTTPS then hears an HTTP answer and falls back to
    HTTP at once, instead of waiting for its handshake to time out.
    """
    buffer = b""
    while True:
        end = buffer.find(b"\r\n\r\n")
        while end < 0:
            if len(buffer) > _MAX_HEAD:
                yield buffer
                return
            data = sock.recv(_COPY_CHUNK)
            if not data:
                return
            buffer += data
            if not _HEAD_BYTES.fullmatch(data) or _BARE_LINE_END.search(buffer):
                yield buffer
                return
            end = buffer.find(b"\r\n\r\n")
        head, buffer = buffer[: end + 4], buffer[end + 4 :]
        yield head


def checked_digest(digest: str, name: str) -> str:
    """The manifest digest a push returned, or :class:`RegistryError` when it gave none."""
    if not _DIGEST.fullmatch(digest):
        raise RegistryError(
            f"pushing {name} returned no manifest digest ({digest!r}): hosts pull by digest",
            fix="check the registry ('docker push' by hand prints the digest), or use --via ssh",
        )
    return digest


# -- publishing -------------------------------------------------------------------------
class Publisher(Protocol):
    """What the controller does for a registry push (the engine's; tests use a fake)."""

    def serve(self) -> contextlib.AbstractContextManager[Location]:
        """A registry to publish to, live for the ``with`` block."""
        ...

    def publish(self, ref: str, name: str) -> str:
        """Push the controller's ``ref`` as ``name``; the pushed manifest's digest."""
        ...


class EnginePublisher:
    """Publishes with the controller's Docker engine, to ``url`` or to a loopback registry."""

    def __init__(self, client: Any, url: str | None = None, binary: str = DEFAULT_BINARY):
        self.client = client
        self.address = parse_address(url) if url else None
        self.binary = binary

    @contextlib.contextmanager
    def serve(self) -> Iterator[Location]:
        if self.address is not None:
            yield Location(self.address)
            return
        with LoopbackRegistry(self.binary, storage=cache_storage()) as registry:
            yield Location(f"{registry.address}/{LOOPBACK_PREFIX}", ("127.0.0.1", registry.port))

    def publish(self, ref: str, name: str) -> str:
        return publish(self.client, ref, name)


def publish(client: Any, ref: str, name: str) -> str:
    """``docker tag REF NAME && docker push NAME`` on the controller's engine; the digest.

    The engine authenticates with its own credentials (docker-py reads the same config
    as the docker CLI); fleet never sees them. A tag this function created is removed
    again; one that existed before is left alone.
    """
    # docker-py only where a client is given: hosts that pull from a registry load nothing.
    from fleet.images import daemon

    try:
        return daemon.push_as(client, ref, name)
    except daemon.PushRefused as exc:
        raise RegistryError(
            f"pushing {ref} to {name} failed: {exc.reason}", fix=_publish_fix(exc.reason)
        ) from None


def _publish_fix(error: str) -> str:
    text = error.lower()
    if "denied" in text or "unauthorized" in text or "authentication required" in text:
        return "log in on the controller ('docker login REGISTRY') with a user that may push there"
    if "http response to https client" in text or "certificate" in text:
        return (
            "the registry's TLS is not trusted by the controller's engine: install its CA "
            "(/etc/docker/certs.d/HOST/ca.crt) or list it in insecure-registries"
        )
    return "check that the registry answers from the controller ('docker push' by hand)"
