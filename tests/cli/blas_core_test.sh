#!/usr/bin/env bash
# The BLAS core is logged at start, a user's OPENBLAS_CORETYPE is respected, the automatic
# re-exec onto a better core works, and the sgemm self-check passes on every core taken.
#   usage: blas_core_test.sh FEDMQ_BINARY SOURCE_DIR
set -u
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { echo "ok - $*"; pass=$((pass + 1)); }
bad() { echo "not ok - $*"; fail=$((fail + 1)); }

# a model file to evaluate (eval runs the self-check before scoring)
"$bin" train --model logreg --epochs 1 --limit 256 --threads 1 --out "$tmp/m.safetensors" \
  --log-level error >/dev/null 2>&1 || bad "could not train a logreg model"

# run_eval LABEL EXPECTED-REGEX ENV...: eval succeeds and its core line matches
run_eval() {
  local label=$1 want=$2; shift 2
  local err out rc
  out=$(env "$@" timeout 120 "$bin" eval --in "$tmp/m.safetensors" --threads 1 2>"$tmp/err")
  rc=$?
  err=$(grep -m1 'OpenBLAS' "$tmp/err")
  if [ $rc -ne 0 ]; then bad "$label: exit $rc: $(head -1 "$tmp/err")"; return; fi
  if ! grep -qE '^test_accuracy=[0-9.]+ test_loss=[0-9.]+$' <<<"$out"; then
    bad "$label: no final line"; return; fi
  if grep -qE "$want" <<<"$err"; then ok "$label: $err"; else bad "$label: '$err' !~ /$want/"; fi
}

run_eval "core logged, user's choice respected" 'core Prescott \(from OPENBLAS_CORETYPE\)' \
  OPENBLAS_CORETYPE=Prescott
run_eval "core logged without OPENBLAS_CORETYPE" 'OpenBLAS [0-9.]+ core [A-Za-z0-9]+' \
  -u OPENBLAS_CORETYPE -u FEDMQ_BLAS_AUTOCORE
# the re-exec path: forced, it must land on an AVX2/AVX-512 core and still pass the self-check
if grep -q avx2 /proc/cpuinfo; then
  run_eval "re-exec onto a detected core" 'core (SkylakeX|Haswell) \(auto-selected: the library detected' \
    -u OPENBLAS_CORETYPE FEDMQ_BLAS_AUTOCORE=force
else
  ok "re-exec path skipped: this CPU has no AVX2"
fi
run_eval "FEDMQ_BLAS_AUTOCORE=0 disables re-exec" 'core [A-Za-z0-9]+$' \
  -u OPENBLAS_CORETYPE FEDMQ_BLAS_AUTOCORE=0
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
