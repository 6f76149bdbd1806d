#!/usr/bin/env bash
# Install fedmq's build, run and test dependencies from Debian 12 packages (run as root);
# with --tests also the Python packages only the test suite uses (TEST_PKGS below).
# Skips apt entirely when everything is already installed.
set -euo pipefail
# clang-14 + libclang-rt-14-dev: the libFuzzer targets (tests/fuzz, a -DFM_FUZZ=ON build)
# python3-mpmath: the arbitrary-precision reference of the privacy accountant (tests/privacy)
PKGS=(build-essential cmake pkg-config python3 python3-mpmath git clang-format clang-14 libclang-rt-14-dev
      libzmq3-dev libczmq-dev libmsgpack-dev libopenblas-dev liblmdb-dev zlib1g-dev
      libjansson-dev libcmocka-dev libsystemd-dev libmicrohttpd-dev libsodium-dev libzstd-dev
      dataset-fashion-mnist gnuplot-nox
      systemd adduser dpkg-dev iproute2 nftables)
# --tests: what only the test suite needs on top: the Python client (trainer/python) and
# its tests: pyzmq, msgpack, numpy, PyTorch (the client's torch helpers, the mixed
# federation), scikit-learn (its bundled digits data: the custom-model example), the
# setuptools backend, pip and venv that install the package offline, and pytest, which runs
# those tests.
TEST_PKGS=(python3-zmq python3-msgpack python3-numpy python3-torch python3-sklearn
           python3-pytest python3-setuptools python3-pip python3-venv)
if [ "${1:-}" = "--tests" ]; then
  PKGS+=("${TEST_PKGS[@]}")
fi
# Test tools taken out of a Debian package without installing it: promtool (`promtool check
# metrics`, `promtool check rules`) from the package prometheus, whose installation would
# start a Prometheus server. tests/integration/metrics_test.c looks for it here (or on PATH).
TOOLS_DIR=/opt/fedmq-test-tools
updated=0

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "[fedmq] error: $1 needs root (run as root or with sudo)" >&2
    exit 1
  fi
}

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "[fedmq] dependencies: all ${#PKGS[@]} Debian packages present"
else
  echo "[fedmq] dependencies: installing ${missing[*]}"
  need_root "installing packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  updated=1
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ -x "$TOOLS_DIR/promtool" ]; then
  echo "[fedmq] test tools: $TOOLS_DIR/promtool present"
else
  echo "[fedmq] test tools: extracting promtool from the Debian package prometheus into $TOOLS_DIR"
  need_root "fetching promtool"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  chmod 755 "$tmp"
  id _apt >/dev/null 2>&1 && chown _apt "$tmp" # apt downloads as _apt when it can
  if ! (cd "$tmp" && apt-get download -q prometheus >/dev/null); then
    [ "$updated" -eq 1 ] || apt-get update -q
    (cd "$tmp" && apt-get download -q prometheus >/dev/null)
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x" # unpacks only: nothing installed or started
  mkdir -p "$TOOLS_DIR"
  install -m 0755 "$tmp/x/usr/bin/promtool" "$TOOLS_DIR/promtool"
  "$TOOLS_DIR/promtool" --version 2>&1 | head -1
fi
