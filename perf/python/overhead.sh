#!/usr/bin/env bash
# Python layer overhead on a 64 MiB compressed allreduce, 2 ranks: obccl_perf (C API) and
# perf/python/overhead.py (obccl Python package), alternated three times in one run.
#   perf/python/overhead.sh [build-dir] [venv]
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
venv=${2:-.venv}
export OBCCL_LIBRARY=$PWD/$build/src/api/libobccl.so PYTHONPATH=$PWD/python
for round in 1 2 3; do
  "$build/tools/obcclrun" -n 2 -- "$build/perf/obccl_perf" -t compressed_allreduce -d float \
    -b 64M -e 64M -n 10 -w 2 -c 0 | grep -E '^\s*67108864' | awk '{print "C    compressed_allreduce 67108864 bytes: mean " $6 " us over 10 calls"}'
  "$build/tools/obcclrun" -n 2 -- "$venv/bin/python" perf/python/overhead.py --bytes $((64 << 20)) -n 10 -w 2
done
