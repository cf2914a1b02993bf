"""bench/seedscale: pushes of seed-size images, side by side with their limits and the naive way.

The lab's real images are large: an upstream of 4.5 GB, a base of 6 GB, and one framework
commit adds a layer of about 240 MB. This bench builds images of that shape locally, from
bytes the machine has (random bytes, and library files as CUDA's shared libraries are):

- layer 1: the lab's Debian layer plus ``2 GiB x scale``, half random, half library-like;
- the base: ``300 MB x scale`` on top;
- framework versions N and N+1: ``240 MiB x scale`` each, half random, half library-like.

On a fresh lab of ``--hosts`` hosts (both image stores), measured in one run:

1. thin push (hosts have N, push N+1) to 1 host, against a host-local ``docker load`` of a
   tarball of the same missing layer (the limit: no network, no compression), and the
   same loads on every host at once (the limit where hosts share the machine's cores);
2. thin push to all hosts, against the naive ``docker save | ssh docker load``;
3. first push (fresh hosts) to all hosts: fleet, the naive way, and ``--via registry``;
   then fleet and the naive way again on a shaped link, where the bytes matter: ``tc``
   tbf at 1 Gbit/s on the lab's bridge (the controller's uplink, shared by all hosts), or
   where ``tc`` cannot, fleet's ``--max-rate 125M`` against the naive way through a pipe
   throttled to the same rate;
4. fleet's peak RSS and CPU seconds on the controller, per run (``wait4`` of its process,
   from a small launcher);
5. each wire compression of the framework layer: size, controller CPU, time to unpack
   (``--compression-only`` measures just this, without a lab).

Prints a table, and as its last line one JSON object of ratios (targets in the README).

    .venv/bin/python bench/seedscale.py [--hosts 4] [--scale 1.0] [--no-shaped] [--keep]
        [--controller-store classic|containerd]

``--controller-store containerd`` runs the controller's side on a second engine that keeps
its images in containerd's store (Docker 29's default), started as the tests start it:
images are built there, and fleet and the naive way read them from there.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from transfer import ssh_argv  # bench/transfer.py: OpenSSH to a lab host, as a user would

from fleet.images import daemon
from fleet.images.spec import Shippable
from fleet.lab import nodes as lab
from fleet.ship.stream import thin_tarball

LAB = "fleet-bench-seed"
REPO = "fleet-bench-seed"

# Writes SIZE bytes under DIR, half random, half library-like (the image's own /usr files
# concatenated in a shuffled order, as a CUDA or PyTorch wheel's shared libraries are).
FILL = r"""
import os, random, sys
target, size, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.makedirs(target, exist_ok=True)
rng = random.Random(seed)
pool = []
for root in ("/usr/lib", "/usr/bin"):
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p):
                pool.append(p)
piece = 64 << 20
half = size // 2
n = 0
left = half
while left > 0:
    with open(os.path.join(target, "random-%d.bin" % n), "wb") as out:
        out.write(os.urandom(min(piece, left)))
    left -= piece; n += 1
left = size - half
while left > 0:
    with open(os.path.join(target, "lib%d.so" % n), "wb") as out:
        want = min(piece, left)
        while want > 0:
            with open(rng.choice(pool), "rb") as src:
                data = src.read(want)
            out.write(data); want -= len(data)
    left -= piece; n += 1
"""


def build(client: Any, tag: str, base: str, directory: str, size: int) -> str:
    """``REPO:tag``: ``base`` plus one layer of ``size`` bytes under ``directory``."""
    fill = FILL.encode()
    dockerfile = (
        f"FROM {base}\nCOPY fill.py /tmp/fill.py\n"
        f"RUN python3 /tmp/fill.py {directory} {size} {tag} && rm /tmp/fill.py\n"
    ).encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (("Dockerfile", dockerfile), ("fill.py", fill)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    reference = f"{REPO}:{tag}"
    if not daemon.has_image(client, reference):
        client.images.build(fileobj=context, custom_context=True, tag=reference, rm=True)
    return reference


# fleet runs forked from this small launcher, which reports its peak RSS and CPU: a
# process forked straight from the bench would inherit the bench's own high-water mark
# (a fork's copy of the parent counts, and exec keeps it).
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.close(int(sys.argv[1]))
    os.execv(sys.executable, [sys.executable, "-m", "fleet", *sys.argv[2:]])
_, status, usage = os.wait4(pid, 0)
os.write(int(sys.argv[1]), f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}".encode())
sys.exit(os.waitstatus_to_exitcode(status))
"""


