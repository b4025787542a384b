#!/usr/bin/env bash
# Build the native core of cpp_loader and its C++ test program (cpp_loader/tests_native/) with
# AddressSanitizer and UndefinedBehaviorSanitizer, then run the test under mpirun on 1 and 2
# ranks. Exits non-zero if the build fails, a check fails, or a sanitizer reports anything.
#
#   scripts/sanitize_native.sh            # build dir: cpp_loader/build-sanitize (git-ignored)
#   BUILD_DIR=/tmp/san scripts/sanitize_native.sh
#
# Needs cmake, a C++17 compiler and MPI (mpicxx/mpirun on PATH; the repo's .venv is used if
# present); the test runs with the mpirun line and environment of every test job
# (python -m common.mpirun). Leak detection is off (ASAN_OPTIONS=detect_leaks=0): Open MPI keeps
# allocations alive past MPI_Finalize on purpose, and LeakSanitizer would report those, not ours.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/cpp_loader/build-sanitize}
if [[ -x "$ROOT/.venv/bin/mpicxx" ]]; then export PATH="$ROOT/.venv/bin:$PATH"; fi
BUILD=$(mkdir -p "$BUILD" && cd "$BUILD" && pwd)  # absolute: the test runs from $ROOT

FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -g -O1"
GENERATOR=()
if command -v ninja >/dev/null; then GENERATOR=(-G Ninja); fi
cmake -S "$ROOT/cpp_loader" -B "$BUILD" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Debug \
  -DCPP_LOADER_PYTHON=OFF -DCPP_LOADER_NATIVE_TESTS=ON -DCMAKE_CXX_FLAGS="$FLAGS" >/dev/null
cmake --build "$BUILD" -j 2

export ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:halt_on_error=1:exitcode=66
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

status=0
for np in 1 2; do
  log=$(mktemp)
  echo "== test_native on $np rank(s)"
  if ! (cd "$ROOT" && timeout 120 "${PYTHON:-python3}" -m common.mpirun "$np" "$BUILD/test_native") >"$log" 2>&1; then
    status=1
  fi
  cat "$log"
  if grep -qE "ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer|UndefinedBehaviorSanitizer" "$log"; then
    echo "sanitizer report on $np rank(s)" >&2
    status=1
  fi
  rm -f "$log"
done
[[ $status == 0 ]] && echo "sanitize_native: ok" || echo "sanitize_native: FAILED" >&2
exit $status
