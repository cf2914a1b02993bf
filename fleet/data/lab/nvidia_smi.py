#!/usr/bin/python3
"""The lab's ``nvidia-smi``: answers as a real driver's does, from the lab's GPU state.

State (JSON, edited by tests): ``driver_version``, ``cuda_version`` and ``gpus`` (each
``uuid``, ``name``, ``memory_total_mib``, ``memory_used_mib``, ``utilization``). Compute
processes are real: any process on the host running ``fleet-gpu-job`` holds memory on the
GPU it was given (its ``NVIDIA_VISIBLE_DEVICES``), found in /proc as real PIDs, so a job
ends when its process (or its container) does. Inside a container only the GPUs of its
``NVIDIA_VISIBLE_DEVICES`` are listed, and no process (another PID namespace), as with the
real driver. Output formats follow nvidia-smi 535 (``-L``, ``--query-gpu``,
``--query-compute-apps`` with ``--format=csv,noheader,nounits``, and the banner).
"""

import json
import os
import sys
import time

# In a container the lab's nvidia runtime handed GPUs to: the state and the granted devices
# are mounted under /run/fleet-lab-gpu (tests point FLEET_LAB_GPU_DIR elsewhere).
INSIDE_DIR = os.environ.get("FLEET_LAB_GPU_DIR", "/run/fleet-lab-gpu")
INSIDE = os.path.exists(os.path.join(INSIDE_DIR, "visible-devices"))
STATE = os.path.join(INSIDE_DIR, "gpus.json") if INSIDE else "/etc/fleet-lab/gpus.json"
STATE = os.environ.get("FLEET_LAB_GPU_STATE", STATE)
GPU_FIELDS = {
    "index": lambda i, g, used, util: str(i),
    "uuid": lambda i, g, used, util: g["uuid"],
    "name": lambda i, g, used, util: g["name"],
    "driver_version": lambda i, g, used, util: STATE_DOC["driver_version"],
    "memory.total": lambda i, g, used, util: str(g["memory_total_mib"]),
    "memory.used": lambda i, g, used, util: str(used),
    "utilization.gpu": lambda i, g, used, util: str(util),
}
APP_FIELDS = ("pid", "gpu_uuid", "used_memory", "process_name")
# Without "nounits": the header names the unit, and each value carries it.
UNITS = {"memory.total": " [MiB]", "memory.used": " [MiB]", "utilization.gpu": " [%]", "used_memory": " [MiB]"}
UNIT_SUFFIX = {"memory.total": " MiB", "memory.used": " MiB", "utilization.gpu": " %", "used_memory": " MiB"}


def load():
    with open(STATE) as handle:
        return json.load(handle)


def visible(gpus):
    """(index, gpu) of the GPUs this caller may see."""
    if not INSIDE:
        return list(enumerate(gpus))
    with open(os.path.join(INSIDE_DIR, "visible-devices")) as handle:
        wanted = handle.read().strip()
    if wanted == "all":
        return list(enumerate(gpus))
    picked = []
    for word in wanted.split(","):
        part = word.strip()
        for index, gpu in enumerate(gpus):
            if part in (str(index), gpu["uuid"]):
                picked.append((index, gpu))
    return picked


def jobs(gpus):
    """(pid, uuid, MiB) of every fleet-gpu-job process on this host."""
    if INSIDE:
        return []  # in a container: another PID namespace, as with the real driver
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
            if not any(word.endswith(b"fleet-gpu-job") for word in argv[:2]):
                continue
            with open(f"/proc/{name}/environ", "rb") as handle:
                env = dict(
                    item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item
                )
        except OSError:
            continue
        wanted = env.get(b"NVIDIA_VISIBLE_DEVICES", b"0").decode().split(",")[0]
        memory = int(env.get(b"FLEET_GPU_JOB_MIB", b"1024"))
        for index, gpu in enumerate(gpus):
            if wanted in (str(index), gpu["uuid"], "all"):
                found.append((int(name), gpu["uuid"], memory))
                break
    return found


def usage(gpus, running):
    """(memory used MiB, utilization %) per GPU uuid."""
    result = {}
    for gpu in gpus:
        held = sum(m for _, uuid, m in running if uuid == gpu["uuid"])
        busy = any(uuid == gpu["uuid"] for _, uuid, _ in running)
        result[gpu["uuid"]] = (gpu.get("memory_used_mib", 0) + held, 100 if busy else gpu.get("utilization", 0))
    return result


