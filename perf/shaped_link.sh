#!/usr/bin/env bash
# Compressed allreduce on a shaped link: obccl's 1-bit compressed allreduce, its fp32 and bf16
# allreduce, and Open MPI's MPI_Allreduce, all over TCP on loopback inside a fresh network
# namespace (unshare -n) whose lo is shaped by tc tbf (which on lo shapes both directions
# together, so all ranks share RATE), at each rate given and unshaped. Writes a markdown table,
# a merged CSV and one PNG per rank count (time vs size, one panel per rate).
#
#   perf/shaped_link.sh [-B BUILD_DIR] [-o OUT_DIR] [-r RATES] [-N RANKS] [-b MIN] [-e MAX]
#                       [-i ITERS] [-m METHODS] [-c 0|1] [-T SECONDS]
#
#   -r RATES    comma list of tbf rates, "none" = unshaped (default 1gbit,10gbit,none)
#   -N RANKS    comma list of rank counts (default 2,4)
#   -b, -e      smallest and largest size in fp32 bytes (default 64K, 256M); every method
#               moves the same element count, so bf16 rows carry half these bytes
#   -i ITERS    timed iterations from 16 MiB up (default 3; smaller sizes use more)
#   -m METHODS  comma list of compressed, fp32, bf16, mpi (default all four), and
#               compressedB<B>: compressed with OBCCL_COMPRESS_BLOCK=B (e.g. compressedB4096;
#               unchecked: obccl_perf's expected values model compressBlock 0 only)
#   -c 0|1      check results (default 1)
#   -T SECONDS  limit per benchmark run (default 900)
#   -o OUT_DIR  default perf/results: shaped_link.md, shaped_link.csv, shaped_link_n<N>.png
#
#   perf/shaped_link.sh --veth RATE [BUILD_DIR] [MAX] [ITERS]
#               2 ranks on 2 emulated hosts (test/netns/netns.sh), links shaped per direction
#   perf/shaped_link.sh --report OUT_DIR    table and plots again from OUT_DIR/shaped_link.csv
#
# Needs root (unshare -n, tc). At 1 Gbit/s a 256 MiB fp32 allreduce over 2 ranks takes ~4 s
# per iteration (and 3x that over 4 ranks): lower -e and -i to bound a run.
# obccl:    OBCCL_TRANSPORTS=tcp obcclrun -n N obccl_perf -t compressed_allreduce|allreduce
# Open MPI: mpirun --allow-run-as-root --oversubscribe -np N --mca btl self,tcp
#           --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo mpi_allreduce
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2; }

