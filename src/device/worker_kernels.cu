// Worker side of the compressed allreduce (DESIGN.md section 4) on the GPU, and the fixed-order
// reduction that turns per-tile partial sums of squares into scales.
//
// Pass 1 (encode) reads x and e, writes one double per tile and optionally the packed signs; the
// finalize kernel combines each scale's tiles in a fixed tree, so the sums depend neither on
// timing nor on the grid size. Pass 2 (update) reads x and e again (cheaper than storing u) and
// writes the new error. Every float operation is one IEEE rounding (__fadd_rn etc., and
// -fmad=false), as in the CPU codec.
#include <string>

#include "device/kernel_common.cuh"

namespace obccl::device {
namespace detail {
namespace {

constexpr int kFinalizeThreads = 1024;
// Scales with at most this many tiles are finalized by one warp instead of one block.
constexpr size_t kWarpFinalizeTiles = 64;

// u = x + e for the valid elements of the quad, u = e for the padding.
template <class T, bool kVec>
__device__ __forceinline__ void workerU(const typename T::Storage* __restrict__ x, size_t n,
                                        const float* __restrict__ e, size_t i, float u[4]) {
  float xv[4];
  float ev[4];
  int valid = loadQuad<T, kVec>(x, i, n, xv);
  loadF32Quad<kVec>(e, i, ev);
#pragma unroll
  for (int j = 0; j < 4; ++j) u[j] = j < valid ? __fadd_rn(xv[j], ev[j]) : ev[j];
}

// Pass 1, one span: adds u^2 to acc in element order and stores the packed signs when kBits.
template <class T, bool kVec, bool kBits>
__device__ __forceinline__ void encodeSpan(const typename T::Storage* __restrict__ x, size_t n,
                                           const float* __restrict__ e, size_t i, bool active,
                                           const float* uFast, double& acc, uint8_t* bits) {
  float u[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (uFast != nullptr) {
#pragma unroll
    for (int j = 0; j < 4; ++j) u[j] = uFast[j];
  } else if (active) {
    workerU<T, kVec>(x, n, e, i, u);
  }
  if (active) {
#pragma unroll
    for (int j = 0; j < 4; ++j) acc = __dadd_rn(acc, __dmul_rn(u[j], u[j]));
  }
  if (kBits) storeSignByte(bits, i, active, signNibble(u));
}

// Pass 1: per-tile partial sums of u^2 and, when kBits, the packed signs of u. Whole batches of
// spans load x and e for kBatch spans before using them; the summation order is the same on
// both paths.
template <class T, bool kVec, bool kBits>
__global__ void __launch_bounds__(kThreads)
    workerEncodeKernel(const typename T::Storage* __restrict__ x, size_t n,
                       const float* __restrict__ e, KLayout l, double* __restrict__ partials,
                       int* nonFinite, uint8_t* __restrict__ bits) {
  // The finalize kernel that follows on the stream ORs into the flag.
  if (nonFinite != nullptr && blockIdx.x == 0 && threadIdx.x == 0) *nonFinite = 0;
  const int lane = threadIdx.x % kWarpSize;
  for (size_t t = globalWarp(); t < l.numTiles; t += warpCount()) {
    const Tile tile = tileAt(l, t);
    double acc = 0.0;
    for (int s0 = 0; s0 < kTileSpans; s0 += kBatch) {
      const size_t base = tile.start + s0 * kSpanElems + lane * 4;
      if (kVec && batchIsFull(tile, s0, n)) {
        float xv[kBatch][4], ev[kBatch][4];
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
          loadQuadVec<T>(x, base + b * kSpanElems, xv[b]);
          loadF32Quad<true>(e, base + b * kSpanElems, ev[b]);
        }
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
          float u[4];
#pragma unroll
          for (int j = 0; j < 4; ++j) u[j] = __fadd_rn(xv[b][j], ev[b][j]);
          encodeSpan<T, kVec, kBits>(x, n, e, base + b * kSpanElems, true, u, acc, bits);
        }
      } else {
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
          size_t i = base + b * kSpanElems;
          encodeSpan<T, kVec, kBits>(x, n, e, i, i < tile.end, nullptr, acc, bits);
        }
      }
    }
    acc = warpSum(acc);
    if (lane == 0) partials[t] = acc;
  }
}

// Pass 2, one span: e = u - a*sigma(u) and the packed signs when kBits.
template <bool kVec, bool kBits>
__device__ __forceinline__ void updateSpan(float* __restrict__ e, size_t i, bool active,
                                           const float u[4], float a, uint8_t* bits) {
  if (active) {
    float ne[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) ne[j] = __fsub_rn(u[j], u[j] < 0.0f ? -a : a);
    storeF32Quad<kVec>(e, i, ne);
  }
  if (kBits) storeSignByte(bits, i, active, signNibble(u));
}

// Pass 2: e = u - a*sigma(u) in place and, when kBits, the packed signs of u.
template <class T, bool kVec, bool kBits>
__global__ void __launch_bounds__(kThreads)
    workerUpdateKernel(const typename T::Storage* __restrict__ x, size_t n, float* __restrict__ e,
                       KLayout l, const float* __restrict__ scales, uint8_t* __restrict__ bits,
                       const int* skipIf) {
  if (skipIf != nullptr && *skipIf != 0) return;  // uniform: every thread leaves
  const int lane = threadIdx.x % kWarpSize;
  for (size_t t = globalWarp(); t < l.numTiles; t += warpCount()) {
    const Tile tile = tileAt(l, t);
    const float a = scales[tile.scale];
    for (int s0 = 0; s0 < kTileSpans; s0 += kBatch) {
      const size_t base = tile.start + s0 * kSpanElems + lane * 4;
      if (kVec && batchIsFull(tile, s0, n)) {
        float xv[kBatch][4], ev[kBatch][4];
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
          loadQuadVec<T>(x, base + b * kSpanElems, xv[b]);
          loadF32Quad<true>(e, base + b * kSpanElems, ev[b]);
        }
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
          float u[4];
#pragma unroll
          for (int j = 0; j < 4; ++j) u[j] = __fadd_rn(xv[b][j], ev[b][j]);
          updateSpan<true, kBits>(e, base + b * kSpanElems, true, u, a, bits);
        }
      } else {
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
          size_t i = base + b * kSpanElems;
          bool active = i < tile.end;
          float u[4] = {0.0f, 0.0f, 0.0f, 0.0f};
          if (active) workerU<T, kVec>(x, n, e, i, u);
          updateSpan<kVec, kBits>(e, i, active, u, a, bits);
        }
      }
    }
  }
}

