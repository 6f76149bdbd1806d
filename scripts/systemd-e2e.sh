#!/bin/bash
# systemd-e2e.sh: end-to-end test of the fedmq .deb under a real systemd (PID 1 of a
# systemd-nspawn container), on a host whose own PID 1 need not be systemd.
#
#   sudo scripts/systemd-e2e.sh path/to/fedmq_VERSION_amd64.deb
#   sudo scripts/systemd-e2e.sh --selftest [--units DIR]
#
# What it does:
#   1. makes sure systemd-nspawn and debootstrap are installed (apt-get), and that a
#      minimal bookworm root exists at --root (default /var/lib/machines/fedmq-test;
#      debootstrap minbase + systemd, dbus and the fedmq runtime libraries, ~4 min, ~370 MB,
#      built once and reused);
#   2. boots it: systemd-nspawn -b --volatile=overlay (every write goes to a tmpfs, the root
#      stays pristine, so every run starts from the same clean system) --register=no
#      --keep-unit (no systemd/machined on the host to talk to);
#   3. copies the .deb in, installs it (dpkg -i; if dependencies are missing,
#      apt-get update + apt-get install -f from the Debian registry, the container shares
#      the host's network);
#   4. enables --trainers N trainer pools (fedmq-trainer@pool1..N), starts fedmq.target,
#      checks fedmq-broker, fedmq-aggregator, fedmq-evaluator and the pools are active;
#   4b. (the real .deb) waits for the federation to advance: stats.json in the aggregator's
#      StateDirectory reaches version 3, the evaluator writes metrics.jsonl;
#   5. kill -9 the aggregator's main process and checks systemd restarts it (new MainPID,
#      NRestarts >= 1, active again) and that the federation advances past the kill;
#   6. systemctl stop fedmq.target and checks every unit ends inactive (not failed: SIGTERM
#      must be a clean exit 0);
#   7. halts the container (unless --keep) and prints PASS or FAIL with the journal of
#      the fedmq units on failure.
#
# --selftest tests all of the above except the fedmq binaries: it builds a stand-in
# package "fedmq" whose /usr/bin/fedmq-{broker,aggregator,evaluator,trainer} are
# notify-dummy (scripts/systemd-e2e/notify-dummy.c: READY=1, WATCHDOG=1 pings, exit 0 on
# SIGTERM) and whose units are the real ones from --units DIR (default: the package
# branch's configs/systemd, if found), so the units' sandbox settings, Type=notify,
# the watchdog, Restart=on-failure and PartOf= are exercised by a real systemd.
# SELFTEST_EXTRA_DEPENDS=hello adds a dependency the root lacks, to exercise the
# apt-get install -f path.
#
# Exit status: 0 PASS, 1 a check failed, 2 bad usage or the environment cannot do it.
set -u -o pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=/var/lib/machines/fedmq-test
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
TRAINERS=1
KEEP=0
WATCHDOG=0
SELFTEST=0
UNITS=""
DEB=""
START_TIMEOUT=${START_TIMEOUT:-180} # seconds for every unit to become active
RESTART_TIMEOUT=${RESTART_TIMEOUT:-30}
INCLUDE="systemd,systemd-sysv,dbus,procps,libzmq5,libczmq4,libmsgpackc2,libopenblas0,liblmdb0,libjansson4,libmicrohttpd12,libsystemd0,dataset-fashion-mnist"

usage() {
    sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
    echo "options: --root DIR  --trainers N  --keep (leave the container running)"
    echo "         --watchdog (also SIGSTOP the aggregator: the watchdog must restart it, ~35 s)"
    echo "         --units DIR (with --selftest)  --rebuild-root"
    exit 2
}

REBUILD=0
while [ $# -gt 0 ]; do
    case "$1" in
    --root) ROOT=$2; shift 2 ;;
    --trainers) TRAINERS=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --watchdog) WATCHDOG=1; shift ;;
    --selftest) SELFTEST=1; shift ;;
    --units) UNITS=$2; shift 2 ;;
    --rebuild-root) REBUILD=1; shift ;;
    -h | --help) usage ;;
    -*) echo "unknown option $1" >&2; usage ;;
    *) DEB=$1; shift ;;
    esac
done