# Runs every method for every rank count at one rate; called inside the new namespace.
inner() {
  local rate=$1
  ip link set lo up
  if [[ $rate != none ]]; then
    tc qdisc add dev lo root tbf rate "$rate" burst 256kb latency 100ms
  fi
  local n pass m
  local -a passes=()
  splitPasses passes
  for n in ${SL_RANKS//,/ }; do
    for pass in "${passes[@]}"; do
      for m in ${SL_METHODS//,/ }; do
        runOne "$rate" "$n" "$m" "$pass"
      done
    done
  done
}

# Size ranges (fp32 bytes) with their iteration counts: small sizes are quick and noisy.
splitPasses() {
  local -n out=$1
  local min max
  min=$(toBytes "$SL_MIN") max=$(toBytes "$SL_MAX")
  local lo=$min hi
  hi=$((max < (512 << 10) ? max : (512 << 10)))
  ((lo <= hi)) && out+=("$lo $hi 20 3") && lo=$((hi * 2))
  hi=$((max < (8 << 20) ? max : (8 << 20)))
  ((lo <= hi)) && out+=("$lo $hi 10 2") && lo=$((hi * 2))
  ((lo <= max)) && out+=("$lo $max $SL_ITERS 1")
  return 0
}

toBytes() {
  numfmt --from=iec "${1%iB}"
}

# One benchmark run; appends its rows, tagged with rate, method and load, to $SL_TMP/rows.csv.
runOne() {
  local rate=$1 n=$2 m=$3 b e iters warm
  read -r b e iters warm <<<"$4"
  local csv="$SL_TMP/$rate.$n.$m.$b.csv" log="$SL_TMP/$rate.$n.$m.$b.log" div=1
  local -a cmd
  # obccl_perf's expected values model compressBlock 0 only: no check for compressedB*.
  local check=$SL_CHECK
  [[ $m == compressedB* ]] && check=0
  local perf=(-f 2 -c "$check" -n "$iters" -w "$warm" -j "$csv")
  local run=("$SL_BUILD/tools/obcclrun" -n "$n" --timeout "$SL_TIMEOUT" --)
  case $m in
    compressed) cmd=("${run[@]}" "$SL_BUILD/perf/obccl_perf" -t compressed_allreduce -d float) ;;
    compressedB*)  # one scale per block of B elements (OBCCL_COMPRESS_BLOCK), fully pipelined
      cmd=(env OBCCL_COMPRESS_BLOCK="${m#compressedB}" "${run[@]}" "$SL_BUILD/perf/obccl_perf"
           -t compressed_allreduce -d float)
      ;;
    fp32) cmd=("${run[@]}" "$SL_BUILD/perf/obccl_perf" -t allreduce -d float -o sum) ;;
    bf16) cmd=("${run[@]}" "$SL_BUILD/perf/obccl_perf" -t allreduce -d bfloat16 -o sum) div=2 ;;
    mpi)
      cmd=(timeout "$SL_TIMEOUT" mpirun --allow-run-as-root --oversubscribe -np "$n"
           --mca btl self,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo
           "$SL_BUILD/perf/mpi_allreduce" -d float)
      ;;
    *) echo "shaped_link.sh: unknown method '$m'" >&2; return 1 ;;
  esac
  local load0 load1
  load0=$(cut -d' ' -f1 /proc/loadavg)
  echo "[$(date +%T) load $load0] rate=$rate n=$n $m $(numfmt --to=iec "$b")..$(numfmt --to=iec "$e") x$iters" >&2
  if ! OBCCL_TRANSPORTS=tcp "${cmd[@]}" -b $((b / div)) -e $((e / div)) "${perf[@]}" >"$log" 2>&1; then
    echo "shaped_link.sh: run failed (rate=$rate n=$n $m), see below; continuing" >&2
    tail -5 "$log" >&2
    return 0
  fi
  load1=$(cut -d' ' -f1 /proc/loadavg)
  # collective,size,count,type,redop,root,nranks,time_us,algbw,busbw,wrong,wire,fp32/wire
  tail -n +2 "$csv" | awk -F, -v r="$rate" -v m="$m" -v l="$load0/$load1" -v d="$div" \
    '{ printf "%s,%d,%s,%d,%d,%s,%s,%s,%s,%s\n", r, $7, m, $2 * d, $3, $8, $10, $11, $12, l }' \
    >>"$SL_TMP/rows.csv"
}

# Table (markdown) and plots from OUT_DIR/shaped_link.csv; also: shaped_link.sh --report OUT_DIR.
report() {
  local out=$1 gp
  python3 - "$out" <<'PY'
import collections, csv, os, subprocess, sys
out = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(out, "shaped_link.csv"))))
data = collections.defaultdict(dict)  # (rate, n) -> {(method, bytes): row}
for r in rows:
    data[(r["rate"], int(r["nranks"]))][(r["method"], int(r["fp32_bytes"]))] = r
def gbit(rate):
    if rate == "none": return None
    v, u = float(rate.rstrip("gmkbit") or 0), rate.lstrip("0123456789.")
    return v * {"gbit": 1.0, "mbit": 1e-3, "kbit": 1e-6}[u]
def human(b):
    for u in ("B", "KiB", "MiB", "GiB"):
        if b < 1024: return f"{b:g} {u}"
        b /= 1024
