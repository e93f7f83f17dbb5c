#!/usr/bin/env bash
# Set up everything the test suite needs: .venv with torch 2.13.0 (CPU) first, the project with
# its dev extras, torchattacks (an oracle; its torchvision requirement is not needed), and, where
# this runs as root with apt, Debian's chromium (report rendering), PostgreSQL (the store on
# PostgreSQL) and nginx-light (deploy/'s fleet gateway, run in front of a real SuperLink).
set -euo pipefail
cd "$(dirname "$0")/.."
python3.11 -m venv .venv
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -c constraints.txt -e ".[dev]"
.venv/bin/pip install -q --no-deps torchattacks==3.5.1
# The project's own bytecode, once: every test starts Python processes that import fedaegis (Flower's
# simulation process, Ray actors, SuperNodes), and where PYTHONDONTWRITEBYTECODE is set each would
# compile it again (pip compiles the installed packages, not an editable project).
.venv/bin/python -m compileall -q -x '/\.venv/' . >/dev/null
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ ! -x /usr/bin/chromium ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
fi
# Debian's PostgreSQL server binaries for tests/test_store_postgres.py (it starts its own server).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql
fi
# Debian's nginx for tests/test_deploy_gateway.py (it runs deploy/k8s/fleet-gateway.conf itself).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light
fi
