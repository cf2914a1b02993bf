"""bench/transfer: fleet push against the naive 'docker save | ssh docker load', side by side.

On an 8-host lab (both image stores) named ``fleet-bench``:

1. first push (hosts have nothing): ``fleet push`` of version N to 1 fresh host, then to 8
   fresh hosts; wall time and controller CPU time;
2. thin push: every host has N; push N+1 (a few hundred KB of new top layer, random and
   text) with fleet to 1 host and to 8 hosts, and the naive way to the same 8 hosts;
   bytes on the wire per host against the gzip size of the layers the host lacked;
3. the SSH data path: fleet's transport streaming 512 MiB into ``cat >/dev/null`` against
   OpenSSH's ``ssh HOST 'cat >/dev/null'`` on the same host.

Prints a table, and as its last line one JSON object: ``bytes_over_missing`` (worst host,
target at most 1.05 after 64 KiB of allowance), ``hosts8_over_hosts1`` (target at most 2),
``speedup_vs_naive`` (target at least 10), ``ssh_throughput_over_openssh``.

    .venv/bin/python bench/transfer.py [--keep]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from fleet.images import daemon
from fleet.lab import nodes as lab
from fleet.ssh.known_hosts import KnownHosts
from fleet.ssh.paramiko_client import SSHTransport

LAB = "fleet-bench-transfer"
HOSTS = 8
REPO = "fleet-bench-transfer"
ALLOWANCE = 64 * 1024


def build(client: Any, tag: str, dockerfile: str) -> str:
    data = dockerfile.encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=f"{REPO}:{tag}", rm=True)
    return f"{REPO}:{tag}"


def top_layer(tag: str) -> str:
    # 150 kB incompressible and 150 kB of text: what a framework commit looks like.
    return (
        f"RUN head -c 150000 /dev/urandom > /random-{tag} && "
        f"python3 -c \"import sys; [print('line', i, 'of the framework source {tag}') for i in range(4000)]\" > /text-{tag}\n"
    )


def child_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fleet(*argv: str) -> tuple[float, float, dict[str, Any]]:
    """Run fleet; (wall seconds, controller CPU seconds, JSON document)."""
    cpu = child_seconds()
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "fleet", *argv, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(
            f"fleet {' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return wall, child_seconds() - cpu, json.loads(proc.stdout)


def ssh_argv(inventory: Path, host: str) -> list[str]:
    document = yaml.safe_load(inventory.read_text())
    group = document["all"]["children"]["lab"]
    port = group["hosts"][host]["ansible_port"]
    return [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={group['vars']['fleet_known_hosts']}",
        "-i",
        group["vars"]["ansible_ssh_private_key_file"],
        "-p",
        str(port),
        "root@127.0.0.1",
    ]


def naive(inventory: Path, hosts: list[str], reference: str) -> float:
    """``docker save IMAGE | ssh HOST docker load`` to every host at once; wall seconds."""
    started = time.perf_counter()

    def one(host: str) -> None:
        save = subprocess.Popen(["docker", "save", reference], stdout=subprocess.PIPE)
        load = subprocess.run(
            [*ssh_argv(inventory, host), "docker load -q"],
            stdin=save.stdout,
            capture_output=True,
            check=False,
        )
        save.wait()
        if load.returncode != 0:
            raise SystemExit(f"naive load on {host} failed: {load.stderr.decode()}")

    with ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(one, hosts))
    return time.perf_counter() - started


def remove_on_hosts(inventory: Path, hosts: list[str], reference: str) -> None:
    for host in hosts:
        subprocess.run(
            [*ssh_argv(inventory, host), f"docker image rm -f {reference} >/dev/null"], check=False
        )


def missing_gzip_size(client: Any, reference: str, diff_ids: set[str]) -> int:
    """gzip (default level) size of the layer tars with these diff IDs, from docker save."""
    total = 0
    raw = b"".join(daemon.save_stream(client, reference))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        import hashlib

        for member in tar:
            if member.name.endswith("layer.tar"):
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                if "sha256:" + hashlib.sha256(data).hexdigest() in diff_ids:
                    total += len(gzip.compress(data))
    return total


def throughput(inventory: Path, lab_: lab.Lab) -> tuple[float, float]:
    """MiB/s of fleet's SSH stream and of OpenSSH, 512 MiB into cat on lab1."""
    size_mib = 512
    chunk = os.urandom(1 << 20)
    endpoint = next(e for e in lab.endpoints(lab_) if e.name == "lab1")
    transport = SSHTransport(endpoint, KnownHosts([lab_.known_hosts]))
    started = time.perf_counter()
    transport.stream(["sh", "-c", "cat >/dev/null"], (chunk for _ in range(size_mib)), timeout=600)
    ours = size_mib / (time.perf_counter() - started)
    transport.close()
    started = time.perf_counter()
    proc = subprocess.Popen([*ssh_argv(inventory, "lab1"), "cat >/dev/null"], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for _ in range(size_mib):
        proc.stdin.write(chunk)
    proc.stdin.close()
    proc.wait()
    theirs = size_mib / (time.perf_counter() - started)
    return ours, theirs


def timed(label: str, rows: list[tuple[str, str]], action: Callable[[], Any]) -> Any:
    value = action()
    rows.append((label, str(value)))
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the bench lab and images")
    args = parser.parse_args()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "fleet-bench-transfer"
    work.mkdir(parents=True, exist_ok=True)
    inventory = work / "lab.yml"
    client = lab.engine_client()
    lab.ensure_layer1_image(client)
    base = build(
        client,
        "base",
        "FROM fleet-lab-layer1:bookworm\nRUN head -c 40000000 /dev/urandom > /deps\n",
    )
    version_n = build(client, "n", f"FROM {base}\n{top_layer('n')}")
    version_n1 = build(client, "n1", f"FROM {base}\n{top_layer('n1')}")
    names = [f"lab{i}" for i in range(1, HOSTS + 1)]
    push = ["push", "-i", str(inventory), "--retry-file", "/dev/null"]

    lab.down(name=LAB, inventory=inventory)
    lab.up(HOSTS, "mixed", name=LAB, inventory=inventory)
    first1_wall, first1_cpu, _ = fleet(*push[:1], "lab1", version_n, *push[1:])
    lab.down(name=LAB, inventory=inventory)
    lab_ = lab.up(HOSTS, "mixed", name=LAB, inventory=inventory)
    first8_wall, first8_cpu, _ = fleet(*push[:1], "all", version_n, *push[1:])

    # Thin: every host has N. Naive first, then take N+1 away again for fleet.
    naive_wall = naive(inventory, names, version_n1)
    remove_on_hosts(inventory, names, version_n1)
    thin1_wall, _, _ = fleet(*push[:1], "lab1", version_n1, *push[1:])
    remove_on_hosts(inventory, ["lab1"], version_n1)
    thin8_wall, thin8_cpu, doc = fleet(*push[:1], "all", version_n1, *push[1:])

    spec_n = daemon.image_spec(client, version_n)
    spec_n1 = daemon.image_spec(client, version_n1)
    lacking = set(spec_n1.diff_ids) - set(spec_n.diff_ids)
    missing = missing_gzip_size(client, version_n1, lacking)
    per_store: dict[str, list[int]] = {}
    for result in doc["hosts"].values():
        per_store.setdefault(result["details"]["store"], []).append(
            int(result["details"]["bytes_sent"])
        )
    worst = max(max(v) for v in per_store.values())
    ours, openssh = throughput(inventory, lab_)

    print(f"{'measure':<44} {'value':>14}")
    rows = [
        ("first push, 1 host: wall s", f"{first1_wall:.2f}"),
        ("first push, 1 host: controller CPU s", f"{first1_cpu:.2f}"),
        ("first push, 8 hosts: wall s", f"{first8_wall:.2f}"),
        ("first push, 8 hosts: controller CPU s", f"{first8_cpu:.2f}"),
        ("thin push, 1 host: wall s", f"{thin1_wall:.2f}"),
        ("thin push, 8 hosts: wall s", f"{thin8_wall:.2f}"),
        ("thin push, 8 hosts: controller CPU s", f"{thin8_cpu:.2f}"),
        ("naive save|ssh load, 8 hosts: wall s", f"{naive_wall:.2f}"),
        ("gzip size of the missing layers, bytes", str(missing)),
    ]
    for store, sent in sorted(per_store.items()):
        rows.append((f"bytes on the wire per host ({store})", f"{min(sent)}..{max(sent)}"))
    rows += [
        ("fleet SSH stream MiB/s", f"{ours:.0f}"),
        ("OpenSSH 'cat >/dev/null' MiB/s", f"{openssh:.0f}"),
    ]
    for name, value in rows:
        print(f"{name:<44} {value:>14}")
    figures = {
        "hosts": HOSTS,
        "bytes_over_missing": round(max(0, worst - ALLOWANCE) / missing, 3) if missing else None,
        "bytes_over_missing_raw": round(worst / missing, 3) if missing else None,
        "hosts8_over_hosts1": round(thin8_wall / thin1_wall, 3),
        "first_push_hosts8_over_hosts1": round(first8_wall / first1_wall, 3),
        "first_push_cpu_hosts8_over_hosts1": round(first8_cpu / first1_cpu, 3)
        if first1_cpu
        else None,
        "speedup_vs_naive": round(naive_wall / thin8_wall, 2),
        "ssh_throughput_over_openssh": round(ours / openssh, 3),
    }
    if not args.keep:
        lab.down(name=LAB, inventory=inventory)
        for ref in (version_n1, version_n, base):
            client.images.remove(ref, force=True)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
