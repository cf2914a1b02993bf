#!/usr/bin/env bash
# Start the controller's Docker engine when it is not answering, and wait until it does.
# There is no systemd on the lab machines: dockerd runs in the background, logging to a file.
set -euo pipefail
if docker info >/dev/null 2>&1; then
    exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
    echo "start-engine: dockerd is not installed (apt-get install docker.io)" >&2
    exit 1
fi
log=/var/log/fleet-dockerd.log
nohup dockerd >"$log" 2>&1 &
for _ in $(seq 1 120); do
    if docker info >/dev/null 2>&1; then
        exit 0
    fi
    sleep 0.5
done
echo "start-engine: dockerd did not answer within 60 s; last lines of $log:" >&2
tail -n 20 "$log" >&2
exit 1
