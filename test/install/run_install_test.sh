#!/usr/bin/env bash
# run_install_test.sh BUILD_DIR CONSUMER_DIR
# Installs BUILD_DIR into a temporary prefix, builds the consumer against that prefix with
# find_package(obccl) and with pkg-config, and runs both builds.
set -euo pipefail
BUILD_DIR=$1
CONSUMER=$2
WORK=$(mktemp -d /tmp/obccl-install-test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
PREFIX="$WORK/prefix"

echo "== cmake --install $BUILD_DIR --prefix $PREFIX"
cmake --install "$BUILD_DIR" --prefix "$PREFIX" >"$WORK/install.log" ||
  { cat "$WORK/install.log"; exit 1; }
for f in include/obccl/obccl.h include/obccl/onebit_adam.h include/obccl/version.h; do
  [[ -f $PREFIX/$f ]] || { echo "missing $PREFIX/$f"; exit 1; }
done
LIB=$(find "$PREFIX" -name 'libobccl.so*' -type f | head -1)
[[ -n $LIB ]] || { echo "libobccl.so was not installed"; exit 1; }
LIBDIR=$(dirname "$LIB")
PCDIR=$(dirname "$(find "$PREFIX" -name obccl.pc | head -1)")
# The library must export only the public obccl* functions.
if nm -D --defined-only "$LIB" | awk '$2 ~ /^[TW]$/ {print $3}' | grep -v '^obccl' | grep .; then
  echo "libobccl exports symbols outside the obccl namespace (above)"
  exit 1
fi

echo "== find_package(obccl)"
cmake -S "$CONSUMER" -B "$WORK/cmake-build" -G Ninja -DCMAKE_PREFIX_PATH="$PREFIX" \
  >"$WORK/configure.log" || { cat "$WORK/configure.log"; exit 1; }
cmake --build "$WORK/cmake-build"
LD_LIBRARY_PATH="$LIBDIR" "$WORK/cmake-build/consumer"

echo "== pkg-config obccl"
# The .pc file names the configured prefix; --define-variable moves it to the test prefix.
PC=(env PKG_CONFIG_PATH="$PCDIR" pkg-config --define-variable=prefix="$PREFIX")
"${PC[@]}" --modversion obccl
cc -std=c99 -Wall -Wextra -pedantic -Werror "$CONSUMER/consumer.c" -o "$WORK/consumer-pc" \
  $("${PC[@]}" --cflags obccl) $("${PC[@]}" --libs obccl)
LD_LIBRARY_PATH="$LIBDIR" "$WORK/consumer-pc"
echo "install test: ok"
