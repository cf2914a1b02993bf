"""The registry path of fleet push without a lab: names, the per-host pull, publishing.

Hosts are fakes of fleet's own Transport interface (plus the port forward), answering the
state script from a small in-memory image store; the loopback registry and the relay are
real processes and sockets on this machine.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import http.server
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from fleet.errors import HostError, RegistryError, UsageError
from fleet.hosts.model import Host
from fleet.images.spec import ImageSpec, Shippable
from fleet.results import FleetResult, Outcome
from fleet.runner import Runner
from fleet.ship import registry
from fleet.ship.bandwidth import Throttle, TokenBucket
from fleet.ship.codec import compression
from fleet.ship.plan import PushOptions, check_options, via_of
from fleet.ship.push import push
from fleet.ssh.base import CommandResult

SPEC = ImageSpec(
    "cauchy:0.2.3",
    "sha256:" + "c" * 64,
    ("sha256:" + "1" * 64, "sha256:" + "2" * 64, "sha256:" + "3" * 64),
)


# -- names ------------------------------------------------------------------------------
def test_registry_addresses_are_names_without_scheme_or_credentials() -> None:
    assert registry.parse_address("https://harbor.lab/ml/") == "harbor.lab/ml"
    assert registry.parse_address("localhost:5000") == "localhost:5000"
    assert registry.parse_address("docker.io/lab") == "docker.io/lab"
    with pytest.raises(UsageError, match="credentials") as caught:
        registry.parse_address("https://bob:hunter2@harbor.lab/ml")
    assert "hunter2" not in str(caught.value)
    assert "docker login" in (caught.value.fix or "")
    with pytest.raises(UsageError, match="registry host"):
        registry.parse_address("lab")
    with pytest.raises(UsageError, match="not a registry address"):
        registry.parse_address("harbor.lab/ml?x=1")


def test_names_in_a_registry_keep_the_path_and_tag_and_drop_the_host() -> None:
    assert registry.repository_path("cauchy:0.2.3") == ("cauchy", "0.2.3")
    assert registry.repository_path("reg.lab:5000/ml/cauchy:1") == ("ml/cauchy", "1")
    assert registry.repository_path("lab/cauchy") == ("lab/cauchy", "latest")
    direct = registry.Location("harbor.lab/ml")
    assert direct.name_for("cauchy:0.2.3") == "harbor.lab/ml/cauchy:0.2.3"
    tunnelled = registry.Location("127.0.0.1:5001/fleet", ("127.0.0.1", 5001))
    assert tunnelled.name_for("cauchy:0.2.3") == "127.0.0.1:5001/fleet/cauchy:0.2.3"
    # A host pulls through its own end of the tunnel.
    assert tunnelled.name_for("cauchy:0.2.3", 40123) == "127.0.0.1:40123/fleet/cauchy:0.2.3"
    # ... by the digest the push returned; the relay lets it read that repository only.
    digest = "sha256:" + "d" * 64
    assert tunnelled.name_for("cauchy:0.2.3", 40123, digest) == (
        f"127.0.0.1:40123/fleet/cauchy@{digest}"
    )
    assert direct.name_for("cauchy:0.2.3", digest=digest) == f"harbor.lab/ml/cauchy@{digest}"
    assert tunnelled.repository("reg.lab/ml/cauchy:1") == "fleet/ml/cauchy"
    assert registry.Location("harbor.lab").repository("cauchy:1") == "cauchy"
    assert registry.checked_digest(digest, "x") == digest
    with pytest.raises(RegistryError, match="no manifest digest"):
        registry.checked_digest("sha256:abc", "x")


# -- a registry and a host, faked --------------------------------------------------------
DIGEST = "sha256:" + "d" * 64
POISON = ("sha256:" + "e" * 64, ("sha256:" + "f" * 64,))


class StubRegistry(http.server.ThreadingHTTPServer):
    """Stands in for the registry behind a relay: answers every GET/HEAD, records all."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _StubHandler)
        self.requests: list[tuple[str, str]] = []
        self.errors: list[BaseException] = []
        self.port = int(self.server_address[1])

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hangs up mid-answer (the tests cut relays on purpose) is kept, not
        # printed: socketserver prints it to stderr, after the test that caused it is over.
        self.errors.append(sys.exc_info()[1] or RuntimeError("unknown"))


