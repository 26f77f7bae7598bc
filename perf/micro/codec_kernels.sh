#!/usr/bin/env bash
# Runs the codec kernel micro-benchmarks (obccl_micro) at the out-of-cache size and prints the
# markdown table of perf/RESULTS.md's "Codec kernels" section: for every variant and kernel, the
# minimal bytes it must move per second (fastest iteration) and the ratio to memcpy's fastest
# copy measured in the same run. Every kernel is run `-r` times (default 3); the table keeps each
# kernel's best run, as interference on a shared machine only ever slows a run down.
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
import json, sys
runs = [b for b in json.load(open(sys.argv[1]))["benchmarks"] if b.get("run_type") == "iteration"]
best = {}
for b in runs:
    name = b["run_name"].replace("/real_time", "")
    if name not in best or b["vs_memcpy"] > best[name]["vs_memcpy"]:
        best[name] = b
print("| kernel | variant | GB/s (minimal bytes) | vs memcpy |")
print("|---|---|---|---|")
for name, b in best.items():
    parts = name.split("/")
    variant = parts[0] if parts[0] in ("scalar", "avx2", "avx512") else "-"
    kernel = "/".join(p for p in parts if p not in (variant,) and not p.isdigit())
    print(f"| {kernel} | {variant} | {b['best_bytes_per_second'] / 1e9:.1f} | {b['vs_memcpy']:.2f} |")
EOF