__device__ __forceinline__ void writeScale(const KLayout& l, size_t sc, double sum,
                                           const NormOutputs& out) {
  if (out.sumSquares != nullptr) out.sumSquares[sc] = sum;
  double len = static_cast<double>(scaleLenAt(l, sc));
  out.scales[sc] = __double2float_rn(__dsqrt_rn(__ddiv_rn(sum, len)));
  if (out.nonFinite != nullptr && !isfinite(sum)) atomicExch(out.nonFinite, 1);
}

// One warp per scale: lanes sum tiles lane, lane+32, ... in order, then a fixed tree.
__global__ void __launch_bounds__(kThreads)
    finalizeWarpKernel(const double* __restrict__ partials, KLayout l, NormOutputs out) {
  const int lane = threadIdx.x % kWarpSize;
  for (size_t sc = globalWarp(); sc < l.numScales; sc += warpCount()) {
    const double* p = partials + sc * l.tilesPerScale;
    double acc = 0.0;
    for (size_t k = lane; k < l.tilesPerScale; k += kWarpSize) acc = __dadd_rn(acc, p[k]);
    acc = warpSum(acc);
    if (lane == 0) writeScale(l, sc, acc, out);
  }
}

// One block per scale, for scales with many tiles (the paper's single scale over the buffer).
__global__ void __launch_bounds__(kFinalizeThreads)
    finalizeBlockKernel(const double* __restrict__ partials, KLayout l, NormOutputs out) {
  __shared__ double warpSums[kFinalizeThreads / kWarpSize];
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  for (size_t sc = blockIdx.x; sc < l.numScales; sc += gridDim.x) {
    const double* p = partials + sc * l.tilesPerScale;
    double acc = 0.0;
#pragma unroll 8
    for (size_t k = threadIdx.x; k < l.tilesPerScale; k += kFinalizeThreads) {
      acc = __dadd_rn(acc, p[k]);
    }
    acc = warpSum(acc);
    if (lane == 0) warpSums[warp] = acc;
    __syncthreads();
    if (warp == 0) {
      acc = warpSums[lane];  // kFinalizeThreads / kWarpSize == kWarpSize
      acc = warpSum(acc);
      if (lane == 0) writeScale(l, sc, acc, out);
    }
    __syncthreads();
  }
}

static_assert(kFinalizeThreads / kWarpSize == kWarpSize, "finalize tree expects 32 warps");

}  // namespace