class _StubHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StubRegistry

    def _answer(self, body: bool) -> None:
        self.server.requests.append((self.command, self.path))
        payload = b'{"registry": "stub"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def do_GET(self) -> None:
        self._answer(True)

    def do_HEAD(self) -> None:
        self._answer(False)

    def do_POST(self) -> None:
        self._answer(True)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def stub() -> Iterator[StubRegistry]:
    server = StubRegistry()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def tunnel(stub: StubRegistry) -> registry.Location:
    """The controller's registry as hosts see it: tunnelled, here to the stub."""
    return registry.Location(f"127.0.0.1:{stub.port}/fleet", ("127.0.0.1", stub.port))


def http_get(
    port: int, path: str = "/v2/", auth: str | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """One request to ``127.0.0.1:port``: (status, headers, body); status 0 when cut."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Basic {auth}"} if auth is not None else {}
    try:
        connection.request(method, path, headers=headers)
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    except (http.client.RemoteDisconnected, ConnectionError):
        return 0, {}, b""
    finally:
        connection.close()


def target_text(config: str | None, layers: tuple[str, ...]) -> list[str]:
    """The target sections of a state (or pull) script for an image of config and layers."""
    lines = ["@@target"]
    if config is not None:
        lines.append(f"{config} {json.dumps(list(layers))}")
    lines.append("@@listed")
    if config is not None:
        lines.append(config)
    return lines


def state_text(host: FakeHost, ref: str) -> str:
    """What STATE_SCRIPT prints on ``host``."""
    containerd = host.store == "containerd"
    driver = '[["driver-type","io.containerd.snapshotter.v1"]]' if containerd else "[]"
    lines = ["@@engine", host.version, "@@engine_rc 0", "@@store", driver]
    lines += target_text(host.configs.get(ref), host.images.get(ref, ()))
    lines.append("@@layers")
    lines += [json.dumps(list(layers)) for layers in host.images.values()]
    lines += ["@@target_manifest", "@@content", "@@content_rc 1", "@@df"]
    lines += ["/dev/sda1 1000 10 999999999999 1% /", "@@end"]
    return "\n".join(lines) + "\n"


class FakeHost:
    """A host's engine behind fleet's Transport interface, with ``ssh -R``.

    ``serves``: the image (config, layers) a pull from the registry yields. A pull through
    a tunnel also asks the relay behind it, with the credential it got on stdin, for
    ``/v2/``, as the engine does: the pull fails unless the relay lets that through.
    """

    def __init__(
        self,
        name: str,
        images: dict[str, tuple[str, ...]] | None = None,
        *,
        store: str = "classic",
        version: str = "20.10.24",
        fail: Sequence[str] = (),
        serves: tuple[str, tuple[str, ...]] = (SPEC.config_digest, SPEC.diff_ids),
    ) -> None:
        self.name = name
        self.images = dict(images or {})
        self.configs = {ref: SPEC.config_digest for ref in self.images}
        self.store = store
        self.version = version
        self.fail = set(fail)
        self.serves = serves
        self.commands: list[list[str]] = []
        self.stdins: list[bytes | None] = []
        self.events: list[str] = []
        self.forwards: dict[int, tuple[str, int]] = {}
        self.cancelled: list[int] = []

    @property
    def host(self) -> str:
        return self.name

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandResult:
        argv = list(argv)
        if argv[:2] == ["sh", "-c"] and argv[3] == "fleet-state":
            return CommandResult("state", 0, state_text(self, argv[-1]), "", 0.0)
        self.commands.append(argv)
        self.stdins.append(stdin)
        verb = "pull" if argv[:2] == ["sh", "-c"] else argv[1]
        self.events.append(verb)
        code, out, err = 0, "", ""
        if verb in self.fail:
            code, err = 1, f"Error response from daemon: {verb} refused by the fake"
        elif verb == "pull" and argv[3] == "fleet-pull":
            name, store, address = argv[4:7]
            if address:
                assert stdin is not None, "a tunnelled pull without the relay's credential"
                code, err = self._through_tunnel(address, stdin.decode().strip())
            if code == 0:
                self._store(name, self.serves)
                lines = [] if store != "containerd" else ["@@fetch_rc 0", "@@fetch"]
                lines += [*target_text(*self.serves), "@@target_manifest"]
                out = "\n".join(lines) + "\n"
        elif verb == "pull":  # a plain 'docker pull NAME'
            self._store(argv[-1], self.serves)
        elif verb == "tag":
            self.images[argv[3]] = self.images[argv[2]]
            self.configs[argv[3]] = self.configs[argv[2]]
        elif verb == "rmi":
            if argv[2] in self.images:
                del self.images[argv[2]]
                del self.configs[argv[2]]
            else:
                code, err = 1, f"Error: No such image: {argv[2]}"
        result = CommandResult(" ".join(argv), code, out, err, 0.0)
        if check and code != 0:
            raise HostError(self.name, f"command exited {code}: {result.command}\n{err}")
        return result

    def _store(self, name: str, image: tuple[str, tuple[str, ...]]) -> None:
        self.configs[name], self.images[name] = image

    def _through_tunnel(self, address: str, credential: str) -> tuple[int, str]:
        port = int(address.rpartition(":")[2])
        assert port in self.forwards, "pulled through a port that is not forwarded"
        status, _, _ = http_get(self.forwards[port][1], "/v2/", credential)
        return (0, "") if status == 200 else (1, f"the relay answered {status}")

    def stream(self, argv: Sequence[str], chunks: object, **kwargs: object) -> CommandResult:
        raise AssertionError("the registry path never streams an image")

    def forward_remote(self, port: int, target: tuple[str, int]) -> int:
        chosen = 40000 + len(self.forwards)
        self.forwards[chosen] = target
        self.events.append("forward")
        return chosen

    def cancel_forward(self, port: int) -> None:
        self.cancelled.append(port)
        self.events.append("cancel")

    def close(self) -> None:
        return None

    def verbs(self) -> list[str]:
        return [e for e in self.events if e not in ("forward", "cancel")]


class FakePublisher:
    """Publishes nowhere; records what it was asked, serves a tunnelled or direct location."""

    def __init__(
        self, location: registry.Location, error: str | None = None, digest: str = DIGEST
    ) -> None:
        self.location = location
        self.error = error
        self.digest = digest
        self.published: list[tuple[str, str]] = []
        self.served = 0

    @contextlib.contextmanager
    def serve(self) -> Iterator[registry.Location]:
        self.served += 1
        yield self.location

    def publish(self, ref: str, name: str) -> str:
        if self.error:
            raise RegistryError(self.error, fix="docker login there")
        self.published.append((ref, name))
        return self.digest


IMAGE = Shippable(SPEC, (100, 200, 300), lambda: iter(()))


def run_push(
    hosts: dict[str, FakeHost],
    publisher: FakePublisher,
    **options: object,
) -> FleetResult:
    runner = Runner(lambda host: hosts[host.name], forks=4)
    chosen = PushOptions(via="registry", **options)  # type: ignore[arg-type]
    return push(runner, [Host(n) for n in hosts], IMAGE, chosen, publisher=publisher)


def test_hosts_pull_the_digest_through_their_tunnel_and_get_the_real_name(
    tunnel: registry.Location, stub: StubRegistry
) -> None:
    old = SPEC.diff_ids[:2]
    hosts = {
        "a": FakeHost("a", {"cauchy:0.2.2": old}),
        "b": FakeHost("b", {}, store="containerd", version="26.1.5"),
        "c": FakeHost("c", {SPEC.ref: SPEC.diff_ids}),
    }
    publisher = FakePublisher(tunnel)
    result = run_push(hosts, publisher)
    rows = {r.host: r for r in result.results}
    assert {h: str(r.outcome) for h, r in rows.items()} == {
        "a": "changed",
        "b": "changed",
        "c": "ok",
    }
    assert publisher.published == [(SPEC.ref, f"127.0.0.1:{stub.port}/fleet/cauchy:0.2.3")]
    for name in ("a", "b"):
        host = hosts[name]
        # One pull script (the containerd store's ctr fetch included), by the published
        # digest, through the host's own end of the tunnel; the tunnel closes before the tag.
        assert host.events == ["forward", "pull", "cancel", "tag", "rmi"], host.events
        pulled, store, address = host.commands[0][4:7]
        assert pulled == f"127.0.0.1:40000/fleet/cauchy@{DIGEST}"
        assert (store, address) == (host.store, "127.0.0.1:40000")
        assert host.forwards[40000] != tunnel.tunnel  # a relay, not the registry itself
        assert host.cancelled == [40000]
        assert set(host.images) >= {SPEC.ref} and pulled not in host.images
    assert rows["a"].details["layers_present"] == 2
    assert rows["a"].details["layers_pulled"] == 1
    assert rows["b"].details["layers_pulled"] == 3
    assert rows["b"].details["image_id"] == SPEC.config_digest
    assert rows["a"].details["registry"] == "controller (tunnelled)"
    assert rows["a"].details["bytes_pulled"] > 0  # the relay counted the host's /v2/ answer
    assert hosts["c"].commands == []
    # The relay let each host's credentialed request through; the registry saw nothing else.
    assert stub.requests == [("GET", "/v2/"), ("GET", "/v2/")]


@pytest.mark.hostile
def test_the_relay_credential_reaches_hosts_on_stdin_only(
    tunnel: registry.Location, stub: StubRegistry
) -> None:
    hosts = {"a": FakeHost("a"), "b": FakeHost("b")}
    result = run_push(hosts, FakePublisher(tunnel))
    assert [r.outcome for r in result.results] == [Outcome.CHANGED, Outcome.CHANGED]
    given = [host.stdins[0] for host in hosts.values()]
    assert all(g is not None for g in given)
    credentials = [base64.b64decode(g or b"").decode() for g in given]
    # Each host its own: one host's cannot open another's tunnel.
    assert credentials[0] != credentials[1]
    assert all(c.startswith("fleet-") and len(c.partition(":")[2]) >= 32 for c in credentials)
    basics = [(g or b"").decode().strip() for g in given]
    passwords = [c.partition(":")[2] for c in credentials]
    seen = json.dumps([result.to_json(), [h.commands for h in hosts.values()]])
    for secret in basics + passwords:
        assert secret not in seen


@pytest.mark.hostile
def test_a_pulled_image_that_is_not_the_published_one_is_never_tagged(
    tunnel: registry.Location,
) -> None:
    # The registry hands out another image than the controller pushed (someone moved the
    # tag, or the digest names something else): the host fails with the evidence, and its
    # real name stays where it was.
    host = FakeHost("a", {SPEC.ref: SPEC.diff_ids[:1]}, serves=POISON)
    host.configs[SPEC.ref] = "sha256:" + "0" * 64  # an older build under the same tag
    row = run_push({"a": host}, FakePublisher(tunnel)).results[0]
    assert row.outcome is Outcome.FAILED
    assert "nothing was tagged" in (row.reason or "")
    assert f"expected config {SPEC.config_digest[:19]}" in (row.reason or "")
    assert f"host has ID {POISON[0][:19]}" in (row.reason or "")
    assert "tag" not in host.verbs()
    assert host.configs[SPEC.ref] == "sha256:" + "0" * 64
    assert host.images[SPEC.ref] == SPEC.diff_ids[:1]
    assert not [n for n in host.images if n.startswith("127.0.0.1:")]  # the pull's name too


def test_a_publish_without_a_digest_fails_every_host_that_needed_it(
    tunnel: registry.Location,
) -> None:
    hosts = {"a": FakeHost("a"), "b": FakeHost("b", {SPEC.ref: SPEC.diff_ids})}
    result = run_push(hosts, FakePublisher(tunnel, digest=""))
    rows = {r.host: r for r in result.results}
    assert rows["a"].outcome is Outcome.FAILED
    assert "no manifest digest" in (rows["a"].reason or "")
    assert rows["b"].outcome is Outcome.OK
    assert hosts["a"].commands == []


def test_a_failed_pull_fails_that_host_only_and_still_cleans_up(
    tunnel: registry.Location,
) -> None:
    hosts = {"a": FakeHost("a", fail=["pull"]), "b": FakeHost("b")}
    result = run_push(hosts, FakePublisher(tunnel))
    rows = {r.host: r for r in result.results}
    assert rows["a"].outcome is Outcome.FAILED
    assert "pull refused by the fake" in (rows["a"].reason or "")
    assert f"docker pull 127.0.0.1:40000/fleet/cauchy@{DIGEST} failed" in (rows["a"].reason or "")
    assert rows["b"].outcome is Outcome.CHANGED
    assert hosts["a"].verbs() == ["pull", "rmi"]  # the pull's name, should it exist
    assert hosts["a"].cancelled == [40000]
    assert SPEC.ref not in hosts["a"].images


def test_a_failed_retag_removes_the_pulled_name(tunnel: registry.Location) -> None:
    host = FakeHost("a", fail=["tag"])
    result = run_push({"a": host}, FakePublisher(tunnel))
    assert result.results[0].outcome is Outcome.FAILED
    assert host.verbs() == ["pull", "tag", "rmi"]
    assert host.images == {}  # nothing left under any name
    assert host.cancelled == [40000]


def test_a_temporary_name_that_stays_fails_the_host_with_the_fix(
    tunnel: registry.Location,
) -> None:
    host = FakeHost("a", fail=["rmi"])
    row = run_push({"a": host}, FakePublisher(tunnel)).results[0]
    assert row.outcome is Outcome.FAILED
    assert "could not be removed" in (row.reason or "")
    assert f"docker rmi 127.0.0.1:40000/fleet/cauchy@{DIGEST}" in (row.fix or "")


def test_an_existing_registry_is_pulled_directly_by_digest_and_its_name_removed() -> None:
    host = FakeHost("a")
    publisher = FakePublisher(registry.Location("harbor.lab/ml"))
    row = run_push({"a": host}, publisher, registry="harbor.lab/ml").results[0]
    assert row.outcome is Outcome.CHANGED, row
    # The host's own credentials: no tunnel, no address for the script, nothing on stdin.
    assert host.commands[0][4:7] == [f"harbor.lab/ml/cauchy@{DIGEST}", "classic", ""]
    assert host.stdins[0] is None
    assert host.forwards == {}
    assert row.details["bytes_pulled"] is None
    assert list(host.images) == [SPEC.ref]


def test_a_publish_that_fails_fails_every_host_that_needed_it(
    tunnel: registry.Location,
) -> None:
    hosts = {"a": FakeHost("a"), "b": FakeHost("b", {SPEC.ref: SPEC.diff_ids})}
    result = run_push(hosts, FakePublisher(tunnel, error="pushing failed: denied"))
    rows = {r.host: r for r in result.results}
    assert rows["a"].outcome is Outcome.FAILED and "denied" in (rows["a"].reason or "")
    assert rows["a"].fix == "docker login there"
    assert rows["b"].outcome is Outcome.OK
    assert hosts["a"].commands == []


def test_check_says_what_would_be_pulled_and_publishes_nothing(
    tunnel: registry.Location,
) -> None:
    host = FakeHost("a", {"old": SPEC.diff_ids[:1]})
    publisher = FakePublisher(tunnel)
    row = run_push({"a": host}, publisher, check=True).results[0]
    assert row.outcome is Outcome.CHANGED
    assert row.details["layers_to_pull"] == 2
    assert "would pull 2/3 layers" in (row.reason or "")
    assert publisher.served == 0 and host.commands == []


def test_options_that_cannot_work_together_are_refused() -> None:
    with pytest.raises(UsageError, match="--via registry"):
        check_options(PushOptions(registry="harbor.lab"))
    with pytest.raises(UsageError, match="cannot limit") as caught:
        check_options(PushOptions(via="registry", registry="harbor.lab", max_rate=1e6))
    assert "tunnelled" in (caught.value.fix or "")
    check_options(PushOptions(via="registry", max_rate=1e6))
    with pytest.raises(UsageError, match="--via 'carrier-pigeon': choose one of ssh, registry"):
        via_of("carrier-pigeon")
    with pytest.raises(UsageError, match="--compress 'lz4': choose one of auto, gzip"):
        compression("lz4")
    assert (via_of("registry"), compression("zstd")) == ("registry", "zstd")


# -- the controller's registry, for real ------------------------------------------------
needs_registry = pytest.mark.skipif(
    not os.access(registry.DEFAULT_BINARY, os.X_OK),
    reason="docker-registry is not installed (scripts/setup.sh installs it)",
)


@needs_registry
def test_loopback_registry_answers_then_is_gone_with_its_storage() -> None:
    with registry.LoopbackRegistry() as served:
        assert served.process is not None
        pid = served.process.pid
        storage = Path(served.process.args[2]).parent  # type: ignore[index]
        with urllib.request.urlopen(f"http://{served.address}/v2/", timeout=5) as answer:
            assert answer.status == 200
    assert not storage.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", served.port), timeout=1)


def test_missing_registry_program_is_an_error_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="not installed") as caught:
        registry.LoopbackRegistry(str(tmp_path / "docker-registry")).start()
    assert "apt-get install docker-registry" in (caught.value.fix or "")


# -- the relay: what it lets through, counting and limiting what goes to a host -----------
REPOSITORY = "fleet/cauchy"
BLOB = f"/v2/{REPOSITORY}/blobs/sha256:{'a' * 64}"
MANIFEST = f"/v2/{REPOSITORY}/manifests/{DIGEST}"


@contextlib.contextmanager
def byte_server(size: int) -> Iterator[tuple[str, int]]:
    """A TCP server that reads one request head, sends ``size`` bytes, then closes."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                with conn:
                    head = b""
                    while b"\r\n\r\n" not in head:
                        head += conn.recv(1024)
                    conn.sendall(b"x" * size)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield ("127.0.0.1", int(server.getsockname()[1]))
    finally:
        server.close()


def fetch(relay: registry.Relay) -> int:
    """Bytes received for one authorised blob request through ``relay``."""
    received = 0
    with socket.create_connection(("127.0.0.1", relay.port), timeout=30) as conn:
        conn.sendall(request("GET", BLOB, relay.credential.basic))
        while data := conn.recv(1 << 16):
            received += len(data)
    return received


def request(method: str, path: str, basic: str | None = None, extra: str = "") -> bytes:
    auth = f"Authorization: Basic {basic}\r\n" if basic is not None else ""
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}{extra}\r\n".encode()


