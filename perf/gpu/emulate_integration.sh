#!/usr/bin/env bash
# Checks obccl's device-buffer paths (src/core/device_*.cc, docs/DEVICE_PATH.md) without a GPU:
# compiles src/device, src/core and src/api as plain C++ against the host emulation of CUDA in
# perf/gpu/emu (OBCCL_DEVICE_EMULATION, OBCCL_HAVE_CUDA), links them with the other layers from a
# normal CMake build, and runs the multirank GPU tests (test/multirank/test_gpu_*.cc) with one
# thread per rank. Emulated device memory is host memory that the emulated runtime classifies as
# device memory, and streams are synchronous, so the tests check the integration logic (bitwise
# equality with host buffers, the staged frames, the device-side consensus, error reporting) and
# count host synchronisations; they say nothing about speed or races on a real GPU.
#
#   perf/gpu/emulate_integration.sh [out-dir]     (default: build-gpu-emu-int; JOBS=2)
#
# CMAKE_BUILD_DIR names an existing CMake build to take the other layers from (any
# OBCCL_WITH_CUDA); otherwise one is configured in <out-dir>/cmake. GTEST_FILTER selects tests.
# Needs g++, GoogleTest and the usual build dependencies; takes a few minutes on two cores.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:-$ROOT/build-gpu-emu-int}
JOBS=${JOBS:-2}
CXX=${CXX:-g++}
mkdir -p "$OUT"

# --- the direct engine must not wait for the device ---------------------------------------------
# The counting shim of the emulation (obccl_emu::hostSyncs) checks the calls at run time; this
# checks the source: device_compressed.cc (setup and direct engine) names no synchronising call.
sync_calls='streamSynchronize|\.synchronize\(|cudaStreamSynchronize|cudaDeviceSynchronize|cudaEventSynchronize|cudaMemcpy\(|cudaMemset\('
if grep -nE "$sync_calls" "$ROOT/src/core/device_compressed.cc"; then
  echo "emulate_integration.sh: the direct engine (src/core/device_compressed.cc) waits for the device" >&2
  exit 1
fi

# --- the layers below core, from CMake ---------------------------------------------------------
CM=${CMAKE_BUILD_DIR:-$OUT/cmake}
if [[ ! -f $CM/CMakeCache.txt ]]; then
  cmake -S "$ROOT" -B "$CM" -G Ninja -DOBCCL_WITH_CUDA=OFF -DOBCCL_BUILD_TESTS=OFF \
    -DOBCCL_BUILD_PERF=OFF -DOBCCL_BUILD_EXAMPLES=OFF >/dev/null
fi
layers=(obccl_util obccl_topo obccl_bootstrap obccl_codec obccl_transport obccl_transport_tcp
  obccl_transport_shm)
have_ucx=0
if grep -q "obccl_transport_ucx" "$CM/build.ninja" 2>/dev/null; then
  layers+=(obccl_transport_ucx)
  have_ucx=1
fi
cmake --build "$CM" -j "$JOBS" --target "${layers[@]}" obcclrun
libs=("$CM/transports/libobccl_transport_tcp.a" "$CM/transports/libobccl_transport_shm.a")
((have_ucx)) && libs+=("$CM/transports/libobccl_transport_ucx.a" $(pkg-config --libs ucx))
libs+=("$CM/transports/libobccl_transport.a" "$CM/src/topo/libobccl_topo.a"
  "$CM/src/bootstrap/libobccl_bootstrap.a" "$CM/src/codec/libobccl_codec.a"
  "$CM/src/util/libobccl_util.a" $(pkg-config --libs hwloc) -lcrypto -lrt -ldl -lpthread)

# --- device, core, api and the tests against the emulation --------------------------------------
defs=(-DOBCCL_DEVICE_EMULATION -DOBCCL_HAVE_CUDA=1 -DOBCCL_BUILDING_LIBRARY=1
  -DOBCCL_CORE_HAVE_TCP=1 -DOBCCL_CORE_HAVE_SHM=1 -DOBCCL_CORE_HAVE_TOPO=1
  -DOBCCL_CORE_HAVE_BOOTSTRAP=1 -DOBCCL_CORE_HAVE_CODEC=1)
((have_ucx)) && defs+=(-DOBCCL_CORE_HAVE_UCX=1 -DOBCCL_HAVE_UCX=1)
flags=(-std=c++17 -O2 -ffp-contract=off -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas
  "${defs[@]}" "-I$ROOT/perf/gpu/emu" "-I$ROOT/src" "-I$ROOT" "-I$ROOT/include" "-I$CM/include"
  "-I$ROOT/test")

objs=()
list=$OUT/sources.list
: >"$list"
for src in "$ROOT"/src/device/*.cu "$ROOT"/src/device/*.cc "$ROOT"/src/core/*.cc \
  "$ROOT"/src/api/*.cc "$ROOT/perf/gpu/emu/emu.cc" "$ROOT"/test/common/*.cc; do
  obj="$OUT/$(basename "$(dirname "$src")")_$(basename "$src").o"
  echo "$src $obj" >>"$list"
  objs+=("$obj")
done
tests=("$ROOT"/test/multirank/test_gpu_*.cc)
for src in "${tests[@]}" "$ROOT/perf/gpu/staged_check.cc"; do
  echo "$src $OUT/$(basename "$src").o" >>"$list"
done

# Compiles "src obj" lines, JOBS at a time, skipping objects newer than their source and the
# headers (a cheap stand-in for dependency tracking).
newest_header=$(find "$ROOT/src" "$ROOT/include" "$ROOT/perf/gpu/emu" "$ROOT/test" \
  -name '*.h' -o -name '*.cuh' | xargs ls -t | head -n 1)
failed=$OUT/failed
rm -f "$failed"
running=0
while read -r src obj; do
  if [[ -f $obj && $obj -nt $src && $obj -nt $newest_header ]]; then continue; fi
  (
    echo "compile $(basename "$src")"
    "$CXX" "${flags[@]}" -x c++ -c "$src" -o "$obj" </dev/null || touch "$failed"
  ) &
  running=$((running + 1))
  if ((running >= JOBS)); then
    wait -n || true
    running=$((running - 1))
  fi
done <"$list"
wait
[[ -e $failed ]] && exit 1

status=0
# perf/gpu_check.sh's staged rows, one process per rank (small: the emulated kernels are slow).
"$CXX" -o "$OUT/obccl_gpu_staged" "$OUT/staged_check.cc.o" "${objs[@]}" "${libs[@]}"
for n in 2 3; do
  echo "=== emulated: obcclrun -n $n obccl_gpu_staged"
  "$CM/tools/obcclrun" -n "$n" -- "$OUT/obccl_gpu_staged" --elems 100000 --reps 2 || status=1
done
for src in "${tests[@]}"; do
  name=$(basename "$src" .cc)
  "$CXX" -o "$OUT/$name" "$OUT/$name.cc.o" "${objs[@]}" "${libs[@]}" -lgtest -lgtest_main
  echo "=== emulated: $name"
  "$OUT/$name" --gtest_brief=1 ${GTEST_FILTER:+--gtest_filter=$GTEST_FILTER} || status=1
done
exit $status
