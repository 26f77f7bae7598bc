#!/usr/bin/env bash
# Builds and runs the CTest suite under sanitizers, each in its own build folder.
#   scripts/sanitize.sh asan  [--quick]   AddressSanitizer + UndefinedBehaviorSanitizer
#   scripts/sanitize.sh tsan  [--quick]   ThreadSanitizer
# --quick runs the unit and multi-rank suites only (what CI runs); without it every non-GPU test.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:?usage: scripts/sanitize.sh asan|tsan [--quick]}
quick=${2:-}
case $kind in
  asan) san="address,undefined"
        export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1
        export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp"
        export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ;;
  tsan) san="thread"
        export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/scripts/tsan.supp" ;;
  *) echo "unknown sanitizer '$kind' (asan or tsan)" >&2; exit 2 ;;
esac
build=build-$kind
if [ ! -f $build/build.ninja ]; then
  cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOBCCL_SANITIZE=$san \
    -DOBCCL_WITH_CUDA=OFF -DOBCCL_BUILD_PERF=OFF -DOBCCL_BUILD_EXAMPLES=OFF >/dev/null
fi
ninja -C $build -j"$(nproc)" >/dev/null
args=(--test-dir $build --output-on-failure --timeout 600 -j 2 -LE "gpu")
if [ "$quick" = "--quick" ]; then
  args+=(-L "unit|multirank")
fi
# UCX runs uninstrumented code on its own threads; TSan cannot see its synchronisation.
if [ "$kind" = tsan ]; then
  export OBCCL_TRANSPORTS=${OBCCL_TRANSPORTS:-shm,tcp}
  args+=(-E "ucx|Ucx|UCX")
fi
ctest "${args[@]}"
