#!/usr/bin/env bash
# Hierarchical vs flat compressed allreduce on emulated hosts: 2 network namespaces made by
# test/netns/netns.sh (veth links to a bridge, every link shaped by tbf at RATE in both
# directions), 2 ranks in each. Each rank is obccl_perf -t compressed_allreduce started with
# `ip netns exec` and the launcher environment (OBCCL_RANK, OBCCL_ROOT, ...), its namespace's
# OBCCL_HOST_ID and OBCCL_SOCKET_IFNAME=eth0, so shm serves the ranks of a host and tcp the
# ranks of different hosts. For every size and round, the flat (OBCCL_HIERARCHICAL=0) and the
# hierarchical (=1) schedules run one after the other; the bytes that left both hosts' eth0
# (/sys/class/net/eth0/statistics/tx_bytes, TCP/IP headers and ACKs included) are read around
# each run, and the CPU seconds of the four ranks are taken from /usr/bin/time.
#
#   perf/hier_emulated.sh [-B BUILD_DIR] [-o OUT_DIR] [-r RATE] [-b MIN] [-e MAX] [-i ITERS]
#                         [-w WARMUP] [-R ROUNDS]
#
#   -r RATE     tbf rate of every link, or "none" (default 1gbit)
#   -b, -e      smallest and largest size in fp32 bytes, doubling (default 16M, 64M)
#   -i, -w      timed and warmup iterations per run (default 5, 1)
#   -R ROUNDS   flat/hierarchical pairs per size (default 3); the table gives medians
#   -o OUT_DIR  default perf/results: hier_emulated.md (the table) and hier_emulated.csv (runs)
#
# Per call, bytes = (tx bytes of both hosts during the run) / (ITERS + WARMUP): the few KiB of
# connection setup are included. Model (sum over both hosts): flat Np/2, hierarchical Np/4 bytes
# for Np fp32 elements. Needs root (namespaces, tc).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2; }

BUILD=build
OUT=perf/results
RATE=1gbit
MIN=16M
MAX=64M
ITERS=5
WARM=1
ROUNDS=3
while getopts "B:o:r:b:e:i:w:R:h" opt; do
  case $opt in
    B) BUILD=$OPTARG ;;
    o) OUT=$OPTARG ;;
    r) RATE=$OPTARG ;;
    b) MIN=$OPTARG ;;
    e) MAX=$OPTARG ;;
    i) ITERS=$OPTARG ;;
    w) WARM=$OPTARG ;;
    R) ROUNDS=$OPTARG ;;
    *) usage ;;
  esac
done

PERF=$BUILD/perf/obccl_perf
[[ -x $PERF ]] || { echo "hier_emulated.sh: $PERF is not built" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "hier_emulated.sh: needs root (network namespaces, tc)" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "hier_emulated.sh: needs /usr/bin/time" >&2; exit 1; }

export OBCCL_NETNS_PREFIX="obhe$$"
NETNS=test/netns/netns.sh
TMP=$(mktemp -d /tmp/hier_emulated.XXXXXX)
cleanup() { bash "$NETNS" down >/dev/null 2>&1 || true; rm -rf "$TMP"; }
trap cleanup EXIT
mkdir -p "$OUT"

if [[ $RATE == none ]]; then
  bash "$NETNS" up 2
else
  bash "$NETNS" up 2 "$RATE"
fi
SECRET=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
PORT=29400

txBytes() { ip netns exec "${OBCCL_NETNS_PREFIX}-h$1" cat /sys/class/net/eth0/statistics/tx_bytes; }
toBytes() { numfmt --from=iec "${1%iB}"; }

