#!/usr/bin/env bash
# The main job with sensible defaults: install, build, then the whole federation on this
# machine: `fedmq run configs/fedmq.conf` (broker, aggregator, evaluator and a pool of 100
# virtual clients on Dirichlet(0.5) non-IID Fashion-MNIST, cnn, asynchronous FedBuff),
# stopping at 0.85 test accuracy or 10 minutes, with a summary.
# Extra arguments go to `fedmq run` (e.g. --set federation.target_accuracy=0.87).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" "$root/build"
echo "[fedmq] running: build/fedmq run configs/fedmq.conf $*"
exec "$root/build/fedmq" run "$root/configs/fedmq.conf" "$@"
