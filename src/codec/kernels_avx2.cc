// AVX2 variant (compiled with -mavx2 -mfma -mf16c; -ffp-contract=off keeps every product and sum
// rounded separately, as in the scalar reference).
//
// Packed signs are read without any bit reversal: a byte broadcast to 8 lanes and shifted left by
// 24 + j puts bit (7 - j), i.e. element j's sign, into lane j's sign bit, which blendv tests.
// Signs are written by reversing the 8 lanes before movemask, so lane j lands in bit 7 - j.
#include <immintrin.h>

#include "codec/codec_internal.h"

namespace obccl::codec {
namespace {

// Shift counts for byte q (bits 8q..8q+7) of a broadcast 32-bit word.
inline __m256i byteShifts(int q) {
  int b = 24 - 8 * q;
  return _mm256_setr_epi32(b, b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7);
}

inline __m256 negate(__m256 v) { return _mm256_xor_ps(v, _mm256_set1_ps(-0.0f)); }

// 8 lanes, each all ones where the lane is +1 (not less than zero; NaN counts as +1).
inline __m256 positiveMask(__m256 v) { return _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NLT_UQ); }

// Packed signs of 8 lanes: lane j goes to bit 7 - j.
inline uint8_t packSigns(__m256 v) {
  __m256 reversed = _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0));
  return static_cast<uint8_t>(_mm256_movemask_ps(positiveMask(reversed)));
}

struct Norm8 {
  __m256d lo, hi;  // lanes 0-3 and 4-7
  explicit Norm8(const NormAccumulator& acc)
      : lo(_mm256_loadu_pd(acc.lane)), hi(_mm256_loadu_pd(acc.lane + 4)) {}
  void add(__m256 v) {
    __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    __m256d b = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    // Multiply, then add: only the add is on the lanes' dependency chain (a fused multiply-add
    // would give the same bits, squares of floats being exact in double, but has the longer
    // latency).
    lo = _mm256_add_pd(lo, _mm256_mul_pd(a, a));
    hi = _mm256_add_pd(hi, _mm256_mul_pd(b, b));
  }
  void store(NormAccumulator& acc) const {
    _mm256_storeu_pd(acc.lane, lo);
    _mm256_storeu_pd(acc.lane + 4, hi);
  }
};

template <obcclDataType_t DT>
inline __m256 loadX8(const void* x, size_t i) {
  const auto* p = static_cast<const uint8_t*>(x);
  if constexpr (DT == obcclFloat32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(p + 4 * i));
  } else {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * i));
    if constexpr (DT == obcclFloat16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

// u for the group of 8 at i when x covers only part of it (or none): padding lanes keep e exactly.
template <obcclDataType_t DT>
inline __m256 workerUPartial(const void* x, size_t valid, const float* e, size_t i) {
  __m256 ev = _mm256_loadu_ps(e + i);
  if (valid <= i) return ev;
  size_t count = valid - i;
  alignas(32) uint8_t tmp[32] = {};
  std::memcpy(tmp, static_cast<const uint8_t*>(x) + i * elementSize(DT), count * elementSize(DT));
  __m256 sum = _mm256_add_ps(loadX8<DT>(tmp, 0), ev);
  __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256i inside = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), lanes);
  return _mm256_blendv_ps(ev, sum, _mm256_castsi256_ps(inside));
}

// Calls f(i, u) for every group of 8 of a worker span.
template <obcclDataType_t DT, typename F>
[[gnu::always_inline]] inline void forWorkerGroups(const void* x, size_t valid, const float* e,
                                                   size_t len, F&& f) {
  size_t full = std::min(valid, len) & ~size_t{7};
  size_t i = 0;
  for (; i < full; i += 8) f(i, _mm256_add_ps(loadX8<DT>(x, i), _mm256_loadu_ps(e + i)));
  for (; i < len; i += 8) f(i, workerUPartial<DT>(x, valid, e, i));
}

