#!/usr/bin/env bash
# Installs what obccl needs to build, test and run its demo on Debian 12, as root.
# Safe to run again: it installs only packages that are missing, and does nothing (not even
# `apt-get update`) when all are present. CUDA is not installed here: when /usr/local/cuda
# exists the build uses it (OBCCL_WITH_CUDA=AUTO), otherwise the CUDA parts are skipped.
set -euo pipefail

PACKAGES=(
  # toolchain and build
  build-essential cmake ninja-build pkg-config git clang clang-format libclang-rt-14-dev
  # libraries obccl links and its tests and benchmarks use
  libssl-dev libhwloc-dev libucx-dev googletest libgtest-dev libgmock-dev libbenchmark-dev
  # the MPI baseline of the benchmarks, and launching across machines
  openmpi-bin libopenmpi-dev
  # plots, the training example's BLAS and data set
  gnuplot-nox libopenblas-dev zlib1g-dev dataset-fashion-mnist
  # network namespaces and link shaping for multi-host tests and benchmarks (ip, tc)
  iproute2
  # the Python package and its tests
  python3 python3-venv python3-pip python3-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup.sh: all ${#PACKAGES[@]} packages are installed"
  exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "setup.sh: run as root to install: ${missing[*]}" >&2; exit 1; }
  SUDO=(sudo)
fi
echo "setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "setup.sh: done"
