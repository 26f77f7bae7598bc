// Test-only restatement of the codec semantics (DESIGN.md section 4, src/codec/codec.h), written
// element by element from the formulas and independently of src/codec, plus random inputs rich in
// signed zeros, denormals and huge values.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "obccl/obccl.h"
#include "util/half.h"

namespace obccl::codec::testref {

inline float sigma(float v) { return v < 0.0f ? -1.0f : 1.0f; }

inline size_t elemBytes(obcclDataType_t dt) { return dt == obcclFloat32 ? 4 : 2; }

// Element i of a raw fp32/fp16/bf16 array, as fp32.
inline float toFloat(const uint8_t* raw, obcclDataType_t dt, size_t i) {
  if (dt == obcclFloat32) {
    float f;
    std::memcpy(&f, raw + 4 * i, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, raw + 2 * i, 2);
  return dt == obcclFloat16 ? halfToFloat(h) : bf16ToFloat(h);
}

inline bool bitOf(const uint8_t* bits, size_t i) { return (bits[i / 8] & (0x80u >> (i % 8))) != 0; }

inline std::vector<uint8_t> pack(const std::vector<float>& v) {
  std::vector<uint8_t> bits((v.size() + 7) / 8, 0);
  for (size_t i = 0; i < v.size(); ++i)
    if (sigma(v[i]) > 0) bits[i / 8] |= static_cast<uint8_t>(0x80u >> (i % 8));
  return bits;
}

// Block index of element i in a span cut into blocks of `block` (0: one block).
inline size_t blockOf(size_t i, size_t block) { return block == 0 ? 0 : i / block; }
inline size_t numBlocks(size_t len, size_t block) {
  return block == 0 ? 1 : (len + block - 1) / block;
}

using Lanes = std::array<double, 8>;

// Sums of squares per block, lane = index mod 8, in index order.
inline std::vector<Lanes> norms(const std::vector<float>& v, size_t block) {
  std::vector<Lanes> out(numBlocks(v.size(), block), Lanes{});
  for (size_t i = 0; i < v.size(); ++i) {
    double d = static_cast<double>(v[i]);
    out[blockOf(i, block)][i % 8] += d * d;
  }
  return out;
}

inline double finish(const Lanes& l) {
  double a = l[0] + l[1], b = l[2] + l[3], c = l[4] + l[5], d = l[6] + l[7];
  return (a + b) + (c + d);
}

// u_i = x_i + e_i below `valid`, e_i above.
inline std::vector<float> workerU(const uint8_t* x, obcclDataType_t dt, size_t valid,
                                  const float* e, size_t len) {
  std::vector<float> u(len);
  for (size_t i = 0; i < len; ++i) u[i] = i < valid ? toFloat(x, dt, i) + e[i] : e[i];
  return u;
}

inline std::vector<float> workerUpdate(const std::vector<float>& u, size_t block,
                                       const std::vector<float>& scales) {
  std::vector<float> e(u.size());
  for (size_t i = 0; i < u.size(); ++i) e[i] = u[i] - scales[blockOf(i, block)] * sigma(u[i]);
  return e;
}

// z_k = (sum_r a_r * sigma_rk, fp32, rank order) * (1/n) + s_k.
inline std::vector<float> serverZ(const std::vector<const uint8_t*>& bits,
                                  const std::vector<const float*>& scales, const float* s,
                                  size_t len, size_t block) {
  size_t n = bits.size();
  float invN = 1.0f / static_cast<float>(n);
  std::vector<float> z(len);
  for (size_t k = 0; k < len; ++k) {
    float sum = 0.0f;
    for (size_t r = 0; r < n; ++r)
      sum += scales[r][blockOf(k, block)] * (bitOf(bits[r], k) ? 1.0f : -1.0f);
    z[k] = sum * invN + s[k];
  }
  return z;
}

// y_k = b * sigma_k in dtype, as raw bytes.
inline std::vector<uint8_t> decode(const uint8_t* bits, size_t len, size_t block,
                                   const std::vector<float>& scales, obcclDataType_t dt) {
  std::vector<uint8_t> y(len * elemBytes(dt));
  for (size_t k = 0; k < len; ++k) {
    float v = scales[blockOf(k, block)] * (bitOf(bits, k) ? 1.0f : -1.0f);
    if (dt == obcclFloat32) {
      std::memcpy(&y[4 * k], &v, 4);
    } else {
      uint16_t h = dt == obcclFloat16 ? floatToHalf(v) : floatToBf16(v);
      std::memcpy(&y[2 * k], &h, 2);
    }
  }
  return y;
}

// Random values that exercise the corners: signed zeros, denormals, huge and tiny magnitudes.
// All finite, |v| <= 1e38 so that sums of two stay finite.
class Gen {
 public:
  explicit Gen(uint64_t seed) : rng_(seed) {}
  uint64_t next() { return rng_(); }
  size_t below(size_t n) { return static_cast<size_t>(rng_() % n); }
  float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng_); }
  float value() {
    float sign = (rng_() & 1) ? -1.0f : 1.0f;
    switch (below(10)) {
      case 0:
        return sign * 0.0f;
      case 1: {  // denormal
        uint32_t bits = static_cast<uint32_t>(1 + below(0x7fffff)) | (sign < 0 ? 0x80000000u : 0u);
        float f;
        std::memcpy(&f, &bits, 4);
        return f;
      }
      case 2:
        return sign *
               std::ldexp(uniform(1.0f, 2.0f), static_cast<int>(below(27)) + 99);  // to ~1e38
      case 3:
        return sign * std::ldexp(uniform(1.0f, 2.0f), -static_cast<int>(below(25)) - 100);
      case 4:
        return sign * static_cast<float>(below(5));
      default:
        return std::normal_distribution<float>(0.0f, 1.0f)(rng_);
    }
  }
  std::vector<float> values(size_t n) {
    std::vector<float> v(n);
    for (auto& f : v) f = value();
    return v;
  }
  // n finite elements of dt as raw bytes: fp32 from value(), 16-bit types from random patterns
  // with the all-ones exponent (inf, NaN) excluded.
  std::vector<uint8_t> raw(obcclDataType_t dt, size_t n) {
    std::vector<uint8_t> out(n * elemBytes(dt));
    for (size_t i = 0; i < n; ++i) {
      if (dt == obcclFloat32) {
        float f = value();
        std::memcpy(&out[4 * i], &f, 4);
        continue;
      }
      uint16_t expMask = dt == obcclFloat16 ? 0x7c00 : 0x7f80;
      uint16_t h;
      do {
        h = static_cast<uint16_t>(rng_());
      } while ((h & expMask) == expMask);
      std::memcpy(&out[2 * i], &h, 2);
    }
    return out;
  }
  std::vector<uint8_t> bytes(size_t n) {
    std::vector<uint8_t> b(n);
    for (auto& c : b) c = static_cast<uint8_t>(rng_());
    return b;
  }
  // Non-negative scales as a caller would compute them, with zeros and denormals mixed in.
  std::vector<float> scales(size_t n, float maxScale = 1e37f) {
    std::vector<float> s(n);
    for (auto& f : s) {
      f = std::fabs(value());
      if (f > maxScale) f = maxScale;
    }
    return s;
  }

 private:
  std::mt19937_64 rng_;
};

}  // namespace obccl::codec::testref