log() { printf '[systemd-e2e %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }
FAILS=0
fail() { log "FAIL: $*"; FAILS=$((FAILS + 1)); }
ok() { log "ok: $*"; }

[ "$(id -u)" = 0 ] || die "must run as root (systemd-nspawn, debootstrap)"
if [ "$SELFTEST" = 0 ]; then
    [ -n "$DEB" ] || usage
    [ -f "$DEB" ] || die "no such file: $DEB"
    DEB=$(readlink -f "$DEB")
fi

WORK=$(mktemp -d /tmp/systemd-e2e.XXXXXX)
log "work dir $WORK"

# ---- 1. tools and root --------------------------------------------------------------
need=()
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v nsenter >/dev/null || need+=(util-linux)
if [ "$SELFTEST" = 1 ]; then
    command -v gcc >/dev/null || need+=(gcc libc6-dev)
fi
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >"$WORK/apt.log" 2>&1 ||
        die "apt-get install ${need[*]} failed, see $WORK/apt.log"
fi

if [ "$REBUILD" = 1 ] && [ -d "$ROOT" ]; then
    log "removing $ROOT (--rebuild-root)"
    rm -rf --one-file-system "$ROOT"
fi
if [ ! -x "$ROOT/lib/systemd/systemd" ]; then
    log "debootstrap $SUITE into $ROOT (minbase + $INCLUDE), a few minutes"
    mkdir -p "$(dirname "$ROOT")"
    rm -rf --one-file-system "$ROOT"
    debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOT" "$MIRROR" \
        >"$WORK/debootstrap.log" 2>&1 || {
        tail -20 "$WORK/debootstrap.log" >&2
        die "debootstrap failed, see $WORK/debootstrap.log"
    }
    echo fedmq-test >"$ROOT/etc/hostname"
    # the console login is never used; nsenter is how the script gets in
    chroot "$ROOT" passwd -d root >/dev/null 2>&1 || true
fi

# ---- the stand-in package for --selftest ---------------------------------------------
build_selftest_deb() {
    if [ -z "$UNITS" ]; then
        for d in "$HERE/../configs/systemd" /work/wt-package/configs/systemd /work/main/configs/systemd; do
            [ -f "$d/fedmq.target" ] && { UNITS=$d; break; }
        done
    fi
    [ -n "$UNITS" ] && [ -f "$UNITS/fedmq.target" ] || die "--selftest: no unit directory with fedmq.target (give --units DIR)"
    log "selftest: stand-in fedmq package with notify-dummy and the units of $UNITS"
    local P="$WORK/pkg"
    mkdir -p "$P/DEBIAN" "$P/usr/bin" "$P/lib/systemd/system" "$P/etc/fedmq"
    gcc -O2 -Wall -static -o "$P/usr/bin/fedmq-broker" "$HERE/systemd-e2e/notify-dummy.c" ||
        die "cannot build notify-dummy"
    for b in aggregator evaluator trainer; do cp "$P/usr/bin/fedmq-broker" "$P/usr/bin/fedmq-$b"; done
    cp "$UNITS"/fedmq*.service "$UNITS"/fedmq.target "$P/lib/systemd/system/"
    printf '# stand-in config of the systemd-e2e selftest\n' >"$P/etc/fedmq/fedmq.conf"
    cat >"$P/DEBIAN/control" <<EOF
Package: fedmq
Version: 0.0~selftest
Architecture: amd64
Maintainer: fedmq selftest <selftest@invalid>
Depends: adduser${SELFTEST_EXTRA_DEPENDS:+, $SELFTEST_EXTRA_DEPENDS}
Description: stand-in fedmq package for scripts/systemd-e2e.sh --selftest
 notify-dummy in place of every daemon, the real unit files.
EOF
    echo /etc/fedmq/fedmq.conf >"$P/DEBIAN/conffiles"
    cat >"$P/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    getent passwd fedmq >/dev/null || adduser --system --group --home /var/lib/fedmq --no-create-home fedmq
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
EOF
    chmod 755 "$P/DEBIAN/postinst"
    dpkg-deb --root-owner-group --build "$P" "$WORK/fedmq_selftest_amd64.deb" >/dev/null || die "dpkg-deb failed"
    DEB="$WORK/fedmq_selftest_amd64.deb"
}
[ "$SELFTEST" = 1 ] && build_selftest_deb

