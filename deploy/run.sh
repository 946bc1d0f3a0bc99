#!/usr/bin/env bash
# Installs what is missing, builds, and starts skynet on its embedded defaults
# (SQLite under SKYNET_HOME, console chat, offline planner, local provider).
# Arguments are passed to skynet: ./deploy/run.sh doctor
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/deps.sh
need_packages "${BUILD_PACKAGES[@]}"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target skynet >/dev/null
exec ./build/skynet "$@"