# The controller engine's environment (DOCKER_HOST, FLEET_ENGINE_ROOT) when it is not this
# machine's own engine: for fleet and for the naive way's docker save.
CONTROLLER_ENV: dict[str, str] = {}
CONTROLLER: list[lab.ControllerEngine] = []


def docker_save(reference: str) -> list[str]:
    host = CONTROLLER_ENV.get("DOCKER_HOST")
    return ["docker", *(["-H", host] if host else []), "save", reference]


def controller_on_containerd(work: Path) -> Any:
    """A second engine on the containerd store with the lab's layer 1: its client."""
    # Its root stays in the work directory: the images built there serve the next run.
    engine = lab.controller_engine(LAB, work / "controller")
    CONTROLLER.append(engine)
    CONTROLLER_ENV.update(engine.environment)
    os.environ["FLEET_ENGINE_ROOT"] = engine.environment["FLEET_ENGINE_ROOT"]
    engine.load("fleet-lab-layer1:bookworm")
    return engine.client()


def fleet(
    *argv: str, env: dict[str, str] | None = None
) -> tuple[float, float, int, dict[str, Any]]:
    """Run fleet with --json; (wall s, controller CPU s, peak RSS bytes, document)."""
    started = time.perf_counter()
    read_usage, write_usage = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(write_usage), *argv, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=(write_usage,),
        env={**os.environ, **CONTROLLER_ENV, **(env or {})},
    )
    os.close(write_usage)
    out, err = proc.communicate()
    with os.fdopen(read_usage, "rb") as pipe:
        usage = pipe.read().split()
    wall = time.perf_counter() - started
    if proc.returncode != 0 or len(usage) != 2:
        raise SystemExit(
            f"fleet {' '.join(argv)} failed:\n{out.decode()[-3000:]}\n{err.decode()[-3000:]}"
        )
    return wall, float(usage[1]), int(usage[0]) * 1024, json.loads(out)


def on_host(inventory: Path, host: str, command: str, stdin: Any = None) -> str:
    ran = subprocess.run(
        [*ssh_argv(inventory, host), command], stdin=stdin, capture_output=True, check=False
    )
    if ran.returncode != 0:
        raise SystemExit(f"{host}: {command} failed: {ran.stderr.decode()[-2000:]}")
    return ran.stdout.decode()


def naive(inventory: Path, hosts: Iterable[str], reference: str) -> float:
    """``docker save IMAGE | ssh HOST docker load`` to every host at once; wall seconds."""
    started = time.perf_counter()

    def one(host: str) -> None:
        save = subprocess.Popen(docker_save(reference), stdout=subprocess.PIPE)
        on_host(inventory, host, "docker load -q >/dev/null", stdin=save.stdout)
        save.wait()

    hosts = list(hosts)
    with ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(one, hosts))
    return time.perf_counter() - started


# A shaped link: 1 Gbit/s, as a lab's controller uplink. The lab's hosts sit on Docker's
# default bridge, so a token bucket on it shapes every byte the controller sends them.
RATE = 125_000_000
BRIDGE = "docker0"


