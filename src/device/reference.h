// Host reference of the device kernels, header-only and CUDA-free: plain loops over a whole
// ScaleLayout with the same arithmetic as codec/codec.h's scalar kernels (and the optimizer
// formulas of device.h). The GPU tests check it against the codec, and perf/gpu uses it to check
// GPU results without linking the codec. Build users with -ffp-contract=off (or without FMA).
#pragma once

#include <cmath>
#include <cstring>
#include <vector>

#include "device/device.h"
#include "util/half.h"

namespace obccl::device::ref {

inline float loadElement(const void* x, obcclDataType_t type, size_t i) {
  if (type == obcclFloat32) {
    float v;
    std::memcpy(&v, static_cast<const char*>(x) + 4 * i, 4);
    return v;
  }
  uint16_t h;
  std::memcpy(&h, static_cast<const char*>(x) + 2 * i, 2);
  return type == obcclFloat16 ? halfToFloat(h) : bf16ToFloat(h);
}

inline void storeElement(void* y, obcclDataType_t type, size_t i, float v) {
  if (type == obcclFloat32) {
    std::memcpy(static_cast<char*>(y) + 4 * i, &v, 4);
    return;
  }
  uint16_t h = type == obcclFloat16 ? floatToHalf(v) : floatToBf16(v);
  std::memcpy(static_cast<char*>(y) + 2 * i, &h, 2);
}

inline size_t scaleIndex(const ScaleLayout& l, size_t i) {
  return (i / l.chunkLen) * l.blocksPerChunk() + (i % l.chunkLen) / l.blockLen;
}

inline float rmsScale(double sumsq, size_t len) {
  return static_cast<float>(std::sqrt(sumsq / static_cast<double>(len)));
}

inline bool signBit(float v) { return !(v < 0.0f); }
inline bool packedBit(const uint8_t* bits, size_t i) { return (bits[i >> 3] >> (7 - (i & 7))) & 1; }

inline void setBit(uint8_t* bits, size_t i, bool one) {
  uint8_t mask = static_cast<uint8_t>(1u << (7 - (i & 7)));
  bits[i >> 3] = one ? (bits[i >> 3] | mask) : (bits[i >> 3] & ~mask);
}

inline float workerU(const void* x, obcclDataType_t type, size_t n, const float* e, size_t i) {
  return i < n ? loadElement(x, type, i) + e[i] : e[i];
}

// Per-scale sums of squares, summed in index order (equal to the device's to rounding).
inline std::vector<double> workerSums(const void* x, obcclDataType_t type, size_t n, const float* e,
                                      const ScaleLayout& l) {
  std::vector<double> sums(l.numScales(), 0.0);
  for (size_t i = 0; i < l.count; ++i) {
    double u = workerU(x, type, n, e, i);
    sums[scaleIndex(l, i)] += u * u;
  }
  return sums;
}

inline void workerBits(const void* x, obcclDataType_t type, size_t n, const float* e,
                       const ScaleLayout& l, uint8_t* bits) {
  for (size_t i = 0; i < l.count; ++i) setBit(bits, i, signBit(workerU(x, type, n, e, i)));
}

inline void workerUpdate(const void* x, obcclDataType_t type, size_t n, float* e,
                         const ScaleLayout& l, const float* scales) {
  for (size_t i = 0; i < l.count; ++i) {
    float u = workerU(x, type, n, e, i);
    float a = scales[scaleIndex(l, i)];
    e[i] = u - (signBit(u) ? a : -a);
  }
}

// Host pointers in a RankPacked (strides resolved as the device does).
inline float rankScale(const RankPacked& in, const ScaleLayout& l, int r, size_t block) {
  size_t stride = in.scalesStrideBytes ? in.scalesStrideBytes : l.blocksPerChunk() * sizeof(float);
  const float* p = reinterpret_cast<const float*>(reinterpret_cast<const char*>(in.scales) +
                                                  static_cast<size_t>(r) * stride);
  return p[block];
}

inline const uint8_t* rankBits(const RankPacked& in, const ScaleLayout& l, int r) {
  size_t stride = in.bitsStrideBytes ? in.bitsStrideBytes : l.chunkLen / 8;
  return in.bits + static_cast<size_t>(r) * stride;
}

inline float serverZ(const RankPacked& in, const float* s, const ScaleLayout& l, size_t k) {
  float invN = 1.0f / static_cast<float>(in.nranks);
  size_t block = k / l.blockLen;
  float acc = 0.0f;
  for (int r = 0; r < in.nranks; ++r) {
    float a = rankScale(in, l, r, block);
    acc += packedBit(rankBits(in, l, r), k) ? a : -a;
  }
  float scaled = acc * invN;
  return scaled + s[k];
}

inline std::vector<double> serverSums(const RankPacked& in, const float* s, const ScaleLayout& l) {
  std::vector<double> sums(l.numScales(), 0.0);
  for (size_t k = 0; k < l.count; ++k) {
    double z = serverZ(in, s, l, k);
    sums[scaleIndex(l, k)] += z * z;
  }
  return sums;
}

// sOut may equal s (each z is computed before its s is overwritten).
inline void serverEncode(const RankPacked& in, const float* s, const ScaleLayout& l,
                         const float* scales, uint8_t* bits, float* sOut) {
  for (size_t k = 0; k < l.count; ++k) {
    float z = serverZ(in, s, l, k);
    float b = scales[scaleIndex(l, k)];
    if (bits) setBit(bits, k, signBit(z));
    if (sOut) sOut[k] = z - (signBit(z) ? b : -b);
  }
}

inline void decode(const RankPacked& in, const ScaleLayout& l, size_t n, void* y,
                   obcclDataType_t type) {
  for (size_t i = 0; i < n; ++i) {
    int chunk = static_cast<int>(i / l.chunkLen);
    size_t k = i % l.chunkLen;
    float b = rankScale(in, l, chunk, k / l.blockLen);
    storeElement(y, type, i, packedBit(rankBits(in, l, chunk), k) ? b : -b);
  }
}

// Optimizer: the operations of core/onebit_adam_kernels.cc, one rounding each.
inline float adamApply(const AdamParams& a, float p, float m, float root) {
  float denom = root + a.eps;
  float ratio = m / denom;
  float decay = a.weightDecay * p;
  float u = ratio + decay;
  float step = a.lr * u;
  return p - step;
}

inline float adamMomentum(float beta1, float m, float g) {
  float c1 = 1.0f - beta1;
  float keep = beta1 * m;
  float add = c1 * g;
  return keep + add;
}

inline void warmupUpdate(float* p, float* m, float* v, const float* g, size_t n,
                         const AdamParams& a) {
  float c2 = 1.0f - a.beta2;
  for (size_t i = 0; i < n; ++i) {
    m[i] = adamMomentum(a.beta1, m[i], g[i]);
    float keep = a.beta2 * v[i];
    float sq = g[i] * g[i];
    float add = c2 * sq;
    v[i] = keep + add;
    p[i] = adamApply(a, p[i], m[i], std::sqrt(v[i]));
  }
}

inline void momentumBlend(float* out, const float* m, const float* g, size_t n, float beta1) {
  for (size_t i = 0; i < n; ++i) out[i] = adamMomentum(beta1, m[i], g[i]);
}

inline void frozenUpdate(float* p, float* m, const float* v, const float* mask, size_t n,
                         const AdamParams& a, float rootFloor) {
  for (size_t i = 0; i < n; ++i) {
    if (mask) m[i] = m[i] * mask[i];
    float root = std::sqrt(v[i]);
    root = root > rootFloor ? root : rootFloor;
    p[i] = adamApply(a, p[i], m[i], root);
  }
}

}  // namespace obccl::device::ref
