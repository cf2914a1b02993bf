"""The registry path of fleet push without a lab: names, the per-host pull, publishing.

Hosts are fakes of fleet's own Transport interface (plus the port forward), answering the
state script from a small in-memory image store; the loopback registry and the relay are
real processes and sockets on this machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from fleet import registry, transfer
from fleet.bandwidth import Throttle, TokenBucket
from fleet.errors import RegistryError, UsageError
from fleet.images import ImageSpec, Shippable
from fleet.inventory import Host
from fleet.results import Outcome
from fleet.runner import Runner
from fleet.transport import CommandResult

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


# -- a host, faked ----------------------------------------------------------------------
def state_text(images: dict[str, tuple[str, ...]], ref: str, store: str, version: str) -> str:
    """What STATE_SCRIPT prints on a host holding ``images`` (name -> layers)."""
    driver = '[["driver-type","io.containerd.snapshotter.v1"]]' if store == "containerd" else "[]"
    lines = ["@@engine", version, "@@engine_rc 0", "@@store", driver, "@@target"]
    if ref in images:
        lines.append(f"{SPEC.config_digest} {json.dumps(list(images[ref]))}")
    lines.append("@@listed")
    if ref in images:
        lines.append(SPEC.config_digest)
    lines.append("@@layers")
    lines += [json.dumps(list(layers)) for layers in images.values()]
    lines += ["@@target_manifest", "@@content", "@@content_rc 1", "@@df"]
    lines += ["/dev/sda1 1000 10 999999999999 1% /", "@@end"]
    return "\n".join(lines) + "\n"


class FakeHost:
    """A host's engine behind fleet's Transport interface, with ``ssh -R``."""

    def __init__(
        self,
        name: str,
        images: dict[str, tuple[str, ...]] | None = None,
        *,
        store: str = "classic",
        version: str = "20.10.24",
        fail: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.images = dict(images or {})
        self.store = store
        self.version = version
        self.fail = set(fail)
        self.commands: list[list[str]] = []
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
        if argv[:2] == ["sh", "-c"]:
            text = state_text(self.images, argv[-1], self.store, self.version)
            return CommandResult("state", 0, text, "", 0.0)
        self.commands.append(argv)
        verb = argv[1]
        code, err = 0, ""
        if verb in self.fail:
            code, err = 1, f"Error response from daemon: {verb} refused by the fake"
        elif verb == "pull":
            name = argv[-1]
            if name.startswith("127.0.0.1:"):
                port = int(name.split(":")[1].split("/")[0])
                assert port in self.forwards, "pulled through a port that is not forwarded"
            self.images[name] = SPEC.diff_ids
        elif verb == "tag":
            self.images[argv[3]] = self.images[argv[2]]
        elif verb == "rmi":
            if argv[2] in self.images:
                del self.images[argv[2]]
            else:
                code, err = 1, f"Error: No such image: {argv[2]}"
        result = CommandResult(" ".join(argv), code, "", err, 0.0)
        if check and code != 0:
            raise transfer.HostError(self.name, f"command exited {code}: {result.command}\n{err}")
        return result

    def stream(self, argv: Sequence[str], chunks: object, **kwargs: object) -> CommandResult:
        raise AssertionError("the registry path never streams an image")

    def forward_remote(self, port: int, target: tuple[str, int]) -> int:
        chosen = 40000 + len(self.forwards)
        self.forwards[chosen] = target
        return chosen

    def cancel_forward(self, port: int) -> None:
        self.cancelled.append(port)

    def close(self) -> None:
        return None

    def verbs(self) -> list[str]:
        return [c[1] if c[0] == "docker" else " ".join(c[-4:-1]) for c in self.commands]


class FakePublisher:
    """Publishes nowhere; records what it was asked, serves a tunnelled or direct location."""

    def __init__(self, location: registry.Location, error: str | None = None) -> None:
        self.location = location
        self.error = error
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
        return "sha256:" + "d" * 64


TUNNEL = registry.Location("127.0.0.1:5001/fleet", ("127.0.0.1", 5001))
IMAGE = Shippable(SPEC, (100, 200, 300), lambda: iter(()))


def run_push(
    hosts: dict[str, FakeHost],
    publisher: FakePublisher,
    **options: object,
) -> transfer.FleetResult:
    runner = Runner(lambda host: hosts[host.name], forks=4)
    chosen = transfer.PushOptions(via="registry", **options)  # type: ignore[arg-type]
    return transfer.push(runner, [Host(n) for n in hosts], IMAGE, chosen, publisher=publisher)


def test_hosts_pull_through_their_tunnel_get_the_real_name_and_lose_the_temporary_one() -> None:
    old = SPEC.diff_ids[:2]
    hosts = {
        "a": FakeHost("a", {"cauchy:0.2.2": old}),
        "b": FakeHost("b", {}, store="containerd", version="26.1.5"),
        "c": FakeHost("c", {SPEC.ref: SPEC.diff_ids}),
    }
    publisher = FakePublisher(TUNNEL)
    result = run_push(hosts, publisher)
    rows = {r.host: r for r in result.results}
    assert {h: str(r.outcome) for h, r in rows.items()} == {
        "a": "changed",
        "b": "changed",
        "c": "ok",
    }
    assert publisher.published == [(SPEC.ref, "127.0.0.1:5001/fleet/cauchy:0.2.3")]
    assert hosts["a"].verbs() == ["pull", "tag", "rmi"], hosts["a"].commands
    # The containerd store also fetches the blobs its snapshots lack, through the tunnel.
    assert hosts["b"].verbs() == ["pull", "content fetch --plain-http", "tag", "rmi"]
    for name in ("a", "b"):
        host = hosts[name]
        pulled = host.commands[0][-1]
        assert pulled.startswith("127.0.0.1:40000/fleet/cauchy:0.2.3")
        assert host.forwards[40000] != ("127.0.0.1", 5001)  # a relay, not the registry itself
        assert host.cancelled == [40000]
        assert set(host.images) >= {SPEC.ref} and pulled not in host.images
    assert rows["a"].details["layers_present"] == 2
    assert rows["a"].details["layers_pulled"] == 1
    assert rows["b"].details["layers_pulled"] == 3
    assert rows["b"].details["image_id"] == SPEC.config_digest
    assert rows["a"].details["registry"] == "controller (tunnelled)"
    assert hosts["c"].commands == []


def test_a_failed_pull_fails_that_host_only_and_still_cleans_up() -> None:
    hosts = {"a": FakeHost("a", fail=["pull"]), "b": FakeHost("b")}
    result = run_push(hosts, FakePublisher(TUNNEL))
    rows = {r.host: r for r in result.results}
    assert rows["a"].outcome is Outcome.FAILED
    assert "pull refused by the fake" in (rows["a"].reason or "")
    assert rows["b"].outcome is Outcome.CHANGED
    assert hosts["a"].verbs() == ["pull", "rmi"]  # the temporary name, should it exist
    assert hosts["a"].cancelled == [40000]
    assert SPEC.ref not in hosts["a"].images


def test_a_failed_retag_removes_the_pulled_name() -> None:
    host = FakeHost("a", fail=["tag"])
    result = run_push({"a": host}, FakePublisher(TUNNEL))
    assert result.results[0].outcome is Outcome.FAILED
    assert host.verbs() == ["pull", "tag", "rmi"]
    assert host.images == {}  # nothing left under any name
    assert host.cancelled == [40000]


def test_a_temporary_name_that_stays_fails_the_host_with_the_fix() -> None:
    host = FakeHost("a", fail=["rmi"])
    row = run_push({"a": host}, FakePublisher(TUNNEL)).results[0]
    assert row.outcome is Outcome.FAILED
    assert "could not be removed" in (row.reason or "")
    assert "docker rmi 127.0.0.1:40000/fleet/cauchy:0.2.3" in (row.fix or "")


def test_an_existing_registry_is_pulled_directly_and_its_name_removed() -> None:
    host = FakeHost("a")
    publisher = FakePublisher(registry.Location("harbor.lab/ml"))
    row = run_push({"a": host}, publisher, registry="harbor.lab/ml").results[0]
    assert row.outcome is Outcome.CHANGED, row
    assert host.commands[0] == ["docker", "pull", "--quiet", "harbor.lab/ml/cauchy:0.2.3"]
    assert host.forwards == {}
    assert row.details["bytes_pulled"] is None
    assert list(host.images) == [SPEC.ref]


def test_a_publish_that_fails_fails_every_host_that_needed_it() -> None:
    hosts = {"a": FakeHost("a"), "b": FakeHost("b", {SPEC.ref: SPEC.diff_ids})}
    result = run_push(hosts, FakePublisher(TUNNEL, error="pushing failed: denied"))
    rows = {r.host: r for r in result.results}
    assert rows["a"].outcome is Outcome.FAILED and "denied" in (rows["a"].reason or "")
    assert rows["a"].fix == "docker login there"
    assert rows["b"].outcome is Outcome.OK
    assert hosts["a"].commands == []


def test_check_says_what_would_be_pulled_and_publishes_nothing() -> None:
    host = FakeHost("a", {"old": SPEC.diff_ids[:1]})
    publisher = FakePublisher(TUNNEL)
    row = run_push({"a": host}, publisher, check=True).results[0]
    assert row.outcome is Outcome.CHANGED
    assert row.details["layers_to_pull"] == 2
    assert "would pull 2/3 layers" in (row.reason or "")
    assert publisher.served == 0 and host.commands == []


def test_options_that_cannot_work_together_are_refused() -> None:
    with pytest.raises(UsageError, match="--via registry"):
        transfer.check_options(transfer.PushOptions(registry="harbor.lab"))
    with pytest.raises(UsageError, match="cannot limit") as caught:
        transfer.check_options(
            transfer.PushOptions(via="registry", registry="harbor.lab", max_rate=1e6)
        )
    assert "tunnelled" in (caught.value.fix or "")
    transfer.check_options(transfer.PushOptions(via="registry", max_rate=1e6))
    with pytest.raises(UsageError, match="--via"):
        transfer.check_options(transfer.PushOptions(via="carrier-pigeon"))


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


# -- the relay: counting and limiting what goes to a host --------------------------------
@contextlib.contextmanager
def byte_server(size: int) -> Iterator[tuple[str, int]]:
    """A TCP server that sends ``size`` bytes to each connection, then closes it."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                with conn:
                    conn.recv(16)
                    conn.sendall(b"x" * size)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield ("127.0.0.1", int(server.getsockname()[1]))
    finally:
        server.close()


