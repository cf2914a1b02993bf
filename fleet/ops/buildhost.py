"""The build host: ``fleet build`` on an inventory host's engine, then the pull-back.

::

    controller                                            build host
    docker-py -> unix socket (private 0700 dir) -> relay => SSH session => docker system
                                                           dial-stdio -> dockerd

1. *Relay.* The host's Docker API is reached over fleet's own verified SSH connection: a
   Unix socket in a private temporary directory on the controller, each accepted
   connection joined to ``docker system dial-stdio`` on the host (what the docker CLI's
   ``ssh://`` hosts do). ``images.build`` then runs unchanged against that engine; the
   build context is uploaded through the tunnel.
2. *Layer 1.* The upstream image must be on the host. When it is not and the controller
   has it, it is shipped with ``push`` (only the layers the host lacks); when
   neither has it, the host's engine pulls it during the build, as a local build would.
3. *Pull-back.* The base and framework images come back to the controller's engine, only
   the layers it lacks: the host's ``docker save`` is read through the tunnel and cut to a
   thin tarball (``thin_tarball``) for the controller's ``docker load``; then the
   controller's image is verified (ID and diff IDs). So the controller's store stays the
   record of every version built: ``fleet images``, push, deploy and audit work unchanged.

A classic-store controller lacks a layer when its chain ID is not among the chains of its
images (``docker load`` skips the others); a containerd-store controller gets every layer,
since what its content store holds cannot be proven through the API. A build host must use
the classic store: ``transfer`` cuts the legacy ``docker save`` layout only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from fleet.errors import BuildError, EngineError, HostError, UnreachableError, UsageError
from fleet.hosts.model import Host
from fleet.images import build as images
from fleet.images import daemon, gitinfo, savefilter
from fleet.images.build import BuildOptions, BuildResult, StepCallback
from fleet.images.gitinfo import GitFacts
from fleet.images.project import Project
from fleet.images.spec import ImageSpec, Shippable, chain_ids
from fleet.programs import program
from fleet.results import Outcome
from fleet.runner import Runner
from fleet.ship.push import Shipment, push
from fleet.ship.state import engine_fix
from fleet.ship.stream import thin_tarball
from fleet.ssh.base import Transport

DIAL_STDIO = ("docker", "system", "dial-stdio")
_ACCEPT_POLL = 0.2
_JOIN_SECONDS = 10.0


@runtime_checkable
class Splicer(Protocol):
    """A connection that joins a remote command's stdio to a local socket."""

    @property
    def host(self) -> str: ...

    def splice(self, argv: Sequence[str], sock: socket.socket) -> int: ...


# -- the relay ----------------------------------------------------------------------------
class DockerRelay:
    """The build host's Docker API on a local Unix socket, one SSH session per connection.

    The socket lives in a fresh ``mkdtemp`` directory (mode 0700), so only this user can
    reach the host's engine through it; ``close`` ends every session and removes it.
    """

    def __init__(self, splicer: Splicer, argv: Sequence[str] = DIAL_STDIO) -> None:
        self._splicer = splicer
        self._argv = tuple(argv)
        self._dir = Path(tempfile.mkdtemp(prefix="fleet-relay-"))
        self.path = self._dir / "docker.sock"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._listener.bind(str(self.path))
            self._listener.listen(16)
            # Polled, so that close() stops the loop without relying on close() waking accept().
            self._listener.settimeout(_ACCEPT_POLL)
        except OSError:
            self._listener.close()
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._sessions: list[threading.Thread] = []
        self.connections = 0
        self.errors: list[str] = []
        self._acceptor = threading.Thread(
            target=self._accept, name=f"relay-{splicer.host}", daemon=True
        )
        self._acceptor.start()

    @property
    def base_url(self) -> str:
        """What docker-py's ``DockerClient(base_url=...)`` takes."""
        return f"unix://{self.path}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener was closed
            conn.settimeout(None)
            session = threading.Thread(
                target=self._serve, args=(conn,), name="relay-session", daemon=True
            )
            with self._lock:
                self._open.add(conn)
                self._sessions.append(session)
                self.connections += 1
            session.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            code = self._splicer.splice(self._argv, conn)
            if code > 0:
                self.errors.append(f"'{' '.join(self._argv)}' exited {code}")
        except HostError as exc:
            self.errors.append(exc.reason)
        finally:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def close(self) -> None:
        """Stop accepting, end the open sessions, remove the socket and its directory."""
        self._stop.set()
        self._acceptor.join(_JOIN_SECONDS)
        self._listener.close()
        with self._lock:
            still_open = list(self._open)
            sessions = list(self._sessions)
        for conn in still_open:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # the session sees its end and closes
        for session in sessions:
            session.join(_JOIN_SECONDS)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> DockerRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- results ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PullBack:
    """What came back to the controller's engine for one image."""

    role: str  # "base" or "framework"
    reference: str
    image_id: str
    layers_total: int
    layers_pulled: int
    bytes_pulled: int  # the thin tarball fed to the controller's docker load
    bytes_read: int  # what came over SSH of the host's docker save, cut there if it could be
    seconds: float
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class UpstreamShipment:
    """Layer 1 shipped from the controller to the build host before the build."""

    reference: str
    layers_total: int
    layers_sent: int
    bytes_sent: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RemoteBuild:
    """A build on a build host and what came back of it."""

    host: str
    build: BuildResult
    upstream: UpstreamShipment | None
    base: PullBack
    framework: PullBack

    @property
    def pulled(self) -> tuple[PullBack, PullBack]:
        return (self.base, self.framework)

    def to_json(self) -> dict[str, Any]:
        """``fleet build --build-host --json``: the build's document plus the pull-back."""
        return {
            **self.build.to_json(),
            "build_host": self.host,
            "upstream_shipped": self.upstream.to_json() if self.upstream else None,
            "pulled_back": {p.role: p.to_json() for p in self.pulled},
            "layers_pulled": sum(p.layers_pulled for p in self.pulled),
            "bytes_pulled": sum(p.bytes_pulled for p in self.pulled),
        }


