#!/usr/bin/env bash
# fedmq plot (tools/fedmq_plot.c): accuracy curves of evaluator metrics files via gnuplot.
#   - two synthetic metrics files (JSON lines as evaluator/evaluator_jsonl.h writes them,
#     with nested arrays/objects, null and blank lines) give a PNG (magic bytes, > 1000
#     bytes) for --x both (default), --x time and --x version, with --label and --title;
#   - every bad input gives exit 2 and exactly one line on stderr starting "fedmq plot:";
#   - without gnuplot on PATH: exit 1 and "gnuplot not found".
# gnuplot is a dependency (scripts/install-deps.sh installs gnuplot-nox): when it is
# missing this test FAILS, it does not skip.
#
# Usage: bash tests/cli/plot_test.sh <path-to-fedmq> [<source-dir>]
# Prints "ok - ..." / "not ok - ..." per check and "N passed, M failed"; exits 1 on failure.
set -u

FEDMQ=${1:?usage: plot_test.sh <path-to-fedmq> [<source-dir>]}
SRC=${2:-}
: "$SRC"
if [ ! -x "$FEDMQ" ]; then
    echo "not ok - fedmq binary '$FEDMQ' is not executable"
    echo "0 passed, 1 failed"
    exit 1
fi
if ! command -v gnuplot >/dev/null 2>&1; then
    echo "not ok - gnuplot is not installed (apt-get install gnuplot-nox; scripts/install-deps.sh does)"
    echo "0 passed, 1 failed"
    exit 1
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/fedmq-cli-plot.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM
# fedmq plot's own temp dirs go under $T/tmp, so the test can check they are removed
mkdir "$T/tmp"
export TMPDIR=$T/tmp

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
TMO=60
SAN_RE='AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error'

. "$(dirname "$0")/tap.sh" # PASS, FAIL, ok, notok
show() {
    local f=$1 what=$2
    [ -s "$f" ] || { echo "#   $what: (empty)"; return; }
    echo "#   $what ($(wc -l <"$f") lines):"
    head -n 5 "$f" | sed 's/^/#     | /'
}
rcdesc() {
    local rc=$1
    if [ "$rc" -eq 124 ]; then echo "$rc (timed out after ${TMO}s)"
    elif [ "$rc" -gt 128 ]; then echo "$rc (killed by signal $((rc - 128)))"
    else echo "$rc"; fi
}

# Leftover temp dirs of fedmq plot.
leftovers() { find "$TMPDIR" -mindepth 1 -maxdepth 1 | wc -l; }

# expect_png <description> <png> -- <command...>: exit 0, nothing on stderr, a PNG
# (magic bytes) larger than 1000 bytes, no OUT.tmp and no temp dir left behind.
expect_png() {
    local desc=$1 png=$2
    shift 2
    [ "${1:-}" = "--" ] && shift
    rm -f "$png"
    local out=$T/out err=$T/err rc
    timeout -k 5 "$TMO" "$@" >"$out" 2>"$err" </dev/null
    rc=$?
    local -a why=()
    [ "$rc" -eq 0 ] || why+=("exit status $(rcdesc "$rc"), expected 0")
    grep -qE "$SAN_RE" "$err" && why+=("sanitizer report on stderr")
    [ -s "$err" ] && why+=("stderr is not empty")
    if [ ! -f "$png" ]; then
        why+=("$png was not written")
    else
        local size magic
        size=$(wc -c <"$png")
        magic=$(head -c 8 "$png" | od -An -tx1 | tr -d ' \n')
        [ "$magic" = "89504e470d0a1a0a" ] || why+=("$png does not start with the PNG signature ($magic)")
        [ "$size" -gt 1000 ] || why+=("$png has only $size bytes")
    fi
    [ -e "$png.tmp" ] && why+=("$png.tmp left behind")
    [ "$(leftovers)" -eq 0 ] || why+=("temp dir left in \$TMPDIR: $(ls "$TMPDIR")")
    if [ "${#why[@]}" -eq 0 ]; then
        ok "$desc"
    else
        notok "$desc" "command: ${*}" "${why[@]}"
        show "$err" "stderr"
    fi
}

