// Shared by the variant files: the block loop that turns one-block span functions into the
// Kernels entry points, and scalar element helpers used by every variant for odd ends.
#pragma once

#include <algorithm>
#include <cstring>

#include "codec/codec.h"
#include "util/half.h"

namespace obccl::codec {

// Each variant file defines one of these.
const Kernels& scalarKernels();
const Kernels& avx2Kernels();
const Kernels& avx512Kernels();

inline size_t elementSize(obcclDataType_t dtype) { return dtype == obcclFloat32 ? 4 : 2; }

// Element i of x as fp32 (exact for all three types).
inline float loadElement(const void* x, obcclDataType_t dtype, size_t i) {
  const auto* p = static_cast<const uint8_t*>(x);
  if (dtype == obcclFloat32) {
    float v;
    std::memcpy(&v, p + 4 * i, 4);
    return v;
  }
  uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  return dtype == obcclFloat16 ? halfToFloat(h) : bf16ToFloat(h);
}

// v converted to dtype's bits (fp32 bits in the low 32 bits).
inline uint32_t encodeElement(float v, obcclDataType_t dtype) {
  if (dtype == obcclFloat16) return floatToHalf(v);
  if (dtype == obcclBfloat16) return floatToBf16(v);
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  return bits;
}

inline void storeElement(void* y, obcclDataType_t dtype, size_t i, uint32_t bits) {
  auto* p = static_cast<uint8_t*>(y);
  if (dtype == obcclFloat32) {
    std::memcpy(p + 4 * i, &bits, 4);
  } else {
    uint16_t h = static_cast<uint16_t>(bits);
    std::memcpy(p + 2 * i, &h, 2);
  }
}

inline bool signBit(float v) { return !(v < 0.0f); }

// Calls f(k, off, n) for block k = [off, off + n) of a span of len elements.
template <typename F>
inline void forEachBlock(size_t len, size_t block, F&& f) {
  if (len == 0) return;
  if (block == 0 || block >= len) {
    f(size_t{0}, size_t{0}, len);
    return;
  }
  size_t k = 0;
  for (size_t off = 0; off < len; off += block, ++k) f(k, off, std::min(block, len - off));
}

// Impl provides the one-block span functions (pointers already at the block's start, except the
// server ones, which get the block offset `off` within the ServerSpan):
//   workerEncode(x, dtype, valid, e, len, bits, NormAccumulator&)
//   workerUpdate(x, dtype, valid, e, len, float a)
//   serverNorm(in, off, len, k, NormAccumulator&)
//   serverEncode(in, off, len, k, float b, bits or null, sOut or null)   (sOut at off)
//   decode(bits, len, float b, y, dtype)
template <class Impl>
struct BlockedKernels {
  static const void* xAt(const void* x, obcclDataType_t dtype, size_t off, size_t valid) {
    return valid == 0 ? nullptr : static_cast<const uint8_t*>(x) + off * elementSize(dtype);
  }
  static size_t validIn(size_t valid, size_t off, size_t n) {
    return valid > off ? std::min(valid - off, n) : 0;
  }
  static void workerEncode(const void* x, obcclDataType_t dtype, size_t valid, const float* e,
                           size_t len, size_t block, uint8_t* bits, NormAccumulator* norms) {
    forEachBlock(len, block, [&](size_t k, size_t off, size_t n) {
      size_t v = validIn(valid, off, n);
      Impl::workerEncode(xAt(x, dtype, off, v), dtype, v, e + off, n, bits + off / 8, norms[k]);
    });
  }
  static void workerUpdate(const void* x, obcclDataType_t dtype, size_t valid, float* e, size_t len,
                           size_t block, const float* scales) {
    forEachBlock(len, block, [&](size_t k, size_t off, size_t n) {
      size_t v = validIn(valid, off, n);
      Impl::workerUpdate(xAt(x, dtype, off, v), dtype, v, e + off, n, scales[k]);
    });
  }
  static void serverNorm(const ServerSpan& in, size_t len, size_t block, NormAccumulator* norms) {
    forEachBlock(len, block, [&](size_t k, size_t off, size_t n) {
      Impl::serverNorm(in, off, n, k, norms[k]);
    });
  }
  static void serverEncode(const ServerSpan& in, size_t len, size_t block, const float* scales,
                           uint8_t* bits, float* sOut) {
    forEachBlock(len, block, [&](size_t k, size_t off, size_t n) {
      Impl::serverEncode(in, off, n, k, scales[k], bits ? bits + off / 8 : nullptr,
                         sOut ? sOut + off : nullptr);
    });
  }
  static void decode(const uint8_t* bits, size_t len, size_t block, const float* scales, void* y,
                     obcclDataType_t dtype) {
    forEachBlock(len, block, [&](size_t k, size_t off, size_t n) {
      Impl::decode(bits + off / 8, n, scales[k],
                   static_cast<uint8_t*>(y) + off * elementSize(dtype), dtype);
    });
  }
  static Kernels make(Variant v, const char* name) {
    return Kernels{v, name, workerEncode, workerUpdate, serverNorm, serverEncode, decode};
  }
};

}  // namespace obccl::codec
