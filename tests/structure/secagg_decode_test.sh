#!/usr/bin/env bash
# No code path decodes one secure-aggregation upload alone (docs/SECAGG.md): in the non-test
# sources (shared/, aggregator/, trainer/, broker/, evaluator/, tools/), comments and
# strings blanked,
#   1. fm_sa_codec_decode is named only by its declaration (shared/sa/fm_sa_codec.h), its
#      definition (shared/sa/fm_sa_codec.c) and one call in shared/sa/fm_sa_cohort.c, made in
#      s_finish (after the unmasking) on the cohort's running sum c->sum;
#   2. the aggregator touches a MASKED_UPDATE only through the cohort: fm_wire_decode_sa_masked
#      and fm_wire_sa_masked_view appear only in aggregator/aggregator_secagg.c, no aggregator
#      source reads a masked vector's `y` field, and the aligned copy there (sa->words) is
#      only filled by the view, handed to the test observer, wiped, allocated and freed
#      (fm_sa_cohort_on_masked gets it through the view's struct).
# Fails with one line per offence naming the file.
# usage: secagg_decode_test.sh SOURCE_DIR
set -uo pipefail
cd "$1" || { echo "FAIL: no source dir $1"; exit 1; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
dirs=(shared aggregator trainer broker evaluator)
[ -d tools ] && dirs+=(tools)
mapfile -t files < <(find "${dirs[@]}" -name '*.[ch]' | sort)
[ "${#files[@]}" -gt 0 ] || { echo "FAIL: no sources under ${dirs[*]}"; exit 1; }
# comments, strings and character literals blanked, line numbers kept
for f in "${files[@]}"; do
    mkdir -p "$tmp/$(dirname "$f")"
    perl -0777 -pe 's{(/\*.*?\*/)|(//[^\n]*)|("(?:[^"\\\n]|\\.)*")|(\x27(?:[^\x27\\\n]|\\.)*\x27)}{ defined $1 ? ($1 =~ s/[^\n]//gr) : defined $2 ? "" : defined $3 ? "\"\"" : "0" }gse' "$f" >"$tmp/$f"
done
cd "$tmp" || exit 1
bad=0
fail() { echo "FAIL: $1"; bad=$((bad + 1)); }

# 1. who names fm_sa_codec_decode
calls=0
while IFS=: read -r f line text; do
    case "$f" in
    shared/sa/fm_sa_codec.h) [[ "$text" =~ ^void\ fm_sa_codec_decode\( ]] || fail "$f:$line: fm_sa_codec_decode named outside its declaration" ;;
    shared/sa/fm_sa_codec.c) [[ "$text" =~ ^void\ fm_sa_codec_decode\( ]] || fail "$f:$line: fm_sa_codec_decode named outside its definition" ;;
    shared/sa/fm_sa_cohort.c)
        calls=$((calls + 1))
        fn=$(awk -v n="$line" 'NR <= n && /^[a-z][a-z0-9_ *]*[ *]s?_?[a-z0-9_]+\(/ { s = $0; sub(/\(.*/, "", s); sub(/.*[ *]/, "", s); fn = s } NR == n { print fn }' "$f")
        [ "$fn" = s_finish ] || fail "$f:$line: fm_sa_codec_decode called in $fn, not in s_finish (after the unmasking)"
        [[ "$text" =~ fm_sa_codec_decode\(\&c-\>codec,\ c-\>sum, ]] || fail "$f:$line: fm_sa_codec_decode on something other than the cohort sum c->sum"
        ;;
    *) fail "$f:$line: calls fm_sa_codec_decode (only fm_sa_cohort.c may, on an unmasked cohort sum)" ;;
    esac
done < <(grep -nE '\bfm_sa_codec_decode\b' "${files[@]}")
[ "$calls" -eq 1 ] || fail "shared/sa/fm_sa_cohort.c: $calls calls of fm_sa_codec_decode, expected exactly 1"

# 2. the aggregator and MASKED_UPDATE
while IFS=: read -r f line _; do
    [ "$f" = aggregator/aggregator_secagg.c ] || fail "$f:$line: decodes or views a MASKED_UPDATE (only aggregator_secagg.c may, for fm_sa_cohort_on_masked)"
done < <(grep -nE '\b(fm_wire_decode_sa_masked|fm_wire_sa_masked_view)\b' aggregator/*.[ch])
n_view=$(grep -cE '\bfm_wire_sa_masked_view\b' aggregator/aggregator_secagg.c)
n_on=$(grep -cE '\bfm_sa_cohort_on_masked\b' aggregator/aggregator_secagg.c)
[ "$n_view" -eq 1 ] && [ "$n_on" -eq 1 ] || fail "aggregator/aggregator_secagg.c: $n_view masked views and $n_on fm_sa_cohort_on_masked calls, expected 1 and 1"
while IFS=: read -r f line _; do
    fail "$f:$line: reads a masked vector's y field"
done < <(grep -nE '(\.|->)y\b' aggregator/*.[ch])
allowed='uint32_t \*words;|fm_wire_sa_masked_view\(&[a-z_]+, sa->words, &[a-z_]+\)|sa->observe\(sa->observe_arg, sa->words,|sodium_memzero\(sa->words,|sa->words = malloc\(|free\(sa->words\)|!sa->words\b'
while IFS=: read -r f line text; do
    [[ "$text" =~ $allowed ]] || fail "$f:$line: uses the masked words other than view/observe/wipe/alloc/free"
done < <(grep -nE '\bwords\b' aggregator/*.[ch])

if [ "$bad" -gt 0 ]; then
    exit 1
fi
echo "secagg_decode: fm_sa_codec_decode called once, in fm_sa_cohort.c s_finish on the unmasked sum; the aggregator views MASKED_UPDATE words only for fm_sa_cohort_on_masked (${#files[@]} files)"