# -- the build ----------------------------------------------------------------------------
def build_on(
    runner: Runner,
    host: Host,
    local: Any,
    project: Project,
    options: BuildOptions,
    *,
    git: GitFacts | None = None,
) -> RemoteBuild:
    """Build ``project`` on ``host``'s engine, then pull it back into ``local``'s engine.

    The version tag is checked on both engines before anything is built: a tag that names
    another commit's image on either raises ``TagCollisionError`` unless ``retag``.

    ``runner`` connects to the host (its verified SSH connection is reused for the relay
    and for shipping layer 1); ``local`` is the controller's ``docker.DockerClient``.
    Raises ``UnreachableError`` when the host cannot be reached, ``EngineError`` (with
    the fix) when its engine or the controller's fails, ``BuildError`` when a layer fails.
    """
    step = options.on_step or (lambda layer, message: None)
    git = git if git is not None else gitinfo.read(project.root)
    images.check_tag(local, project, git, retag=options.retag)
    transport = runner.transport(host)
    if not isinstance(transport, Splicer):
        raise UsageError(
            f"the connection to {host.name} cannot relay the Docker API",
            fix="reach the build host over SSH (fleet's default connection)",
        )
    check_engine(transport)
    with DockerRelay(transport) as relay:
        remote = daemon.connect_url(
            relay.base_url,
            where=f"build host {host.name}",
            fix=f"check that 'docker system dial-stdio' works on {host.name} (Docker 18.09+ "
            "CLI) and that the SSH user may use the engine",
        )
        try:
            return _build_and_pull(
                runner,
                host,
                local,
                remote,
                project,
                replace(options, on_step=step),
                git=git,
            )
        except BuildError as exc:
            fix = exc.fix or ""
            upstream = project.upstream_reference()
            if exc.layer == "base" and fix.startswith("layer 1"):
                fix = (
                    f"layer 1 ({upstream}) is neither on {host.name} nor on the controller, and "
                    f"{host.name} cannot pull it: load it into the controller's engine (docker "
                    "load; fleet then ships it to the build host) or into the build host's"
                )
            raise BuildError(
                exc.layer,
                exc.reference,
                f"{exc.reason} (on build host {host.name})",
                exc.log,
                fix=fix,
            ) from exc
        except EngineError as exc:
            _raise_if_unreachable(transport, exc)
            evidence = f"; SSH relay: {relay.errors[-1]}" if relay.errors else ""
            raise EngineError(f"{exc.message}{evidence}", fix=exc.fix) from exc
        finally:
            remote.close()


def _build_and_pull(
    runner: Runner,
    host: Host,
    local: Any,
    remote: Any,
    project: Project,
    options: BuildOptions,
    *,
    git: GitFacts,
) -> RemoteBuild:
    step = options.on_step or (lambda layer, message: None)
    store = daemon.image_store(remote)
    if store != "classic":
        raise EngineError(
            f"build host {host.name} keeps images in the {store} image store; fleet can pull "
            "builds back only from a classic-store engine",
            fix="choose a classic-store build host, or build on the controller (no --build-host)",
        )
    upstream = ensure_upstream(runner, host, local, remote, project, step)
    on_host = replace(
        options, on_step=lambda layer, message: step(layer, f"{message} (on {host.name})")
    )
    result = images.build(remote, project, on_host, git=git)
    local_store = daemon.image_store(local)
    present = daemon.layer_chains(local) if local_store == "classic" else None
    saver = FilteredSave(runner.transport(host)) if present is not None else None
    base = pull_back(remote, local, "base", project.base_reference, present, host.name, step, saver)
    if present is not None:
        present = present | set(chain_ids(_diff_ids(local, project.base_reference)))
    framework = pull_back(
        remote, local, "framework", result.reference, present, host.name, step, saver
    )
    return RemoteBuild(host.name, result, upstream, base, framework)


