#!/usr/bin/env bash
# Foundation benchmark: obccl's uncompressed allreduce over TCP against Open MPI's
# MPI_Allreduce over TCP, 2 ranks on this machine's loopback, float sum, 1 KiB .. 256 MiB.
# Both run in the same invocation, alternating, and each size keeps its best of the repeats,
# so the comparison is made under the same conditions. Prints a markdown table (and writes it
# to OUT when given).
#
#   perf/foundation_vs_mpi.sh [-B BUILD_DIR] [-o OUT.md] [-r REPEATS] [-e MAXBYTES]
#
# obccl:   obcclrun -n 2 obccl_perf -t allreduce -d float -o sum  with OBCCL_TRANSPORTS=tcp
# Open MPI: mpirun --allow-run-as-root --oversubscribe -np 2 --mca btl self,tcp
#           --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo mpi_allreduce
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=build OUT="" REPEATS=2 MAXBYTES=256M
while getopts "B:o:r:e:h" opt; do
  case $opt in
    B) BUILD_DIR=$OPTARG ;;
    o) OUT=$OPTARG ;;
    r) REPEATS=$OPTARG ;;
    e) MAXBYTES=$OPTARG ;;
    *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
RUN="$BUILD_DIR/tools/obcclrun" PERF="$BUILD_DIR/perf/obccl_perf" MPI="$BUILD_DIR/perf/mpi_allreduce"
for f in "$RUN" "$PERF" "$MPI"; do
  [[ -x $f ]] || { echo "foundation_vs_mpi.sh: $f is not built" >&2; exit 1; }
done
command -v mpirun >/dev/null || { echo "foundation_vs_mpi.sh: mpirun not found" >&2; exit 1; }

TMP=$(mktemp -d /tmp/obccl-foundation.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
MPIRUN=(mpirun --allow-run-as-root --oversubscribe -np 2 --mca btl self,tcp
        --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo)
# Small sizes are fast and noisy: more iterations. Large sizes: fewer, to bound the run time.
PASSES=("-b 1K -e 512K -n 200 -w 20" "-b 1M -e 16M -n 20 -w 3" "-b 32M -e $MAXBYTES -n 5 -w 1")

run_obccl() {  # $1: pass flags, $2: csv
  OBCCL_TRANSPORTS=tcp "$RUN" -n 2 --timeout 900 -- "$PERF" -t allreduce -d float -o sum \
    -f 2 -c 1 $1 -j "$2" >"$2.log" 2>&1 || { cat "$2.log" >&2; return 1; }
}
run_mpi() {
  timeout 900 "${MPIRUN[@]}" "$MPI" -d float -f 2 -c 1 $1 -j "$2" >"$2.log" 2>&1 ||
    { cat "$2.log" >&2; return 1; }
}

for ((rep = 0; rep < REPEATS; rep++)); do
  for ((p = 0; p < ${#PASSES[@]}; p++)); do
    echo "repeat $((rep + 1))/$REPEATS: ${PASSES[$p]}" >&2
    run_obccl "${PASSES[$p]}" "$TMP/obccl.$rep.$p.csv"
    run_mpi "${PASSES[$p]}" "$TMP/mpi.$rep.$p.csv"
  done
done

# Best (lowest) time per size for each side, then one row per size.
# CSV columns: collective,size,count,type,redop,root,nranks,time_us,algbw,busbw,...
best() {
  tail -q -n +2 "$TMP"/$1.*.csv | awk -F, '{ s = $2; if (!(s in t) || $8 + 0 < t[s]) { t[s] = $8 + 0; bw[s] = $10 } }
    END { for (s in t) print s, t[s], bw[s] }'
}
best obccl | sort -n >"$TMP/obccl.best"
best mpi | sort -n >"$TMP/mpi.best"

human() { awk -v b="$1" 'BEGIN { split("B KiB MiB GiB", u, " "); i = 1;
  while (b >= 1024 && i < 4) { b /= 1024; i++ } printf "%g %s", b, u[i] }'; }
{
  echo "| size | obccl time (us) | obccl busbw (GB/s) | Open MPI time (us) | Open MPI busbw (GB/s) | obccl / Open MPI |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: |"
  join "$TMP/obccl.best" "$TMP/mpi.best" | sort -n | while read -r size ot obw mt mbw; do
    ratio=$(awk -v a="$obw" -v b="$mbw" 'BEGIN { printf (b > 0 ? "%.2f" : "-"), a / b }')
    printf "| %s | %.1f | %.3f | %.1f | %.3f | %s |\n" "$(human "$size")" "$ot" "$obw" "$mt" "$mbw" "$ratio"
  done
  echo
  echo "Rows: best of $REPEATS alternating runs per size; float sum, 2 ranks, results checked (0 wrong)."
  echo "Machine: $(nproc) cores, $(uname -sr), $(mpirun --version 2>/dev/null | head -1), obccl $(git rev-parse --short HEAD 2>/dev/null || echo '?')."
} | tee "$TMP/table.md"
if [[ -n $OUT ]]; then cp "$TMP/table.md" "$OUT"; fi
# Any wrong element fails the benchmark.
if grep -h "Out of bounds" "$TMP"/*.log | grep -q FAILED; then
  echo "foundation_vs_mpi.sh: some results were wrong" >&2
  exit 1
fi
