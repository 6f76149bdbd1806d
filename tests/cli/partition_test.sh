#!/usr/bin/env bash
# fedmq partition CONFIG [--set k=v ...] --out FILE.json (tools/fedmq_partition.c):
#   - the JSON has the documented shape: num_clients, partition, seed, holdout, n_samples,
#     train and held (num_clients lists of integer sample indices each);
#   - every sample index of the train split is in exactly one client part (train or held of
#     exactly one client); train and held are disjoint; holdout = 0 gives empty held parts;
#   - --set overrides reach the partition (num_clients, partition, seed, holdout);
#   - two runs give byte-identical files; a different seed gives a different partition;
#   - no temp file is left beside the output;
#   - bad input gives exactly one stderr line and exit 2, and leaves an existing output
#     file untouched.
# Inputs are a synthetic IDX dataset (600 train images) in a private temp dir; when the real
# Fashion-MNIST is installed the default partition of configs/fedmq.conf is checked too.
#
# Usage: bash tests/cli/partition_test.sh <path-to-fedmq> [<source-dir>]
# Prints "ok - ..." / "not ok - ..." per check and "N passed, M failed"; exits 1 on failure.
set -u

FEDMQ=${1:?usage: partition_test.sh <path-to-fedmq> [<source-dir>]}
SRC=${2:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
if [ ! -x "$FEDMQ" ]; then
    echo "not ok - fedmq binary '$FEDMQ' is not executable"
    echo "0 passed, 1 failed"
    exit 1
fi
PY=$(command -v python3 || true)
if [ -z "$PY" ]; then
    echo "not ok - python3 is needed to check the JSON"
    echo "0 passed, 1 failed"
    exit 1
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/fedmq-cli-partition.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
TMO=60
SAN_RE='AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error'

. "$(dirname "$0")/tap.sh" # PASS, FAIL, ok, notok
show() { [ -s "$1" ] && sed "s/^/#   $2: /" "$1" | head -n 20; }

# ---- synthetic dataset: 600 train / 50 test images, labels 0..9 ----------------------
"$PY" - "$T/data" <<'EOF' || { echo "not ok - building the synthetic dataset"; echo "0 passed, 1 failed"; exit 1; }
import os, random, struct, sys
d = sys.argv[1]
os.makedirs(d)
rng = random.Random(7)
def write(name, data):
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
for split, n in (("train", 600), ("t10k", 50)):
    write(split + "-images-idx3-ubyte",
          struct.pack(">IIII", 0x803, n, 28, 28) + bytes(rng.randrange(256) for _ in range(n * 784)))
    write(split + "-labels-idx1-ubyte", struct.pack(">II", 0x801, n) + bytes(rng.randrange(10) for _ in range(n)))
EOF

CONF=$T/test.conf
cat >"$CONF" <<EOF
[federation]
num_clients = 12
clients_per_round = 4
partition = dirichlet:0.5
seed = 3
holdout = 0.2
data_dir = $T/data

[trainer]
clients = 0-11
EOF

# check_json FILE NUM_CLIENTS PARTITION SEED HOLDOUT N_SAMPLES: shape and coverage
CHECK_PY='
import json, sys
path, nc, spec, seed, hold, ns = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
with open(path) as f:
    d = json.load(f)
def fail(msg):
    print(msg)
    sys.exit(1)
want = {"num_clients", "partition", "seed", "holdout", "n_samples", "train", "held"}
if not isinstance(d, dict) or set(d) != want:
    fail("keys %s, expected %s" % (sorted(d) if isinstance(d, dict) else type(d).__name__, sorted(want)))
if d["num_clients"] != nc: fail("num_clients %r, expected %d" % (d["num_clients"], nc))
if d["partition"] != spec: fail("partition %r, expected %r" % (d["partition"], spec))
if d["seed"] != seed: fail("seed %r, expected %d" % (d["seed"], seed))
if d["holdout"] != hold: fail("holdout %r, expected %r" % (d["holdout"], hold))
if d["n_samples"] != ns: fail("n_samples %r, expected %d" % (d["n_samples"], ns))
for key in ("train", "held"):
    parts = d[key]
    if not isinstance(parts, list) or len(parts) != nc:
        fail("%s: not a list of %d client lists" % (key, nc))
    for k, p in enumerate(parts):
        if not isinstance(p, list) or not all(type(i) is int for i in p):
            fail("%s[%d]: not a list of integers" % (key, k))
        if len(set(p)) != len(p):
            fail("%s[%d]: repeated index" % (key, k))
seen = {}
for key in ("train", "held"):
    for k, p in enumerate(d[key]):
        for i in p:
            if not 0 <= i < ns: fail("%s[%d]: index %d outside [0, %d)" % (key, k, i, ns))
            if i in seen: fail("index %d in %s and in %s[%d]" % (i, seen[i], key, k))
            seen[i] = "%s[%d]" % (key, k)
if len(seen) != ns:
    fail("%d of %d sample indices are in no client part" % (ns - len(seen), ns))
for k in range(nc):
    nt, nh = len(d["train"][k]), len(d["held"][k])
    n = nt + nh
    if hold == 0 and nh: fail("held[%d] has %d samples with holdout 0" % (k, nh))
    if n >= 1 and nt < 1: fail("client %d has no training sample" % k)
    # documented rule: h_k = round(frac * n_k), at most n_k - 1
    lo, hi = max(0, min(int(hold * n) - 1, n - 1)), min(int(hold * n) + 1, max(n - 1, 0))
    if not lo <= nh <= hi: fail("client %d holds out %d of %d (holdout %g)" % (k, nh, n, hold))
print("%d clients, %d train + %d held samples" % (nc, sum(map(len, d["train"])), sum(map(len, d["held"]))))
'

# expect_json DESC FILE NC SPEC SEED HOLD NS -- CMD...: exit 0, silent stderr, valid JSON
expect_json() {
    local desc=$1 file=$2 nc=$3 spec=$4 seed=$5 hold=$6 ns=$7
    shift 7
    [ "${1:-}" = "--" ] && shift
    local rc why=()
    rm -f "$file"
    timeout -k 5 "$TMO" "$@" >"$T/out" 2>"$T/err" </dev/null
    rc=$?
    [ "$rc" -eq 0 ] || why+=("exit status $rc, expected 0")
    grep -qE "$SAN_RE" "$T/err" && why+=("sanitizer report on stderr")
    if [ "$rc" -eq 0 ]; then
        local res
        if res=$("$PY" -c "$CHECK_PY" "$file" "$nc" "$spec" "$seed" "$hold" "$ns" 2>&1); then
            [ -n "${VERBOSE:-}" ] && echo "#   $res"
        else
            why+=("JSON check: $res")
        fi
        local left
        left=$(find "$(dirname "$file")" -maxdepth 1 -name "$(basename "$file").tmp*" | head -n 1)
        [ -z "$left" ] || why+=("temp file left behind: $left")
    fi
    if [ "${#why[@]}" -eq 0 ]; then
        ok "$desc"
    else
        notok "$desc" "command: $*" "${why[@]}"
        show "$T/err" stderr
    fi
}

# expect_fail CODE DESC SUBSTRING -- CMD...: exit CODE (2 bad input, 1 runtime failure),
# one non-empty stderr line containing SUBSTRING, and $T/keep.json (if the command names it)
# unchanged. expect_bad: the same with exit 2.
echo '{"sentinel":true}' >"$T/keep.json"
expect_bad() { expect_fail 2 "$@"; }
expect_fail() {
    local code=$1 desc=$2 sub=$3
    shift 3
    [ "${1:-}" = "--" ] && shift
    local rc why=() lines=()
    timeout -k 5 "$TMO" "$@" >"$T/out" 2>"$T/err" </dev/null
    rc=$?
    [ "$rc" -eq "$code" ] || why+=("exit status $rc, expected $code")
    grep -qE "$SAN_RE" "$T/err" && why+=("sanitizer report on stderr")
    mapfile -t lines <"$T/err"
    if [ "${#lines[@]}" -ne 1 ] || [ -z "${lines[0]//[[:space:]]/}" ]; then
        why+=("stderr has ${#lines[@]} lines, expected exactly 1 non-empty")
    elif [[ "${lines[0]}" != *"$sub"* ]]; then
        why+=("stderr line lacks '$sub'")
    fi
    [ "$(cat "$T/keep.json")" = '{"sentinel":true}' ] || why+=("$T/keep.json was modified")
    local left
    left=$(find "$T" -maxdepth 1 -name 'keep.json.tmp*' | head -n 1)
    [ -z "$left" ] || why+=("temp file left behind: $left")
    if [ "${#why[@]}" -eq 0 ]; then
        ok "$desc"
        [ -n "${VERBOSE:-}" ] && echo "#   stderr: ${lines[0]}"
    else
        notok "$desc" "command: $*" "${why[@]}"
        show "$T/err" stderr
    fi
}

# ---- good runs ---------------------------------------------------------------------------

A=$T/a.json
B=$T/b.json
expect_json "partition of the test config (dirichlet:0.5, 12 clients, holdout 0.2)" \
    "$A" 12 dirichlet:0.5 3 0.2 600 -- "$FEDMQ" partition "$CONF" --out "$A"
cp "$A" "$T/a1.json" 2>/dev/null
expect_json "second run, same config" "$B" 12 dirichlet:0.5 3 0.2 600 -- \
    "$FEDMQ" partition "$CONF" --out "$B"
if [ -s "$T/a1.json" ] && cmp -s "$T/a1.json" "$B"; then
    ok "two runs give identical files"
else
    notok "two runs give identical files" "$T/a1.json and $B differ (or are missing)"
fi
# shellcheck disable=SC2016  # $1.. are sh -c's arguments
expect_json "--out replaces an existing file" "$A" 12 dirichlet:0.5 3 0.2 600 -- \
    sh -c 'echo old >"$2" && exec "$1" partition "$3" --out "$2"' sh "$FEDMQ" "$A" "$CONF"
expect_json "-o is --out" "$A" 12 dirichlet:0.5 3 0.2 600 -- "$FEDMQ" partition "$CONF" -o "$A"

expect_json "--set federation.seed=4" "$B" 12 dirichlet:0.5 4 0.2 600 -- \
    "$FEDMQ" partition "$CONF" --set federation.seed=4 --out "$B"
if [ -s "$B" ] && [ -s "$T/a1.json" ] && ! cmp -s "$T/a1.json" "$B"; then
    ok "a different seed gives a different partition"
else
    notok "a different seed gives a different partition" "seed 3 and seed 4 files are identical (or missing)"
fi
# holdout is the file's only real: the fewest digits that read back (0.2, not 0.20000000000000001)
if grep -q '"holdout":0.2,' "$A"; then
    ok "holdout 0.2 is written as 0.2"
else
    notok "holdout 0.2 is written as 0.2" "$(head -c 120 "$A")"
fi
# JSON integers are int64 in the writer: the largest seed is written exactly, a larger one is
# refused (see the bad input below)
expect_json "--set federation.seed=2^63-1, written exactly" "$B" 12 dirichlet:0.5 \
    9223372036854775807 0.2 600 -- \
    "$FEDMQ" partition "$CONF" --set federation.seed=9223372036854775807 --out "$B"
expect_json "--set iid, 7 clients, holdout 0" "$B" 7 iid 3 0 600 -- \
    "$FEDMQ" partition "$CONF" --set federation.partition=iid --set federation.num_clients=7 \
    --set trainer.clients=0-6 --set federation.holdout=0 --out "$B"
if "$PY" -c 'import json, sys
d = json.load(open(sys.argv[1]))
s = sorted(len(p) for p in d["train"])
sys.exit(0 if s[-1] - s[0] <= 1 and sum(s) == 600 else 1)' "$B" 2>/dev/null; then
    ok "iid: client sizes differ by at most 1"
else
    notok "iid: client sizes differ by at most 1" "$(head -c 200 "$B")"
fi
expect_json "--set shards:2, 12 clients, holdout 0.1" "$B" 12 shards:2 3 0.1 600 -- \
    "$FEDMQ" partition "$CONF" --set federation.partition=shards:2 --set federation.holdout=0.1 --out "$B"
expect_json "one client holds everything" "$B" 1 dirichlet:0.5 3 0.2 600 -- \
    "$FEDMQ" partition "$CONF" --set federation.num_clients=1 --set federation.clients_per_round=1 \
    --set trainer.clients=0 --out "$B"

# The real data set with the shipped config: what bench/sync_vs_torch.sh exports.
REAL=/usr/share/datasets/fashion-mnist
if [ -f "$SRC/configs/fedmq.conf" ] &&
    { [ -e "$REAL/train-labels-idx1-ubyte.gz" ] || [ -e "$REAL/train-labels-idx1-ubyte" ]; }; then
    read -r SPEC SEED HOLD NC < <("$PY" - "$SRC/configs/fedmq.conf" <<'EOF'
import sys
vals, sec = {}, None
for line in open(sys.argv[1]):
    line = line.split(" ;")[0].strip()
    if not line or line[0] in "#;":
        continue
    if line.startswith("["):
        sec = line.strip("[]")
    elif sec == "federation" and "=" in line:
        k, v = (s.strip() for s in line.split("=", 1))
        vals[k] = v
print(vals.get("partition", "dirichlet:0.5"), vals.get("seed", "1"), vals.get("holdout", "0.1"),
      vals.get("num_clients", "100"))
EOF
    )
    expect_json "configs/fedmq.conf on $REAL ($NC clients, $SPEC)" "$A" "$NC" "$SPEC" "$SEED" "$HOLD" 60000 -- \
        "$FEDMQ" partition "$SRC/configs/fedmq.conf" --set "federation.data_dir=$REAL" --out "$A"
else
    echo "ok - configs/fedmq.conf on the real Fashion-MNIST # SKIP (not installed)"
fi

# ---- bad input -----------------------------------------------------------------------------

K=$T/keep.json
expect_bad "no arguments" "CONFIG" -- "$FEDMQ" partition
expect_bad "no --out" "--out" -- "$FEDMQ" partition "$CONF"
expect_bad "--out without a value" "--out" -- "$FEDMQ" partition "$CONF" --out
expect_bad "two CONFIG files" "CONFIG" -- "$FEDMQ" partition "$CONF" "$CONF" --out "$K"
expect_bad "unknown option --frob" "--frob" -- "$FEDMQ" partition "$CONF" --frob --out "$K"
expect_bad "nonexistent config" "$T/nope.conf" -- "$FEDMQ" partition "$T/nope.conf" --out "$K"
printf '[federation]\nnum_clients = many\n' >"$T/bad.conf"
expect_bad "config with a bad value" "num_clients" -- "$FEDMQ" partition "$T/bad.conf" --out "$K"
expect_bad "--set without '='" "nokey" -- "$FEDMQ" partition "$CONF" --set nokey --out "$K"
expect_bad "--set an unknown key" "frob" -- "$FEDMQ" partition "$CONF" --set federation.frob=1 --out "$K"
expect_bad "--set federation.partition=zipf" "zipf" -- \
    "$FEDMQ" partition "$CONF" --set federation.partition=zipf --out "$K"
expect_bad "--set federation.holdout=0.95 (out of range)" "holdout" -- \
    "$FEDMQ" partition "$CONF" --set federation.holdout=0.95 --out "$K"
expect_bad "--set federation.seed=2^63 (past a JSON integer)" "seed = 9223372036854775808" -- \
    "$FEDMQ" partition "$CONF" --set federation.seed=9223372036854775808 --out "$K"
expect_bad "more shards than samples" "shards:100" -- \
    "$FEDMQ" partition "$CONF" --set federation.partition=shards:100 --out "$K"
expect_fail 1 "data_dir without the files (runtime)" "$T/nodata" -- \
    "$FEDMQ" partition "$CONF" --set "federation.data_dir=$T/nodata" --out "$K"
expect_fail 1 "--out in a nonexistent directory (runtime)" "$T/nodir/p.json" -- \
    "$FEDMQ" partition "$CONF" --out "$T/nodir/p.json"
mkdir -p "$T/isdir"
expect_fail 1 "--out is a directory (runtime)" "$T/isdir" -- "$FEDMQ" partition "$CONF" --out "$T/isdir"
left=$(find "$T" -maxdepth 2 -name '*.tmp??????' | head -n 1)
if [ -z "$left" ]; then ok "no temp files left after the failed writes"; else notok "no temp files left" "$left"; fi

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
