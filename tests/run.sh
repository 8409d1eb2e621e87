#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian/Ubuntu machine
# (redis-server, a venv with llamaq and its test extras) and runs them.
# llama-cpp-python builds from source (~15 min on 2 cores); pip keeps the built
# wheel in its cache (~/.cache/pip/wheels), so later runs on the same machine reuse it.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi

[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"

exec .venv/bin/python -m pytest "$@"
