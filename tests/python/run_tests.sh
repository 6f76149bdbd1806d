#!/usr/bin/env bash
# Install trainer/python (fedmq_client) into a fresh venv, as CI does, and run its tests.
# Usage: bash tests/python/run_tests.sh <source-dir> <build-dir> [pytest args, e.g. files]
#   The venv is `python3 -m venv --system-site-packages --without-pip` (Debian 12's pyzmq,
#   msgpack, numpy, torch, pytest come from the system); the package goes in with the system
#   pip's --python (pip >= 22.3; PEP 668 keeps it out of the system itself), offline:
#   --no-build-isolation --no-deps. The source is copied first (setuptools writes build/).
#   FM_PYTHON picks the interpreter (default /usr/bin/python3, Debian's, not a pyenv shim).
set -eu
SRC=${1:?usage: run_tests.sh <source-dir> <build-dir> [pytest args]}
BIN=${2:?usage: run_tests.sh <source-dir> <build-dir> [pytest args]}
shift 2
PY=${FM_PYTHON:-/usr/bin/python3}
[ -x "$PY" ] || PY=$(command -v python3)
T=$(mktemp -d "${TMPDIR:-/tmp}/fedmq-py.XXXXXX")
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM
"$PY" -m venv --system-site-packages --without-pip "$T/venv"
cp -r "$SRC/trainer/python" "$T/pkg"
rm -rf "$T/pkg/build" "$T/pkg"/*.egg-info
"$PY" -m pip --python "$T/venv/bin/python" install --quiet --no-index --no-build-isolation \
    --no-deps "$T/pkg" >"$T/pip.log" 2>&1 || { cat "$T/pip.log"; exit 1; }
# the tests must see the installed package, never the source tree
cd "$SRC/tests/python"
FEDMQ_BIN=$BIN FM_PY_VENV=$T/venv PYTHONDONTWRITEBYTECODE=1 "$T/venv/bin/python" -m pytest -p no:cacheprovider \
    -q "$@"
