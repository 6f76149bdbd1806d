#!/usr/bin/env bash
# Bad-input contract of the fedmq tool (tools/fedmq.c):
#   every bad input (flag, dataset file, model file) gives exactly ONE non-empty line on
#   stderr naming the offending flag or file and what is wrong, exit code 2, no crash
#   (no signal, no sanitizer report).
#
# Usage: bash tests/cli/bad_input_test.sh <path-to-fedmq> [<source-dir>]
# (ctest runs it as cli_bad_input_test). All inputs are synthetic and built in a private
# temp dir; the real Fashion-MNIST is not needed. Prints "ok - ..." / "not ok - ..." per
# check and a final "N passed, M failed" line; exits 1 if any check failed.
# VERBOSE=1 also prints the stderr line of every passing bad-input check.
set -u

FEDMQ=${1:?usage: bad_input_test.sh <path-to-fedmq> [<source-dir>]}
SRC=${2:-}
: "$SRC"
if [ ! -x "$FEDMQ" ]; then
    echo "not ok - fedmq binary '$FEDMQ' is not executable"
    echo "0 passed, 1 failed"
    exit 1
fi
PY=$(command -v python3 || true)
if [ -z "$PY" ]; then
    echo "not ok - python3 is needed to build the synthetic inputs"
    echo "0 passed, 1 failed"
    exit 1
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/fedmq-cli-bad.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM

# Small and deterministic; leak detection stays on under ASan (a leak on an error path
# is reported and fails the check).
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
LOG=(--log-level error) # first on every command line: no INFO lines on stderr
TH=(--threads 2)        # shared machine
TMO=30

. "$(dirname "$0")/tap.sh" # PASS, FAIL, ok, notok

# Show at most 5 lines of a file, indented, for a failure report.
show() {
    local f=$1 what=$2
    [ -s "$f" ] || { echo "#   $what: (empty)"; return; }
    echo "#   $what ($(wc -l <"$f") lines):"
    head -n 5 "$f" | sed 's/^/#     | /'
}

# Description of an exit status (signals, timeout).
rcdesc() {
    local rc=$1
    if [ "$rc" -eq 124 ]; then echo "$rc (timed out after ${TMO}s)"
    elif [ "$rc" -gt 128 ]; then echo "$rc (killed by signal $((rc - 128)))"
    else echo "$rc"; fi
}

