#!/usr/bin/env bash
# Configure and build fedmq.  usage: scripts/build.sh [BUILD_DIR] [extra cmake -D options...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/build}
shift || true
echo "[fedmq] configuring $dir $*"
cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
echo "[fedmq] building $dir"
cmake --build "$dir" -j"$(nproc)"