def exchange(relay: registry.Relay, data: bytes) -> bytes:
    """Send raw bytes to the relay; everything it answers until it closes."""
    answer = b""
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as conn:
        conn.sendall(data)
        with contextlib.suppress(ConnectionError):
            while chunk := conn.recv(1 << 16):
                answer += chunk
    return answer


@pytest.fixture
def relay(stub: StubRegistry) -> Iterator[registry.Relay]:
    opened = registry.Relay(("127.0.0.1", stub.port), REPOSITORY)
    try:
        yield opened
    finally:
        opened.close()


def test_relay_passes_a_pull_with_its_credential_and_counts_it(
    relay: registry.Relay, stub: StubRegistry
) -> None:
    basic = relay.credential.basic
    assert http_get(relay.port, "/v2/", basic)[0] == 200
    assert http_get(relay.port, MANIFEST, basic, method="HEAD")[0] == 200
    # Two requests on one connection (keep-alive): each is checked, both pass.
    last = request("GET", MANIFEST, basic, extra="Connection: close\r\n")
    answer = exchange(relay, request("GET", BLOB, basic) + last)
    assert answer.count(b"HTTP/1.1 200") == 2, answer
    assert stub.requests == [("GET", "/v2/"), ("HEAD", MANIFEST), ("GET", BLOB), ("GET", MANIFEST)]
    assert relay.bytes_out > 0 and relay.refused == 0


