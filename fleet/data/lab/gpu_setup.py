#!/usr/bin/python3
"""Make this lab host a GPU server with N simulated GPUs, or a CPU one (N = 0).

Run by the lab host's entrypoint before dockerd starts. With GPUs: the state file (kept
across restarts, as a server keeps its GPUs), ``nvidia-smi`` on PATH, and the ``nvidia``
runtime in daemon.json, written as ``nvidia-ctk runtime configure`` writes it. A bare host
(``FLEET_LAB_BARE=1``) has the driver only: its toolkit and its daemon.json are what
provisioning installs and writes, never touched here.
"""

import hashlib
import json
import os
import socket
import sys

LIB = "/usr/local/lib/fleet-lab"
STATE = "/etc/fleet-lab/gpus.json"
DAEMON = "/etc/docker/daemon.json"
SMI = "/usr/local/bin/nvidia-smi"


def state(count, host):
    def uuid(index):
        digest = hashlib.sha256(f"{host}/{index}".encode()).hexdigest()
        return f"GPU-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"

    return {
        "driver_version": "535.104.05",
        "cuda_version": "12.2",
        "gpus": [
            {
                "uuid": uuid(i),
                "name": "NVIDIA A100-SXM4-80GB",
                "memory_total_mib": 81920,
                "memory_used_mib": 4,
                "utilization": 0,
            }
            for i in range(count)
        ],
    }


def main(count, bare=False):
    if count > 0:
        os.makedirs(os.path.dirname(STATE), exist_ok=True)
        if not os.path.exists(STATE):
            with open(STATE, "w") as handle:
                json.dump(state(count, socket.gethostname()), handle, indent=2)
        if not os.path.lexists(SMI):
            os.symlink(f"{LIB}/nvidia-smi", SMI)
    else:
        for path in (STATE, SMI):
            if os.path.lexists(path):
                os.remove(path)
    if bare:
        return
    with open(DAEMON) as handle:
        daemon = json.load(handle)
    runtimes = daemon.setdefault("runtimes", {})
    if count > 0:
        runtimes["nvidia"] = {"args": [], "path": f"{LIB}/nvidia-container-runtime"}
    else:
        runtimes.pop("nvidia", None)
    if not runtimes:
        daemon.pop("runtimes")
    with open(DAEMON, "w") as handle:
        json.dump(daemon, handle)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 0, os.environ.get("FLEET_LAB_BARE") == "1")