def query(fields, rows):
    for row in rows:
        print(", ".join(row))


def banner(gpus, shown, running, used):
    driver, cuda = STATE_DOC["driver_version"], STATE_DOC["cuda_version"]
    print(time.strftime("%a %b %e %H:%M:%S %Y") + "       ")
    print("+" + "-" * 87 + "+")
    head = f"| NVIDIA-SMI {driver:<22} Driver Version: {driver:<12} CUDA Version: {cuda:<9}|"
    print(head)
    print("|-----------------------------------------+----------------------+----------------------+")
    print("| GPU  Name                 Persistence-M | Bus-Id        Disp.A | Volatile Uncorr. ECC |")
    print("| Fan  Temp   Perf          Pwr:Usage/Cap |         Memory-Usage | GPU-Util  Compute M. |")
    print("|                                         |                      |               MIG M. |")
    print("|=========================================+======================+======================|")
    for index, gpu in shown:
        memory, util = used[gpu["uuid"]]
        name = gpu["name"][:28]
        print(f"| {index:>3}  {name:<28}   On  | 00000000:{index + 7:02X}:00.0 Off |                    0 |")
        usage_text = f"{memory}MiB / {gpu['memory_total_mib']}MiB"
        print(f"| N/A   32C    P0              62W / 400W | {usage_text:>20} | {util:>6}%      Default |")
        print("|                                         |                      |             Disabled |")
        print("+-----------------------------------------+----------------------+----------------------+")
    print()
    print("+" + "-" * 87 + "+")
    print("| Processes:" + " " * 76 + "|")
    print("|  GPU   GI   CI        PID   Type   Process name                            GPU Memory |")
    print("|        ID   ID                                                             Usage      |")
    print("|" + "=" * 87 + "|")
    if not running:
        print("|  No running processes found" + " " * 59 + "|")
    for pid, uuid, memory in running:
        index = next(i for i, g in enumerate(gpus) if g["uuid"] == uuid)
        print(f"|  {index:>3}   N/A  N/A  {pid:>9}      C   python3" + " " * 32 + f"{memory:>7}MiB |")
    print("+" + "-" * 87 + "+")


def main(argv):
    gpus = STATE_DOC.get("gpus", [])
    shown = visible(gpus)
    running = jobs(gpus)
    used = usage(gpus, running)
    args = argv[1:]
    fmt = next((a.split("=", 1)[1] for a in args if a.startswith("--format=")), None)
    if args == ["-L"]:
        for index, gpu in shown:
            print(f"GPU {index}: {gpu['name']} (UUID: {gpu['uuid']})")
        return 0
    if not args:
        banner(gpus, shown, running, used)
        return 0
    for arg in args:
        if not arg.startswith(("--query-gpu=", "--query-compute-apps=")):
            continue
        if fmt is None or fmt.split(",")[0] != "csv":
            break
        header, units = "noheader" not in fmt, "nounits" not in fmt
        gpu_query = arg.startswith("--query-gpu=")
        known = GPU_FIELDS if gpu_query else APP_FIELDS
        fields = arg.split("=", 1)[1].split(",")
        bad = [f for f in fields if f not in known]
        if bad:
            print(f'Field "{bad[0]}" is not a valid field to query.', file=sys.stderr)
            return 2
        if header:
            print(", ".join(f + (UNITS.get(f, "") if units else "") for f in fields))
        if gpu_query:
            rows = [
                {f: GPU_FIELDS[f](index, gpu, *used[gpu["uuid"]]) for f in fields}
                for index, gpu in shown
            ]
        else:
            rows = [
                {"pid": str(pid), "gpu_uuid": uuid, "used_memory": str(memory), "process_name": "python3"}
                for pid, uuid, memory in running
            ]
        for row in rows:
            print(", ".join(row[f] + (UNIT_SUFFIX.get(f, "") if units else "") for f in fields))
        return 0
    print("Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        STATE_DOC = load()
    except OSError:
        print("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
              "Make sure that the latest NVIDIA driver is installed and running.")
        sys.exit(9)
    sys.exit(main(sys.argv))
