// Server side of the compressed allreduce (DESIGN.md section 4) and the final decode, on packed
// bits as they arrive from the all-to-all and the allgather.
//
// z_k = (sum over ranks i, in rank order, of a_i * sigma_{i,k}, accumulated in fp32) * (1.0f/n)
// + s_k. Each a_i * sigma is +-a_i exactly, so the only roundings are the additions, the product
// with the fp32 reciprocal and the final addition, one IEEE rounding each, as in the CPU codec.
#include <string>

#include "device/kernel_common.cuh"

namespace obccl::device {
namespace detail {
namespace {

// RankPacked with its strides resolved and 1.0f / nranks precomputed on the host.
struct KRanks {
  const uint8_t* bits;
  size_t bitsStride;
  const char* scales;
  size_t scalesStride;
  int nranks;
  float invn;
};

__device__ __forceinline__ float rankScale(const KRanks& in, int r, size_t block) {
  return __ldg(reinterpret_cast<const float*>(in.scales + r * in.scalesStride) + block);
}

// The nibble of element quad [i, i+4) in a packed chunk (bit 7-j of byte k is element 8k+j).
__device__ __forceinline__ unsigned quadNibble(const uint8_t* chunk, size_t i) {
  unsigned byte = __ldg(chunk + i / 8);
  return (i & 4) ? (byte & 0xfu) : (byte >> 4);
}

constexpr int kRankGroup = 4;

// acc[j] += a * sigma_j for the quad's sign nibble (bit 3-j is element j; 1 means +1).
__device__ __forceinline__ void addSigned(float acc[4], unsigned nib, float a) {
#pragma unroll
  for (int j = 0; j < 4; ++j) acc[j] = __fadd_rn(acc[j], ((nib >> (3 - j)) & 1u) ? a : -a);
}

// z for kCount spans starting at elements i0, i0 + kSpanElems, ... (all valid): the s loads and,
// rank by rank, the packed-sign loads of every span are issued before they are used.
template <int kCount, bool kVec>
__device__ __forceinline__ void serverZ(const KRanks& in, const float* __restrict__ s, size_t i0,
                                        size_t block, float z[][4]) {
  float acc[kCount][4];
  float sv[kCount][4];
#pragma unroll
  for (int b = 0; b < kCount; ++b) {
    loadF32Quad<kVec>(s, i0 + b * kSpanElems, sv[b]);
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[b][j] = 0.0f;
  }
  // Ranks in groups of kRankGroup: the group's sign loads are all in flight before the (rank
  // ordered) additions that use them.
  int r = 0;
  for (; r + kRankGroup <= in.nranks; r += kRankGroup) {
    unsigned nib[kRankGroup][kCount];
    float a[kRankGroup];
#pragma unroll
    for (int q = 0; q < kRankGroup; ++q) {
      const uint8_t* chunk = in.bits + (r + q) * in.bitsStride;
      a[q] = rankScale(in, r + q, block);
#pragma unroll
      for (int b = 0; b < kCount; ++b) nib[q][b] = quadNibble(chunk, i0 + b * kSpanElems);
    }
#pragma unroll
    for (int q = 0; q < kRankGroup; ++q) {
#pragma unroll
      for (int b = 0; b < kCount; ++b) addSigned(acc[b], nib[q][b], a[q]);
    }
  }
  for (; r < in.nranks; ++r) {
    const uint8_t* chunk = in.bits + r * in.bitsStride;
    const float a = rankScale(in, r, block);
#pragma unroll
    for (int b = 0; b < kCount; ++b) addSigned(acc[b], quadNibble(chunk, i0 + b * kSpanElems), a);
  }
#pragma unroll
  for (int b = 0; b < kCount; ++b) {
#pragma unroll
    for (int j = 0; j < 4; ++j) z[b][j] = __fadd_rn(__fmul_rn(acc[b][j], in.invn), sv[b][j]);
  }
}

template <bool kVec>
__global__ void __launch_bounds__(kThreads)
    serverNormKernel(KRanks in, const float* __restrict__ s, KLayout l,
                     double* __restrict__ partials, int* nonFinite) {
  if (nonFinite != nullptr && blockIdx.x == 0 && threadIdx.x == 0) *nonFinite = 0;
  const int lane = threadIdx.x % kWarpSize;
  for (size_t t = globalWarp(); t < l.numTiles; t += warpCount()) {
    const Tile tile = tileAt(l, t);
    double acc = 0.0;
    for (int s0 = 0; s0 < kTileSpans; s0 += kBatch) {
      const size_t base = tile.start + s0 * kSpanElems + lane * 4;
      if (batchIsFull(tile, s0, tile.end)) {
        float z[kBatch][4];
        serverZ<kBatch, kVec>(in, s, base, tile.block, z);
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
#pragma unroll
          for (int j = 0; j < 4; ++j) acc = __dadd_rn(acc, __dmul_rn(z[b][j], z[b][j]));
        }
      } else {
        for (int b = 0; b < kBatch; ++b) {
          size_t i = base + b * kSpanElems;
          if (i < tile.end) {
            float z[1][4];
            serverZ<1, kVec>(in, s, i, tile.block, z);
#pragma unroll
            for (int j = 0; j < 4; ++j) acc = __dadd_rn(acc, __dmul_rn(z[0][j], z[0][j]));
          }
        }
      }
    }
    acc = warpSum(acc);
    if (lane == 0) partials[t] = acc;
  }
}

// Server pass 2, one span: the new s and the packed signs of z.
template <bool kVec, bool kBits, bool kS>
__device__ __forceinline__ void serverEncodeSpan(size_t i, bool active, const float z[4], float b,
                                                 uint8_t* __restrict__ bits,
                                                 float* __restrict__ sOut) {
  if (kS && active) {
    float ns[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) ns[j] = __fsub_rn(z[j], z[j] < 0.0f ? -b : b);
    storeF32Quad<kVec>(sOut, i, ns);
  }
  if (kBits) storeSignByte(bits, i, active, signNibble(z));
}

// kInPlace reads s through sOut, so the compiler still sees one restrict pointer and may hoist
// the loads of later spans above the stores of earlier ones (they never overlap).
template <bool kVec, bool kBits, bool kS, bool kInPlace>
__global__ void __launch_bounds__(kThreads)
    serverEncodeKernel(KRanks in, const float* __restrict__ s, KLayout l,
                       const float* __restrict__ scales, uint8_t* __restrict__ bits,
                       float* __restrict__ sOut, const int* skipIf) {
  if (skipIf != nullptr && *skipIf != 0) return;  // uniform: every thread leaves
  const float* sIn = kInPlace ? sOut : s;
  const int lane = threadIdx.x % kWarpSize;
  for (size_t t = globalWarp(); t < l.numTiles; t += warpCount()) {
    const Tile tile = tileAt(l, t);
    const float b = scales[tile.scale];
    for (int s0 = 0; s0 < kTileSpans; s0 += kBatch) {
      const size_t base = tile.start + s0 * kSpanElems + lane * 4;
      if (batchIsFull(tile, s0, tile.end)) {
        float z[kBatch][4];
        serverZ<kBatch, kVec>(in, sIn, base, tile.block, z);
#pragma unroll
        for (int k = 0; k < kBatch; ++k) {
          serverEncodeSpan<kVec, kBits, kS>(base + k * kSpanElems, true, z[k], b, bits, sOut);
        }
      } else {
#pragma unroll
        for (int k = 0; k < kBatch; ++k) {
          size_t i = base + k * kSpanElems;
          bool active = i < tile.end;
          float z[1][4] = {{0.0f, 0.0f, 0.0f, 0.0f}};
          if (active) serverZ<1, kVec>(in, sIn, i, tile.block, z);
          serverEncodeSpan<kVec, kBits, kS>(i, active, z[0], b, bits, sOut);
        }
      }
    }
  }
}

using ServerEncodeFn = void (*)(KRanks, const float*, KLayout, const float*, uint8_t*, float*,
                                const int*);

template <bool kVec>
ServerEncodeFn pickServerEncode(bool bits, bool sOut, bool inPlace) {
  if (bits && sOut) {
    return inPlace ? serverEncodeKernel<kVec, true, true, true>
                   : serverEncodeKernel<kVec, true, true, false>;
  }
  if (bits) return serverEncodeKernel<kVec, true, false, false>;
  return inPlace ? serverEncodeKernel<kVec, false, true, true>
                 : serverEncodeKernel<kVec, false, true, false>;
}

template <class T, bool kVec>
__global__ void __launch_bounds__(kThreads)
    decodeKernel(KRanks in, KLayout l, size_t n, typename T::Storage* __restrict__ y,
                 const int* skipIf) {
  if (skipIf != nullptr && *skipIf != 0) return;  // uniform: every thread leaves
  const int lane = threadIdx.x % kWarpSize;
  for (size_t t = globalWarp(); t < l.numTiles; t += warpCount()) {
    const Tile tile = tileAt(l, t);
    if (tile.start >= n) continue;
    const float b = rankScale(in, static_cast<int>(tile.chunk), tile.block);
    const uint8_t* chunkBits = in.bits + tile.chunk * in.bitsStride;
    const size_t chunkStart = tile.chunk * l.chunkLen;
    const size_t end = tile.end < n ? tile.end : n;
#pragma unroll 4
    for (int sp = 0; sp < kTileSpans; ++sp) {
      size_t i = tile.start + sp * kSpanElems + lane * 4;
      if (i < end) {
        unsigned nib = quadNibble(chunkBits, i - chunkStart);
        float v[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) v[j] = ((nib >> (3 - j)) & 1u) ? b : -b;
        storeQuad<T, kVec>(y, i, n, v);
      }
    }
  }
}

Result<KRanks> resolveRanks(const char* what, const RankPacked& in, const ScaleLayout& layout) {
  if (in.nranks <= 0 || in.bits == nullptr || in.scales == nullptr) {
    return invalidArgument(std::string(what) + ": " + std::to_string(in.nranks) +
                           " ranks (or null bits/scales)");
  }
  KRanks k{};
  k.bits = in.bits;
  k.bitsStride = in.bitsStrideBytes != 0 ? in.bitsStrideBytes : layout.chunkLen / 8;
  k.scales = reinterpret_cast<const char*>(in.scales);
  k.scalesStride =
      in.scalesStrideBytes != 0 ? in.scalesStrideBytes : layout.blocksPerChunk() * sizeof(float);
  if (k.scalesStride % sizeof(float) != 0 || !aligned(in.scales, sizeof(float))) {
    return invalidArgument(std::string(what) + ": scales stride " + std::to_string(k.scalesStride) +
                           " or address not fp32-aligned");
  }
  k.nranks = in.nranks;
  k.invn = 1.0f / static_cast<float>(in.nranks);
  return k;
}

}  // namespace
}  // namespace detail

