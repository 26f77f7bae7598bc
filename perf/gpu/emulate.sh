#!/usr/bin/env bash
# Checks the device kernels' logic without a GPU: compiles src/device, the GPU unit tests and
# obccl_gpu_check as plain C++ against the host CUDA emulation in perf/gpu/emu (see
# cuda_runtime.h there) and runs them. The tests compare bit for bit with the CPU codec, so
# indexing, packing, warp shuffles and the reduction trees are exercised; timings mean nothing.
#
#   perf/gpu/emulate.sh [build-dir]     (default: build-gpu-emu; JOBS=2 parallel compiles)
#
# Needs g++ and GoogleTest; takes about a minute.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:-$ROOT/build-gpu-emu}
JOBS=${JOBS:-2}
CXX=${CXX:-g++}
mkdir -p "$OUT"

flags=(-std=c++17 -O2 -ffp-contract=off -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas
  -DOBCCL_DEVICE_EMULATION "-I$ROOT/perf/gpu/emu" "-I$ROOT/src" "-I$ROOT/include"
  "-I$ROOT/test/unit" "-I$ROOT/perf/gpu")

# compile_all: compiles "src obj [flags]" lines from stdin, JOBS at a time.
compile_all() {
  local src obj extra running=0 failed=$OUT/failed
  rm -f "$failed"
  while read -r src obj extra; do
    # shellcheck disable=SC2086  # extra is a list of flags
    (
      echo "compile $(basename "$src")"
      if ! "$CXX" "${flags[@]}" $extra -x c++ -c "$src" -o "$obj" </dev/null; then
        touch "$failed"
      fi
    ) &
    running=$((running + 1))
    if ((running >= JOBS)); then
      wait -n || true
      running=$((running - 1))
    fi
  done
  wait
  [[ ! -e $failed ]]
}

lib=()
list=$OUT/sources.list
: >"$list"
add() {
  local src=$1 obj
  obj="$OUT/$(basename "$src").o"
  shift
  echo "$src $obj $*" >>"$list"
  lib+=("$obj")
}
for src in "$ROOT"/src/device/*.cu "$ROOT"/src/device/*.cc "$ROOT"/src/util/{status,log,params}.cc \
  "$ROOT/src/codec/codec.cc" "$ROOT/src/codec/kernels_scalar.cc" "$ROOT/perf/gpu/emu/emu.cc"; do
  add "$src"
done
add "$ROOT/src/codec/kernels_avx2.cc" -mavx2 -mfma -mf16c
# -Wno-maybe-uninitialized: GCC 12's own avx512fintrin.h trips it (as in src/codec/CMakeLists.txt).
add "$ROOT/src/codec/kernels_avx512.cc" -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl \
  -Wno-maybe-uninitialized
libobjs=("${lib[@]}")
lib=()
for src in "$ROOT"/test/unit/test_gpu_*.cc "$ROOT"/perf/gpu/*.cu; do add "$src"; done
compile_all <"$list"

status=0
for src in "$ROOT"/test/unit/test_gpu_*.cc; do
  name=$(basename "$src" .cc)
  "$CXX" -o "$OUT/$name" "$OUT/$name.cc.o" "${libobjs[@]}" -lgtest -lgtest_main -lpthread
  echo "=== emulated: $name"
  "$OUT/$name" --gtest_brief=1 || status=1
done
"$CXX" -o "$OUT/obccl_gpu_check" "$OUT/gpu_check.cu.o" "$OUT/gpu_check_rows.cu.o" \
  "${libobjs[@]}" -lpthread
echo "=== emulated: obccl_gpu_check (bitwise checks only; timings are meaningless here)"
"$OUT/obccl_gpu_check" --elems 200000 --reps 1 --ranks 4 || status=1
"$OUT/obccl_gpu_check" --elems 100000 --reps 1 --ranks 3 --block 1000 || status=1
exit $status