def fetch(port: int) -> int:
    received = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"GET")
        while data := conn.recv(1 << 16):
            received += len(data)
    return received


def test_relay_counts_what_it_passes_to_the_host() -> None:
    with byte_server(3_000_000) as target:
        relay = registry.Relay(target)
        try:
            assert fetch(relay.port) == 3_000_000
            assert relay.bytes_out == 3_000_000
        finally:
            relay.close()
        with pytest.raises(OSError):
            fetch(relay.port)


def test_relay_holds_a_host_to_its_rate() -> None:
    size, rate = 1_500_000, 2_000_000
    with byte_server(size) as target:
        relay = registry.Relay(target, Throttle([TokenBucket(rate)]))
        try:
            started = time.monotonic()
            assert fetch(relay.port) == size
            took = time.monotonic() - started
        finally:
            relay.close()
    assert took >= size / rate * 0.8, took
    assert took < size / rate * 5 + 2, took


def test_deploy_takes_the_same_path_options_as_push() -> None:
    from fleet.cli import build_parser
    from fleet.cli import deploy as deploy_cli

    args = build_parser().parse_args(
        ["deploy", "0.2.3", "--via", "registry", "--max-rate-per-host", "5M/s"]
    )
    options = deploy_cli._options(args, "cauchy").push_options()
    assert (options.via, options.registry, options.compress) == ("registry", None, "gzip")
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
    blob = b"a layer the next publish need not upload again"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    storage = tmp_path / "cache"
    with registry.LoopbackRegistry(storage=storage) as first:
        base = f"http://{first.address}/v2/fleet-test/blobs"
        started = urllib.request.urlopen(
            urllib.request.Request(f"{base}/uploads/", method="POST"), timeout=5
        )
        location = started.headers["Location"]
        if location.startswith("/"):
            location = f"http://{first.address}{location}"
        joiner = "&" if "?" in location else "?"
        put = urllib.request.Request(
            f"{location}{joiner}digest={digest}",
            data=blob,
            method="PUT",
            headers={"Content-Type": "application/octet-stream"},
        )
        assert urllib.request.urlopen(put, timeout=5).status == 201
    assert storage.is_dir()
    with registry.LoopbackRegistry(storage=storage) as second:
        head = urllib.request.Request(
            f"http://{second.address}/v2/fleet-test/blobs/{digest}", method="HEAD"
        )
        assert urllib.request.urlopen(head, timeout=5).status == 200