# ---- 2. boot ------------------------------------------------------------------------
NSPAWN_PID=""
LEADER=""
halt_container() {
    [ -n "$NSPAWN_PID" ] || return 0
    kill -0 "$NSPAWN_PID" 2>/dev/null || return 0
    log "halting the container (SIGTERM to systemd-nspawn $NSPAWN_PID)"
    kill -TERM "$NSPAWN_PID"
    for _ in $(seq 60); do
        kill -0 "$NSPAWN_PID" 2>/dev/null || return 0
        sleep 0.5
    done
    log "container did not halt in 30 s: SIGKILL"
    kill -KILL "$NSPAWN_PID" 2>/dev/null
}
cleanup() {
    if [ "$KEEP" = 1 ] && [ -n "$LEADER" ]; then
        log "--keep: container left running; enter with: nsenter -t $LEADER -a -- /bin/bash"
        log "         stop with: kill -TERM $NSPAWN_PID"
    else
        halt_container
    fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

log "booting $ROOT with systemd-nspawn"
# --register=no --keep-unit: do not ask a host systemd/machined (there may be none) for a
#   scope or a machine registration ("Failed to open system bus" otherwise)
# --volatile=overlay: / is an overlay with a tmpfs upper layer, $ROOT is never written
# --console=passive: no terminal needed; the boot messages go to the journal inside
setsid systemd-nspawn -D "$ROOT" -M fedmq-e2e -b --register=no --keep-unit \
    --volatile=overlay --console=passive >"$WORK/nspawn.log" 2>&1 </dev/null &
NSPAWN_PID=$!
for _ in $(seq 60); do
    LEADER=$(pgrep -P "$NSPAWN_PID" | head -1)
    # PID 1 of the container's pid namespace, once it has exec'd systemd (before that it
    # is still the forked systemd-nspawn)
    [ -n "$LEADER" ] && grep -q '^NSpid:.*[[:space:]]1$' "/proc/$LEADER/status" 2>/dev/null &&
        [ "$(cat "/proc/$LEADER/comm" 2>/dev/null)" = systemd ] && break
    LEADER=""
    kill -0 "$NSPAWN_PID" 2>/dev/null || break
    sleep 0.5
done
if [ -z "$LEADER" ]; then
    cat "$WORK/nspawn.log" >&2
    die "systemd-nspawn did not start a PID 1 (log above)"
fi
log "container PID 1 is host pid $LEADER ($(cat /proc/$LEADER/comm))"

# cin: run a command inside the container (all its namespaces, its root)
cin() { nsenter -t "$LEADER" -a -- /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

state=""
for _ in $(seq 60); do # the private bus socket appears a moment after exec
    state=$(cin timeout 120 systemctl is-system-running --wait 2>/dev/null)
    case "$state" in running | degraded) break ;; esac
    sleep 0.5
done
case "$state" in
running) ok "systemd is-system-running: running" ;;
degraded)
    log "systemd is-system-running: degraded; failed units:"
    cin systemctl --failed --no-pager >&2
    ;;
*) cin systemctl --failed --no-pager >&2; die "container systemd did not finish booting (state '$state')" ;;
esac

# ---- 3. install ---------------------------------------------------------------------
log "installing $(basename "$DEB")"
cin sh -c 'cat > /root/fedmq.deb' <"$DEB" || die "cannot copy the .deb in"
if ! cin dpkg -i /root/fedmq.deb >"$WORK/dpkg.log" 2>&1; then
    log "dpkg -i left dependencies unresolved; apt-get update + apt-get install -f"
    cin sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -f -y -q' \
        >>"$WORK/dpkg.log" 2>&1 || { tail -30 "$WORK/dpkg.log" >&2; die "the .deb does not install, see $WORK/dpkg.log"; }
fi
cin dpkg -s fedmq 2>/dev/null | grep -q '^Status: install ok installed' &&
    ok "dpkg: fedmq $(cin dpkg-query -W -f='${Version}' fedmq) installed" ||
    { tail -30 "$WORK/dpkg.log" >&2; die "fedmq is not installed after dpkg"; }
cin getent passwd fedmq >/dev/null && ok "user fedmq exists" ||
    fail "no user fedmq after install (the units run as User=fedmq: the package must create it)"
for u in fedmq.target fedmq-broker.service fedmq-aggregator.service fedmq-evaluator.service fedmq-trainer@.service; do
    cin systemctl cat "$u" >/dev/null 2>&1 || fail "unit $u not installed"
