#!/usr/bin/env bash
# The main job with sensible defaults: install, build, then the whole federation on this
# machine: `fedmq run configs/fashion-async.conf` (broker, aggregator, evaluator and a pool of
# 100 virtual clients on Dirichlet(0.5) non-IID Fashion-MNIST, cnn, asynchronous FedBuff with
# the recipe tuned for this job: 9 local steps at lr 0.05, FedAvgM 0.5 backing off with
# staleness), stopping at 0.85 test accuracy or 15 minutes, with a summary.
# A first argument ending in .conf picks another config, e.g. configs/fashion-sync.conf (the
# same job in synchronous rounds) or configs/fedmq.conf (the binaries' defaults: whole local
# epochs at lr 0.01, plain FedAvg; slower on this job, safe on any).
# Other arguments go to `fedmq run` (e.g. --set federation.target_accuracy=0.87).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
config="$root/configs/fashion-async.conf"
if [ $# -gt 0 ] && [[ "$1" == *.conf ]]; then
  case "$1" in /*) config="$1" ;; *) config="$(pwd)/$1" ;; esac
  [ -f "$config" ] || config="$root/$1"
  shift
fi
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" "$root/build"
echo "[fedmq] running: build/fedmq run ${config#$root/} $*"
exec "$root/build/fedmq" run "$config" "$@"