Status serverNorm(const RankPacked& in, const float* s, const ScaleLayout& layout, void* scratch,
                  size_t scratchBytes, const NormOutputs& out, void* stream) {
  using namespace detail;
  OBCCL_TRY(checkNormArgs("serverNorm", layout, scratch, scratchBytes, out));
  if (layout.count == 0) return Status::ok();
  if (s == nullptr || layout.chunks() != 1) {
    return invalidArgument("serverNorm: null server error, or a layout of " +
                           std::to_string(layout.chunks()) + " chunks (want ScaleLayout::server)");
  }
  OBCCL_ASSIGN_OR_RETURN(KRanks k, resolveRanks("serverNorm", in, layout));
  const KLayout l = makeKLayout(layout);
  double* partials = static_cast<double*>(scratch);
  auto kernel = aligned(s, 16) ? serverNormKernel<true> : serverNormKernel<false>;
  OBCCL_TRY(launch(kernel, "serverNormKernel", kThreads, l.numTiles, kWarpsPerBlock,
                   asStream(stream), k, s, l, partials, out.nonFinite));
  return launchFinalize(partials, l, out, asStream(stream));
}

Status serverEncode(const RankPacked& in, const float* s, const ScaleLayout& layout,
                    const float* scales, uint8_t* bits, float* sOut, void* stream,
                    const int* skipIf) {
  using namespace detail;
  OBCCL_TRY(layout.validate());
  if (layout.count == 0 || (bits == nullptr && sOut == nullptr)) return Status::ok();
  if (s == nullptr || scales == nullptr || layout.chunks() != 1 ||
      layout.blockLen > layout.chunkLen) {
    return invalidArgument("serverEncode: null s/scales, or not a ScaleLayout::server layout");
  }
  OBCCL_ASSIGN_OR_RETURN(KRanks k, resolveRanks("serverEncode", in, layout));
  const KLayout l = makeKLayout(layout);
  const bool vec = aligned(s, 16) && aligned(sOut, 16);
  const bool inPlace = sOut == s;
  ServerEncodeFn kernel = vec ? pickServerEncode<true>(bits, sOut, inPlace)
                              : pickServerEncode<false>(bits, sOut, inPlace);
  return launch(kernel, "serverEncodeKernel", kThreads, l.numTiles, kWarpsPerBlock,
                asStream(stream), k, s, l, scales, bits, sOut, skipIf);
}