@pytest.mark.hostile
def test_relay_asks_anyone_without_its_credential_to_authenticate(
    relay: registry.Relay, stub: StubRegistry
) -> None:
    # What a host's loopback neighbour (a --network host container) can do with the
    # tunnel's port: nothing reaches the registry.
    status, headers, body = http_get(relay.port, "/v2/")
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="fleet"'
    assert headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"
    wrong = base64.b64encode(f"{relay.credential.user}:guess".encode()).decode()
    assert http_get(relay.port, BLOB, wrong)[0] == 401
    other = registry.Credential.generate().basic
    assert http_get(relay.port, BLOB, other)[0] == 401
    assert http_get(relay.port, BLOB, f"{relay.credential.basic}, {other}")[0] == 401
    assert stub.requests == []
    assert relay.refused == 4


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", f"/v2/{REPOSITORY}/blobs/uploads/", 405),  # a push starts so
        ("PUT", f"/v2/{REPOSITORY}/manifests/0.2.3", 405),
        ("PATCH", f"/v2/{REPOSITORY}/blobs/uploads/x", 405),
        ("DELETE", MANIFEST, 405),
        ("GET", "/v2/_catalog", 403),
        ("GET", f"/v2/{REPOSITORY}/tags/list", 403),
        ("GET", f"/v2/{REPOSITORY}/manifests/0.2.3", 403),  # by tag: never what hosts pull
        ("GET", f"/v2/fleet/other/manifests/{DIGEST}", 403),
        ("GET", f"/v2/{REPOSITORY}/blobs/../../other/blobs/sha256:{'a' * 64}", 403),
        ("GET", f"{BLOB}?x=1", 403),
        ("GET", f"http://127.0.0.1{BLOB}", 403),
    ],
)
def test_relay_lets_no_one_write_or_read_beyond_the_published_repository(
    relay: registry.Relay, stub: StubRegistry, method: str, path: str, status: int
) -> None:
    answer = exchange(relay, request(method, path, relay.credential.basic))
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer
    assert stub.requests == []


