#!/usr/bin/env bash
# Installs what is missing, builds twice (plain, and with AddressSanitizer +
# UndefinedBehaviorSanitizer), and runs every test with ctest in both builds,
# then the unit tests under valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/deps.sh
need_packages "${BUILD_PACKAGES[@]}" valgrind procps git curl openssl libssl-dev postgresql openssh-server openssh-client bubblewrap

jobs=$(nproc)
echo "== build (plain)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$jobs" >/dev/null
echo "== build (asan+ubsan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSKYNET_SANITIZE=ON >/dev/null
cmake --build build-asan -j "$jobs" >/dev/null

# A throwaway PostgreSQL for the ledger tests: exports SKYNET_TEST_PG_URL,
# stopped on exit; under CI=true a server that cannot start fails the run.
. tests/pg.sh
pg_test_start

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
echo "== tests (plain, and unit tests under valgrind)"
(cd build && ctest -j "$jobs" --output-on-failure) || status=1
echo "== tests (asan+ubsan)"
(cd build-asan && ctest -j "$jobs" --output-on-failure) || status=1
exit $status
