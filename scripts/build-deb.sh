#!/usr/bin/env bash
# Build the fedmq Debian package. usage: scripts/build-deb.sh [BUILD_DIR]
#
# A build of its own (default <repo>/build-deb), portable and without test code:
# -DFM_NATIVE=OFF (no -march=native: the binaries run on any x86-64) with -DFM_CLONES=ON
# (the hot loops in AVX-512/AVX2/baseline copies picked at load time), -DFM_TEST_HOOKS=OFF,
# -DFM_SANITIZE=OFF, Release, prefix /usr. Only the five programs are built (no tests, no
# benchmarks), then `cpack -G DEB` packs what `cmake --install` installs (CMakeLists.txt,
# "install, Debian package"). The last line printed is the path of the .deb.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/build-deb}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
for tool in cmake cpack dpkg-deb dpkg-shlibdeps; do
    command -v "$tool" >/dev/null || { echo "build-deb: $tool not found (apt-get install cmake dpkg-dev)" >&2; exit 1; }
done
echo "[fedmq] build-deb: configuring $dir (portable: FM_NATIVE=OFF with FM_CLONES, prefix /usr)" >&2
cmake -S "$root" -B "$dir" --no-warn-unused-cli -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX=/usr -DFM_NATIVE=OFF -DFM_CLONES=ON -DFM_TEST_HOOKS=OFF -DFM_SANITIZE=OFF \
    -DFM_WERROR=OFF -DCMAKE_SKIP_INSTALL_ALL_DEPENDENCY=ON >"$dir/build-deb.log" 2>&1 ||
    { cat "$dir/build-deb.log" >&2; exit 1; }
if grep -q -- '-march=native' "$dir/compile_commands.json"; then
    echo "build-deb: -march=native in $dir/compile_commands.json: not a portable build" >&2
    exit 1
fi
echo "[fedmq] build-deb: building the programs" >&2
cmake --build "$dir" -j"$(nproc)" --target fedmq-broker fedmq-trainer fedmq-aggregator \
    fedmq-evaluator fedmq-cli >>"$dir/build-deb.log" 2>&1 ||
    { tail -n 40 "$dir/build-deb.log" >&2; exit 1; }
echo "[fedmq] build-deb: cpack" >&2
rm -f "$dir"/fedmq_*.deb
(cd "$dir" && cpack -G DEB) >>"$dir/build-deb.log" 2>&1 || { tail -n 40 "$dir/build-deb.log" >&2; exit 1; }
debs=("$dir"/fedmq_*.deb)
[ -f "${debs[0]}" ] || { echo "build-deb: cpack made no fedmq_*.deb in $dir" >&2; exit 1; }
echo "[fedmq] build-deb: $(dpkg-deb -f "${debs[0]}" Package Version Architecture | tr '\n' ' ')" >&2
echo "[fedmq] build-deb: Depends: $(dpkg-deb -f "${debs[0]}" Depends)" >&2
echo "${debs[0]}"
