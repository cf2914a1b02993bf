#!/usr/bin/python3
"""The lab's ``nvidia`` runtime: an OCI runtime that hands a container its simulated GPUs.

Registered in the engine's daemon.json as ``nvidia-ctk runtime configure`` does. Like the
NVIDIA container runtime, it edits the bundle's ``config.json`` on ``create`` when the
container asks for GPUs (``NVIDIA_VISIBLE_DEVICES`` in its environment, or ``--gpus``, which
Docker turns into that variable): it bind-mounts the simulated ``nvidia-smi`` and the
lab's GPU state, read-only, then runs ``runc`` with the arguments it was given.
"""

import json
import os
import sys

LIB = "/usr/local/lib/fleet-lab"
STATE = "/etc/fleet-lab/gpus.json"
RUNC = ("/usr/sbin/runc", "/usr/bin/runc")


def bundle_of(argv):
    """The bundle directory of a ``create`` (runc's default: the current directory)."""
    for index, word in enumerate(argv):
        if word in ("--bundle", "-b") and index + 1 < len(argv):
            return argv[index + 1]
        if word.startswith("--bundle="):
            return word.split("=", 1)[1]
    return "."


def requested(env):
    """The devices the container asks for, or None (no GPU wanted)."""
    for entry in env:
        name, _, value = entry.partition("=")
        if name == "NVIDIA_VISIBLE_DEVICES":
            return None if value in ("", "void", "none") else value
    return None


def inject(config, bundle="."):
    """``config`` with the simulated GPU tools mounted when it asks for GPUs.

    The devices it was granted go into a file of the bundle, mounted too: a process started
    later with ``docker exec`` sees them whatever its environment.
    """
    env = config.get("process", {}).get("env", [])
    devices = requested(env)
    if devices is None or not os.path.exists(STATE):
        return config
    granted = os.path.join(os.path.abspath(bundle), "fleet-lab-visible-devices")
    with open(granted, "w") as handle:
        handle.write(devices + "\n")
    mounts = config.setdefault("mounts", [])
    for source, destination in (
        (f"{LIB}/nvidia-smi", "/usr/bin/nvidia-smi"),
        (f"{LIB}/fleet-gpu-job", "/usr/bin/fleet-gpu-job"),
        (STATE, "/run/fleet-lab-gpu/gpus.json"),
        (granted, "/run/fleet-lab-gpu/visible-devices"),
    ):
        mounts.append(
            {
                "destination": destination,
                "type": "bind",
                "source": source,
                "options": ["rbind", "ro", "nosuid", "nodev"],
            }
        )
    return config


def main(argv):
    if "create" in argv:
        path = os.path.join(bundle_of(argv), "config.json")
        with open(path) as handle:
            config = json.load(handle)
        with open(path, "w") as handle:
            json.dump(inject(config, bundle_of(argv)), handle)
    runc = next((p for p in RUNC if os.path.exists(p)), "runc")
    os.execv(runc, [runc, *argv[1:]])


if __name__ == "__main__":
    main(sys.argv)