def ms(r): return f'{float(r["time_us"]) / 1e3:.2f}' if r else "-"
order = {"1gbit": 0, "10gbit": 1, "none": 2}
keys = sorted(data, key=lambda k: (order.get(k[0], 1.5), k[0], k[1]))
md = []
for rate, n in keys:
    d = data[(rate, n)]
    sizes = sorted({b for (_, b) in d})
    extra = sorted({k for (k, _) in d} - {"compressed", "fp32", "bf16", "mpi"})
    md.append(f"### {'unshaped' if rate == 'none' else rate.replace('gbit', ' Gbit/s')}, {n} ranks\n")
    md.append("| size (fp32) | compressed (ms) | fp32 (ms) | bf16 (ms) | Open MPI (ms) "
              "| MPI / compressed | fp32 / compressed | compressed wire (B/rank) | wire / model "
              "| fp32 ring link use |" + "".join(f" {e} (ms) | MPI / {e} |" for e in extra))
    md.append("| ---: " * (10 + 2 * len(extra)) + "|")
    wins, loads = [], []
    for b in sizes:
        c, f, h, m = (d.get((k, b)) for k in ("compressed", "fp32", "bf16", "mpi"))
        for r in (c, f, h, m):
            if r: loads += [float(x) for x in r["load_before_after"].split("/")]
        ratio = lambda a, z: f'{float(a["time_us"]) / float(z["time_us"]):.1f}' if a and z else "-"
        wire = model = "-"
        if c and c["wire_bytes_per_rank"] not in ("", "-"):
            count = int(c["count"]); np_ = -(-count // (8 * n)) * 8 * n
            mod = 2 * (n - 1) / n * np_ / 8
            wire = c["wire_bytes_per_rank"]
            model = f"{int(wire) / mod:.3f}" if mod else "-"
        use = "-"
        if f and gbit(rate):
            # tbf on lo carries every rank's sends: n * busbw against the rate.
            use = f'{n * float(f["busbw_GBps"]) * 8 / gbit(rate):.0%}'
        if c and f: wins.append((b, float(c["time_us"]) < float(f["time_us"])))
        md.append(f"| {human(b)} | {ms(c)} | {ms(f)} | {ms(h)} | {ms(m)} | {ratio(m, c)} "
                  f"| {ratio(f, c)} | {wire} | {model} | {use} |"
                  + "".join(f" {ms(d.get((e, b)))} | {ratio(m, d.get((e, b)))} |" for e in extra))
    pays = [b for i, (b, w) in enumerate(wins) if all(x for _, x in wins[i:])]
    if not wins: line = "no compressed/fp32 pair measured"
    elif pays and pays[0] == wins[0][0]:
        line = f"compression is faster than the fp32 ring at every measured size (>= {human(wins[0][0])})"
    elif pays:
        lose = max(b for b, w in wins if not w)
        line = f"compression pays from {human(pays[0])} up (fp32 ring faster at {human(lose)})"
    else:
        line = "compression is slower than the fp32 ring at the largest size measured"
    md.append(f"\nCrossover: {line}. Load average during these runs: "
              f"{min(loads, default=0):.1f} .. {max(loads, default=0):.1f}.\n")
meta = os.path.join(out, "shaped_link.meta")
if os.path.exists(meta):
    md.append(open(meta).read())
open(os.path.join(out, "shaped_link.md"), "w").write("\n".join(md))
print("\n".join(md))
# One PNG per rank count: time vs size, one panel per rate.
names = {"compressed": "obccl compressed", "fp32": "obccl fp32", "bf16": "obccl bf16",
         "mpi": "Open MPI fp32"}
for n in sorted({k[1] for k in keys}):
    rates = [k[0] for k in keys if k[1] == n]
    gp = [f'set terminal pngcairo size {520 * len(rates)},480 font ",10"',
          f'set output "{os.path.join(out, f"shaped_link_n{n}.png")}"',
          f'set multiplot layout 1,{len(rates)} title "allreduce over TCP on a tbf-shaped lo, {n} ranks"',
          "set logscale xy 2", "set logscale y 10", "set grid",
          'set xlabel "size (fp32 MiB)"', 'set ylabel "time per call (ms)"', "set key top left"]
    for rate in rates:
        d = data[(rate, n)]
        gp.append(f'set title "{"unshaped" if rate == "none" else rate}"')
        plots = []
        ms_ = sorted({k for (k, _) in d} - set(names))
        for m, name in list(names.items()) + [(e, f"obccl {e}") for e in ms_]:
            pts = sorted((b, float(r["time_us"])) for (k, b), r in d.items() if k == m)
            if not pts: continue
            fn = os.path.join(out, f".plot.{rate}.{n}.{m}.tmp")
            with open(fn, "w") as fh:
                fh.writelines(f"{b / 2**20} {t / 1e3}\n" for b, t in pts)
            plots.append(f'"{fn}" using 1:2 with linespoints title "{name}"')
        gp.append("plot " + ", ".join(plots))
    gp.append("unset multiplot")
    subprocess.run(["gnuplot"], input="\n".join(gp), text=True, check=True)
for f in os.listdir(out):
    if f.startswith(".plot.") and f.endswith(".tmp"): os.remove(os.path.join(out, f))
PY
}

