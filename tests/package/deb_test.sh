#!/usr/bin/env bash
# The .deb built by scripts/build-deb.sh (ctest package_deb_build) on this machine:
#   dpkg -i: every file where docs/OPERATIONS.md ("installed-files" table) says and no other,
#   /etc/fedmq/fedmq.conf a conffile, the user fedmq, the installed binaries run --help and
#   find their libraries, the installed units verify, the installed config is valid;
#   dpkg -i again (an upgrade in place) keeps an edited conffile; dpkg -r removes the
#   programs and units and keeps config, state and user; dpkg -P removes everything.
# Needs root (dpkg); CI runs as root. Refuses to run (fails) if fedmq, its user or its
# directories are already on the machine, and always purges what it installed, so the
# machine is left as it was found.
# usage: deb_test.sh SOURCE_DIR DEB_BUILD_DIR
set -euo pipefail
src=$1 debdir=$2
fail=0
bad() { echo "FAIL: $*"; fail=1; }
ok() { echo "ok: $*"; }
die() { echo "FAIL: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "deb_test installs a package with dpkg and needs root (CI runs as root); run ctest as root"
for t in dpkg dpkg-query getent systemd-analyze; do command -v $t >/dev/null || die "$t not found"; done
shopt -s nullglob
debs=("$debdir"/fedmq_*.deb)
[ ${#debs[@]} -eq 1 ] || die "expected one fedmq_*.deb in $debdir (made by ctest package_deb_build: scripts/build-deb.sh $debdir), found ${#debs[@]}"
deb=${debs[0]}
echo "deb_test: $deb ($(dpkg-deb -f "$deb" Version))"
grep -q -- '-march=native' "$debdir/compile_commands.json" && die "$debdir was built with -march=native: not portable"
ok "portable build (no -march=native in $debdir/compile_commands.json)"
# no AVX (VEX/EVEX-encoded: mnemonics v...) instruction outside the clones that the loader
# picks by CPU (FM_CLONES, shared/learn/fm_hot.h): the programs run on any x86-64. Read from
# the unstripped binaries the package was made from (a -march=native build has thousands).
if command -v objdump >/dev/null; then
    for b in fedmq fedmq-broker fedmq-aggregator fedmq-evaluator fedmq-trainer; do
        avx=$(objdump -d --no-show-raw-insn "$debdir/$b" | awk '
            /^[0-9a-f]+ <.*>:$/ { fn = $2; next }
            /^ +[0-9a-f]+:\t/ { split($0, p, "\t"); m = p[2]; sub(/ .*/, "", m)
                if (m ~ /^v[a-z]/ && fn !~ /\.arch_x86_64_v[34]>/) { n++; if (n <= 3) ex = ex " " fn " " m } }
            END { if (n) print n " (" ex " )" }')
        [ -z "$avx" ] || bad "$debdir/$b: AVX instructions outside dispatched clones: $avx"
    done
    ok "no AVX instruction outside dispatched clones in the five programs"
fi

status() { dpkg-query -W -f='${db:Status-Status}' fedmq 2>/dev/null || true; }
[ -z "$(status)" ] || [ "$(status)" = not-installed ] ||
    die "package fedmq is already on this machine (status $(status)): the test would replace and purge it; remove it first (dpkg -P fedmq)"
for p in /etc/fedmq /var/lib/fedmq /var/log/fedmq; do
    [ ! -e "$p" ] || die "$p exists: the test's purge would delete it; move it away first"
done
! getent passwd fedmq >/dev/null || die "user fedmq exists: the test's purge would delete it"
! getent group fedmq >/dev/null || die "group fedmq exists: the test's purge would delete it"

tmp=$(mktemp -d)
cleanup() {
    local rc=$?
    if [ -n "$(status)" ] && [ "$(status)" != not-installed ]; then
        echo "deb_test: cleanup: dpkg -P fedmq"
        pkg -P fedmq >/dev/null 2>&1 || true
    fi
    rm -rf "$tmp"
    exit $rc
}
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
# dpkg ARGS..., waiting up to 60 s for the dpkg lock if apt or dpkg runs elsewhere
pkg() {
    local i out rc
    for i in $(seq 1 30); do
        rc=0
        out=$(timeout 60 dpkg "$@" 2>&1) || rc=$?
        if [ "$rc" -ne 0 ] && grep -qi 'lock' <<<"$out"; then sleep 2; continue; fi
        echo "$out"
        return "$rc"
    done
    echo "$out"
    return 1
}

# ---- what docs/OPERATIONS.md says is installed ----
mapfile -t documented < <(sed -n '/<!-- installed-files/,/<!-- \/installed-files -->/p' "$src/docs/OPERATIONS.md" |
    grep -o '`/[^`]*`' | tr -d '`' | sort -u)
[ ${#documented[@]} -ge 10 ] || die "docs/OPERATIONS.md: no installed-files table (found ${#documented[@]} paths)"

# ---- install ----
pkg -i "$deb" >"$tmp/dpkg-i.log" 2>&1 || { cat "$tmp/dpkg-i.log"; die "dpkg -i $deb failed"; }
[ "$(status)" = installed ] && ok "dpkg -i: installed" || bad "dpkg -i: status $(status)"

for p in "${documented[@]}"; do
    if [[ "$p" == */ ]]; then [ -d "$p" ] || bad "documented directory $p missing"
    else [ -f "$p" ] || bad "documented file $p missing"; fi
done
ok "the ${#documented[@]} paths of docs/OPERATIONS.md are installed"
# every file of the package is documented (itself or its directory)
n=0
while read -r f; do
    [ -d "$f" ] && continue
    n=$((n + 1))
    hit=0
    for p in "${documented[@]}"; do
        if [ "$f" = "$p" ] || { [[ "$p" == */ ]] && [ "$(dirname "$f")/" = "$p" ]; }; then hit=1; break; fi
    done
    [ $hit -eq 1 ] || bad "$f is in the package but not in docs/OPERATIONS.md's installed-files table"
done < <(dpkg -L fedmq)
ok "all $n files of the package are documented"

conffiles=$(dpkg-query -W -f='${Conffiles}' fedmq)
grep -q '^ /etc/fedmq/fedmq.conf ' <<<"$conffiles" && ok "/etc/fedmq/fedmq.conf is a conffile" ||
    bad "/etc/fedmq/fedmq.conf is not a conffile (Conffiles: $conffiles)"

# the user
if pw=$(getent passwd fedmq); then
    IFS=: read -r _ _ uid gid _ home shell <<<"$pw"
    [ "$uid" -lt 1000 ] || bad "user fedmq uid $uid is not a system uid"
    [ "$home" = /var/lib/fedmq ] || bad "user fedmq home $home, not /var/lib/fedmq"
    [ "$(getent group fedmq | cut -d: -f3)" = "$gid" ] || bad "user fedmq's group is not fedmq"
    case "$shell" in */nologin | /bin/false) ;; *) bad "user fedmq has shell $shell" ;; esac
    [ ! -e /var/lib/fedmq ] || bad "postinst created /var/lib/fedmq (systemd's StateDirectory= does)"
    ok "user fedmq: system uid $uid, group fedmq, home /var/lib/fedmq (not created), shell $shell"
else
    bad "no user fedmq after dpkg -i"
fi
[ -z "$(find /etc/systemd/system -name 'fedmq*' 2>/dev/null)" ] && ok "nothing enabled" ||
    bad "the package enabled units: $(find /etc/systemd/system -name 'fedmq*')"

# the programs
for b in fedmq fedmq-broker fedmq-aggregator fedmq-evaluator fedmq-trainer; do
    if ldd "/usr/bin/$b" | grep -q 'not found'; then bad "/usr/bin/$b: $(ldd "/usr/bin/$b" | grep 'not found')"; fi
    if out=$(timeout 10 "/usr/bin/$b" --help 2>&1); then
        grep -q -i usage <<<"$out" || bad "/usr/bin/$b --help printed no usage"
    else
        bad "/usr/bin/$b --help: exit $?"
    fi
done
ok "the five programs run --help (exit 0) and find their libraries"
out=$(timeout 10 runuser -u fedmq -- /usr/bin/fedmq --help 2>&1) && ok "runuser -u fedmq -- fedmq --help (as OPERATIONS.md does it)" ||
    bad "runuser -u fedmq -- fedmq --help: $out"

# the installed units, with the installed binaries
out=$(cd /lib/systemd/system && systemd-analyze verify --man=no fedmq-broker.service fedmq-aggregator.service \
    fedmq-evaluator.service fedmq-trainer@.service fedmq.target 2>&1) || true
[ -z "$out" ] && ok "installed units: systemd-analyze verify prints nothing" || bad "installed units: verify: $out"
# the installed config (the reader checks every key; fedmq partition reads it as the daemons do)
out=$(timeout 60 /usr/bin/fedmq partition /etc/fedmq/fedmq.conf --out "$tmp/p.json" 2>&1) &&
    ok "/etc/fedmq/fedmq.conf is a valid config" || bad "/etc/fedmq/fedmq.conf: $out"

# ---- the same package again (configure with a previous version): an edited conffile stays ----
echo "# edited by deb_test" >>/etc/fedmq/fedmq.conf
pkg -i "$deb" >"$tmp/dpkg-i2.log" 2>&1 || { cat "$tmp/dpkg-i2.log"; bad "second dpkg -i failed"; }
grep -q '^# edited by deb_test$' /etc/fedmq/fedmq.conf && ok "reinstall: the edited conffile is kept" ||
    bad "reinstall: the edited /etc/fedmq/fedmq.conf was replaced"
[ "$(getent passwd | grep -c '^fedmq:')" = 1 ] || bad "reinstall: user fedmq not exactly once"

# ---- remove: programs and units go; config, state, logs and user stay ----
mkdir -p /var/lib/fedmq/aggregator /var/log/fedmq # as systemd and the daemons would have
echo state >/var/lib/fedmq/aggregator/data.mdb
echo '{}' >/var/log/fedmq/metrics.jsonl
pkg -r fedmq >"$tmp/dpkg-r.log" 2>&1 || { cat "$tmp/dpkg-r.log"; bad "dpkg -r failed"; }
[ "$(status)" = config-files ] || bad "dpkg -r: status $(status), not config-files"
for p in "${documented[@]}"; do
    case "$p" in /etc/*) [ -f "$p" ] || bad "dpkg -r removed the conffile $p" ;;
    */) ;; # shared directories such as /usr/share/doc/fedmq/ go when empty
    *) [ ! -e "$p" ] || bad "dpkg -r left $p" ;;
    esac
done
[ -f /var/lib/fedmq/aggregator/data.mdb ] && [ -f /var/log/fedmq/metrics.jsonl ] || bad "dpkg -r removed state or logs"
getent passwd fedmq >/dev/null || bad "dpkg -r removed the user"
ok "dpkg -r: programs and units gone; conffile, state, logs, user kept"

# ---- purge: everything goes ----
pkg -P fedmq >"$tmp/dpkg-p.log" 2>&1 || { cat "$tmp/dpkg-p.log"; bad "dpkg -P failed"; }
[ -z "$(status)" ] || [ "$(status)" = not-installed ] || bad "dpkg -P: status $(status)"
for p in /etc/fedmq /var/lib/fedmq /var/log/fedmq /usr/share/doc/fedmq "${documented[@]}"; do
    [ ! -e "$p" ] || bad "dpkg -P left $p"
done
! getent passwd fedmq >/dev/null || bad "dpkg -P left the user fedmq"
! getent group fedmq >/dev/null || bad "dpkg -P left the group fedmq"
ok "dpkg -P: config, state, logs, user and group gone"

if [ "$fail" -ne 0 ]; then echo "deb_test: FAILED"; exit 1; fi
echo "deb_test: the package installs, runs --help, removes and purges as documented"
