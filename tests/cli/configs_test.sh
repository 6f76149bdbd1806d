#!/usr/bin/env bash
# configs_test: the shipped experiment configs. configs/fashion-sync.conf and
# configs/fashion-async.conf differ only in [federation] mode (the README and the
# benchmarks compare the two modes on otherwise identical settings), and every shipped
# config loads (fedmq partition reads it with the daemons' checks).
#   bash configs_test.sh <fedmq-binary> <source-dir>
set -uo pipefail
FEDMQ=$1
SRC=$2
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fedmq-configs.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

sync=$SRC/configs/fashion-sync.conf
async=$SRC/configs/fashion-async.conf
check "both experiment configs exist" "[ -f '$sync' ] && [ -f '$async' ]"
diff "$sync" "$async" > "$TMP/diff" || true
# the only differing lines: "mode = sync" / "mode = async"
changed=$(grep -E '^[<>] ' "$TMP/diff" | sort | tr '\n' '|')
check "they differ only in the mode line (diff: $changed)" \
      "[ \"$changed\" = '< mode = sync|> mode = async|' ]"
# the secure-aggregation pair: the same mode-only difference, and each is its plain twin
# plus exactly [secagg] enabled = true and weight_by_samples = false
sa_sync=$SRC/configs/fashion-secagg-sync.conf
sa_async=$SRC/configs/fashion-secagg-async.conf
diff "$sa_sync" "$sa_async" > "$TMP/diff-sa" || true
changed=$(grep -E '^[<>] ' "$TMP/diff-sa" | sort | tr '\n' '|')
check "the secagg configs differ only in the mode line (diff: $changed)" \
      "[ \"$changed\" = '< mode = sync|> mode = async|' ]"
for m in sync async; do
  strip() { grep -vE '^(#|$)' "$1"; }
  diff <(strip "$SRC/configs/fashion-$m.conf") <(strip "$SRC/configs/fashion-secagg-$m.conf") \
    > "$TMP/diff-sa-$m" || true
  added=$(grep -E '^[<>] ' "$TMP/diff-sa-$m" | sort | tr '\n' '|')
  check "fashion-secagg-$m.conf = fashion-$m.conf + secagg (diff: $added)" \
        "[ \"$added\" = '> [secagg]|> enabled = true|> weight_by_samples = false|' ]"
done
for conf in "$SRC"/configs/*.conf; do
  name=$(basename "$conf")
  check "$name loads (fedmq partition)" \
        "'$FEDMQ' partition '$conf' --out '$TMP/$name.json' > '$TMP/$name.log' 2>&1"
done
# the sync config really is sync FedAvg, the async one FedBuff-style with the same K
check "fashion-sync.conf: mode = sync, fedavg" \
      "grep -qx 'mode = sync' '$sync' && grep -qx 'aggregation_strategy = fedavg' '$sync'"
exit $fail
