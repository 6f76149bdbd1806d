#!/usr/bin/env bash
# The systemd units in configs/systemd/:
#   - `systemd-analyze verify` prints nothing for each of them (it exits 0 on some mistakes,
#     such as a misspelt key, so any output at all fails), and for all of them together;
#   - `systemd-analyze security --offline=yes` scores each service at exposure <= 2.5 (the
#     tables are printed);
#   - each service has what docs/OPERATIONS.md promises (Type=notify, watchdog, restart,
#     reload by SIGHUP, user fedmq, part of fedmq.target, the config it reads);
#   - the default config installed to /etc/fedmq/fedmq.conf (generated in
#     BUILD_DIR/packaging) is accepted by the config reader and points at the sandbox's
#     directories.
# verify checks that ExecStart= names an executable, so it runs on copies of the units that
# name this build's binaries instead of /usr/bin (nothing else differs).
# usage: units_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
max_exposure=2.5
fail=0
bad() { echo "FAIL: $*"; fail=1; }

command -v systemd-analyze >/dev/null || { echo "FAIL: systemd-analyze not found (apt-get install systemd)"; exit 1; }
echo "units_test: $(systemd-analyze --version | head -n 1)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

services=(fedmq-broker.service fedmq-aggregator.service fedmq-evaluator.service "fedmq-trainer@.service")
units=("${services[@]}" fedmq.target)
for u in "${units[@]}"; do
    [ -f "$src/configs/systemd/$u" ] || { bad "configs/systemd/$u missing"; continue; }
    sed "s#/usr/bin/fedmq#$build/fedmq#g" "$src/configs/systemd/$u" >"$tmp/$u"
done
for d in broker aggregator evaluator trainer; do
    [ -x "$build/fedmq-$d" ] || bad "$build/fedmq-$d not built"
done
[ "$fail" -eq 0 ] || exit 1

# ---- verify: no output at all ----
cd "$tmp"
for u in "${units[@]}" ALL; do
    if [ "$u" = ALL ]; then args=("${units[@]/#/./}"); else args=("./$u"); fi
    rc=0
    out=$(systemd-analyze verify --man=no "${args[@]}" 2>&1) || rc=$?
    if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
        bad "systemd-analyze verify $u: exit $rc, output:"
        sed 's/^/    /' <<<"$out"
    else
        echo "ok: systemd-analyze verify $u: no output"
    fi
done

# ---- security: exposure <= max ----
for u in "${services[@]}"; do
    rc=0
    out=$(systemd-analyze security --offline=yes --no-pager "./$u" 2>&1) || rc=$?
    echo "---- systemd-analyze security --offline=yes $u"
    echo "$out"
    score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out")
    if [ -z "$score" ]; then
        bad "$u: no exposure level in the output (exit $rc)"
    elif awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s > m) }'; then
        bad "$u: exposure $score > $max_exposure"
    else
        echo "ok: $u: exposure $score <= $max_exposure"
    fi
done

# ---- what every service promises ----
key() { sed -n "s/^$2=//p" "$1"; } # the values of key $2 in unit file $1, one per line
for u in "${services[@]}"; do
    f=$src/configs/systemd/$u
    d=${u%.service}
    d=${d%@}
    expect() { # expect KEY VALUE
        key "$f" "$1" | grep -qxF -- "$2" || bad "$u: no $1=$2 (has: $(key "$f" "$1" | tr '\n' ' '))"
    }
    expect Type notify
    expect NotifyAccess main
    expect Restart on-failure
    expect ExecReload '/bin/kill -HUP $MAINPID'
    expect User fedmq
    expect Group fedmq
    expect PartOf fedmq.target
    expect ConfigurationDirectory fedmq
    expect TimeoutStopSec 30s
    [ -n "$(key "$f" WatchdogSec)" ] || bad "$u: no WatchdogSec="
    [ -n "$(key "$f" RestartSec)" ] || bad "$u: no RestartSec="
    key "$f" ExecStart | grep -q "^/usr/bin/$d --config /etc/fedmq/fedmq.conf" ||
        bad "$u: ExecStart= is not /usr/bin/$d --config /etc/fedmq/fedmq.conf ..."
done
key "$src/configs/systemd/fedmq-aggregator.service" StateDirectory | grep -qx fedmq ||
    bad "fedmq-aggregator.service: no StateDirectory=fedmq (checkpoints in /var/lib/fedmq)"
key "$src/configs/systemd/fedmq-evaluator.service" LogsDirectory | grep -qx fedmq ||
    bad "fedmq-evaluator.service: no LogsDirectory=fedmq (metrics file in /var/log/fedmq)"
key "$src/configs/systemd/fedmq-trainer@.service" EnvironmentFile | grep -qxF -- '-/etc/fedmq/trainer-%i.env' ||
    bad "fedmq-trainer@.service: no EnvironmentFile=-/etc/fedmq/trainer-%i.env"
for s in fedmq-broker.service fedmq-aggregator.service fedmq-evaluator.service; do
    key "$src/configs/systemd/fedmq.target" Wants | tr ' ' '\n' | grep -qx "$s" ||
        bad "fedmq.target does not want $s"
