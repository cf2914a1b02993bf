#!/usr/bin/python3
"""A training job for the lab: holds GPU memory for N seconds (``fleet-gpu-job SECONDS``).

It claims the first GPU of its ``NVIDIA_VISIBLE_DEVICES`` and ``FLEET_GPU_JOB_MIB`` MiB of
it (default 1024); the lab's nvidia-smi finds it by its command line, as a real driver
lists a CUDA process, until it exits.
"""

import sys
import time

if __name__ == "__main__":
    time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 3600.0)