class Shaped:
    """``tc`` tbf at ``RATE`` on the lab's bridge while in use; ``available`` says if it can."""

    def __init__(self) -> None:
        self.available = shutil.which("tc") is not None and self._tc("replace") == 0
        if self.available:
            self._tc("del")

    def _tc(self, verb: str) -> int:
        argv = ["tc", "qdisc", verb, "dev", BRIDGE, "root"]
        if verb != "del":
            argv += ["tbf", "rate", f"{RATE * 8}bit", "burst", "1mb", "latency", "50ms"]
        return subprocess.run(argv, capture_output=True, check=False).returncode

    def __enter__(self) -> Shaped:
        if self.available and self._tc("replace") != 0:
            raise SystemExit(f"tc: cannot shape {BRIDGE}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.available:
            self._tc("del")


def throttled(source: Any, sink: Any, rate: int) -> None:
    """Copy ``source`` to ``sink`` at no more than ``rate`` bytes/s (``pv -L``'s job)."""
    started, sent = time.perf_counter(), 0
    while chunk := source.read(1 << 20):
        sink.write(chunk)
        sent += len(chunk)
        ahead = sent / rate - (time.perf_counter() - started)
        if ahead > 0:
            time.sleep(ahead)
    sink.close()


def naive_throttled(inventory: Path, hosts: list[str], reference: str, rate: int) -> float:
    """The naive way with every host's stream throttled so that all share ``rate``."""
    started = time.perf_counter()

    def one(host: str) -> None:
        save = subprocess.Popen(docker_save(reference), stdout=subprocess.PIPE)
        load = subprocess.Popen(
            [*ssh_argv(inventory, host), "docker load -q >/dev/null"], stdin=subprocess.PIPE
        )
        throttled(save.stdout, load.stdin, rate // len(hosts))
        if load.wait() != 0 or save.wait() != 0:
            raise SystemExit(f"{host}: the naive throttled push failed")

    with ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(one, hosts))
    return time.perf_counter() - started


def host_local_load(inventory: Path, host: str, image: Shippable, send: set[int]) -> float:
    """Seconds of ``docker load -i`` on the host of a plain tarball of the layers ``send``."""
    writer = subprocess.Popen(
        [*ssh_argv(inventory, host), "cat > /var/tmp/seed-thin.tar"], stdin=subprocess.PIPE
    )
    assert writer.stdin is not None
    for chunk in thin_tarball(image, send, "none"):
        writer.stdin.write(chunk)
    writer.stdin.close()
    if writer.wait() != 0:
        raise SystemExit(f"{host}: could not copy the thin tarball")
    said = on_host(
        inventory,
        host,
        "sync; s=$(date +%s.%N); docker load -q -i /var/tmp/seed-thin.tar >/dev/null; "
        "e=$(date +%s.%N); rm -f /var/tmp/seed-thin.tar; echo $s $e",
    )
    start, end = (float(x) for x in said.split())
    return end - start


def compression(image: Shippable, layer: int) -> list[tuple[str, str]]:
    """Each wire compression of one framework layer: controller CPU, size, time to unpack.

    The unpacking runs here with ``gzip -dc`` / ``zstd -dc``, standing in for the host's
    ``docker load``, which decompresses the same stream (Go's gzip, or its zstd).
    """
    from fleet.ship.stream import ImageStream

    rows: list[tuple[str, str]] = []
    for method in ("none", "gzip", "zstd"):
        usage = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        started = time.perf_counter()
        stream = ImageStream(image.spec, image.save, method)
        assert image.local is not None, "the bench needs a classic controller store"
        out = work_file(f"layer.{method}")
        with out.open("wb") as handle:
            for _, chunks in stream.local_members(image.local, {layer}):
                for chunk in chunks:
                    handle.write(chunk)
        wall = time.perf_counter() - started
        after = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        cpu = sum(
            a.ru_utime + a.ru_stime - (b.ru_utime + b.ru_stime)
            for a, b in zip(after, usage, strict=True)
        )
        unpack = 0.0
        if method != "none":
            started = time.perf_counter()
            subprocess.run([method, "-dc", str(out)], stdout=subprocess.DEVNULL, check=True)
            unpack = time.perf_counter() - started
        size = out.stat().st_size
        out.unlink()
        rows.append(
            (
                f"layer as {method}: MiB, encode wall s, controller CPU s, decode s",
                f"{size / (1 << 20):.0f}, {wall:.1f}, {cpu:.1f}, {unpack:.1f}",
            )
        )
    return rows


def work_file(name: str) -> Path:
    return Path(os.environ.get("TMPDIR", "/tmp")) / LAB / name


def remove(inventory: Path, hosts: Iterable[str], *references: str) -> None:
    for host in hosts:
        on_host(inventory, host, f"docker image rm -f {' '.join(references)} >/dev/null 2>&1; true")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--scale", type=float, default=1.0, help="of the seed sizes (default 1)")
    parser.add_argument("--keep", action="store_true", help="leave the bench lab and images")
    parser.add_argument(
        "--compression-only",
        action="store_true",
        help="only the wire compressions of one framework layer (no lab)",
    )
    parser.add_argument(
        "--no-shaped", action="store_true", help="skip the first pushes on a 1 Gbit/s link"
    )
    parser.add_argument(
        "--controller-store",
        choices=("classic", "containerd"),
        default="classic",
        help="the controller engine's image store (containerd: a second engine, started here)",
    )
    args = parser.parse_args()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / LAB
    work.mkdir(parents=True, exist_ok=True)
    inventory = work / "lab.yml"
    client = lab.engine_client()
    lab.ensure_layer1_image(client)
    if args.controller_store == "containerd":
        client = controller_on_containerd(work)
    scale = args.scale
    tag = f"s{scale:g}"
    started = time.perf_counter()
    layer1 = build(
        client,
        f"layer1-{tag}",
        "fleet-lab-layer1:bookworm",
        "/opt/upstream",
        int((2 << 30) * scale),
    )
    base = build(client, f"base-{tag}", layer1, "/opt/deps", int(300e6 * scale))
    version_n = build(client, f"n-{tag}", base, "/opt/framework", int((240 << 20) * scale))
    version_n1 = build(client, f"n1-{tag}", base, "/opt/framework", int((240 << 20) * scale))
    built = time.perf_counter() - started
    names = [f"lab{i}" for i in range(1, args.hosts + 1)]
    shippable_n1 = daemon.shippable(client, version_n1)
    top = len(shippable_n1.spec.diff_ids) - 1
    total = sum(shippable_n1.sizes)

    def push(
        target: str, reference: str, *more: str, env: dict[str, str] | None = None
    ) -> tuple[float, float, int, dict[str, Any]]:
        argv = ("push", "-i", str(inventory), "--retry-file", "/dev/null", target, reference)
        return fleet(*argv, *more, env=env)

    if args.compression_only:
        for name, value in compression(shippable_n1, top):
            print(f"{name:<64} {value:>22}")
        return 0
    lab.down(name=LAB, inventory=inventory)
    lab.up(args.hosts, "mixed", name=LAB, inventory=inventory)
    rows: list[tuple[str, str]] = []
    # First pushes to fresh hosts: the naive way, the registry, then fleet (last, so that
    # the thin pushes start from what fleet's own path leaves on the hosts).
    reset = "docker image prune -af >/dev/null 2>&1; docker builder prune -af >/dev/null 2>&1; true"
    first_naive = naive(inventory, names, version_n)
    remove(inventory, names, version_n)
    for host in names:
        on_host(inventory, host, reset)
    # A first publish: the controller's registry starts empty (it keeps its blobs between
    # runs, which would make every later "first" push free of compression).
    # Not with a controller engine in a container: its loopback, where it would push to
    # the registry, is not this machine's.
    first_registry: tuple[float, float, int, dict[str, Any]] | None = None
    if not CONTROLLER:
        cold = work_file("registry")
        shutil.rmtree(cold, ignore_errors=True)
        first_registry = push(
            "all", version_n, "--via", "registry", env={"FLEET_REGISTRY_CACHE": str(cold)}
        )
        shutil.rmtree(cold, ignore_errors=True)
        remove(inventory, names, version_n)
        for host in names:
            on_host(inventory, host, reset)
    first = push("all", version_n)
    # Thin pushes: every host has N now.
    limit = host_local_load(inventory, "lab1", shippable_n1, {top})
    remove(inventory, ["lab1"], version_n1)
    # The same on every host at once: where the hosts share the machine's cores, as a
    # lab's do, this (not one host's load) is what a push to all of them cannot beat.
    with ThreadPoolExecutor(len(names)) as pool:
        limit_all = max(
            pool.map(lambda h: host_local_load(inventory, h, shippable_n1, {top}), names)
        )
    remove(inventory, names, version_n1)
    thin1 = push("lab1", version_n1)
    remove(inventory, ["lab1"], version_n1)
    thin1_plain = push("lab1", version_n1, "--compress", "none")
    remove(inventory, ["lab1"], version_n1)
    thin_all = push("all", version_n1)
    remove(inventory, names, version_n1)
    thin_naive = naive(inventory, names, version_n1)
    shaped: dict[str, Any] = {}
    if not args.no_shaped:
        link = Shaped()
        for method in ("naive", "fleet"):
            remove(inventory, names, version_n, version_n1)
            for host in names:
                on_host(inventory, host, reset)
            if method == "naive" and link.available:
                with link:
                    shaped[method] = naive(inventory, names, version_n)
            elif method == "naive":
                shaped[method] = naive_throttled(inventory, names, version_n, RATE)
            elif link.available:
                with link:
                    shaped[method] = push("all", version_n)[0]
            else:
                shaped[method] = push("all", version_n, "--max-rate", str(RATE))[0]
        shaped["how"] = f"tc tbf on {BRIDGE}" if link.available else "--max-rate and a throttle"
    sources = sorted({str(h["details"].get("source")) for h in thin_all[3]["hosts"].values()})
    rows += [
        ("image size (history), bytes", str(total)),
        ("building the images (cached after the first run), s", f"{built:.1f}"),
        (f"first push, {args.hosts} hosts, fleet: wall s", f"{first[0]:.1f}"),
        (f"first push, {args.hosts} hosts, fleet: controller CPU s", f"{first[1]:.1f}"),
        (f"first push, {args.hosts} hosts, fleet: controller RSS MiB", f"{first[2] >> 20}"),
        (f"first push, {args.hosts} hosts, naive: wall s", f"{first_naive:.1f}"),
        (
            f"first push, {args.hosts} hosts, --via registry: wall s",
            f"{first_registry[0]:.1f}" if first_registry else "n/a",
        ),
        ("host-local docker load of the thin layer, s", f"{limit:.1f}"),
        ("thin push, 1 host: wall s", f"{thin1[0]:.1f}"),
        ("thin push, 1 host, --compress none: wall s", f"{thin1_plain[0]:.1f}"),
        (f"host-local docker load on all {args.hosts} hosts at once, s", f"{limit_all:.1f}"),
        (f"thin push, {args.hosts} hosts: wall s", f"{thin_all[0]:.1f}"),
        (f"thin push, {args.hosts} hosts: controller RSS MiB", f"{thin_all[2] >> 20}"),
        (f"thin push, {args.hosts} hosts, naive: wall s", f"{thin_naive:.1f}"),
        ("thin push: where the layer was read", ", ".join(sources)),
    ]
    if shaped:
        rows += [
            (
                f"first push, {args.hosts} hosts, 1 Gbit/s ({shaped['how']}), fleet: wall s",
                f"{shaped['fleet']:.1f}",
            ),
            (
                f"first push, {args.hosts} hosts, 1 Gbit/s ({shaped['how']}), naive: wall s",
                f"{shaped['naive']:.1f}",
            ),
        ]
    rows += compression(shippable_n1, top)
    width = max(len(name) for name, _ in rows) + 2
    for name, value in rows:
        print(f"{name:<{width}} {value:>12}")
    figures = {
        "hosts": args.hosts,
        "scale": scale,
        "controller_store": args.controller_store,
        "thin1_over_host_local_load": round(thin1[0] / limit, 2),
        "thin_all_over_thin1": round(thin_all[0] / thin1[0], 2),
        "thin_all_over_host_local_loads": round(thin_all[0] / limit_all, 2),
        "thin1_plain_over_host_local_load": round(thin1_plain[0] / limit, 2),
        "thin_speedup_vs_naive": round(thin_naive / thin_all[0], 2),
        "first_over_naive": round(first[0] / first_naive, 2),
        "first_over_registry": (round(first[0] / first_registry[0], 2) if first_registry else None),
        "first_over_naive_1gbit": (round(shaped["fleet"] / shaped["naive"], 2) if shaped else None),
        "shaped_by": shaped.get("how"),
        "peak_rss_mib": max(first[2], thin_all[2], *(first_registry or ())[2:3]) >> 20,
        "thin_source": sources,
    }
    if not args.keep:
        lab.down(name=LAB, inventory=inventory)
        for engine in CONTROLLER:
            lab.remove_controller_engine(engine)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
