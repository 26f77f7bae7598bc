#!/usr/bin/env bash
# GPU check of obccl's device kernels, for a machine with an NVIDIA GPU and CUDA under
# /usr/local/cuda. Installs nothing and needs no network. Takes a few minutes on one H200.
#
#   perf/gpu_check.sh [build-dir]      (default: build-gpu-check in the repository)
#
# 1. configures a Release build with CUDA (tests on; if that fails, e.g. no GoogleTest, hwloc or
#    OpenSSL headers, tests off; if CMake still fails or is missing, step 2 uses nvcc directly),
# 2. builds only obccl_device, the GPU unit tests and obccl_gpu_check (-j$JOBS); without CMake,
#    nvcc builds obccl_gpu_check and, when GoogleTest is installed, the GPU unit tests,
# 3. runs the GPU-labelled tests (ctest -L gpu, or the test binaries directly),
# 4. runs obccl_gpu_staged under obcclrun with 2, 3 and 4 ranks sharing the GPU (the compressed
#    allreduce's staged device path, docs/DEVICE_PATH.md; CMake build only), keeping its rows,
# 5. runs obccl_gpu_check, which times every fused kernel against a device-to-device memcpy of the
#    same bytes, checks its outputs bitwise against the host reference, and prints its table; the
#    staged rows (time per call, #wrong against the same calls on host buffers) follow it, last.
#
# Environment: JOBS (16), CUDA_HOME (/usr/local/cuda), CUDA_ARCHS (CMake list, default: the GPU's
# own, e.g. "90-real"), GPU_CHECK_ARGS (extra obccl_gpu_check flags, e.g. "--elems 16777216"),
# GPU_CHECK_FORCE_NVCC=1 (skip CMake), STAGED_ELEMS (elements per rank of the staged rows,
# 16777216). Exit status: 0 when everything built and passed.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${1:-$ROOT/build-gpu-check}
JOBS=${JOBS:-16}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
NVCC=$CUDA_HOME/bin/nvcc
export PATH="$CUDA_HOME/bin:$PATH"
START=$(date +%s)
STATUS=0
SUMMARY=()

step() { printf '\n=== gpu_check.sh [%3ds]: %s ===\n' "$(($(date +%s) - START))" "$*"; }
run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  "$@"
}
note() { SUMMARY+=("$*"); }

step "environment"
echo "repository: $ROOT"
echo "build dir:  $BUILD"
run nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv ||
  echo "(nvidia-smi failed)"
if [[ ! -x $NVCC ]]; then
  echo "gpu_check.sh: no nvcc at $NVCC (set CUDA_HOME)" >&2
  exit 2
fi
"$NVCC" --version | tail -n 2

if [[ -z ${CUDA_ARCHS:-} ]]; then
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
  if [[ $cap =~ ^[0-9]+$ ]]; then
    CUDA_ARCHS="${cap}-real"
  else
    CUDA_ARCHS="80-real;90-real;90-virtual"
  fi
fi
echo "CUDA architectures: $CUDA_ARCHS"

# --- 1. configure ---------------------------------------------------------------------------
MODE=nvcc
TESTS=OFF
if [[ ${GPU_CHECK_FORCE_NVCC:-0} != 1 ]] && command -v cmake >/dev/null; then
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  for tests in ON OFF; do
    step "configure with CMake (tests $tests)"
    rm -rf "$BUILD/CMakeCache.txt" "$BUILD/CMakeFiles"
    if run cmake -S "$ROOT" -B "$BUILD" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
      -DOBCCL_WITH_CUDA=ON -DOBCCL_WITH_UCX=OFF -DOBCCL_BUILD_TESTS=$tests \
      -DOBCCL_BUILD_PERF=ON -DOBCCL_BUILD_EXAMPLES=OFF -DCMAKE_CUDA_COMPILER="$NVCC" \
      "-DOBCCL_CUDA_ARCHITECTURES=$CUDA_ARCHS"; then
      MODE=cmake
      TESTS=$tests
      break
    fi
    echo "gpu_check.sh: CMake configuration with tests $tests failed"
  done
elif [[ ${GPU_CHECK_FORCE_NVCC:-0} != 1 ]]; then
  echo "gpu_check.sh: cmake not found"
fi

