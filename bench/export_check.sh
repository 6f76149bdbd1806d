#!/usr/bin/env bash
# export_check.sh: a model written by fedmq scores the same in fedmq and in PyTorch.
#
#   bench/export_check.sh [--in FILE] [--model cnn] [--epochs 1] [--limit N] [--out FILE]
#                         [--quick] [BUILD_DIR]
#
# Without --in, trains `fedmq train --model M --epochs E --out FILE` (default cnn, 1 epoch;
# FILE a temporary file unless --out is given). Then scores FILE with `fedmq eval --in FILE`
# and with tests/fixtures/check_export.py (PyTorch, load_state_dict(strict=True)), prints both
# `test_accuracy=... test_loss=...` lines and the absolute differences, and exits 1 if either
# difference exceeds 0.001 (2 for bad input, e.g. a missing build or torch).
#
#   BUILD_DIR   CMake build dir holding the fedmq tool (default: <repo>/build)
#   --quick     train on the first 2000 samples only (a smoke test of the export path)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
PY=/usr/bin/python3
TOL=0.001

die() { echo "export_check: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

IN="" OUT="" MODEL="" EPOCHS=1 LIMIT=0 BUILD_DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
    --in) [ $# -ge 2 ] || die "--in: missing value"; IN=$2; shift ;;
    --out) [ $# -ge 2 ] || die "--out: missing value"; OUT=$2; shift ;;
    --model) [ $# -ge 2 ] || die "--model: missing value"; MODEL=$2; shift ;;
    --epochs) [ $# -ge 2 ] || die "--epochs: missing value"; EPOCHS=$2; shift ;;
    --limit) [ $# -ge 2 ] || die "--limit: missing value"; LIMIT=$2; shift ;;
    --quick) LIMIT=2000 ;;
    -h|--help) usage; exit 0 ;;
    -*) die "$1: unknown option (see --help)" ;;
    *) [ -z "$BUILD_DIR" ] || die "unexpected argument '$1'"; BUILD_DIR=$1 ;;
    esac
    shift
done
[[ "$EPOCHS" =~ ^[1-9][0-9]*$ ]] || die "--epochs: '$EPOCHS' is not a positive integer"
[[ "$LIMIT" =~ ^[0-9]+$ ]] || die "--limit: '$LIMIT' is not a non-negative integer"
[ -z "$IN" ] || [ -z "$OUT" ] || die "--in and --out exclude each other"

BUILD_DIR=${BUILD_DIR:-$REPO/build}
FEDMQ=$BUILD_DIR/fedmq
[ -x "$FEDMQ" ] || die "no fedmq tool in $BUILD_DIR: build it first:
  cmake -S $REPO -B $BUILD_DIR && cmake --build $BUILD_DIR --target fedmq-cli"
CHECK=$REPO/tests/fixtures/check_export.py
[ -f "$CHECK" ] || die "$CHECK not found"
[ -x "$PY" ] || die "$PY not found (apt-get install python3-torch)"
"$PY" -c 'import numpy, torch' 2>/dev/null ||
    die "$PY cannot import torch and numpy: apt-get install python3-torch python3-numpy"
export OPENBLAS_CORETYPE=${FM_BENCH_CORE:-SkylakeX}
export FEDMQ_BLAS_AUTOCORE=0

TMP=""
cleanup() { [ -z "$TMP" ] || rm -f "$TMP"; }
trap cleanup EXIT
if [ -n "$IN" ]; then
    [ -r "$IN" ] || die "--in: cannot read '$IN'"
    FILE=$IN
else
    MODEL=${MODEL:-cnn}
    if [ -n "$OUT" ]; then
        FILE=$OUT
    else
        TMP=$(mktemp "${TMPDIR:-/tmp}/export_check.XXXXXX.safetensors")
        FILE=$TMP
    fi
    limit_args=()
    [ "$LIMIT" != 0 ] && limit_args=(--limit "$LIMIT")
    echo "export_check: training: fedmq train --model $MODEL --epochs $EPOCHS ${limit_args[*]} --out $FILE" >&2
    "$FEDMQ" train --model "$MODEL" --epochs "$EPOCHS" "${limit_args[@]}" --out "$FILE" \
        --log-level warning >&2 || { echo "export_check: fedmq train failed" >&2; exit 1; }
fi

model_args=()
[ -n "$MODEL" ] && model_args=(--model "$MODEL")
F_OUT=$("$FEDMQ" eval --in "$FILE" "${model_args[@]}" --log-level warning) ||
    { echo "export_check: fedmq eval --in $FILE failed" >&2; exit 1; }
T_OUT=$("$PY" "$CHECK" "$FILE" ${MODEL:+"$MODEL"}) ||
    { echo "export_check: check_export.py $FILE failed" >&2; exit 1; }
F_LINE=$(grep '^test_accuracy=' <<<"$F_OUT" | tail -n 1) || die "fedmq eval printed no test_accuracy line"
T_LINE=$(grep '^test_accuracy=' <<<"$T_OUT" | tail -n 1) || die "check_export.py printed no test_accuracy line"

field() { sed -n "s/.*$2=\([^ ]*\).*/\1/p" <<<"$1"; }
echo "fedmq eval:      $F_LINE"
echo "PyTorch (strict): $T_LINE"
awk -v fa="$(field "$F_LINE" test_accuracy)" -v ta="$(field "$T_LINE" test_accuracy)" \
    -v fl="$(field "$F_LINE" test_loss)" -v tl="$(field "$T_LINE" test_loss)" -v tol="$TOL" '
    function abs(v) { return v < 0 ? -v : v }
    BEGIN {
        da = abs(fa - ta); dl = abs(fl - tl)
        printf "abs_diff_accuracy=%.4f abs_diff_loss=%.4f tolerance=%g\n", da, dl, tol
        if (da > tol || dl > tol) { print "export_check: FAIL: the difference exceeds the tolerance"; exit 1 }
        print "export_check: OK"
    }'