# The host's docker save, cut by fleet.images.savefilter there: "$@" are the CHAIN=DIFF to leave out.
_SAVE_SCRIPT = program("save_filtered.sh")


class FilteredSave:
    """``docker save`` on the build host without the layers the controller has.

    The save is cut on the host by :mod:`fleet.images.savefilter` (its source runs there under
    ``python3``), so a thin pull-back crosses the network thin; the bytes come back through
    an SSH session spliced to a local socket.
    """

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    @functools.cached_property
    def usable(self) -> bool:
        """Whether the host can cut its save: a splicing connection and Python 3.9+.

        Asked once, when a save is first needed (a build already on the controller needs
        none); without it the whole save is read.
        """
        if not isinstance(self.transport, Splicer):
            return False
        probe = ["python3", "-c", "import sys; sys.exit(sys.version_info < (3, 9))"]
        return self.transport.run(probe, check=False).ok

    def __call__(self, reference: str, drop: Mapping[str, str]) -> Iterator[bytes]:
        splicer = self.transport
        assert isinstance(splicer, Splicer), "only called when usable"
        mine, theirs = socket.socketpair()
        argv = ["sh", "-c", _SAVE_SCRIPT, "fleet-save", reference, _filter_source()]
        argv += [f"{chain}={diff}" for chain, diff in sorted(drop.items())]
        status: list[int] = []
        worker = threading.Thread(
            target=lambda: status.append(splicer.splice(argv, theirs)),
            name=f"save-{splicer.host}",
            daemon=True,
        )
        worker.start()
        mine.shutdown(socket.SHUT_WR)  # nothing goes to its stdin
        try:
            while chunk := mine.recv(1 << 20):
                yield chunk
        finally:
            mine.close()
            worker.join(timeout=_JOIN_SECONDS)
        # -1: the session ended before its status arrived; the load's verification judges.
        if status and status[0] > 0:
            raise EngineError(
                f"'docker save {reference} | filter' on build host {splicer.host} "
                f"exited {status[0]}",
                fix="check 'docker save' and python3 on the build host, then rerun",
            )


@functools.cache
def _filter_source() -> str:
    """What runs on the build host: :mod:`fleet.images.savefilter`'s own source."""
    return Path(savefilter.__file__).read_text()


def check_engine(transport: Transport) -> None:
    """Fail with the host's own words and the fix when its Docker engine does not answer."""
    ran = transport.run(["docker", "version", "--format", "{{.Server.Version}}"], check=False)
    version = ran.stdout.strip()
    if ran.exit_code == 0 and version[:1].isdigit():
        return
    said = (ran.stderr or ran.stdout).strip() or f"docker exited {ran.exit_code}"
    raise EngineError(
        f"the Docker engine of build host {transport.host} does not answer: {said}",
        fix=engine_fix(said),
    )


def ensure_upstream(
    runner: Runner, host: Host, local: Any, remote: Any, project: Project, step: StepCallback
) -> UpstreamShipment | None:
    """Ship layer 1 to the build host when it lacks it and the controller has it."""
    reference = project.upstream_reference()
    if reference is None or daemon.has_image(remote, reference):
        if reference is not None:
            step("upstream", f"{reference} is on {host.name}")
        return None
    if not daemon.has_image(local, reference):
        step(
            "upstream",
            f"{reference} is neither on {host.name} nor on the controller: "
            f"{host.name}'s engine will try to pull it",
        )
        return None
    step("upstream", f"shipping {reference} to {host.name} (only the layers it lacks)")
    image = daemon.shippable(local, reference)
    row = push(runner, [host], image).results[0]
    if row.outcome is Outcome.UNREACHABLE:
        raise UnreachableError(host.name, row.reason or "unreachable", fix=row.fix)
    if row.outcome not in (Outcome.OK, Outcome.CHANGED):
        raise EngineError(
            f"shipping layer 1 {reference} to build host {host.name} failed: {row.reason}",
            fix=row.fix or f"ship it yourself ('fleet push {host.name} {reference}') and rerun",
        )
    shipment = row.typed(Shipment)
    if shipment is None:  # nothing was sent: the host had every layer
        return UpstreamShipment(reference, len(image.spec.diff_ids), 0, 0)
    return UpstreamShipment(
        reference, shipment.layers_total, shipment.layers_sent, shipment.bytes_sent
    )


