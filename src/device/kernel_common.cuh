// Internal to the device layer: shared pieces of the CUDA kernels (element types and their
// conversions, vector loads, the tile walk over a ScaleLayout, launch geometry).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "device/cuda_status.h"
#include "device/device.h"

namespace obccl::device::detail {

constexpr int kThreads = 256;
constexpr int kWarpSize = 32;
constexpr int kWarpsPerBlock = kThreads / kWarpSize;
constexpr unsigned kFullMask = 0xffffffffu;
// A warp handles 4 consecutive elements per lane, 128 per step ("span"); a tile is kTileSpans
// spans. Tiles never cross a scale block, so each tile's partial sum belongs to one scale.
constexpr size_t kSpanElems = 4 * kWarpSize;
constexpr int kTileSpans = 16;
constexpr size_t kTileElems = kSpanElems * kTileSpans;
// Spans whose loads a lane issues together before using them (memory-level parallelism).
constexpr int kBatch = 4;
static_assert(kTileSpans % kBatch == 0, "a tile is a whole number of batches");

// Element types of x and y. Storage is what lives in memory.
struct F32 {
  using Storage = float;
};
struct F16 {
  using Storage = uint16_t;
};
struct BF16 {
  using Storage = uint16_t;
};

__device__ __forceinline__ float toFloat(F32, float v) { return v; }
__device__ __forceinline__ float toFloat(F16, uint16_t v) {
  return __half2float(__ushort_as_half(v));
}
__device__ __forceinline__ float toFloat(BF16, uint16_t v) {
  return __uint_as_float(static_cast<uint32_t>(v) << 16);
}

// Same bit manipulations as util/half.h, so NaN payloads and rounding match the CPU exactly.
__device__ __forceinline__ uint16_t bf16FromFloat(float f) {
  uint32_t bits = __float_as_uint(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

__device__ __forceinline__ uint16_t halfFromFloat(float f) {
  uint32_t bits = __float_as_uint(f);
  uint32_t sign = (bits >> 16) & 0x8000u;
  uint32_t absBits = bits & 0x7fffffffu;
  if (absBits > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);
  if (absBits >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (absBits < 0x38800000u) {
    if (absBits < 0x33000000u) return static_cast<uint16_t>(sign);
    uint32_t exp = absBits >> 23;
    uint32_t mant = (absBits & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - exp;
    uint32_t halfMant = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (halfMant & 1u))) ++halfMant;
    return static_cast<uint16_t>(sign | halfMant);
  }
  uint32_t rounded = absBits + 0xfffu + ((absBits >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

__device__ __forceinline__ float fromFloat(F32, float v) { return v; }
__device__ __forceinline__ uint16_t fromFloat(F16, float v) { return halfFromFloat(v); }
__device__ __forceinline__ uint16_t fromFloat(BF16, float v) { return bf16FromFloat(v); }

// Loads elements [i, i+4) of x with one 16-byte (fp32) or 8-byte (16-bit) load; x + i must be
// aligned for it and all four elements valid.
template <class T>
__device__ __forceinline__ void loadQuadVec(const typename T::Storage* __restrict__ x, size_t i,
                                            float out[4]) {
  if constexpr (sizeof(typename T::Storage) == 4) {
    float4 v = *reinterpret_cast<const float4*>(x + i);
    out[0] = v.x;
    out[1] = v.y;
    out[2] = v.z;
    out[3] = v.w;
  } else {
    uint2 v = *reinterpret_cast<const uint2*>(x + i);
    out[0] = toFloat(T{}, static_cast<uint16_t>(v.x & 0xffffu));
    out[1] = toFloat(T{}, static_cast<uint16_t>(v.x >> 16));
    out[2] = toFloat(T{}, static_cast<uint16_t>(v.y & 0xffffu));
    out[3] = toFloat(T{}, static_cast<uint16_t>(v.y >> 16));
  }
}

// Loads elements [i, i+4) of x, of which those below n are valid; returns how many are valid.
// kVec: x is aligned for one vector load per quad.
template <class T, bool kVec>
__device__ __forceinline__ int loadQuad(const typename T::Storage* __restrict__ x, size_t i,
                                        size_t n, float out[4]) {
  if (kVec && i + 4 <= n) {
    loadQuadVec<T>(x, i, out);
    return 4;
  }
  int valid = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    out[j] = 0.0f;
    if (i + j < n) {
      out[j] = toFloat(T{}, x[i + j]);
      ++valid;
    }
  }
  return valid;
}

// Stores v[0..4) to y[i, i+4), skipping elements at or past n.
template <class T, bool kVec>
__device__ __forceinline__ void storeQuad(typename T::Storage* __restrict__ y, size_t i, size_t n,
                                          const float v[4]) {
  if (kVec && i + 4 <= n) {
    if constexpr (sizeof(typename T::Storage) == 4) {
      *reinterpret_cast<float4*>(y + i) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
      uint2 w;
      w.x = static_cast<uint32_t>(fromFloat(T{}, v[0])) |
            (static_cast<uint32_t>(fromFloat(T{}, v[1])) << 16);
      w.y = static_cast<uint32_t>(fromFloat(T{}, v[2])) |
            (static_cast<uint32_t>(fromFloat(T{}, v[3])) << 16);
      *reinterpret_cast<uint2*>(y + i) = w;
    }
    return;
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    if (i + j < n) y[i + j] = fromFloat(T{}, v[j]);
  }
}

// fp32 buffers that always hold whole quads (error buffers).
template <bool kVec>
__device__ __forceinline__ void loadF32Quad(const float* __restrict__ p, size_t i, float out[4]) {
  if (kVec) {
    float4 v = *reinterpret_cast<const float4*>(p + i);
    out[0] = v.x;
    out[1] = v.y;
    out[2] = v.z;
    out[3] = v.w;
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) out[j] = p[i + j];
  }
}

template <bool kVec>
__device__ __forceinline__ void storeF32Quad(float* __restrict__ p, size_t i, const float v[4]) {
  if (kVec) {
    *reinterpret_cast<float4*>(p + i) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) p[i + j] = v[j];
  }
}

// A ScaleLayout as the kernels walk it: numScales * tilesPerScale tiles of kTileElems.
struct KLayout {
  size_t count;
  size_t chunkLen;
  size_t blockLen;
  size_t blocksPerChunk;
  size_t numScales;
  size_t tilesPerScale;
  size_t numTiles;
};

inline KLayout makeKLayout(const ScaleLayout& l) {
  KLayout k{};
  k.count = l.count;
  k.chunkLen = l.chunkLen;
  k.blockLen = l.blockLen;
  k.blocksPerChunk = l.blocksPerChunk();
  k.numScales = l.numScales();
  k.tilesPerScale = l.blockLen == 0 ? 0 : (l.blockLen + kTileElems - 1) / kTileElems;
  k.numTiles = k.numScales * k.tilesPerScale;
  return k;
}

struct Tile {
  size_t start;  // first element
  size_t end;    // one past the last (start == end for the empty tail tiles of a short block)
  size_t scale;  // scale index
  size_t chunk;
  size_t block;  // block inside the chunk
};

__device__ __forceinline__ Tile tileAt(const KLayout& l, size_t t) {
  Tile r;
  r.scale = t / l.tilesPerScale;
  size_t sub = t - r.scale * l.tilesPerScale;
  r.chunk = r.scale / l.blocksPerChunk;
  r.block = r.scale - r.chunk * l.blocksPerChunk;
  size_t blockStart = r.block * l.blockLen;
  size_t len = l.chunkLen - blockStart < l.blockLen ? l.chunkLen - blockStart : l.blockLen;
  size_t segStart = r.chunk * l.chunkLen + blockStart;
  size_t segEnd = segStart + len;
  size_t start = segStart + sub * kTileElems;
  r.start = start < segEnd ? start : segEnd;
  r.end = start + kTileElems < segEnd ? start + kTileElems : segEnd;
  return r;
}

// True when spans [s0, s0 + kBatch) of the tile are whole and end at or below `limit`: the fast
// path needs no bounds checks. Warp-uniform.
__device__ __forceinline__ bool batchIsFull(const Tile& tile, int s0, size_t limit) {
  size_t end = tile.start + (s0 + kBatch) * kSpanElems;
  return end <= tile.end && end <= limit;
}

__device__ __forceinline__ size_t scaleLenAt(const KLayout& l, size_t scale) {
  size_t blockStart = (scale % l.blocksPerChunk) * l.blockLen;
  return l.chunkLen - blockStart < l.blockLen ? l.chunkLen - blockStart : l.blockLen;
}

// Sum over the warp in a fixed tree; the result is in lane 0.
__device__ __forceinline__ double warpSum(double v) {
#pragma unroll
  for (int off = kWarpSize / 2; off > 0; off /= 2) {
    v = __dadd_rn(v, __shfl_down_sync(kFullMask, v, off));
  }
  return v;
}

// Lanes 2k and 2k+1 hold the two sign nibbles of byte k of a span (bit 1 = +1, element 8k+j at
// bit 7-j); the even lane stores the byte. Every lane of the warp must call it.
__device__ __forceinline__ void storeSignByte(uint8_t* __restrict__ bits, size_t i, bool active,
                                              unsigned nib) {
  unsigned other = __shfl_xor_sync(kFullMask, nib, 1);
  if (active && (threadIdx.x & 1) == 0) bits[i / 8] = static_cast<uint8_t>((nib << 4) | other);
}

// Sign nibble of a quad: bit 3-j is 1 when v[j] is not negative (sigma = +1 for +0, -0, NaN).
__device__ __forceinline__ unsigned signNibble(const float v[4]) {
  unsigned nib = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) nib |= (v[j] < 0.0f ? 0u : 1u) << (3 - j);
  return nib;
}

__device__ __forceinline__ size_t globalWarp() {
  return (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize;
}
__device__ __forceinline__ size_t warpCount() {
  return static_cast<size_t>(gridDim.x) * blockDim.x / kWarpSize;
}

inline bool aligned(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// Blocks for `work` independent units of `unitsPerBlock`, capped at the blocks of `kernel` the
// device keeps resident at once (so every block's grid-stride share starts immediately); no
// result depends on the grid size.
Result<unsigned> gridFor(const void* kernel, int threads, size_t work, size_t unitsPerBlock);

// The Status of the last launch.
Status launchStatus(const char* kernel);

// Combines the per-tile partial sums of squares (one double per tile) into each scale's sum, in
// a fixed order, and writes out.sumSquares, out.scales and ORs out.nonFinite.
Status launchFinalize(const double* partials, const KLayout& l, const NormOutputs& out,
                      cudaStream_t stream);

// Calls f(F32{}), f(F16{}) or f(BF16{}) for the data type; other types are invalid arguments.
template <class Fn>
Status dispatchType(obcclDataType_t type, const char* what, Fn&& f) {
  switch (type) {
    case obcclFloat32:
      return f(F32{});
    case obcclFloat16:
      return f(F16{});
    case obcclBfloat16:
      return f(BF16{});
    default:
      return invalidArgument(std::string(what) + ": datatype " + std::to_string(type) +
                             " is not fp32, fp16 or bf16");
  }
}

// Checks a layout and the scratch size of a norm pass.
Status checkNormArgs(const char* what, const ScaleLayout& layout, const void* scratch,
                     size_t scratchBytes, const NormOutputs& out);

inline cudaStream_t asStream(void* stream) { return static_cast<cudaStream_t>(stream); }

// Launches kernel on the stream with a grid from gridFor and reports launch errors by name.
template <class... Params, class... Args>
Status launch(void (*kernel)(Params...), const char* name, int threads, size_t work,
              size_t unitsPerBlock, cudaStream_t stream, Args... args) {
  OBCCL_ASSIGN_OR_RETURN(
      unsigned grid, gridFor(reinterpret_cast<const void*>(kernel), threads, work, unitsPerBlock));
#if defined(OBCCL_DEVICE_EMULATION)  // host emulation, to check kernel logic without a GPU
  obccl_emu::launch(grid, static_cast<unsigned>(threads), [=] { kernel(args...); });
#else
  // clang-format 14 splits the launch chevrons of a .cuh file.
  // clang-format off
  kernel<<<grid, threads, 0, stream>>>(args...);
  // clang-format on
#endif
  return launchStatus(name);
}

}  // namespace obccl::device::detail
