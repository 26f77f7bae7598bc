// collectFlags (path_support.h): the device-side consensus of the compressed allreduce's NCCL
// path. Every rank runs it on the same gathered flags, so every rank reaches the same verdict.
#include "device/kernel_common.cuh"
#include "device/path_support.h"

namespace obccl::device {
namespace detail {
namespace {

// One warp: lanes copy a strided share of the flags as 0/1, then OR them in a fixed tree.
__global__ void collectFlagsKernel(FlagSet a, FlagSet b, int* out) {
  unsigned acc = 0;
  const size_t total = a.n + b.n;
  for (size_t i = threadIdx.x; i < total; i += kWarpSize) {
    int v = i < a.n ? a.flags[i * a.strideInts] : b.flags[(i - a.n) * b.strideInts];
    out[i] = v != 0 ? 1 : 0;
    acc |= v != 0 ? 1u : 0u;
  }
#pragma unroll
  for (int off = kWarpSize / 2; off > 0; off /= 2) acc |= __shfl_down_sync(kFullMask, acc, off);
  if (threadIdx.x == 0) out[total] = acc != 0 ? 1 : 0;
}

}  // namespace
}  // namespace detail

Status collectFlags(const FlagSet& a, const FlagSet& b, int* out, void* stream) {
  using namespace detail;
  if (out == nullptr || (a.n > 0 && a.flags == nullptr) || (b.n > 0 && b.flags == nullptr)) {
    return invalidArgument("collectFlags: null flags or output");
  }
  FlagSet ka = a, kb = b;
  if (ka.strideInts == 0) ka.strideInts = 1;
  if (kb.strideInts == 0) kb.strideInts = 1;
  return launch(collectFlagsKernel, "collectFlagsKernel", kWarpSize, 1, 1, asStream(stream), ka, kb,
                out);
}

}  // namespace obccl::device