# expect_fail <code> <description> <expected-substring>... -- <command...>
# Exit <code>, exactly one stderr line starting "fedmq plot: " and containing each
# substring, no PNG written (the output is $T/bad.png), no temp dir left behind.
expect_fail() {
    local code=$1 desc=$2
    shift 2
    local -a subs=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        subs+=("$1")
        shift
    done
    [ $# -gt 0 ] && shift
    rm -f "$T/bad.png"
    local out=$T/out err=$T/err rc
    timeout -k 5 "$TMO" "$@" >"$out" 2>"$err" </dev/null
    rc=$?
    local -a why=()
    grep -qE "$SAN_RE" "$err" && why+=("sanitizer report on stderr")
    [ "$rc" -eq "$code" ] || why+=("exit status $(rcdesc "$rc"), expected $code")
    local -a lines=()
    mapfile -t lines <"$err"
    if [ "${#lines[@]}" -ne 1 ]; then
        why+=("stderr has ${#lines[@]} lines, expected exactly 1")
    else
        [[ "${lines[0]}" == "fedmq plot: "?* ]] || why+=("stderr line does not start with 'fedmq plot: '")
        local s
        for s in "${subs[@]}"; do
            [[ "${lines[0]}" == *"$s"* ]] || why+=("stderr line lacks '$s'")
        done
    fi
    [ -e "$T/bad.png" ] && why+=("$T/bad.png was written")
    [ -e "$T/bad.png.tmp" ] && why+=("$T/bad.png.tmp left behind")
    [ "$(leftovers)" -eq 0 ] || why+=("temp dir left in \$TMPDIR: $(ls "$TMPDIR")")
    if [ "${#why[@]}" -eq 0 ]; then
        ok "$desc"
        [ -n "${VERBOSE:-}" ] && echo "#   stderr: ${lines[0]}"
    else
        notok "$desc" "command: ${*}" "${why[@]}"
        show "$err" "stderr"
    fi
}

# ---- inputs ----------------------------------------------------------------------------

# rec VERSION ACCURACY TIME: one evaluator record (evaluator_jsonl.h's shape).
rec() {
    printf '{"version":%s,"model":"mlp","accuracy":%s,"loss":%s,"class_accuracy":[%s,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5],"n":10000,"eval_seconds":0.11,"time":%s,"created":%s}\n' \
        "$1" "$2" "$(awk -v a="$2" 'BEGIN { printf "%.17g", 2.3 * (1 - a) }')" "$2" "$3" "$3"
}
A=$T/fedavg.jsonl
B=$T/run-2.fedbuff.jsonl
{
    for v in 0 1 2 3 4 5 6 7 8 9 10 11; do
        rec "$v" "0.$((10 + v * 6))" "$((1764362400 + v * 3)).25"
        [ "$v" -eq 4 ] && printf '\n   \n' # blank lines are skipped
    done
} >"$A"
{
    # nested objects/arrays, escapes, null and unknown keys are tolerated; a record with
    # "accuracy":null is not a scored model and is skipped
    printf '{"version":0,"accuracy":null,"time":1764362500,"x":{"y":[1,{"z":"a\\"b}"}],"w":[]}}\n'
    for v in 0 2 4 6 8 10 12 14; do
        rec "$v" "0.$((12 + v * 5))" "$((1764362500 + v * 2)).5"
    done
    printf '{"version":16,"accuracy":0.9,"time":1764362540,"loss":null,"tags":["a","b"],"ok":true}\n'
} >"$B"

P=$T/plot.png

# ---- plots -----------------------------------------------------------------------------

expect_png "two files, default --x both" "$P" -- "$FEDMQ" plot "$A" "$B" -o "$P"
if command -v python3 >/dev/null 2>&1 && [ -f "$P" ]; then
    wh=$(python3 -c 'import struct,sys; d=open(sys.argv[1],"rb").read(24); print(*struct.unpack(">II", d[16:24]))' "$P")
    if [ "$wh" = "1200 500" ]; then ok "--x both is 1200x500"; else notok "--x both is 1200x500" "got $wh"; fi
fi
expect_png "--x time with --label and --title" "$P" -- \
    "$FEDMQ" plot "$A" "$B" -o "$P" --x time --label "FedAvg (sync)" --label "FedBuff's K=4" \
    --title "accuracy: fedavg vs fedbuff"
expect_png "--x version, one --label for two files" "$P" -- \
    "$FEDMQ" plot --x version --label only_first "$A" "$B" --out "$P"
expect_png "--x both explicitly, a single file" "$P" -- "$FEDMQ" plot "$A" -o "$P" --x both
expect_png "replaces an existing PNG" "$P" -- bash -c 'echo old >"$2" && exec "$1" plot "$3" -o "$2"' \
    _ "$FEDMQ" "$P" "$B"

# ---- bad input: exit 2, one line ---------------------------------------------------------

printf '\n\n' >"$T/blank.jsonl"
printf '{"model":"mlp","n":3}\n{"version":1,"accuracy":null,"time":5}\n' >"$T/norec.jsonl"
{ rec 0 0.1 100; rec 1 0.2 101; printf '{"version":2,"accuracy":0.3,"time":102\n'; rec 3 0.4 103; } >"$T/cut.jsonl"
{ rec 0 0.1 100; printf 'not json at all\n'; } >"$T/text.jsonl"
{ rec 0 0.1 100; rec 1 0.2 101; printf '{"version":2,"accuracy":0x10,"time":102}\n'; } >"$T/hex.jsonl"
{ rec 0 0.1 100; printf '{"version":1,"accuracy":0.2,"time":101} trailing\n'; } >"$T/trail.jsonl"
{ rec 0 0.1 100; printf '[1,2,3]\n'; } >"$T/array.jsonl"
mkdir "$T/adir"

expect_fail 2 "no files" "no metrics files" -- "$FEDMQ" plot -o "$T/bad.png"
expect_fail 2 "no files and no -o" "no metrics files" -- "$FEDMQ" plot
expect_fail 2 "missing -o" "-o" "required" -- "$FEDMQ" plot "$A"
expect_fail 2 "-o without a value" "-o" "missing value" -- "$FEDMQ" plot "$A" -o
expect_fail 2 "unknown flag --frobnicate" "--frobnicate" "unknown option" -- \
    "$FEDMQ" plot "$A" -o "$T/bad.png" --frobnicate
expect_fail 2 "unknown short flag -z" "-z" "unknown option" -- "$FEDMQ" plot "$A" -o "$T/bad.png" -z
expect_fail 2 "--x sideways" "--x" "sideways" -- "$FEDMQ" plot "$A" -o "$T/bad.png" --x sideways
expect_fail 2 "more --label than files" "--label" -- \
    "$FEDMQ" plot "$A" -o "$T/bad.png" --label a --label b
expect_fail 2 "nonexistent file" "$T/nothere.jsonl" "No such file" -- \
    "$FEDMQ" plot "$A" "$T/nothere.jsonl" -o "$T/bad.png"
expect_fail 2 "a directory as metrics file" "$T/adir" -- "$FEDMQ" plot "$T/adir" -o "$T/bad.png"
expect_fail 2 "an empty file" "$T/blank.jsonl" "no metrics records" -- \
    "$FEDMQ" plot "$T/blank.jsonl" -o "$T/bad.png"
expect_fail 2 "a file without version/accuracy/time records" "$T/norec.jsonl" "no metrics records" -- \
    "$FEDMQ" plot "$A" "$T/norec.jsonl" -o "$T/bad.png"
expect_fail 2 "an unterminated object on line 3" "$T/cut.jsonl:3:" "malformed" -- \
    "$FEDMQ" plot "$T/cut.jsonl" -o "$T/bad.png"
expect_fail 2 "a line of plain text" "$T/text.jsonl:2:" "malformed" -- \
    "$FEDMQ" plot "$T/text.jsonl" -o "$T/bad.png"
expect_fail 2 "a hex number" "$T/hex.jsonl:3:" "malformed" -- \
    "$FEDMQ" plot "$T/hex.jsonl" -o "$T/bad.png"
expect_fail 2 "trailing text after the object" "$T/trail.jsonl:2:" "malformed" -- \
    "$FEDMQ" plot "$T/trail.jsonl" -o "$T/bad.png"
expect_fail 2 "a JSON array instead of an object" "$T/array.jsonl:2:" "malformed" -- \
    "$FEDMQ" plot "$T/array.jsonl" -o "$T/bad.png"
expect_fail 2 "output in a nonexistent directory" "$T/nodir/x.png" -- \
    "$FEDMQ" plot "$A" -o "$T/nodir/x.png"

# ---- gnuplot missing: exit 1 -------------------------------------------------------------

expect_fail 1 "gnuplot not on PATH" "gnuplot not found" "gnuplot-nox" -- \
    env PATH="$T/adir" "$FEDMQ" plot "$A" -o "$T/bad.png"

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