# -- the pull-back ------------------------------------------------------------------------
def missing_layers(diff_ids: Sequence[str], present: frozenset[str] | None) -> frozenset[int]:
    """The layers a controller lacks; every layer when what it has is unknown (``None``)."""
    if present is None:
        return frozenset(range(len(diff_ids)))
    return frozenset(i for i, c in enumerate(chain_ids(diff_ids)) if c not in present)


class _Tally:
    """Counts the bytes of a stream as it passes."""

    def __init__(self) -> None:
        self.bytes = 0

    def count(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.bytes += len(chunk)
            yield chunk


def pull_back(
    remote: Any,
    local: Any,
    role: str,
    reference: str,
    present: frozenset[str] | None,
    host: str,
    step: StepCallback,
    saver: FilteredSave | None = None,
) -> PullBack:
    """Bring ``reference`` from the build host into the controller's engine, verified.

    ``present``: the chain IDs the controller's classic store holds, ``None`` for a
    containerd store (every layer is sent). ``saver``: the host's filtered save, so that
    the layers the controller has are not read across (else the whole save is).
    """
    started = time.monotonic()
    spec = daemon.find_image(remote, reference)
    if spec is None:
        raise EngineError(
            f"{reference} is not on build host {host} after its build",
            fix="rerun the build; do not remove images on the build host while it runs",
        )

    def done(pulled: int, loaded: int, read: int, note: str = "") -> PullBack:
        return PullBack(
            role,
            reference,
            spec.config_digest,
            len(spec.diff_ids),
            pulled,
            loaded,
            read,
            time.monotonic() - started,
            note,
        )

    if _same_image(daemon.find_image(local, reference), spec, present):
        step(role, f"{reference} is already on the controller")
        return done(0, 0, 0, "already on the controller")
    if present is not None and _same_image(
        daemon.find_image(local, spec.config_digest), spec, present
    ):
        daemon.tag_image(local, spec.config_digest, reference)
        step(role, f"{reference}: the controller had the image under another name; tagged it")
        return done(0, 0, 0, "already on the controller, tagged")

    send = missing_layers(spec.diff_ids, present)
    step(role, f"pulling back {len(send)}/{len(spec.diff_ids)} layers of {reference} from {host}")
    read, loaded = _Tally(), _Tally()
    drop = {
        chain: diff
        for index, (chain, diff) in enumerate(zip(spec.chain_ids, spec.diff_ids, strict=True))
        if index not in send
    }

    def save() -> Iterator[bytes]:
        if saver is not None and drop and saver.usable:
            return read.count(saver(reference, drop))
        return read.count(daemon.save_stream(remote, reference, f"build host {host}"))

    image = Shippable(
        spec=ImageSpec(reference, spec.config_digest, spec.diff_ids),
        sizes=tuple(daemon.layer_sizes(remote, reference, len(spec.diff_ids))),
        save=save,
        local=None,  # images.LocalLayers reads the controller's store, never the host's
    )
    try:
        daemon.load_stream(local, loaded.count(thin_tarball(image, send)))
    except HostError as exc:
        raise EngineError(
            f"pulling {reference} back from build host {host} failed: {exc.reason}",
            fix="rerun: only the layers the controller still lacks are pulled",
        ) from exc
    verify_pulled(local, spec, present, host)
    return done(len(send), loaded.bytes, read.bytes)


def _same_image(have: ImageSpec | None, want: ImageSpec, present: frozenset[str] | None) -> bool:
    if have is None or have.diff_ids != want.diff_ids:
        return False
    # A containerd store's image ID names a manifest, not the config: only layers compare.
    return present is None or have.config_digest == want.config_digest


def verify_pulled(local: Any, spec: ImageSpec, present: frozenset[str] | None, host: str) -> None:
    """The controller's image after the load: its ID (classic store) and its layers."""
    have = daemon.find_image(local, spec.ref)
    if _same_image(have, spec, present):
        return
    found = (
        "no such image"
        if have is None
        else f"ID {have.config_digest[:19]} with {len(have.diff_ids)} layers"
    )
    raise EngineError(
        f"{spec.ref} pulled back from build host {host} did not verify: expected ID "
        f"{spec.config_digest[:19]} with {len(spec.diff_ids)} layers, the controller has {found}",
        fix="rerun: the layers the controller lacks are pulled again",
    )


def _diff_ids(client: Any, reference: str) -> tuple[str, ...]:
    found = daemon.find_image(client, reference)
    return found.diff_ids if found is not None else ()


def _raise_if_unreachable(transport: Transport, cause: BaseException) -> None:
    """When the SSH connection died under an engine error, say that instead (exit 3)."""
    try:
        transport.run(["true"], check=False)
    except UnreachableError as exc:
        raise exc from cause
    except HostError:
        return
