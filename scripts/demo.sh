#!/usr/bin/env bash
# Builds obccl and runs the demo on this machine: 4 ranks started by obcclrun run
# examples/hello_allreduce (an allreduce, a broadcast and a 1-bit compressed allreduce, each
# checked and explained). Run scripts/setup.sh first on a fresh machine.
#   OBCCL_DEMO_RANKS   number of ranks (default 4)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${OBCCL_BUILD_DIR:-build}
RANKS=${OBCCL_DEMO_RANKS:-4}

bash scripts/build.sh

echo
echo "== obcclrun -n $RANKS $BUILD_DIR/examples/hello_allreduce"
"$BUILD_DIR/tools/obcclrun" -n "$RANKS" --timeout 120 --tag-output -- \
  "$BUILD_DIR/examples/hello_allreduce"
