#!/usr/bin/env bash
# Set up a Debian 12 machine for fleet, idempotently: system packages, the controller's
# Docker engine (started in the background: there may be no systemd), and fleet itself
# in a virtual environment at .venv. Run as root (or with sudo). Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v mmdebstrap >/dev/null 2>&1 || need_apt+=(mmdebstrap)
command -v ssh >/dev/null 2>&1 || need_apt+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || need_apt+=(openssh-client)
command -v git >/dev/null 2>&1 || need_apt+=(git)
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
command -v zstd >/dev/null 2>&1 || need_apt+=(zstd)
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
# The live view is tested as a person sees it: in a real terminal (tests/test_live_e2e.py).
command -v tmux >/dev/null 2>&1 || need_apt+=(tmux)
# The lab builds a signed apt repository for its bare hosts (fleet/lab/aptrepo.py).
command -v apt-ftparchive >/dev/null 2>&1 || need_apt+=(apt-utils)
command -v gpg >/dev/null 2>&1 || need_apt+=(gnupg)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

scripts/start-engine.sh

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.fleet-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing fleet and its test tools into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$stamp"
fi
echo "setup: ready (engine: $(docker info --format '{{.ServerVersion}}'), fleet: $(.venv/bin/fleet --version))"
