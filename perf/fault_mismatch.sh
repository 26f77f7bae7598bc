#!/usr/bin/env bash
# Long form of test/multiproc/test_fault_mismatch.cc: SEEDS seeded mismatches (collective,
# count, datatype, op, root, compressed vs uncompressed) and SEEDS jobs with corrupted compressed
# payloads (OBCCL_TEST_CORRUPT_RX) per transport; prints the detection counts.
#   perf/fault_mismatch.sh [SEEDS=100] [BUILD_DIR=build]
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-100}
build=${2:-build}
exe=$build/test/multiproc_test_fault_mismatch
[ -x "$exe" ] || { echo "fault_mismatch.sh: build $exe first (ninja -C $build multiproc_test_fault_mismatch)" >&2; exit 2; }
log=$(mktemp /tmp/obccl-fault-mismatch.XXXXXX)
status=0
OBCCL_FAULT_MISMATCH_SEEDS=$seeds OBCCL_FAULT_CORRUPT_SEEDS=$seeds "$exe" >"$log" 2>&1 || status=$?
echo "fault_mismatch: $seeds seeds per transport and check, log $log"
grep -E '^FAULT_(MISMATCH|CORRUPT)_SUMMARY|^FAULT_CHECKSUM' "$log" | sed 's/^/  /'
grep -E '^\[  (PASSED|FAILED)  \]' "$log" | sed 's/^/  /'
exit $status