done
[ "$fail" -eq 0 ] && echo "ok: every service has Type=notify, watchdog, restart, reload, user fedmq, PartOf=fedmq.target"

# ---- the sandbox, line for line ----
# The exposure score has many layers, so one weakened setting rarely moves it past 2.5
# (ProtectSystem=no alone: 1.2 -> 1.4). So every sandbox line is pinned here: a changed,
# removed or added (e.g. a later "ProtectSystem=no") line of these keys fails. A deliberate
# change is made here too, with its reason in the unit.
sandbox_keys='NoNewPrivileges|CapabilityBoundingSet|AmbientCapabilities|PrivateUsers|ProtectSystem|ProtectHome|PrivateTmp|PrivateDevices|DevicePolicy|DeviceAllow|ProtectKernelTunables|ProtectKernelModules|ProtectKernelLogs|ProtectControlGroups|ProtectClock|ProtectHostname|ProtectProc|ProcSubset|PrivateMounts|PrivateNetwork|RestrictAddressFamilies|RestrictNamespaces|RestrictRealtime|RestrictSUIDSGID|LockPersonality|MemoryDenyWriteExecute|RemoveIPC|SystemCallArchitectures|SystemCallFilter|SystemCallErrorNumber|User|Group|DynamicUser|SupplementaryGroups|UMask|ReadWritePaths|ReadOnlyPaths|InaccessiblePaths|BindPaths|KeyringMode|Delegate|NotifyAccess|IPAddressAllow|IPAddressDeny'
sandbox_expected() { # $1: the address families
    cat <<EOT
NotifyAccess=main
User=fedmq
Group=fedmq
UMask=0027
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
PrivateUsers=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
DevicePolicy=closed
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
PrivateMounts=yes
RestrictAddressFamilies=$1
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallFilter=sched_setscheduler
SystemCallErrorNumber=EPERM
EOT
}
for u in "${services[@]}"; do
    fams="AF_UNIX AF_INET AF_INET6 AF_NETLINK" # libzmq's bind needs netlink (getifaddrs)
    [ "$u" = "fedmq-trainer@.service" ] && fams="AF_UNIX AF_INET AF_INET6" # binds nothing
    if d=$(diff <(sandbox_expected "$fams") <(grep -E "^($sandbox_keys)=" "$src/configs/systemd/$u")); then
        echo "ok: $u: the sandbox as pinned"
    else
        bad "$u: sandbox settings differ from the pinned ones (< pinned, > unit):"
        sed 's/^/    /' <<<"$d"
    fi
done

# ---- the sysusers.d entry (for installs without the .deb) ----
if command -v systemd-sysusers >/dev/null; then
    mkdir -p "$tmp/root/etc"
    out=$(systemd-sysusers --dry-run --root="$tmp/root" "$src/packaging/sysusers.d/fedmq.conf" 2>&1) || true
    if grep -q "Creating user 'fedmq'" <<<"$out" && ! grep -qiE 'warn|fail|invalid|error' <<<"$out"; then
        echo "ok: packaging/sysusers.d/fedmq.conf creates user fedmq (systemd-sysusers --dry-run)"
    else
        bad "packaging/sysusers.d/fedmq.conf: systemd-sysusers --dry-run: $out"
    fi
fi

# ---- the installed default config ----
conf=$build/packaging/fedmq.conf
if [ ! -f "$conf" ]; then
    bad "$conf not generated (CMakeLists.txt, install block)"
else
    for kv in "data_dir = /usr/share/datasets/fashion-mnist" "checkpoint_dir = /var/lib/fedmq/aggregator" \
              "metrics_file = /var/log/fedmq/metrics.jsonl"; do
        grep -qxF "$kv" "$conf" || bad "$conf: no line '$kv'"
    done
    # the config reader takes it (fedmq partition reads the whole file, as the daemons do)
    if out=$("$build/fedmq" partition "$conf" --out "$tmp/partition.json" 2>&1); then
        echo "ok: $conf is a valid config"
    else
        bad "$conf is not a valid config: $out"
    fi
    # the example pool overrides are valid --set arguments on top of it (split on spaces,
    # as systemd splits $FEDMQ_TRAINER_ARGS)
    args=$(sed -n 's/^FEDMQ_TRAINER_ARGS="\(.*\)"$/\1/p' "$src/packaging/trainer-pool.env.example")
    # shellcheck disable=SC2086  # split like systemd's $VAR
    if [ -n "$args" ] && out=$("$build/fedmq" partition "$conf" $args --out "$tmp/partition.json" 2>&1); then
        echo "ok: trainer-pool.env.example: FEDMQ_TRAINER_ARGS=\"$args\" accepted"
    else
        bad "packaging/trainer-pool.env.example: FEDMQ_TRAINER_ARGS=\"$args\" rejected: $out"
    fi
fi

if [ "$fail" -ne 0 ]; then
    echo "units_test: FAILED"
    exit 1
fi
echo "units_test: all units verified, exposure <= $max_exposure"