@pytest.mark.hostile
@pytest.mark.parametrize(
    "data",
    [
        b"GET /v2/ HTTP/1.1\nHost: x\n\n",  # bare LF: the registry and the relay could differ
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        b"GET /v2/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nX: \x00\r\n\r\n",
        b"GET  /v2/ HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # TLS: engines try HTTPS first
        b"GET /v2/ HTTP/1.1\r\nX: " + b"a" * (20 << 10),
    ],
)
def test_relay_refuses_at_once_what_it_could_misread(
    relay: registry.Relay, stub: StubRegistry, data: bytes
) -> None:
    auth = f"Authorization: Basic {relay.credential.basic}\r\n".encode()
    data = data.replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\n" + auth, 1)
    started = time.monotonic()
    answer = exchange(relay, data)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert time.monotonic() - started < 5  # answered, not left to a client's timeout
    assert stub.requests == []


def test_a_refusal_after_a_passed_request_cuts_the_connection(
    relay: registry.Relay, stub: StubRegistry
) -> None:
    # The registry may still be answering the first request: no answer of the relay's
    # can be mixed into it, so the connection just ends.
    answer = exchange(
        relay, request("GET", "/v2/", relay.credential.basic) + request("DELETE", MANIFEST)
    )
    assert answer.count(b"HTTP/1.1") <= 1 and b" 401 " not in answer
    assert stub.requests in ([("GET", "/v2/")], [])


