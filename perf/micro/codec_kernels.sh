#!/usr/bin/env bash
# Runs the codec kernel micro-benchmarks (obccl_micro) at the out-of-cache size and prints the
# markdown table of perf/RESULTS.md's "Codec kernels" section: for every variant and kernel, the
# minimal bytes it must move per second (fastest iteration) and the ratio to memcpy's fastest
# copy measured in the same run (interleaved with the kernel's calls). Every kernel is run `-r`
# times (default 3); the table gives the best rate and the median ratio of those runs.
#
#   perf/micro/codec_kernels.sh [-B build-dir] [-r repetitions] [-s elements]
set -euo pipefail

build=build
reps=3
size=67108864
while getopts "B:r:s:h" opt; do
  case "$opt" in
    B) build=$OPTARG ;;
    r) reps=$OPTARG ;;
    s) size=$OPTARG ;;
    *) sed -n '2,9p' "$0"; exit 2 ;;
  esac
done

bin="$build/perf/micro/obccl_micro"
[[ -x "$bin" ]] || { echo "codec_kernels.sh: $bin not built (ninja -C $build obccl_micro)" >&2; exit 1; }
json=$(mktemp)
trap 'rm -f "$json"' EXIT
"$bin" --benchmark_filter="/$size(/|$)" --benchmark_repetitions="$reps" \
  --benchmark_format=json --benchmark_out="$json" --benchmark_out_format=json >/dev/null

python3 - "$json" <<'EOF'
import json, statistics, sys
runs = [b for b in json.load(open(sys.argv[1]))["benchmarks"] if b.get("run_type") == "iteration"]
reps = {}
for b in runs:
    reps.setdefault(b["run_name"].replace("/real_time", ""), []).append(b)
print("| kernel | variant | GB/s (minimal bytes, best) | vs memcpy (median of runs) |")
print("|---|---|---|---|")
for name, bs in reps.items():
    parts = name.split("/")
    variant = parts[0] if parts[0] in ("scalar", "avx2", "avx512") else "-"
    kernel = "/".join(p for p in parts if p != variant and not p.isdigit())
    rate = max(b["best_bytes_per_second"] for b in bs) / 1e9
    ratio = statistics.median(b["vs_memcpy"] for b in bs)
    print(f"| {kernel} | {variant} | {rate:.1f} | {ratio:.2f} |")
EOF