Status launchFinalize(const double* partials, const KLayout& l, const NormOutputs& out,
                      cudaStream_t stream) {
  if (l.tilesPerScale <= kWarpFinalizeTiles) {
    return launch(finalizeWarpKernel, "finalizeWarpKernel", kThreads, l.numScales, kWarpsPerBlock,
                  stream, partials, l, out);
  }
  return launch(finalizeBlockKernel, "finalizeBlockKernel", kFinalizeThreads, l.numScales, 1,
                stream, partials, l, out);
}

Status checkNormArgs(const char* what, const ScaleLayout& layout, const void* scratch,
                     size_t scratchBytes, const NormOutputs& out) {
  OBCCL_TRY(layout.validate());
  if (layout.count == 0) return Status::ok();
  if (layout.blockLen > layout.chunkLen) {
    return invalidArgument(std::string(what) + ": blockLen " + std::to_string(layout.blockLen) +
                           " exceeds chunkLen " + std::to_string(layout.chunkLen));
  }
  size_t need = normScratchBytes(layout);
  if (scratch == nullptr || scratchBytes < need) {
    return invalidArgument(std::string(what) + ": scratch of " + std::to_string(scratchBytes) +
                           " bytes, need " + std::to_string(need));
  }
  if (out.scales == nullptr) return invalidArgument(std::string(what) + ": scales is null");
  return Status::ok();
}

}  // namespace detail

size_t normScratchBytes(const ScaleLayout& layout) {
  detail::KLayout k = detail::makeKLayout(layout);
  return (k.numTiles > 0 ? k.numTiles : 1) * sizeof(double);
}

Status workerEncode(const void* x, obcclDataType_t type, size_t n, const float* e,
                    const ScaleLayout& layout, void* scratch, size_t scratchBytes,
                    const NormOutputs& out, uint8_t* bits, void* stream) {
  using namespace detail;
  OBCCL_TRY(checkNormArgs("workerEncode", layout, scratch, scratchBytes, out));
  if (layout.count == 0) return Status::ok();
  if (n > layout.count || e == nullptr || (n > 0 && x == nullptr)) {
    return invalidArgument("workerEncode: " + std::to_string(n) +
                           " elements into a padded count of " + std::to_string(layout.count) +
                           " (or a null x/e)");
  }
  const KLayout l = makeKLayout(layout);
  double* partials = static_cast<double*>(scratch);
  return dispatchType(type, "workerEncode", [&](auto tag) -> Status {
    using T = decltype(tag);
    using S = typename T::Storage;
    const S* xs = static_cast<const S*>(x);
    cudaStream_t st = asStream(stream);
    const bool vec = aligned(x, 4 * sizeof(S)) && aligned(e, 16);
    auto kernel =
        vec ? (bits ? workerEncodeKernel<T, true, true> : workerEncodeKernel<T, true, false>)
            : (bits ? workerEncodeKernel<T, false, true> : workerEncodeKernel<T, false, false>);
    OBCCL_TRY(launch(kernel, "workerEncodeKernel", kThreads, l.numTiles, kWarpsPerBlock, st, xs, n,
                     e, l, partials, out.nonFinite, bits));
    return launchFinalize(partials, l, out, st);
  });
}

Status workerUpdate(const void* x, obcclDataType_t type, size_t n, float* e,
                    const ScaleLayout& layout, const float* scales, uint8_t* bits, void* stream,
                    const int* skipIf) {
  using namespace detail;
  OBCCL_TRY(layout.validate());
  if (layout.count == 0) return Status::ok();
  if (n > layout.count || e == nullptr || scales == nullptr || (n > 0 && x == nullptr) ||
      layout.blockLen > layout.chunkLen) {
    return invalidArgument("workerUpdate: " + std::to_string(n) +
                           " elements into a padded count of " + std::to_string(layout.count) +
                           " (or a null buffer, or blockLen > chunkLen)");
  }
  const KLayout l = makeKLayout(layout);
  return dispatchType(type, "workerUpdate", [&](auto tag) -> Status {
    using T = decltype(tag);
    using S = typename T::Storage;
    const S* xs = static_cast<const S*>(x);
    const bool vec = aligned(x, 4 * sizeof(S)) && aligned(e, 16);
    auto kernel =
        vec ? (bits ? workerUpdateKernel<T, true, true> : workerUpdateKernel<T, true, false>)
            : (bits ? workerUpdateKernel<T, false, true> : workerUpdateKernel<T, false, false>);
    return launch(kernel, "workerUpdateKernel", kThreads, l.numTiles, kWarpsPerBlock,
                  asStream(stream), xs, n, e, l, scales, bits, skipIf);
  });
}

}  // namespace obccl::device