# --- 2. build -------------------------------------------------------------------------------
CHECK=""
if [[ $MODE == cmake ]]; then
  targets=(obccl_device obccl_gpu_check obccl obcclrun obccl_gpu_staged)
  if [[ $TESTS == ON ]]; then
    for src in "$ROOT"/test/unit/test_gpu_*.cc; do
      targets+=("unit_$(basename "$src" .cc)")
    done
    for src in "$ROOT"/test/multirank/test_gpu_*.cc; do
      targets+=("multirank_$(basename "$src" .cc)")
    done
  fi
  step "build ${targets[*]}"
  if run cmake --build "$BUILD" -j "$JOBS" --target "${targets[@]}"; then
    CHECK=$BUILD/perf/gpu/obccl_gpu_check
    note "built with CMake: ${targets[*]}"
  else
    echo "gpu_check.sh: CMake build failed; falling back to nvcc for obccl_gpu_check"
    TESTS=OFF
    MODE=nvcc
    STATUS=1
    note "CMake build FAILED (see above); unit tests not run"
  fi
fi

# nvcc_jobs: compiles "src obj [flags...]" lines from stdin, JOBS at a time; fails if any did.
nvcc_jobs() {
  local failed=$OUT/failed src obj extra running=0
  rm -f "$failed"
  while read -r src obj extra; do
    # shellcheck disable=SC2086  # extra is a list of flags
    (run "$NVCC" "${flags[@]}" $extra -c "$src" -o "$obj" </dev/null || touch "$failed") &
    running=$((running + 1))
    if ((running >= JOBS)); then
      wait -n
      running=$((running - 1))
    fi
  done
  wait
  [[ ! -e $failed ]]
}