# expect_bad <description> <expected-substring>... -- <command...>
# Each expected substring must occur in the single stderr line; "a|b" accepts either a or b.
expect_bad() {
    local desc=$1
    shift
    local -a subs=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        subs+=("$1")
        shift
    done
    [ $# -gt 0 ] && shift # the --
    local out=$T/out err=$T/err rc
    timeout -k 5 "$TMO" "$@" >"$out" 2>"$err" </dev/null
    rc=$?
    local -a why=()
    if grep -qE 'AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error' "$err"; then
        why+=("sanitizer report on stderr")
    fi
    local want=${EXPECT_RC:-2} # EXPECT_RC=1 expect_bad ...: a runtime failure (missing file)
    if [ "$rc" -ne "$want" ]; then
        why+=("exit status $(rcdesc "$rc"), expected $want")
    fi
    local -a lines=()
    mapfile -t lines <"$err"
    local line=""
    if [ "${#lines[@]}" -ne 1 ]; then
        why+=("stderr has ${#lines[@]} lines, expected exactly 1")
    elif [ -z "${lines[0]//[[:space:]]/}" ]; then
        why+=("stderr line is empty")
    else
        line=${lines[0]}
    fi
    if [ -n "$line" ]; then
        local s alt hit
        for s in "${subs[@]}"; do
            hit=0
            IFS='|' read -r -a alts <<<"$s"
            for alt in "${alts[@]}"; do
                [[ "$line" == *"$alt"* ]] && hit=1
            done
            [ "$hit" -eq 1 ] || why+=("stderr line lacks '$s'")
        done
    fi
    if [ "${#why[@]}" -eq 0 ]; then
        ok "$desc"
        [ -n "${VERBOSE:-}" ] && echo "#   stderr: $line"
    else
        notok "$desc" "command: ${*}" "${why[@]}"
        show "$err" "stderr"
        [ -s "$out" ] && show "$out" "stdout"
    fi
}

# expect_ok <description> -- <command...>: exit 0, last stdout line is the result line.
RESULT_RE='^test_accuracy=[0-9.]+ test_loss=[0-9.]+$'
expect_ok() {
    local desc=$1
    shift
    [ "${1:-}" = "--" ] && shift
    local out=$T/out err=$T/err rc
    timeout -k 5 "$TMO" "$@" >"$out" 2>"$err" </dev/null
    rc=$?
    local -a why=()
    [ "$rc" -eq 0 ] || why+=("exit status $(rcdesc "$rc"), expected 0")
    if grep -qE 'AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error' "$err"; then
        why+=("sanitizer report on stderr")
    fi
    local last
    last=$(tail -n 1 "$out")
    [[ "$last" =~ $RESULT_RE ]] || why+=("last stdout line '$last' does not match $RESULT_RE")
    if [ "${#why[@]}" -eq 0 ]; then
        ok "$desc"
    else
        notok "$desc" "command: ${*}" "${why[@]}"
        show "$err" "stderr"
        show "$out" "stdout"
    fi
}

# ---- synthetic inputs ------------------------------------------------------------------

# Datasets: <dir>/{train,t10k}-{images-idx3,labels-idx1}-ubyte (plain, non-gz), 28x28.
#   good     64 train / 32 test images, labels 0..9
#   empty    no files at all
#   trunc    train-images header promises 64 images, payload cut to 10.5 images
#   magic    train-images carries the labels magic 0x00000801
#   gzcut    train-images only as .gz, the gzip stream cut in half
#   count    train-labels has 63 labels for the 64 images
#   label    a train label of 12 (classes are 0..9)
# Model files (from a trained mlp.safetensors / cnn.safetensors, see below) are derived
# after training.
"$PY" - "$T" <<'EOF' || { echo "not ok - building synthetic datasets"; echo "0 passed, 1 failed"; exit 1; }
import gzip, os, random, shutil, struct, sys
T = sys.argv[1]
rng = random.Random(12345)

def images(n, magic=0x803):
    return struct.pack(">IIII", magic, n, 28, 28) + bytes(rng.randrange(256) for _ in range(n * 784))

def labels(n, bad_at=None):
    ys = [i % 10 for i in range(n)]
    if bad_at is not None:
        ys[bad_at] = 12
    return struct.pack(">II", 0x801, n) + bytes(ys)

def write(path, data):
    with open(path, "wb") as f:
        f.write(data)

good = os.path.join(T, "good")
os.makedirs(good)
files = {
    "train-images-idx3-ubyte": images(64),
    "train-labels-idx1-ubyte": labels(64),
    "t10k-images-idx3-ubyte": images(32),
    "t10k-labels-idx1-ubyte": labels(32),
}
for name, data in files.items():
    write(os.path.join(good, name), data)

def variant(name, replace=None, drop=()):
    d = os.path.join(T, name)
    os.makedirs(d)
    for f in files:
        if f not in drop:
            shutil.copy(os.path.join(good, f), d)
    for f, data in (replace or {}).items():
        write(os.path.join(d, f), data)

os.makedirs(os.path.join(T, "empty"))
variant("trunc", {"train-images-idx3-ubyte": files["train-images-idx3-ubyte"][:16 + 784 * 10 + 392]})
variant("magic", {"train-images-idx3-ubyte": struct.pack(">I", 0x801) + files["train-images-idx3-ubyte"][4:]})
gz = gzip.compress(files["train-images-idx3-ubyte"], 6)
variant("gzcut", {"train-images-idx3-ubyte.gz": gz[: len(gz) // 2]}, drop=("train-images-idx3-ubyte",))
variant("count", {"train-labels-idx1-ubyte": labels(63)})
variant("label", {"train-labels-idx1-ubyte": labels(64, bad_at=5)})
EOF

D=$T/good
MLP=$T/mlp.safetensors
CNN=$T/cnn.safetensors

# ---- positive controls (so the checks cannot pass because everything fails) ----------

expect_ok "control: train logreg on a valid synthetic dataset" -- \
    "$FEDMQ" train "${LOG[@]}" "${TH[@]}" --model logreg --epochs 1 --data "$D"
expect_ok "control: train mlp --out writes a model file" -- \
    "$FEDMQ" train "${LOG[@]}" "${TH[@]}" --model mlp --epochs 1 --limit 64 --data "$D" --out "$MLP"
expect_ok "control: train cnn --out writes a model file" -- \
    "$FEDMQ" train "${LOG[@]}" "${TH[@]}" --model cnn --epochs 1 --limit 64 --data "$D" --out "$CNN"
expect_ok "control: eval --model mlp of the valid model file" -- \
    "$FEDMQ" eval "${LOG[@]}" "${TH[@]}" --model mlp --in "$MLP" --data "$D"
expect_ok "control: train --init from the valid model file" -- \
    "$FEDMQ" train "${LOG[@]}" "${TH[@]}" --model mlp --epochs 1 --init "$MLP" --data "$D"

# Broken model files derived from the valid ones (safetensors: u64le header length, JSON
# header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, then the data).
HAVE_MODELS=1
if [ ! -s "$MLP" ] || [ ! -s "$CNN" ]; then
    HAVE_MODELS=0
    notok "derive broken model files" "the controls above did not write $MLP / $CNN"
elif "$PY" - "$T" "$MLP" <<'EOF'; then
import json, math, struct, sys
T, src = sys.argv[1], sys.argv[2]
raw = open(src, "rb").read()
hlen = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + hlen])
data = raw[8 + hlen:]
meta = hdr.pop("__metadata__", None)
# name -> [dtype, shape, bytes], in header order
tens = {k: [v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]]
        for k, v in hdr.items()}

def save(name, tensors, meta=meta):
    h, blob = {}, b""
    if meta is not None:
        h["__metadata__"] = meta
    for k, (dt, shape, b) in tensors.items():
        h[k] = {"dtype": dt, "shape": shape, "data_offsets": [len(blob), len(blob) + len(b)]}
        blob += b
    hj = json.dumps(h, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    open(f"{T}/{name}", "wb").write(struct.pack("<Q", len(hj)) + hj + blob)

def copy():
    return {k: list(v) for k, v in tens.items()}

open(f"{T}/empty.safetensors", "wb").close()
open(f"{T}/five.safetensors", "wb").write(raw[:5])
# header length pointing past the end of the file
open(f"{T}/hlen.safetensors", "wb").write(struct.pack("<Q", len(raw) + 100) + raw[8:])
# JSON cut off in the middle of a string, padded to the original length
bad = (b'{"fc1.weight":{"dtype":"F3' + b" " * hlen)[:hlen]
open(f"{T}/json.safetensors", "wb").write(raw[:8] + bad + data)

t = copy(); del t["fc3.bias"]; save("missing.safetensors", t)
t = copy(); t["extra.weight"] = ["F32", [2], struct.pack("<2f", 1.0, 2.0)]; save("extra.safetensors", t)
t = copy(); t["fc3.bias"][1] = [2, 5]; save("shape.safetensors", t)      # same bytes, wrong shape
t = copy()
vals = struct.unpack("<10f", t["fc3.bias"][2])
t["fc3.bias"] = ["F64", [10], struct.pack("<10d", *vals)]; save("f64.safetensors", t)
t = copy()
w = bytearray(t["fc2.weight"][2]); w[7 * 4:8 * 4] = struct.pack("<f", math.nan)
t["fc2.weight"][2] = bytes(w); save("nan.safetensors", t)
EOF
    :
else
    HAVE_MODELS=0
    notok "derive broken model files" "python3 failed"
fi

# ---- command line ----------------------------------------------------------------------

expect_bad "no command at all" "command" -- "$FEDMQ"
expect_bad "unknown command 'frob'" "frob" "unknown" -- "$FEDMQ" frob
expect_bad "train --model resnet" "--model" "resnet" "unknown" -- \
    "$FEDMQ" train "${LOG[@]}" --model resnet --data "$D"
expect_bad "eval --model foo with a valid --in" "--model" "foo" "unknown" -- \
    "$FEDMQ" eval "${LOG[@]}" --model foo --in "$MLP" --data "$D"
expect_bad "train --epochs 0" "--epochs" "range" -- "$FEDMQ" train "${LOG[@]}" --epochs 0
expect_bad "train --epochs abc" "--epochs" "integer" -- "$FEDMQ" train "${LOG[@]}" --epochs abc
expect_bad "train --epochs 1e3" "--epochs" "integer" -- "$FEDMQ" train "${LOG[@]}" --epochs 1e3
expect_bad "train --batch -5" "--batch" "range" -- "$FEDMQ" train "${LOG[@]}" --batch -5
expect_bad "train --lr -1" "--lr" "range" -- "$FEDMQ" train "${LOG[@]}" --lr -1
expect_bad "train --lr nan" "--lr" "finite" -- "$FEDMQ" train "${LOG[@]}" --lr nan
expect_bad "train --lr abc" "--lr" "number" -- "$FEDMQ" train "${LOG[@]}" --lr abc
expect_bad "train --momentum 1.5" "--momentum" "range" -- "$FEDMQ" train "${LOG[@]}" --momentum 1.5
expect_bad "train --threads 0" "--threads" "range" -- "$FEDMQ" train "${LOG[@]}" --threads 0
expect_bad "train --seed -3" "--seed" "non-negative" -- "$FEDMQ" train "${LOG[@]}" --seed -3
expect_bad "train --weight-decay x" "--weight-decay" "number" -- \
    "$FEDMQ" train "${LOG[@]}" --weight-decay x
expect_bad "train --clip -1" "--clip" "range" -- "$FEDMQ" train "${LOG[@]}" --clip -1
expect_bad "train --dp-clip 0" "--dp-clip" "range" -- "$FEDMQ" train "${LOG[@]}" --dp-clip 0
expect_bad "train --dp-clip inf" "--dp-clip" "finite" -- "$FEDMQ" train "${LOG[@]}" --dp-clip inf
expect_bad "train --dp-noise -1" "--dp-noise" "range" -- \
    "$FEDMQ" train "${LOG[@]}" --dp-clip 1 --dp-noise -1
expect_bad "train --dp-sample-rate 2" "--dp-sample-rate" "range" -- \
    "$FEDMQ" train "${LOG[@]}" --dp-clip 1 --dp-sample-rate 2
expect_bad "train --dp-sample-rate 0" "--dp-sample-rate" "range" -- \
    "$FEDMQ" train "${LOG[@]}" --dp-clip 1 --dp-sample-rate 0
expect_bad "train --dp-delta 1" "--dp-delta" "range" -- \
    "$FEDMQ" train "${LOG[@]}" --dp-clip 1 --dp-delta 1
expect_bad "train --log-level loud" "--log-level" "loud" -- "$FEDMQ" train --log-level loud
expect_bad "train --frobnicate (unknown option)" "--frobnicate" "unknown" -- \
    "$FEDMQ" train "${LOG[@]}" --frobnicate
expect_bad "train -zq (unknown short options)" "-z" "unknown" -- "$FEDMQ" train "${LOG[@]}" -zq
expect_bad "train --epochs without a value" "--epochs" "missing" -- \
    "$FEDMQ" train "${LOG[@]}" --epochs
expect_bad "train with an unexpected positional argument" "extra.txt" "unexpected" -- \
    "$FEDMQ" train "${LOG[@]}" --model logreg extra.txt
expect_bad "eval without --in" "--in" "required" -- "$FEDMQ" eval "${LOG[@]}" --data "$D"

# ---- dataset files ---------------------------------------------------------------------

TRAIN=(train "${LOG[@]}" "${TH[@]}" --model logreg --epochs 1)
EXPECT_RC=1 expect_bad "--data: nonexistent directory (runtime)" "$T/nodir/train-images-idx3-ubyte" "No such file" -- \
    "$FEDMQ" "${TRAIN[@]}" --data "$T/nodir"
EXPECT_RC=1 expect_bad "--data: empty directory (missing files: runtime)" "$T/empty/train-images-idx3-ubyte" "No such file" -- \
    "$FEDMQ" "${TRAIN[@]}" --data "$T/empty"
expect_bad "--data: truncated train-images payload" "$T/trunc/train-images-idx3-ubyte" "truncated" -- \
    "$FEDMQ" "${TRAIN[@]}" --data "$T/trunc"
expect_bad "--data: labels magic in train-images" "$T/magic/train-images-idx3-ubyte" "magic" -- \
    "$FEDMQ" "${TRAIN[@]}" --data "$T/magic"
expect_bad "--data: gzip stream cut in half" "$T/gzcut/train-images-idx3-ubyte.gz" "truncated|corrupt" -- \
    "$FEDMQ" "${TRAIN[@]}" --data "$T/gzcut"
expect_bad "--data: 63 labels for 64 images" "$T/count/train-labels-idx1-ubyte" "63" "labels" -- \
    "$FEDMQ" "${TRAIN[@]}" --data "$T/count"
expect_bad "--data: label 12 out of range" "$T/label/train-labels-idx1-ubyte" "range" -- \
    "$FEDMQ" "${TRAIN[@]}" --data "$T/label"

EXPECT_RC=1 expect_bad "train --out in a missing folder (runtime)" "$T/nodir/m.safetensors" -- \
    "$FEDMQ" "${TRAIN[@]}" --data "$D" --limit 64 --out "$T/nodir/m.safetensors"

# ---- model files -----------------------------------------------------------------------

if [ "$HAVE_MODELS" -eq 1 ]; then
    EVAL=(eval "${LOG[@]}" "${TH[@]}" --model mlp --data "$D" --in)
    EXPECT_RC=1 expect_bad "eval --in: nonexistent file (runtime)" "$T/nothere.safetensors" "No such file" -- \
        "$FEDMQ" "${EVAL[@]}" "$T/nothere.safetensors"
    EXPECT_RC=1 expect_bad "eval --in: a directory (runtime: not a readable file)" "$T/good" "regular file|directory" -- \
        "$FEDMQ" "${EVAL[@]}" "$T/good"
    expect_bad "eval --in: empty file" "$T/empty.safetensors" "truncated" -- \
        "$FEDMQ" "${EVAL[@]}" "$T/empty.safetensors"
    expect_bad "eval --in: 5-byte file" "$T/five.safetensors" "truncated" -- \
        "$FEDMQ" "${EVAL[@]}" "$T/five.safetensors"
    expect_bad "eval --in: header length past the end of the file" "$T/hlen.safetensors" "header length" -- \
        "$FEDMQ" "${EVAL[@]}" "$T/hlen.safetensors"
    expect_bad "eval --in: corrupt JSON header" "$T/json.safetensors" "JSON" -- \
        "$FEDMQ" "${EVAL[@]}" "$T/json.safetensors"
    expect_bad "eval --model mlp --in: a cnn file" "$CNN" "unknown tensor|missing tensor" "mlp" -- \
        "$FEDMQ" "${EVAL[@]}" "$CNN"
    expect_bad "eval --in: tensor fc3.bias missing" "$T/missing.safetensors" "missing" "fc3.bias" -- \
        "$FEDMQ" "${EVAL[@]}" "$T/missing.safetensors"
    expect_bad "eval --in: extra unknown tensor" "$T/extra.safetensors" "unknown" "extra.weight" -- \
        "$FEDMQ" "${EVAL[@]}" "$T/extra.safetensors"
    expect_bad "eval --in: fc3.bias has shape [2,5]" "$T/shape.safetensors" "shape" "fc3.bias" -- \
        "$FEDMQ" "${EVAL[@]}" "$T/shape.safetensors"
    expect_bad "eval --in: fc3.bias is F64" "$T/f64.safetensors" "F64" "fc3.bias" -- \
        "$FEDMQ" "${EVAL[@]}" "$T/f64.safetensors"
    expect_bad "eval --in: NaN in fc2.weight" "$T/nan.safetensors" "non-finite" "fc2.weight" -- \
        "$FEDMQ" "${EVAL[@]}" "$T/nan.safetensors"
    expect_bad "eval (model from metadata) --in: NaN in fc2.weight" "$T/nan.safetensors" "non-finite" -- \
        "$FEDMQ" eval "${LOG[@]}" "${TH[@]}" --data "$D" --in "$T/nan.safetensors"
    expect_bad "train --init: NaN in fc2.weight" "$T/nan.safetensors" "non-finite" -- \
        "$FEDMQ" train "${LOG[@]}" "${TH[@]}" --model mlp --epochs 1 --data "$D" --init "$T/nan.safetensors"
    expect_bad "train --init: corrupt JSON header" "$T/json.safetensors" "JSON" -- \
        "$FEDMQ" train "${LOG[@]}" "${TH[@]}" --model mlp --epochs 1 --data "$D" --init "$T/json.safetensors"
fi

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