main() {
  SL_BUILD=build OUT=perf/results SL_RATES=1gbit,10gbit,none SL_RANKS=2,4 SL_MIN=64K
  SL_MAX=256M SL_ITERS=3 SL_METHODS=compressed,fp32,bf16,mpi SL_CHECK=1 SL_TIMEOUT=900
  while getopts "B:o:r:N:b:e:i:m:c:T:h" opt; do
    case $opt in
      B) SL_BUILD=$OPTARG ;;
      o) OUT=$OPTARG ;;
      r) SL_RATES=$OPTARG ;;
      N) SL_RANKS=$OPTARG ;;
      b) SL_MIN=$OPTARG ;;
      e) SL_MAX=$OPTARG ;;
      i) SL_ITERS=$OPTARG ;;
      m) SL_METHODS=$OPTARG ;;
      c) SL_CHECK=$OPTARG ;;
      T) SL_TIMEOUT=$OPTARG ;;
      *) usage ;;
    esac
  done
  local f
  for f in tools/obcclrun perf/obccl_perf perf/mpi_allreduce; do
    [[ -x $SL_BUILD/$f ]] || { echo "shaped_link.sh: $SL_BUILD/$f is not built" >&2; exit 1; }
  done
  [[ $(id -u) -eq 0 ]] || { echo "shaped_link.sh: needs root (unshare -n, tc)" >&2; exit 1; }
  SL_BUILD=$(realpath "$SL_BUILD")
  mkdir -p "$OUT"
  SL_TMP=$(mktemp -d /tmp/obccl-shaped.XXXXXX)
  trap 'rm -rf "$SL_TMP"' EXIT
  export SL_BUILD SL_RANKS SL_MIN SL_MAX SL_ITERS SL_METHODS SL_CHECK SL_TIMEOUT SL_TMP
  local started rate
  started=$(date +%s)
  for rate in ${SL_RATES//,/ }; do
    unshare -n -- bash "$0" --inner "$rate"
  done
  echo "shaped_link.sh: measured in $(($(date +%s) - started)) s" >&2
  { echo "rate,nranks,method,fp32_bytes,count,time_us,busbw_GBps,wrong,wire_bytes_per_rank,load_before_after"
    sort -t, -k1,1 -k2,2n -k3,3 -k4,4n "$SL_TMP/rows.csv"; } >"$OUT/shaped_link.csv"
  local src
  src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$SL_BUILD/CMakeCache.txt")
  { echo "Command: perf/shaped_link.sh $*"
    echo "Machine: $(nproc) cores, $(uname -sr), $(mpirun --version 2>/dev/null | head -1), obccl $(git -C "${src:-.}" rev-parse --short HEAD 2>/dev/null || echo '?') (source tree of $SL_BUILD), $(date -u +%F)."
    echo "Each row: one run per method per size range, methods alternating; fp32 ring link use = n * busbw / rate (tbf on lo carries every rank's sends)."
  } >"$OUT/shaped_link.meta"
  report "$OUT"
}

# Two emulated hosts (test/netns/netns.sh: veth links through a bridge, each direction of each
# link shaped by its own tbf), one rank on each: here a rank's sends and receives each get the
# full rate, unlike on lo. Prints obccl_perf's rows for the fp32 ring and the compressed allreduce.
veth() {
  local rate=$1 build=${2:-build} max=${3:-64M} iters=${4:-5}
  local secret m r
  VETH_TMP=$(mktemp -d /tmp/obccl-shaped-veth.XXXXXX)
  local tmp=$VETH_TMP
  export OBCCL_NETNS_PREFIX=shapedl
  trap 'bash test/netns/netns.sh down; rm -rf "$VETH_TMP"' EXIT
  bash test/netns/netns.sh up 2 "$rate" >&2
  secret=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
  echo "# veth pair shaped at $rate per direction, 2 ranks on 2 emulated hosts, load $(cut -d' ' -f1-3 /proc/loadavg)"
  for m in "allreduce -o sum" compressed_allreduce; do
    for r in 0 1; do
      ip netns exec "shapedl-h$r" env OBCCL_RANK=$r OBCCL_WORLD_SIZE=2 OBCCL_ROOT=198.18.0.1:29600 \
        OBCCL_SECRET="$secret" OBCCL_SOCKET_IFNAME=eth0 OBCCL_TRANSPORTS=tcp \
        OBCCL_HOST_ID="shapedl-h$r" timeout 600 "$build/perf/obccl_perf" -t $m -d float \
        -b 1M -e "$max" -n "$iters" -w 1 >"$tmp/$r.log" 2>&1 &
    done
    wait
    cat "$tmp/0.log"
  done
}

if [[ ${1:-} == --inner ]]; then
  inner "$2"
elif [[ ${1:-} == --veth ]]; then
  veth "${@:2}"
elif [[ ${1:-} == --report ]]; then
  report "${2:-perf/results}"
else
  main "$@"
fi
