#!/usr/bin/env bash
# Install, build and run the whole test suite twice: a Release build and an
# AddressSanitizer+UBSan build, both with -Wall -Wextra -Werror; then the libFuzzer targets
# (a clang build, tests/fuzz). Ends with ctest's summary.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh" --tests
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
jobs=$(nproc)

"$root/scripts/build.sh" "$root/build-test" -DFM_WERROR=ON
echo "[fedmq] tests: release build"
(cd "$root/build-test" && ctest --output-on-failure -j"$jobs")

"$root/scripts/build.sh" "$root/build-asan" -DFM_WERROR=ON -DFM_SANITIZE=ON
echo "[fedmq] tests: address+undefined sanitizer build"
(cd "$root/build-asan" && ctest --output-on-failure -j"$jobs")

# libFuzzer targets (tests/fuzz/README.md): a clang build of the libraries and the targets
# alone, then each target's seeds and FM_FUZZ_SECONDS (default 30) of fuzzing from a copy of
# them in build-fuzz/fuzz/ (FM_FUZZ_SECONDS=0: the seeds only)
"$root/scripts/build.sh" "$root/build-fuzz" -DCMAKE_C_COMPILER=clang-14 -DFM_FUZZ=ON -DFM_WERROR=ON
echo "[fedmq] tests: fuzz targets, ${FM_FUZZ_SECONDS:-30} s each"
(cd "$root/build-fuzz" && ctest --output-on-failure -j"$jobs")
echo "[fedmq] all tests passed (release, sanitizer and fuzz builds)"