template <obcclDataType_t DT>
void workerEncodeT(const void* x, size_t valid, const float* e, size_t len, uint8_t* bits,
                   NormAccumulator& acc) {
  Norm8 norm(acc);
  forWorkerGroups<DT>(x, valid, e, len, [&](size_t i, __m256 u) {
    norm.add(u);
    bits[i / 8] = packSigns(u);
  });
  norm.store(acc);
}

template <obcclDataType_t DT>
void workerUpdateT(const void* x, size_t valid, float* e, size_t len, float a) {
  const __m256 pos = _mm256_set1_ps(a), neg = negate(pos);
  forWorkerGroups<DT>(x, valid, e, len, [&](size_t i, __m256 u) {
    _mm256_storeu_ps(e + i, _mm256_sub_ps(u, _mm256_blendv_ps(neg, pos, positiveMask(u))));
  });
}

// Calls f(g, z) for every group of 8 of a server span, z in element order.
template <typename F>
[[gnu::always_inline]] inline void forServerGroups(const ServerSpan& in, size_t off, size_t len,
                                                   size_t k, F&& f) {
  const __m256 invN = _mm256_set1_ps(1.0f / static_cast<float>(in.nranks));
  const __m256i s0 = byteShifts(0), s1 = byteShifts(1), s2 = byteShifts(2), s3 = byteShifts(3);
  size_t g = 0;
  for (; g + 32 <= len; g += 32) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t r = 0; r < in.nranks; ++r) {
      uint32_t w;
      std::memcpy(&w, in.bits[r] + (off + g) / 8, 4);
      __m256i word = _mm256_set1_epi32(static_cast<int>(w));
      __m256 pos = _mm256_broadcast_ss(&in.scales[r][k]), neg = negate(pos);
      a0 = _mm256_add_ps(
          a0, _mm256_blendv_ps(neg, pos, _mm256_castsi256_ps(_mm256_sllv_epi32(word, s0))));
      a1 = _mm256_add_ps(
          a1, _mm256_blendv_ps(neg, pos, _mm256_castsi256_ps(_mm256_sllv_epi32(word, s1))));
      a2 = _mm256_add_ps(
          a2, _mm256_blendv_ps(neg, pos, _mm256_castsi256_ps(_mm256_sllv_epi32(word, s2))));
      a3 = _mm256_add_ps(
          a3, _mm256_blendv_ps(neg, pos, _mm256_castsi256_ps(_mm256_sllv_epi32(word, s3))));
    }
    const float* s = in.s + off + g;
    f(g, _mm256_add_ps(_mm256_mul_ps(a0, invN), _mm256_loadu_ps(s)));
    f(g + 8, _mm256_add_ps(_mm256_mul_ps(a1, invN), _mm256_loadu_ps(s + 8)));
    f(g + 16, _mm256_add_ps(_mm256_mul_ps(a2, invN), _mm256_loadu_ps(s + 16)));
    f(g + 24, _mm256_add_ps(_mm256_mul_ps(a3, invN), _mm256_loadu_ps(s + 24)));
  }
  for (; g < len; g += 8) {
    __m256 a0 = _mm256_setzero_ps();
    for (size_t r = 0; r < in.nranks; ++r) {
      __m256i word = _mm256_set1_epi32(in.bits[r][(off + g) / 8]);
      __m256 pos = _mm256_broadcast_ss(&in.scales[r][k]), neg = negate(pos);
      a0 = _mm256_add_ps(
          a0, _mm256_blendv_ps(neg, pos, _mm256_castsi256_ps(_mm256_sllv_epi32(word, s0))));
    }
    f(g, _mm256_add_ps(_mm256_mul_ps(a0, invN), _mm256_loadu_ps(in.s + off + g)));
  }
}

