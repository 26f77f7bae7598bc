#!/usr/bin/env bash
# Trains the Fashion-MNIST MLP with adam, onebit and onebit-noef on N ranks, then prints a
# summary and draws accuracy against epoch and against bytes sent for the three runs together.
#   examples/train_fashion_mnist/run.sh [EPOCHS] [OUTDIR]     (defaults: 3 epochs, ./fmnist-out)
# Environment: OBCCL_BUILD_DIR (default build), RANKS (default 4), and any extra options for the
# program in TRAIN_ARGS (e.g. TRAIN_ARGS="--root-floor 0").
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
EPOCHS=${1:-3}
OUT=${2:-fmnist-out}
BUILD=${OBCCL_BUILD_DIR:-$ROOT/build}
RANKS=${RANKS:-4}
PROG=$BUILD/examples/train_fashion_mnist/train_fashion_mnist
[[ -x $PROG ]] || { echo "run.sh: build first ($PROG is missing)" >&2; exit 1; }
mkdir -p "$OUT"
# Ranks share the cores: one OpenBLAS thread each.
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
MODES=(adam onebit onebit-noef)
for mode in "${MODES[@]}"; do
  echo "== $mode: obcclrun -n $RANKS train_fashion_mnist --mode $mode --epochs $EPOCHS"
  # shellcheck disable=SC2086
  "$BUILD/tools/obcclrun" -n "$RANKS" --timeout 3600 -- "$PROG" --mode "$mode" \
    --epochs "$EPOCHS" --csv "$OUT/$mode.csv" ${TRAIN_ARGS:-}
done
gnuplot -e "out='$OUT/compare.png'; dir='$OUT'" "$HERE/compare.gp"
echo
echo "mode          final test acc   MB sent/rank   bytes vs adam"
adamBytes=$(tail -n 1 "$OUT/adam.csv" | cut -d, -f7)
for mode in "${MODES[@]}"; do
  IFS=, read -r _ _ _ _ _ acc bytes _ _ < <(tail -n 1 "$OUT/$mode.csv")
  awk -v m="$mode" -v a="$acc" -v b="$bytes" -v ab="$adamBytes" \
    'BEGIN { printf "%-13s %12.2f%% %14.1f %14.1f%%\n", m, a, b / 1e6, 100 * b / ab }'
done
echo "plot: $OUT/compare.png"
