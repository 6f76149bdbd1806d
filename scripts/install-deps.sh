#!/usr/bin/env bash
# Install fedmq's build, run and test dependencies from Debian 12 packages (run as root).
# Skips apt entirely when everything is already installed.
set -euo pipefail
PKGS=(build-essential cmake pkg-config python3 git clang-format
      libzmq3-dev libczmq-dev libmsgpack-dev libopenblas-dev liblmdb-dev zlib1g-dev
      libjansson-dev libcmocka-dev libsystemd-dev dataset-fashion-mnist gnuplot-nox
      systemd adduser dpkg-dev)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "[fedmq] dependencies: all ${#PKGS[@]} Debian packages present"
  exit 0
fi
echo "[fedmq] dependencies: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "[fedmq] error: installing packages needs root (run as root or with sudo)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
