#!/usr/bin/env bash
# VNN-COMP `install_tool.sh v1`: netinvert from this checkout into a virtualenv (the repository's .venv, as
# `make install` makes it; NETINVERT_VENV elsewhere), torch 2.13.0 first, then the package. Needs python3 >= 3.10
# (PYTHON=... picks another) and a package registry; nothing is downloaded at run time.
set -euo pipefail
if [ "${1:-}" != v1 ]; then
    echo "Expected first argument (version string) 'v1', got '${1:-}'" >&2
    exit 1
fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${NETINVERT_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}

usable() { "$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; }
if ! usable && command -v apt-get >/dev/null; then  # a bare Ubuntu image lacks the venv module
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip
fi
if ! usable; then
    echo "install_tool.sh needs Python >= 3.10 with the venv module: set PYTHON=/path/to/python3.10+" >&2
    exit 1
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet torch==2.13.0
"$VENV/bin/python" -m pip install --quiet -e "$ROOT"
"$VENV/bin/python" -m netinvert --version
