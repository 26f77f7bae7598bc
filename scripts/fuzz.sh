#!/usr/bin/env bash
# libFuzzer targets of test/fuzz, built with clang, ASan and UBSan in build-fuzz/.
#   scripts/fuzz.sh replay            replay the checked-in corpus, then 5 s of fresh inputs per
#                                     target (what CI runs; well under a minute)
#   scripts/fuzz.sh campaign SECONDS  fuzz every target for SECONDS, merge new coverage into the
#                                     corpus and print executions per target
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-replay}
build=build-fuzz
targets=(unique_id frame_header handshake decompress parsers tcp_stream)
flags="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
if [ ! -f $build/build.ninja ]; then
  CC=clang CXX=clang++ cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DOBCCL_BUILD_FUZZ=ON -DOBCCL_BUILD_TESTS=OFF -DOBCCL_BUILD_PERF=OFF \
    -DOBCCL_BUILD_EXAMPLES=OFF -DOBCCL_WITH_CUDA=OFF \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
fi
ninja -C $build $(printf 'fuzz_%s ' "${targets[@]}") >/dev/null
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
pass=0 fail=0
for t in "${targets[@]}"; do
  corpus=test/fuzz/corpus/$t
  mkdir -p "$corpus"
  case $mode in
    replay)
      if $build/test/fuzz/fuzz_$t -max_total_time=5 -print_final_stats=1 "$corpus" \
          >/tmp/obccl-fuzz-$t.log 2>&1; then
        pass=$((pass + 1))
        echo "fuzz_$t: ok ($(grep -o 'stat::number_of_executed_units: [0-9]*' /tmp/obccl-fuzz-$t.log | awk '{print $2}') executions)"
      else
        fail=$((fail + 1)); echo "fuzz_$t: FAILED"; tail -40 /tmp/obccl-fuzz-$t.log
      fi ;;
    campaign)
      secs=${2:?campaign needs a number of seconds}
      work=$(mktemp -d)
      if $build/test/fuzz/fuzz_$t -max_total_time="$secs" -print_final_stats=1 "$work" "$corpus" \
          >/tmp/obccl-fuzz-$t.log 2>&1; then
        pass=$((pass + 1))
      else
        fail=$((fail + 1)); echo "fuzz_$t: FAILED"; tail -40 /tmp/obccl-fuzz-$t.log
      fi
      $build/test/fuzz/fuzz_$t -merge=1 "$corpus" "$work" >/dev/null 2>&1 || true
      rm -rf "$work"
      echo "fuzz_$t: $(grep -o 'stat::number_of_executed_units: [0-9]*' /tmp/obccl-fuzz-$t.log | awk '{print $2}') executions in ${secs}s, corpus $(ls "$corpus" | wc -l) files" ;;
    *) echo "usage: $0 replay | campaign SECONDS" >&2; exit 2 ;;
  esac
done
echo "fuzz: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