def test_relay_counts_what_it_passes_to_the_host() -> None:
    with byte_server(3_000_000) as target:
        relay = registry.Relay(target, REPOSITORY)
        try:
            assert fetch(relay) == 3_000_000
            assert relay.bytes_out == 3_000_000
        finally:
            relay.close()
        with pytest.raises(OSError):
            fetch(relay)


def test_relay_holds_a_host_to_its_rate() -> None:
    size, rate = 1_500_000, 2_000_000
    with byte_server(size) as target:
        relay = registry.Relay(target, REPOSITORY, Throttle([TokenBucket(rate)]))
        try:
            started = time.monotonic()
            assert fetch(relay) == size
            took = time.monotonic() - started
        finally:
            relay.close()
    assert took >= size / rate * 0.8, took
    assert took < size / rate * 5 + 2, took


def test_a_credential_is_never_shown() -> None:
    credential = registry.Credential.generate()
    assert credential.password not in repr(credential)
    assert credential.password not in str(credential)
    assert credential.basic not in repr(credential)
    assert base64.b64decode(credential.basic).decode() == (
        f"{credential.user}:{credential.password}"
    )


def test_deploy_takes_the_same_path_options_as_push() -> None:
    from fleet.cli import build_parser
    from fleet.cli import deploy as deploy_cli

    args = build_parser().parse_args(
        ["deploy", "0.2.3", "--via", "registry", "--max-rate-per-host", "5M/s"]
    )
    options = deploy_cli._options(args, "cauchy").push_options()
    assert (options.via, options.registry, options.compress) == ("registry", None, "auto")
    assert options.max_rate_per_host == 5 << 20 and options.max_rate is None
    args = build_parser().parse_args(["deploy", "--compress", "zstd", "--max-rate", "20M"])
    options = deploy_cli._options(args, "cauchy").push_options()
    assert (options.via, options.compress, options.max_rate) == ("ssh", "zstd", 20 << 20)
    args = build_parser().parse_args(["push", "--via", "registry", "--compress", "none"])
    from fleet.cli import push as push_cli

    with pytest.raises(UsageError, match="--compress applies to --via ssh"):
        push_cli.path_options(args)


