#!/usr/bin/env bash
# The main job with sensible defaults: install, build, then centralized training of the
# cnn on Fashion-MNIST for one epoch (fedmq train), ending with the test accuracy line.
# Extra arguments go to `fedmq train` (e.g. --epochs 3 --out model.safetensors).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" "$root/build"
echo "[fedmq] running: build/fedmq train --model cnn --epochs 1 $*"
exec "$root/build/fedmq" train --model cnn --epochs 1 "$@"
