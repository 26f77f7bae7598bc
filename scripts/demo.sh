#!/usr/bin/env bash
# Builds obccl and runs the demo on this machine: 4 ranks started by obcclrun run
# examples/hello_allreduce (an allreduce, a broadcast and a 1-bit compressed allreduce, each
# checked and explained), then the Fashion-MNIST 1-bit Adam training comparison
# (examples/train_fashion_mnist/run.sh, 3 epochs). Run scripts/setup.sh first on a fresh machine.
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

# The main job: data-parallel Fashion-MNIST training on 4 ranks with plain Adam, 1-bit Adam and
# 1-bit Adam without error feedback (3 epochs each, about a minute on 2 cores), with a summary
# table and a plot of accuracy against epoch and against bytes sent.
echo
echo "== examples/train_fashion_mnist/run.sh 3 $BUILD_DIR/demo-fmnist"
RANKS=$RANKS OBCCL_BUILD_DIR=$PWD/$BUILD_DIR \
  examples/train_fashion_mnist/run.sh 3 "$BUILD_DIR/demo-fmnist"
