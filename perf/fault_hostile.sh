#!/usr/bin/env bash
# Long form of test/multiproc/test_fault_hostile.cc: CONNECTIONS hostile connections (garbage,
# early close, stalled, and a handshake replayed from a capture of a real rank's) against the
# bootstrap root and the tcp data listeners while a 3-rank job starts and runs; prints what
# happened to each kind, the root's RSS and the log check.
#   perf/fault_hostile.sh [CONNECTIONS=10000] [BUILD_DIR=build]
set -euo pipefail
cd "$(dirname "$0")/.."
connections=${1:-10000}
build=${2:-build}
exe=$build/test/multiproc_test_fault_hostile
[ -x "$exe" ] || { echo "fault_hostile.sh: build $exe first (ninja -C $build multiproc_test_fault_hostile)" >&2; exit 2; }
log=$(mktemp /tmp/obccl-fault-hostile.XXXXXX)
status=0
start=$(date +%s)
OBCCL_FAULT_HOSTILE_CONNECTIONS=$connections "$exe" >"$log" 2>&1 || status=$?
echo "fault_hostile: $connections connections in $(( $(date +%s) - start )) s, log $log"
grep '^FAULT_HOSTILE' "$log" | sed 's/^FAULT_HOSTILE /  /'
grep -E '^\[  (PASSED|FAILED)  \]' "$log" | sed 's/^/  /'
exit $status