@needs_registry
def test_a_registry_with_cache_storage_keeps_blobs_for_the_next_run(tmp_path: Path) -> None:
    storage = tmp_path / "cache"
    with registry.LoopbackRegistry(storage=storage) as first:
        digest = _upload_blob(first.address, b"a layer the next publish need not upload again")
    assert storage.is_dir()
    with registry.LoopbackRegistry(storage=storage) as second:
        head = urllib.request.Request(
            f"http://{second.address}/v2/fleet-test/blobs/{digest}", method="HEAD"
        )
        assert urllib.request.urlopen(head, timeout=5).status == 200


def _upload_blob(address: str, blob: bytes) -> str:
    """Upload ``blob`` to the registry at ``address`` (as a push does); its digest."""
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    base = f"http://{address}/v2/fleet-test/blobs"
    with urllib.request.urlopen(
        urllib.request.Request(f"{base}/uploads/", method="POST"), timeout=5
    ) as started:
        location = started.headers["Location"]
    if location.startswith("/"):
        location = f"http://{address}{location}"
    joiner = "&" if "?" in location else "?"
    put = urllib.request.Request(
        f"{location}{joiner}digest={digest}",
        data=blob,
        method="PUT",
        headers={"Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(put, timeout=5) as answer:
        assert answer.status == 201
    return digest


@needs_registry
@pytest.mark.hostile
def test_the_loopback_registry_deletes_nothing(tmp_path: Path) -> None:
    with registry.LoopbackRegistry(storage=tmp_path / "cache") as served:
        digest = _upload_blob(served.address, b"a layer no one may take away")
        url = f"http://{served.address}/v2/fleet-test/blobs/{digest}"
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=5)
        caught.value.close()
        assert caught.value.code == 405
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5) as kept:
            assert kept.status == 200


@needs_registry
@pytest.mark.hostile
def test_no_push_through_a_relay_reaches_the_loopback_registry(tmp_path: Path) -> None:
    with registry.LoopbackRegistry(storage=tmp_path / "cache") as served:
        relay = registry.Relay(("127.0.0.1", served.port), "fleet-test")
        try:
            basic = relay.credential.basic
            assert http_get(relay.port, "/v2/", basic)[0] == 200
            uploads = "/v2/fleet-test/blobs/uploads/"
            assert http_get(relay.port, uploads, method="POST")[0] == 401
            assert http_get(relay.port, uploads, basic, method="POST")[0] == 405
        finally:
            relay.close()
        # Not one upload was started: the registry has none to list or finish.
        uploads_dir = tmp_path / "cache" / "docker/registry/v2/repositories/fleet-test/_uploads"
        assert not uploads_dir.exists() or not any(uploads_dir.iterdir())