done
# systemd-analyze verify: unknown directives and bad paths, in the real systemd version
cin sh -c 'cd /lib/systemd/system && systemd-analyze verify fedmq.target fedmq-broker.service fedmq-aggregator.service fedmq-evaluator.service fedmq-trainer@pool1.service' \
    >"$WORK/verify.log" 2>&1 && ok "systemd-analyze verify: clean" ||
    { sed 's/^/    /' "$WORK/verify.log" >&2; fail "systemd-analyze verify reported problems"; }

# ---- 4. start -----------------------------------------------------------------------
UNITS_ALL=(fedmq-broker.service fedmq-aggregator.service fedmq-evaluator.service)
# each pool its share of the clients and its own /metrics port, as docs/OPERATIONS.md says
NCLIENTS=$(cin sh -c "sed -n 's/^num_clients *= *\([0-9]*\).*/\1/p' /etc/fedmq/fedmq.conf" | head -1)
NCLIENTS=${NCLIENTS:-100}
for i in $(seq 1 "$TRAINERS"); do
    lo=$(((i - 1) * NCLIENTS / TRAINERS))
    hi=$((i * NCLIENTS / TRAINERS - 1))
    printf 'FEDMQ_TRAINER_ARGS="--set trainer.clients=%d-%d --set trainer.metrics_addr=127.0.0.1:%d"\n' \
        "$lo" "$hi" $((9570 + i)) | cin sh -c "cat > /etc/fedmq/trainer-pool$i.env"
done
for i in $(seq 1 "$TRAINERS"); do
    cin systemctl enable "fedmq-trainer@pool$i.service" >/dev/null 2>&1 || fail "enable fedmq-trainer@pool$i"
    UNITS_ALL+=("fedmq-trainer@pool$i.service")
done
log "systemctl start fedmq.target"
cin timeout "$START_TIMEOUT" systemctl start fedmq.target || fail "systemctl start fedmq.target returned $?"

wait_active() { # unit timeout
    local t=0
    while [ "$t" -lt $(($2 * 2)) ]; do
        [ "$(cin systemctl is-active "$1" 2>/dev/null)" = active ] && return 0
        sleep 0.5
        t=$((t + 1))
    done
    return 1
}
for u in fedmq.target "${UNITS_ALL[@]}"; do
    if wait_active "$u" 30; then
        case "$u" in
        *.service) ok "$u active (MainPID $(cin systemctl show -P MainPID "$u"))" ;;
        *) ok "$u active" ;;
        esac
    else
        fail "$u not active: $(cin systemctl is-active "$u")"
        cin systemctl status "$u" --no-pager -n 20 >&2
    fi
done

# ---- 4b. the federation advances (real package only): stats.json's version grows ----------
STATS=/var/lib/fedmq/aggregator/stats.json
agg_version() { # the "version" of stats.json inside the container, -1 if unreadable
    local v
    # the first "version" key (rejected.version, a reason, comes later)
    v=$(cin cat "$STATS" 2>/dev/null | tr -d ' \n' | grep -o '"version":[0-9]*' | head -1 | cut -d: -f2)
    echo "${v:--1}"
}
wait_version() { # min timeout_s: 0 once the version is >= min
    local end=$((SECONDS + $2))
    while [ $SECONDS -lt $end ]; do
        [ "$(agg_version)" -ge "$1" ] && return 0
        sleep 1
    done
    return 1
}
V_BEFORE=-1
if [ "$SELFTEST" = 0 ]; then
    if wait_version 3 "${ADVANCE_TIMEOUT:-240}"; then
        V_BEFORE=$(agg_version)
        ok "federation advancing: the aggregator reached version $V_BEFORE"
    else
        fail "the federation did not reach version 3 in ${ADVANCE_TIMEOUT:-240} s (stats.json version $(agg_version))"
    fi
    n=$(cin sh -c 'wc -l < /var/log/fedmq/metrics.jsonl' 2>/dev/null)
    [ "${n:-0}" -ge 1 ] && ok "evaluator: ${n} lines in /var/log/fedmq/metrics.jsonl" ||
        fail "evaluator wrote no /var/log/fedmq/metrics.jsonl"
fi