GTEST_BINS=()
if [[ $MODE == nvcc ]]; then
  OUT=$BUILD/nvcc-fallback
  step "build obccl_gpu_check with nvcc directly (no CMake) into $OUT"
  mkdir -p "$OUT"
  gencode=()
  IFS=';' read -r -a archs <<<"$CUDA_ARCHS"
  for a in "${archs[@]}"; do
    num=${a%%-*}
    case $a in
      *-real) gencode+=("-gencode=arch=compute_$num,code=sm_$num") ;;
      *-virtual) gencode+=("-gencode=arch=compute_$num,code=compute_$num") ;;
      *) gencode+=("-gencode=arch=compute_$num,code=[sm_$num,compute_$num]") ;;
    esac
  done
  flags=(-O3 -DNDEBUG -std=c++17 -fmad=false -Xcompiler=-ffp-contract=off "${gencode[@]}"
    "-I$ROOT/src" "-I$ROOT/include" "-I$ROOT/perf/gpu" "-I$ROOT/test/unit")
  nccl=""
  if [[ -f $CUDA_HOME/include/nccl.h ]] && ls "$CUDA_HOME"/lib*/libnccl.so >/dev/null 2>&1; then
    nccl="-DOBCCL_HAVE_NCCL=1"
  fi
  lib_objs=()
  : >"$OUT/lib.list"
  for src in "$ROOT"/src/device/*.cu "$ROOT"/src/device/*.cc "$ROOT/src/util/status.cc" \
    "$ROOT/src/util/log.cc"; do
    obj="$OUT/lib_$(basename "$src").o"
    lib_objs+=("$obj")
    echo "$src $obj $nccl" >>"$OUT/lib.list"
  done
  check_objs=()
  for src in "$ROOT"/perf/gpu/*.cu; do
    obj="$OUT/check_$(basename "$src").o"
    check_objs+=("$obj")
    echo "$src $obj" >>"$OUT/lib.list"
  done
  linkflags=("${gencode[@]}" -lpthread)
  [[ -n $nccl ]] && linkflags+=("-L$CUDA_HOME/lib64" -lnccl "-Xlinker=-rpath=$CUDA_HOME/lib64")
  if nvcc_jobs <"$OUT/lib.list" &&
    run "$NVCC" -o "$OUT/obccl_gpu_check" "${check_objs[@]}" "${lib_objs[@]}" "${linkflags[@]}"; then
    CHECK=$OUT/obccl_gpu_check
    note "built obccl_gpu_check with nvcc directly (CMake unavailable or failed)"
  else
    note "nvcc build of obccl_gpu_check FAILED"
    STATUS=1
  fi

  # The GPU unit tests need GoogleTest (headers and libgtest); they compare with the CPU codec.
  if [[ -n $CHECK ]] && echo '#include <gtest/gtest.h>' | g++ -std=c++17 -x c++ -fsyntax-only - 2>/dev/null; then
    step "build the GPU unit tests with nvcc (GoogleTest found)"
    codec_objs=()
    : >"$OUT/test.list"
    for src in "$ROOT"/src/codec/*.cc "$ROOT/src/util/params.cc"; do
      obj="$OUT/codec_$(basename "$src").o"
      codec_objs+=("$obj")
      case $(basename "$src") in
        *avx512*) extra="-Xcompiler=-mavx2,-mfma,-mf16c,-mavx512f,-mavx512bw,-mavx512vl" ;;
        *avx2*) extra="-Xcompiler=-mavx2,-mfma,-mf16c" ;;
        *) extra="" ;;
      esac
      echo "$src $obj $extra" >>"$OUT/test.list"
    done
    for src in "$ROOT"/test/unit/test_gpu_*.cc; do
      echo "$src $OUT/$(basename "$src" .cc).o" >>"$OUT/test.list"
    done
    if nvcc_jobs <"$OUT/test.list"; then
      for src in "$ROOT"/test/unit/test_gpu_*.cc; do
        name=$(basename "$src" .cc)
        if run "$NVCC" -o "$OUT/$name" "$OUT/$name.o" "${codec_objs[@]}" "${lib_objs[@]}" \
          "${linkflags[@]}" -lgtest -lgtest_main; then
          GTEST_BINS+=("$OUT/$name")
        else
          STATUS=1
          note "link of $name FAILED"
        fi
      done
    else
      STATUS=1
      note "nvcc build of the GPU unit tests FAILED"
    fi
  else
    note "GoogleTest not found: GPU unit tests not built"
  fi
fi

# --- 3. GPU unit tests ----------------------------------------------------------------------
if [[ $TESTS == ON ]]; then
  step "GPU unit tests: ctest -L gpu"
  if (cd "$BUILD" && run ctest -L gpu -j 8 --timeout 300 --output-on-failure); then
    note "ctest -L gpu: passed"
  else
    note "ctest -L gpu: FAILED (see above)"
    STATUS=1
  fi
elif ((${#GTEST_BINS[@]} > 0)); then
  for bin in "${GTEST_BINS[@]}"; do
    step "GPU unit tests: $(basename "$bin")"
    if run timeout 300 "$bin" --gtest_brief=1; then
      note "$(basename "$bin"): passed"
    else
      note "$(basename "$bin"): FAILED (see above)"
      STATUS=1
    fi
  done
elif [[ $MODE == cmake ]]; then
  note "GPU unit tests not run (configured without tests: GoogleTest missing?)"
fi

# --- 4. staged device path with ranks sharing the GPU (rows printed after the table) -----------
STAGED_ROWS=()
if [[ $MODE == cmake && -x $BUILD/perf/gpu/obccl_gpu_staged && -x $BUILD/tools/obcclrun ]]; then
  for n in 2 3 4; do
    step "staged device path: obcclrun -n $n obccl_gpu_staged"
    out=$BUILD/staged_$n.log
    if run timeout 120 "$BUILD/tools/obcclrun" -n "$n" -- "$BUILD/perf/gpu/obccl_gpu_staged" \
      --elems "${STAGED_ELEMS:-16777216}" --reps 10 >"$out" 2>&1; then
      note "obccl_gpu_staged -n $n: passed"
    else
      note "obccl_gpu_staged -n $n: FAILED (see $out)"
      STATUS=1
    fi
    tail -n 5 "$out"
    row=$(grep -m1 '^STAGED_ROW' "$out" || true)
    STAGED_ROWS+=("${row:-STAGED_ROW $n - - - - - - FAILED}")
  done
else
  note "staged device path not checked (needs the CMake build of libobccl and obcclrun)"
fi

# --- 5. kernel check (its table, then the staged rows, are the last output) ------------------
step "summary so far"
printf '  %s\n' "${SUMMARY[@]}"
if [[ -z $CHECK ]]; then
  echo "gpu_check.sh: no obccl_gpu_check to run" >&2
  exit 1
fi
step "kernel check: obccl_gpu_check ${GPU_CHECK_ARGS:-}"
# shellcheck disable=SC2086  # GPU_CHECK_ARGS is a list of flags
run timeout 240 "$CHECK" ${GPU_CHECK_ARGS:-} || STATUS=1
if ((${#STAGED_ROWS[@]} > 0)); then
  printf '\ncompressed allreduce on device buffers, ranks sharing the GPU (staged path, obcclrun -n N;\n'
  printf 'median ms per call of the slowest rank, device calls with their stream sync; #wrong:\n'
  printf 'output and error-buffer elements differing from the same calls on host buffers)\n'
  printf '%-16s %-5s %11s %10s %10s %10s %7s %s\n' "ranks" "type" "elements" "MiB" "device_ms" \
    "host_ms" "#wrong" "bitwise"
  for row in "${STAGED_ROWS[@]}"; do
    read -r _ ranks type elems mib dev host wrong ok <<<"$row"
    printf '%-16s %-5s %11s %10s %10s %10s %7s %s\n' "staged_n$ranks" "$type" "$elems" "$mib" \
      "$dev" "$host" "$wrong" "$ok"
  done
fi
exit $STATUS