# One run: 4 ranks, one size, one schedule. Prints "time_us bytes_per_call cpu_s_per_call".
runOne() {
  local mode=$1 size=$2 r h before after
  PORT=$((PORT + 1))
  before=$(($(txBytes 0) + $(txBytes 1)))
  local -a pids=()
  for r in 0 1 2 3; do
    h=$((r / 2))
    env OBCCL_RANK=$r OBCCL_WORLD_SIZE=4 OBCCL_ROOT="198.18.0.1:$PORT" OBCCL_SECRET="$SECRET" \
      OBCCL_HOST_ID="emulated-host-$h" OBCCL_SOCKET_IFNAME=eth0 OBCCL_TRANSPORTS=shm,tcp \
      OBCCL_HIERARCHICAL="$mode" OBCCL_TIMEOUT_MS=120000 \
      ip netns exec "${OBCCL_NETNS_PREFIX}-h$h" /usr/bin/time -f "%U %S" -o "$TMP/cpu$r" \
      "$PERF" -t compressed_allreduce -b "$size" -e "$size" -n "$ITERS" -w "$WARM" -c 0 \
      -j "$TMP/run$r.csv" >"$TMP/log$r" 2>&1 &
    pids+=($!)
  done
  local failed=0
  for r in 0 1 2 3; do wait "${pids[$r]}" || failed=1; done
  if ((failed)); then
    echo "hier_emulated.sh: a rank failed (mode $mode, size $size):" >&2
    cat "$TMP"/log* >&2
    exit 1
  fi
  after=$(($(txBytes 0) + $(txBytes 1)))
  local us cpu
  us=$(awk -F, 'NR == 2 { print $8 }' "$TMP/run0.csv")
  cpu=$(cat "$TMP"/cpu[0-3] | awk '{ s += $1 + $2 } END { print s }')
  awk -v us="$us" -v b=$((after - before)) -v cpu="$cpu" -v calls=$((ITERS + WARM)) \
    'BEGIN { printf "%s %.0f %.4f\n", us, b / calls, cpu / calls }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

CSV=$OUT/hier_emulated.csv
echo "rate,size_bytes,round,schedule,time_us,interhost_bytes_per_call,cpu_s_per_call" >"$CSV"
size=$(toBytes "$MIN")
max=$(toBytes "$MAX")
while ((size <= max)); do
  for ((round = 1; round <= ROUNDS; round++)); do
    for mode in 0 1; do
      read -r us bytes cpu < <(runOne "$mode" "$size")
      name=$([[ $mode == 0 ]] && echo flat || echo hierarchical)
      echo "$RATE,$size,$round,$name,$us,$bytes,$cpu" >>"$CSV"
      echo "size $size round $round $name: ${us} us, $bytes inter-host B/call, $cpu CPU s/call" >&2
    done
  done
  size=$((size * 2))
done

# The table: medians over the rounds.
MD=$OUT/hier_emulated.md
{
  echo "| size | flat time (ms) | hier time (ms) | hier/flat time | flat inter-host B/call | hier inter-host B/call | hier/flat bytes | model flat / hier B | flat CPU s/call* | hier CPU s/call* |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for size in $(awk -F, 'NR > 1 { print $2 }' "$CSV" | sort -un); do
    col() { awk -F, -v s="$size" -v m="$1" -v c="$2" 'NR > 1 && $2 == s && $4 == m { print $c }' "$CSV" | median; }
    ft=$(col flat 5) ht=$(col hierarchical 5)
    fb=$(col flat 6) hb=$(col hierarchical 6)
    fc=$(col flat 7) hc=$(col hierarchical 7)
    np=$((size / 4))
    awk -v s="$size" -v ft="$ft" -v ht="$ht" -v fb="$fb" -v hb="$hb" -v fc="$fc" -v hc="$hc" \
      -v np="$np" 'BEGIN {
        printf "| %d MiB | %.1f | %.1f | %.2f | %.0f | %.0f | %.3f | %d / %d | %.3f | %.3f |\n",
          s / 1048576, ft / 1000, ht / 1000, ht / ft, fb, hb, hb / fb, np / 2, np / 4, fc, hc }'
  done
} | tee "$MD"
{
  echo
  echo "rate $RATE, $ROUNDS round(s) of $ITERS+$WARM calls per run, medians; *: CPU seconds of the"
  echo "four ranks per run (start-up included) / calls; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$MD"