# ---- 5. kill -9 the aggregator --------------------------------------------------------
A=fedmq-aggregator.service
old=$(cin systemctl show -P MainPID $A)
if [ -n "$old" ] && [ "$old" != 0 ]; then
    V_PRE=$(agg_version)
    log "kill -9 the aggregator (container pid $old, version $V_PRE)"
    cin kill -9 "$old"
    t=0
    new=$old
    while [ $t -lt $((RESTART_TIMEOUT * 2)) ]; do
        new=$(cin systemctl show -P MainPID $A)
        [ "$new" != "$old" ] && [ "$new" != 0 ] && [ "$(cin systemctl is-active $A)" = active ] && break
        sleep 0.5
        t=$((t + 1))
    done
    n=$(cin systemctl show -P NRestarts $A)
    if [ "$new" != "$old" ] && [ "$new" != 0 ] && [ "${n:-0}" -ge 1 ]; then
        ok "aggregator restarted by systemd: MainPID $old -> $new, NRestarts=$n"
    else
        fail "aggregator not restarted within ${RESTART_TIMEOUT}s (MainPID $new, NRestarts=$n, $(cin systemctl is-active $A))"
    fi
    cin journalctl -u $A --no-pager -n 8 -o short-monotonic | sed 's/^/    /' >&2
    if [ "$SELFTEST" = 0 ] && [ "$V_BEFORE" -ge 0 ]; then
        # it resumes from its last checkpoint (version 0 if it had none yet: checkpoint_every)
        # and goes on
        V_RESUMED=$(agg_version)
        if wait_version $((V_RESUMED + 2)) "${ADVANCE_TIMEOUT:-240}"; then
            ok "after the restart the federation advances again: version $V_PRE at the kill, resumed at $V_RESUMED, now $(agg_version)"
        else
            fail "after the restart the version stayed at $(agg_version) (was $V_PRE at the kill)"
        fi
    fi
else
    fail "aggregator has no MainPID, cannot test the restart"
fi

# ---- 5b. --watchdog: a frozen aggregator stops pinging; WatchdogSec= must restart it ----
if [ "$WATCHDOG" = 1 ]; then
    old=$(cin systemctl show -P MainPID $A)
    wd=$(cin systemctl show -P WatchdogUSec $A)
    n0=$(cin systemctl show -P NRestarts $A)
    log "kill -STOP the aggregator (container pid $old, WatchdogUSec=$wd)"
    cin kill -STOP "$old"
    t0=$SECONDS
    t=0
    new=$old
    while [ $t -lt 180 ]; do # up to 90 s
        new=$(cin systemctl show -P MainPID $A)
        [ "$new" != "$old" ] && [ "$new" != 0 ] && [ "$(cin systemctl is-active $A)" = active ] && break
        sleep 0.5
        t=$((t + 1))
    done
    n=$(cin systemctl show -P NRestarts $A)
    if [ "$new" != "$old" ] && [ "${n:-0}" -gt "${n0:-0}" ] &&
        cin journalctl -u $A --no-pager | grep -q 'Watchdog timeout'; then
        ok "watchdog: frozen aggregator killed and restarted after $((SECONDS - t0)) s (MainPID $old -> $new)"
    else
        fail "watchdog: frozen aggregator not restarted in 90 s (MainPID $new, NRestarts=$n)"
    fi
fi

# ---- 6. stop ------------------------------------------------------------------------
log "systemctl stop fedmq.target"
cin timeout 90 systemctl stop fedmq.target || fail "systemctl stop fedmq.target returned $?"
# systemctl returns once the target's own job is done; the services stop after it, in the
# reverse order of their start (trainers and evaluator, aggregator, broker): wait for them
end=$((SECONDS + 90))
for u in "${UNITS_ALL[@]}"; do
    while [ $SECONDS -lt $end ]; do
        case "$(cin systemctl is-active "$u")" in inactive | failed) break ;; esac
        sleep 0.5
    done
done
for u in "${UNITS_ALL[@]}"; do
    s=$(cin systemctl is-active "$u")
    r=$(cin systemctl show -P Result "$u")
    if [ "$s" = inactive ] && [ "$r" = success ]; then
        ok "$u stopped cleanly"
    else
        fail "$u after stop: $s (Result=$r)"
    fi
done

# ---- 7. result ----------------------------------------------------------------------
jargs=()
for u in "${UNITS_ALL[@]}"; do jargs+=(-u "$u"); done
cin journalctl "${jargs[@]}" --no-pager -o short-monotonic >"$WORK/journal.log" 2>&1
if [ "$FAILS" = 0 ]; then
    log "PASS (journal of the fedmq units: $WORK/journal.log)"
    exit 0
fi
log "FAIL: $FAILS check(s) failed; last lines of the fedmq units' journal:"
tail -40 "$WORK/journal.log" >&2
log "full journal: $WORK/journal.log"
exit 1
