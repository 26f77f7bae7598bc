#!/usr/bin/env bash
# obccl's allreduce over its shared-memory transport against Open MPI's MPI_Allreduce over its
# shared-memory BTL (vader), float sum, 8 B .. 256 MiB, for each rank count. The two sides
# alternate in one invocation and each size keeps its best time over the repeats. Target
# (issue 4): obccl's busbw >= Open MPI's from 64 KiB up, and 8-byte latency no worse.
#
#   perf/shm_vs_vader.sh [-B BUILD_DIR] [-o OUT.md] [-N RANKS] [-r REPEATS] [-b MIN] [-e MAX]
#                        [-T SECONDS]
#
#   -N RANKS    comma list of rank counts (default 2,4)
#   -r REPEATS  alternating repeats, best time kept (default 2)
#   -b, -e      size range in bytes (default 8, 256M)
#   -o OUT.md   also write the table there (default: print only)
#
# obccl:    OBCCL_TRANSPORTS=shm obcclrun -n N obccl_perf -t allreduce -d float -o sum
# Open MPI: mpirun --allow-run-as-root --oversubscribe -np N --mca btl self,vader mpi_allreduce
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=build OUT="" RANKS=2,4 REPEATS=2 MIN=8 MAX=256M TIMEOUT=900
while getopts "B:o:N:r:b:e:T:h" opt; do
  case $opt in
    B) BUILD_DIR=$OPTARG ;;
    o) OUT=$OPTARG ;;
    N) RANKS=$OPTARG ;;
    r) REPEATS=$OPTARG ;;
    b) MIN=$OPTARG ;;
    e) MAX=$OPTARG ;;
    T) TIMEOUT=$OPTARG ;;
    *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2 ;;
  esac
done
RUN="$BUILD_DIR/tools/obcclrun" PERF="$BUILD_DIR/perf/obccl_perf" MPI="$BUILD_DIR/perf/mpi_allreduce"
for f in "$RUN" "$PERF" "$MPI"; do
  [[ -x $f ]] || { echo "shm_vs_vader.sh: $f is not built" >&2; exit 1; }
done
TMP=$(mktemp -d /tmp/obccl-shmvader.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

toBytes() { numfmt --from=iec "${1%iB}"; }
# The commit of the source tree the build directory was configured from (uncommitted changes
# in that tree are not visible here).
buildCommit() {
  local src
  src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null)
  git -C "${src:-.}" rev-parse --short HEAD 2>/dev/null || echo '?'
}
# Size ranges with iteration counts: latency-bound sizes need many iterations to be stable.
passes() {
  local min max lo hi
  min=$(toBytes "$MIN") max=$(toBytes "$MAX") lo=$min
  hi=$((max < (32 << 10) ? max : (32 << 10)))
  ((lo <= hi)) && echo "$lo $hi 200 20" && lo=$((hi * 2))
  hi=$((max < (4 << 20) ? max : (4 << 20)))
  ((lo <= hi)) && echo "$lo $hi 50 5" && lo=$((hi * 2))
  ((lo <= max)) && echo "$lo $max 5 1"
  return 0
}

# $1 side (obccl|mpi), $2 ranks, $3 "min max iters warmup", $4 csv; rows tagged with the load.
runSide() {
  local b e it w
  read -r b e it w <<<"$3"
  local args=(-d float -f 2 -c 1 -b "$b" -e "$e" -n "$it" -w "$w" -j "$4")
  local load0
  load0=$(cut -d' ' -f1 /proc/loadavg)
  echo "[$(date +%T) load $load0] $1 n=$2 $b..$e x$it" >&2
  if [[ $1 == obccl ]]; then
    OBCCL_TRANSPORTS=shm "$RUN" -n "$2" --timeout "$TIMEOUT" -- "$PERF" -t allreduce -o sum \
      "${args[@]}" >"$4.log" 2>&1 || { cat "$4.log" >&2; return 1; }
  else
    timeout "$TIMEOUT" mpirun --allow-run-as-root --oversubscribe -np "$2" --mca btl self,vader \
      "$MPI" "${args[@]}" >"$4.log" 2>&1 || { cat "$4.log" >&2; return 1; }
  fi
  echo "$load0/$(cut -d' ' -f1 /proc/loadavg)" >"$4.load"
}

human() { numfmt --to=iec-i --suffix=B "$1" | sed 's/\([0-9]\)\([A-Z]\)/\1 \2/'; }

# Best (lowest) time per size over the repeats: "size time_us busbw".
best() {
  tail -q -n +2 "$TMP"/$1.*.csv | awk -F, '{ s = $2; if (!(s in t) || $8 + 0 < t[s]) { t[s] = $8 + 0; bw[s] = $10 } }
    END { for (s in t) print s, t[s], bw[s] }' | sort -n
}

table() {  # $1 ranks
  local n=$1 loads
  loads=$(cat "$TMP"/*.n$n.*.load | tr '/' '\n' | sort -n | sed -n '1p;$p' | paste -sd' ')
  echo "### $n ranks"
  echo
  echo "| size | obccl time (us) | obccl busbw (GB/s) | Open MPI time (us) | Open MPI busbw (GB/s) | obccl / Open MPI busbw |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: |"
  join <(best "obccl.n$n") <(best "mpi.n$n") | sort -n | while read -r size ot obw mt mbw; do
    ratio=$(awk -v a="$obw" -v b="$mbw" 'BEGIN { printf (b > 0 ? "%.2f" : "-"), a / b }')
    printf "| %s | %.1f | %.3f | %.1f | %.3f | %s |\n" "$(human "$size")" "$ot" "$obw" "$mt" "$mbw" "$ratio"
  done
  echo
  join <(best "obccl.n$n") <(best "mpi.n$n") | sort -n | awk -v n="$n" -v l="$loads" '
    NR == 1 { lat = sprintf("%g B latency: obccl %.1f us, Open MPI %.1f us (%s)", $1, $2, $4,
                            $2 <= $4 ? "met" : "missed") }
    $1 >= 65536 { k++; r = $5 > 0 ? $3 / $5 : 0; if (k == 1 || r < lo) { lo = r; at = $1 }
                  if (r < 1) miss++ }
    END { printf "%d ranks: %s; busbw from 64 KiB up: lowest obccl / Open MPI ratio %.2f at %d B, %d of %d sizes below 1 (%s). Load average %s.\n\n",
          n, lat, lo, at, miss, k, miss ? "missed" : "met", l }'
}

mapfile -t PASSES < <(passes)
for ((rep = 0; rep < REPEATS; rep++)); do
  for n in ${RANKS//,/ }; do
    for ((p = 0; p < ${#PASSES[@]}; p++)); do
      runSide obccl "$n" "${PASSES[$p]}" "$TMP/obccl.n$n.$rep.$p.csv"
      runSide mpi "$n" "${PASSES[$p]}" "$TMP/mpi.n$n.$rep.$p.csv"
    done
  done
done
{
  for n in ${RANKS//,/ }; do table "$n"; done
  echo "Rows: best of $REPEATS alternating runs per size; float sum, results checked."
  echo "Machine: $(nproc) cores, $(uname -sr), $(mpirun --version 2>/dev/null | head -1), obccl $(buildCommit)."
} | tee "$TMP/table.md"
if [[ -n $OUT ]]; then cp "$TMP/table.md" "$OUT"; fi
if grep -h "Out of bounds" "$TMP"/*.log | grep -q FAILED; then
  echo "shm_vs_vader.sh: some results were wrong" >&2
  exit 1
fi
