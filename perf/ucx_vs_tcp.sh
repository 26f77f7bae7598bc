#!/usr/bin/env bash
# obccl's allreduce over its UCX transport (UCX_TLS=tcp, so UCX also runs over TCP on loopback)
# against the same allreduce over obccl's own TCP transport, 2 ranks, float sum, large
# messages. The two alternate in one invocation; each size keeps its best time over the
# repeats. Target (issue 4): UCX within 10% of TCP (busbw ratio >= 0.90).
#
#   perf/ucx_vs_tcp.sh [-B BUILD_DIR] [-o OUT.md] [-N RANKS] [-r REPEATS] [-b MIN] [-e MAX]
#                      [-t COLL] [-T SECONDS]
#
#   -N RANKS    rank count (default 2)
#   -r REPEATS  alternating repeats, best time kept (default 3)
#   -b, -e      size range in bytes (default 1M, 256M)
#   -t COLL     obccl_perf collective (default allreduce; e.g. compressed_allreduce)
#   -o OUT.md   also write the table there
#
# tcp: OBCCL_TRANSPORTS=tcp obcclrun -n N obccl_perf -t allreduce -d float -o sum
# ucx: OBCCL_TRANSPORTS=ucx UCX_TLS=tcp UCX_NET_DEVICES=lo  (same command)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=build OUT="" RANKS=2 REPEATS=3 MIN=1M MAX=256M COLL=allreduce TIMEOUT=900
while getopts "B:o:N:r:b:e:t:T:h" opt; do
  case $opt in
    B) BUILD_DIR=$OPTARG ;;
    o) OUT=$OPTARG ;;
    N) RANKS=$OPTARG ;;
    r) REPEATS=$OPTARG ;;
    b) MIN=$OPTARG ;;
    e) MAX=$OPTARG ;;
    t) COLL=$OPTARG ;;
    T) TIMEOUT=$OPTARG ;;
    *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2 ;;
  esac
done
RUN="$BUILD_DIR/tools/obcclrun" PERF="$BUILD_DIR/perf/obccl_perf"
for f in "$RUN" "$PERF"; do
  [[ -x $f ]] || { echo "ucx_vs_tcp.sh: $f is not built" >&2; exit 1; }
done
TMP=$(mktemp -d /tmp/obccl-ucxtcp.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
OP=(-o sum)
[[ $COLL == compressed_allreduce ]] && OP=()

toBytes() { numfmt --from=iec "${1%iB}"; }
# The commit of the source tree the build directory was configured from (uncommitted changes
# in that tree are not visible here).
buildCommit() {
  local src
  src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null)
  git -C "${src:-.}" rev-parse --short HEAD 2>/dev/null || echo '?'
}
passes() {  # large sizes get fewer iterations
  local min max lo hi
  min=$(toBytes "$MIN") max=$(toBytes "$MAX") lo=$min
  hi=$((max < (8 << 20) ? max : (8 << 20)))
  ((lo <= hi)) && echo "$lo $hi 20 3" && lo=$((hi * 2))
  ((lo <= max)) && echo "$lo $max 5 1"
  return 0
}

runSide() {  # $1 tcp|ucx, $2 "min max iters warmup", $3 csv
  local b e it w load0
  read -r b e it w <<<"$2"
  load0=$(cut -d' ' -f1 /proc/loadavg)
  echo "[$(date +%T) load $load0] $1 $b..$e x$it" >&2
  local env=(OBCCL_TRANSPORTS=tcp)
  [[ $1 == ucx ]] && env=(OBCCL_TRANSPORTS=ucx UCX_TLS=tcp UCX_NET_DEVICES=lo)
  env "${env[@]}" "$RUN" -n "$RANKS" --timeout "$TIMEOUT" -- "$PERF" -t "$COLL" -d float "${OP[@]}" \
    -f 2 -c 1 -b "$b" -e "$e" -n "$it" -w "$w" -j "$3" >"$3.log" 2>&1 || { cat "$3.log" >&2; return 1; }
  echo "$load0/$(cut -d' ' -f1 /proc/loadavg)" >"$3.load"
}

best() {
  tail -q -n +2 "$TMP"/$1.*.csv | awk -F, '{ s = $2; if (!(s in t) || $8 + 0 < t[s]) { t[s] = $8 + 0; bw[s] = $10 } }
    END { for (s in t) print s, t[s], bw[s] }' | sort -n
}
human() { numfmt --to=iec-i --suffix=B "$1" | sed 's/\([0-9]\)\([A-Z]\)/\1 \2/'; }

mapfile -t PASSES < <(passes)
for ((rep = 0; rep < REPEATS; rep++)); do
  for ((p = 0; p < ${#PASSES[@]}; p++)); do
    runSide tcp "${PASSES[$p]}" "$TMP/tcp.$rep.$p.csv"
    runSide ucx "${PASSES[$p]}" "$TMP/ucx.$rep.$p.csv"
  done
done
loads=$(cat "$TMP"/*.load | tr '/' '\n' | sort -n | sed -n '1p;$p' | paste -sd' ')
{
  echo "| size | tcp time (us) | tcp busbw (GB/s) | ucx time (us) | ucx busbw (GB/s) | ucx / tcp busbw |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: |"
  join <(best tcp) <(best ucx) | sort -n | while read -r size tt tbw ut ubw; do
    ratio=$(awk -v a="$ubw" -v b="$tbw" 'BEGIN { printf (b > 0 ? "%.2f" : "-"), a / b }')
    printf "| %s | %.1f | %.3f | %.1f | %.3f | %s |\n" "$(human "$size")" "$tt" "$tbw" "$ut" "$ubw" "$ratio"
  done
  echo
  join <(best tcp) <(best ucx) | awk '{ r = $3 > 0 ? $5 / $3 : 0; if (NR == 1 || r < lo) { lo = r; at = $1 }
      if (r < 0.9) miss++ }
    END { printf "Lowest ucx / tcp busbw ratio %.2f at %d B; %d of %d sizes below 0.90 (%s).\n",
          lo, at, miss, NR, miss ? "missed" : "met" }'
  echo "Rows: best of $REPEATS alternating runs per size; $COLL, float, $RANKS ranks, results checked. Load average $loads."
  echo "Machine: $(nproc) cores, $(uname -sr), UCX $(ucx_info -v 2>/dev/null | sed -n 's/^# Version //p'), obccl $(buildCommit)."
} | tee "$TMP/table.md"
if [[ -n $OUT ]]; then cp "$TMP/table.md" "$OUT"; fi
if grep -h "Out of bounds" "$TMP"/*.log | grep -q FAILED; then
  echo "ucx_vs_tcp.sh: some results were wrong" >&2
  exit 1
fi
