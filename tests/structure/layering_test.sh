#!/usr/bin/env bash
# The layering of shared/ holds by construction.
#   1. Every header of a layer a library may not use is a compile error with the include
#      flags the build really gives that library's sources (read from compile_commands.json),
#      and every header it may use compiles (the positive control).
#   2. Programs built on the training core alone (bench/train_bench) link neither LMDB,
#      ZeroMQ, CZMQ nor msgpack.
# usage: layering_test.sh CC SOURCE_DIR BUILD_DIR TRAIN_BENCH
set -euo pipefail
cc=$1 src=$2 build=$3 bench=$4
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
declare -A allowed=([base]="base" [learn]="base learn" [fl]="base fl" [sa]="base sa"
                    [svc]="base learn fl sa svc")
fail=0 checked=0
for layer in base learn fl sa svc; do
  # the -I/-isystem flags of the first source of shared/$layer in the real build
  mapfile -t inc < <(python3 - "$build/compile_commands.json" "$src/shared/$layer/" <<'PY'
import json, shlex, sys
for e in json.load(open(sys.argv[1])):
    if e["file"].startswith(sys.argv[2]):
        a = shlex.split(e["command"]) if "command" in e else e["arguments"]
        for i, x in enumerate(a):
            if x in ("-I", "-isystem"): print(x); print(a[i + 1])
            elif x.startswith("-I") or x.startswith("-isystem"): print(x)
        break
else:
    sys.exit("no source of " + sys.argv[2] + " in compile_commands.json")
PY
)
  [ ${#inc[@]} -gt 0 ] || { echo "FAIL: no include flags found for shared/$layer"; exit 1; }
  for other in base learn fl sa svc; do
    for h in "$src"/shared/"$other"/*.h; do
      printf '#include "%s"\n' "$(basename "$h")" > "$tmp/t.c"
      if [[ " ${allowed[$layer]} " == *" $other "* ]]; then
        if ! "$cc" -std=c11 -D_GNU_SOURCE -fsyntax-only "${inc[@]}" "$tmp/t.c" 2>"$tmp/err"; then
          echo "FAIL: shared/$layer cannot include its allowed shared/$other/$(basename "$h"):"
          cat "$tmp/err"; fail=1
        fi
      elif "$cc" -std=c11 -D_GNU_SOURCE -fsyntax-only "${inc[@]}" "$tmp/t.c" 2>/dev/null; then
        echo "FAIL: shared/$layer can include shared/$other/$(basename "$h") (not a layer below it)"
        fail=1
      fi
      checked=$((checked + 1))
    done
  done
done
echo "include rules: $checked header/layer pairs checked"
libs=$(ldd "$bench")
for forbidden in liblmdb libzmq libczmq libmsgpack; do
  if grep -q "$forbidden" <<<"$libs"; then
    echo "FAIL: $(basename "$bench") links $forbidden:"; grep "$forbidden" <<<"$libs"; fail=1
  fi
done
grep -q libopenblas <<<"$libs" || { echo "FAIL: ldd found no libopenblas in $bench (wrong binary?)"; fail=1; }
echo "train_bench links: $(awk '{print $1}' <<<"$libs" | tr '\n' ' ')"
[ "$fail" -eq 0 ] && echo "layering: ok"
exit "$fail"
