#!/usr/bin/env bash
# The poisoning benchmark's tools, built next to fedmq (bench/backdoor_eval.c,
# bench/fedmq_attacker.c).
#   usage: backdoor_test.sh FEDMQ_BINARY SOURCE_DIR
# backdoor_eval on a model written by `fedmq train --out` (mlp, first 3000 samples): one
# line `clean_accuracy=... asr=... target=C triggered=N`, clean_accuracy equal to what
# `fedmq eval` prints for the same file, N = the 9000 t10k images not of class C, asr in
# [0, 1]; and, where Debian's PyTorch is installed, the attack success rate for every
# target equal (within 0.002: float summation order) to an independent PyTorch
# computation (tests/fixtures/check_export.py loads the model; the 4 x 4 bottom-right
# trigger is stamped with numpy). Bad command lines of both tools exit 2 with one line.
set -u
bin=$1
src=$2
dir=$(dirname "$bin")
bd=$dir/backdoor_eval
att=$dir/fedmq_attacker
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { echo "ok - $*"; pass=$((pass + 1)); }
bad() { echo "not ok - $*"; fail=$((fail + 1)); }

# expect_fail CODE WORD CMD...: exit CODE and one stderr line containing WORD
expect_fail() {
  local code=$1 word=$2; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$? lines
  lines=$(wc -l <"$tmp/err")
  if [ "$rc" -eq "$code" ] && [ "$lines" -eq 1 ] && grep -q -- "$word" "$tmp/err"; then
    ok "$(basename "$1") ${*:2}: exit $rc, '$(cat "$tmp/err")'"
  else
    bad "$(basename "$1") ${*:2}: exit $rc (want $code), stderr: $(head -c 300 "$tmp/err")"
  fi
}

[ -x "$bd" ] && [ -x "$att" ] || { echo "not ok - $bd or $att not built"; exit 1; }

model=$tmp/mlp.safetensors
timeout 300 "$bin" train --log-level error --model mlp --epochs 1 --limit 3000 \
  --out "$model" >/dev/null || { echo "not ok - fedmq train failed"; exit 1; }
eline=$(timeout 300 "$bin" eval --log-level error --in "$model" | tail -n 1)
eacc=$(sed -n 's/^test_accuracy=\([0-9.]*\) .*/\1/p' <<<"$eline")

declare -A asr
for c in 0 1 2 3 4 5 6 7 8 9; do
  line=$(timeout 300 "$bd" --in "$model" --target "$c" 2>"$tmp/err")
  if ! [[ $line =~ ^clean_accuracy=([0-9]\.[0-9]{4})\ asr=([0-9]\.[0-9]{4})\ target=$c\ triggered=([0-9]+)$ ]]; then
    bad "target $c: unexpected output '$line' $(head -c 200 "$tmp/err")"
    continue
  fi
  acc=${BASH_REMATCH[1]} a=${BASH_REMATCH[2]} n=${BASH_REMATCH[3]}
  asr[$c]=$a
  [ "$c" -eq 0 ] && echo "# target 0: $line"
  if [ "$acc" = "$eacc" ] && [ "$n" -eq 9000 ] &&
    awk -v a="$a" 'BEGIN { exit !(a >= 0 && a <= 1) }'; then
    ok "target $c: clean_accuracy $acc = fedmq eval's, triggered $n, asr $a in [0, 1]"
  else
    bad "target $c: '$line' (fedmq eval: $eacc; want triggered=9000, asr in [0, 1])"
  fi
done

if /usr/bin/python3 -c 'import torch, numpy' 2>/dev/null; then
  ref=$(cd "$src/tests/fixtures" && /usr/bin/python3 - "$model" <<'EOF'
import sys
import numpy as np
import torch
import check_export as ce
torch.set_num_threads(1)
tensors, meta = ce.read_safetensors(sys.argv[1])
model = ce.build_model(meta.get("fedmq_model", "mlp"))
model.load_state_dict(tensors, strict=True)
model.eval()
x, y = ce.load_idx(ce.DEFAULT_DATA, "t10k")
white = (np.float32(1.0) - np.float32(ce.FASHION_MEAN)) / np.float32(ce.FASHION_STD)
xt = x.clone()
xt[:, :, 24:28, 24:28] = float(white)
with torch.no_grad():
    pred = torch.cat([model(xt[i:i + 1000]).argmax(dim=1) for i in range(0, len(xt), 1000)])
for c in range(10):
    keep = y != c
    print("%d %.6f" % (c, float((pred[keep] == c).double().mean())))
EOF
  )
  if [ "$(wc -l <<<"$ref")" -ne 10 ]; then
    bad "PyTorch reference failed: $ref"
  else
    while read -r c r; do
      a=${asr[$c]:-}
      if [ -n "$a" ] && awk -v a="$a" -v r="$r" 'BEGIN { d = a - r; exit !(d < 0.002 && d > -0.002) }'; then
        ok "target $c: asr $a = PyTorch's $r"
      else
        bad "target $c: asr '${a}' but PyTorch computes $r"
      fi
    done <<<"$ref"
  fi
else
  echo "# skip: no /usr/bin/python3 with torch and numpy: the PyTorch cross-check is not run"
fi

# bad command lines: exit 2, one line naming what is wrong
expect_fail 2 "--in" "$bd"
expect_fail 2 "--target" "$bd" --in "$model" --target 10
expect_fail 2 "--bogus" "$bd" --in "$model" --bogus
expect_fail 1 "nope" "$bd" --in "$tmp/nope.safetensors"
expect_fail 2 "--attack" "$att" --config "$src/configs/fedmq.conf"
expect_fail 2 "--attack" "$att" --attack bogus --config "$src/configs/fedmq.conf"
expect_fail 2 "--target" "$att" --attack backdoor --target 12
expect_fail 2 "fraction" "$att" --attack backdoor --poison-fraction 0
expect_fail 2 "--scale" "$att" --attack signflip --scale
if "$att" --help | grep -q -- "--noise-norm" && "$bd" --help | grep -q "asr"; then
  ok "--help of both tools"
else
  bad "--help of fedmq_attacker or backdoor_eval"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
