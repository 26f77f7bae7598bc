#!/usr/bin/env bash
# Configures and builds obccl into build/ (or $OBCCL_BUILD_DIR) with Ninja.
# Extra arguments go to cmake, e.g. scripts/build.sh -DOBCCL_WITH_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${OBCCL_BUILD_DIR:-build}
JOBS=${OBCCL_JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -G Ninja "$@"
cmake --build "$BUILD_DIR" -j "$JOBS"