Status decode(const RankPacked& in, const ScaleLayout& layout, size_t n, void* y,
              obcclDataType_t type, void* stream, const int* skipIf) {
  using namespace detail;
  OBCCL_TRY(layout.validate());
  if (layout.count == 0 || n == 0) return Status::ok();
  if (n > layout.count || y == nullptr || layout.blockLen > layout.chunkLen) {
    return invalidArgument("decode: " + std::to_string(n) + " elements from a padded count of " +
                           std::to_string(layout.count) + " (or a null y)");
  }
  if (static_cast<size_t>(in.nranks) != layout.chunks()) {
    return invalidArgument("decode: " + std::to_string(in.nranks) + " ranks for " +
                           std::to_string(layout.chunks()) + " chunks");
  }
  OBCCL_ASSIGN_OR_RETURN(KRanks k, resolveRanks("decode", in, layout));
  const KLayout l = makeKLayout(layout);
  return dispatchType(type, "decode", [&](auto tag) -> Status {
    using T = decltype(tag);
    using S = typename T::Storage;
    auto kernel = aligned(y, 4 * sizeof(S)) ? decodeKernel<T, true> : decodeKernel<T, false>;
    return launch(kernel, "decodeKernel", kThreads, l.numTiles, kWarpsPerBlock, asStream(stream), k,
                  l, n, static_cast<S*>(y), skipIf);
  });
}

}  // namespace obccl::device
