#!/usr/bin/env bash
# Learning and export checks for `fedmq train` / `fedmq eval` on the real Fashion-MNIST.
#   usage: learning_test.sh FEDMQ_BINARY SOURCE_DIR
# Release build: cnn 1 epoch >= 0.86 and mlp 5 epochs >= 0.86 (seed 1), and `fedmq eval`
# of the exported file prints exactly the line `fedmq train` printed.
# Why 0.86 for the cnn: with this recipe (batch 32, lr 0.01, momentum 0.9, one epoch)
# PyTorch itself averages 0.872 over seeds 1-5 (0.858 to 0.882) and fedmq 0.874 (0.870 to
# 0.876), measured side by side by bench/accuracy_compare.sh (docs/BENCHMARKS.md); the
# guard sits a point below PyTorch's mean so it fails on a real regression, not on a seed.
# Sanitizer builds (FM_SANITIZED=1, ~5x slower) run the same path on fewer samples with
# thresholds that still prove learning (random guessing scores 0.10).
set -u
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { echo "ok - $*"; pass=$((pass + 1)); }
bad() { echo "not ok - $*"; fail=$((fail + 1)); }

# check_train NAME MIN_ACC ARGS...: train, compare accuracy, then re-evaluate the export.
check_train() {
  local name=$1 min=$2; shift 2
  local out="$tmp/$name.safetensors" line acc eline
  line=$(timeout 600 "$bin" train --log-level error --out "$out" "$@" | tail -n 1)
  acc=$(sed -n 's/^test_accuracy=\([0-9.]*\) test_loss=[0-9.]*$/\1/p' <<<"$line")
  if [ -z "$acc" ]; then bad "$name: no final line (got '$line')"; return; fi
  if awk -v a="$acc" -v m="$min" 'BEGIN { exit !(a >= m) }'; then
    ok "$name: $line (>= $min)"
  else
    bad "$name: $line (want test_accuracy >= $min)"
  fi
  eline=$(timeout 300 "$bin" eval --log-level error --in "$out" | tail -n 1)
  if [ "$eline" = "$line" ]; then ok "$name: fedmq eval of the export prints the same line"
  else bad "$name: eval printed '$eline', train printed '$line'"; fi
}

if [ "${FM_SANITIZED:-0}" = 1 ]; then
  check_train cnn-small 0.60 --model cnn --epochs 1 --limit 2000
  check_train mlp-small 0.70 --model mlp --epochs 1 --limit 10000
else
  check_train cnn 0.86 --model cnn --epochs 1
  check_train mlp 0.86 --model mlp --epochs 5
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