template <obcclDataType_t DT>
void decodeT(const uint8_t* bits, size_t len, float b, void* y) {
  auto* out = static_cast<uint8_t*>(y);
  size_t i = 0;
  if constexpr (DT == obcclFloat32) {
    const __m256 pos = _mm256_set1_ps(b), neg = negate(pos);
    const __m256i s0 = byteShifts(0);
    for (; i + 8 <= len; i += 8) {
      __m256i word = _mm256_set1_epi32(bits[i / 8]);
      __m256 v = _mm256_blendv_ps(neg, pos, _mm256_castsi256_ps(_mm256_sllv_epi32(word, s0)));
      _mm256_storeu_ps(reinterpret_cast<float*>(out + 4 * i), v);
    }
  } else {
    const __m256i pos = _mm256_set1_epi16(static_cast<short>(encodeElement(b, DT)));
    const __m256i neg = _mm256_set1_epi16(static_cast<short>(encodeElement(-b, DT)));
    const __m256i select =
        _mm256_setr_epi16(0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01, 0x8000 - 0x10000, 0x4000,
                          0x2000, 0x1000, 0x0800, 0x0400, 0x0200, 0x0100);
    for (; i + 16 <= len; i += 16) {
      uint16_t w;
      std::memcpy(&w, bits + i / 8, 2);
      __m256i set = _mm256_and_si256(_mm256_set1_epi16(static_cast<short>(w)), select);
      __m256i v = _mm256_blendv_epi8(neg, pos, _mm256_cmpeq_epi16(set, select));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 2 * i), v);
    }
  }
  if (i < len) scalarKernels().decode(bits + i / 8, len - i, 0, &b, out + i * elementSize(DT), DT);
}

struct Avx2Impl {
  static void workerEncode(const void* x, obcclDataType_t dtype, size_t valid, const float* e,
                           size_t len, uint8_t* bits, NormAccumulator& acc) {
    if (dtype == obcclFloat16) return workerEncodeT<obcclFloat16>(x, valid, e, len, bits, acc);
    if (dtype == obcclBfloat16) return workerEncodeT<obcclBfloat16>(x, valid, e, len, bits, acc);
    workerEncodeT<obcclFloat32>(x, valid, e, len, bits, acc);
  }
  static void workerUpdate(const void* x, obcclDataType_t dtype, size_t valid, float* e, size_t len,
                           float a) {
    if (dtype == obcclFloat16) return workerUpdateT<obcclFloat16>(x, valid, e, len, a);
    if (dtype == obcclBfloat16) return workerUpdateT<obcclBfloat16>(x, valid, e, len, a);
    workerUpdateT<obcclFloat32>(x, valid, e, len, a);
  }
  static void serverNorm(const ServerSpan& in, size_t off, size_t len, size_t k,
                         NormAccumulator& acc) {
    Norm8 norm(acc);
    forServerGroups(in, off, len, k, [&](size_t, __m256 z) { norm.add(z); });
    norm.store(acc);
  }
  static void serverEncode(const ServerSpan& in, size_t off, size_t len, size_t k, float b,
                           uint8_t* bits, float* sOut) {
    const __m256 pos = _mm256_set1_ps(b), neg = negate(pos);
    forServerGroups(in, off, len, k, [&](size_t g, __m256 z) {
      if (bits) bits[g / 8] = packSigns(z);
      if (sOut)
        _mm256_storeu_ps(sOut + g, _mm256_sub_ps(z, _mm256_blendv_ps(neg, pos, positiveMask(z))));
    });
  }
  static void decode(const uint8_t* bits, size_t len, float b, void* y, obcclDataType_t dtype) {
    if (dtype == obcclFloat16) return decodeT<obcclFloat16>(bits, len, b, y);
    if (dtype == obcclBfloat16) return decodeT<obcclBfloat16>(bits, len, b, y);
    decodeT<obcclFloat32>(bits, len, b, y);
  }
};

}  // namespace

const Kernels& avx2Kernels() {
  static const Kernels k = BlockedKernels<Avx2Impl>::make(Variant::kAvx2, "avx2");
  return k;
}

}  // namespace obccl::codec
