#include "core/reduce.h"

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "util/half.h"

namespace obccl::core {
namespace {

struct Sum {
  template <typename T>
  T operator()(T a, T b) const {
    return a + b;
  }
};
struct Prod {
  template <typename T>
  T operator()(T a, T b) const {
    return a * b;
  }
};
struct Max {
  template <typename T>
  T operator()(T a, T b) const {
    return a < b ? b : a;
  }
};
struct Min {
  template <typename T>
  T operator()(T a, T b) const {
    return b < a ? b : a;
  }
};

template <typename T, typename Op>
void loop(T* d, const T* a, const T* b, size_t n, Op op) {
  for (size_t i = 0; i < n; ++i) d[i] = op(a[i], b[i]);
}

// Signed integers: sums and products in the unsigned type so overflow wraps instead of being UB.
template <typename S, typename U>
void intReduce(S* d, const S* a, const S* b, size_t n, obcclRedOp_t op) {
  switch (op) {
    case obcclProd:
      for (size_t i = 0; i < n; ++i)
        d[i] = static_cast<S>(static_cast<U>(a[i]) * static_cast<U>(b[i]));
      break;
    case obcclMax:
      loop(d, a, b, n, Max());
      break;
    case obcclMin:
      loop(d, a, b, n, Min());
      break;
    default:
      for (size_t i = 0; i < n; ++i)
        d[i] = static_cast<S>(static_cast<U>(a[i]) + static_cast<U>(b[i]));
      break;
  }
}

template <typename T>
void floatReduce(T* d, const T* a, const T* b, size_t n, obcclRedOp_t op) {
  switch (op) {
    case obcclProd:
      loop(d, a, b, n, Prod());
      break;
    case obcclMax:
      loop(d, a, b, n, Max());
      break;
    case obcclMin:
      loop(d, a, b, n, Min());
      break;
    default:
      loop(d, a, b, n, Sum());
      break;
  }
}

void uint8Reduce(uint8_t* d, const uint8_t* a, const uint8_t* b, size_t n, obcclRedOp_t op) {
  switch (op) {
    case obcclProd:
      for (size_t i = 0; i < n; ++i) d[i] = static_cast<uint8_t>(a[i] * b[i]);
      break;
    case obcclMax:
      loop(d, a, b, n, Max());
      break;
    case obcclMin:
      loop(d, a, b, n, Min());
      break;
    default:
      for (size_t i = 0; i < n; ++i) d[i] = static_cast<uint8_t>(a[i] + b[i]);
      break;
  }
}

// bf16: conversion is a shift, so the fp32 loop stays vectorizable.
template <typename Op>
void bf16Loop(uint16_t* d, const uint16_t* a, const uint16_t* b, size_t n, Op op) {
  for (size_t i = 0; i < n; ++i) d[i] = floatToBf16(op(bf16ToFloat(a[i]), bf16ToFloat(b[i])));
}

template <typename Op>
void halfLoopScalar(uint16_t* d, const uint16_t* a, const uint16_t* b, size_t n, Op op) {
  for (size_t i = 0; i < n; ++i) d[i] = floatToHalf(op(halfToFloat(a[i]), halfToFloat(b[i])));
}

// F16C converts 8 halves at a time with the same round-to-nearest-even as util/half.h.
template <typename Op>
__attribute__((target("avx,f16c"))) void halfLoopF16c(uint16_t* d, const uint16_t* a,
                                                      const uint16_t* b, size_t n, Op op) {
  size_t i = 0;
  alignas(32) float fa[8], fb[8];
  for (; i + 8 <= n; i += 8) {
    __m128i ha = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i));
    __m128i hb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i));
    _mm256_store_ps(fa, _mm256_cvtph_ps(ha));
    _mm256_store_ps(fb, _mm256_cvtph_ps(hb));
    for (int k = 0; k < 8; ++k) fa[k] = op(fa[k], fb[k]);
    __m128i hd = _mm256_cvtps_ph(_mm256_load_ps(fa), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), hd);
  }
  halfLoopScalar(d + i, a + i, b + i, n - i, op);
}

bool haveF16c() {
  static const bool kHave = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
  return kHave;
}

template <typename Op>
void halfLoop(uint16_t* d, const uint16_t* a, const uint16_t* b, size_t n, Op op) {
  if (haveF16c()) {
    halfLoopF16c(d, a, b, n, op);
  } else {
    halfLoopScalar(d, a, b, n, op);
  }
}

void reduce16(bool half, uint16_t* d, const uint16_t* a, const uint16_t* b, size_t n,
              obcclRedOp_t op) {
  switch (op) {
    case obcclProd:
      half ? halfLoop(d, a, b, n, Prod()) : bf16Loop(d, a, b, n, Prod());
      break;
    case obcclMax:
      half ? halfLoop(d, a, b, n, Max()) : bf16Loop(d, a, b, n, Max());
      break;
    case obcclMin:
      half ? halfLoop(d, a, b, n, Min()) : bf16Loop(d, a, b, n, Min());
      break;
    default:
      half ? halfLoop(d, a, b, n, Sum()) : bf16Loop(d, a, b, n, Sum());
      break;
  }
}

// Division by the rank count for averages.
struct SumDiv {
  float div;
  float operator()(float a, float b) const { return (a + b) / div; }
};
struct Div {
  float div;
  float operator()(float a, float) const { return a / div; }
};

}  // namespace

void reduce(void* dst, const void* a, const void* b, size_t count, obcclDataType_t datatype,
            obcclRedOp_t op) {
  switch (datatype) {
    case obcclFloat32:
      floatReduce(static_cast<float*>(dst), static_cast<const float*>(a),
                  static_cast<const float*>(b), count, op);
      break;
    case obcclFloat64:
      floatReduce(static_cast<double*>(dst), static_cast<const double*>(a),
                  static_cast<const double*>(b), count, op);
      break;
    case obcclFloat16:
    case obcclBfloat16:
      reduce16(datatype == obcclFloat16, static_cast<uint16_t*>(dst),
               static_cast<const uint16_t*>(a), static_cast<const uint16_t*>(b), count, op);
      break;
    case obcclInt32:
      intReduce<int32_t, uint32_t>(static_cast<int32_t*>(dst), static_cast<const int32_t*>(a),
                                   static_cast<const int32_t*>(b), count, op);
      break;
    case obcclInt64:
      intReduce<int64_t, uint64_t>(static_cast<int64_t*>(dst), static_cast<const int64_t*>(a),
                                   static_cast<const int64_t*>(b), count, op);
      break;
    case obcclUint8:
      uint8Reduce(static_cast<uint8_t*>(dst), static_cast<const uint8_t*>(a),
                  static_cast<const uint8_t*>(b), count, op);
      break;
    default:
      break;
  }
}

void reduceDivide(void* dst, const void* a, const void* b, size_t count, obcclDataType_t datatype,
                  int divisor) {
  switch (datatype) {
    case obcclFloat32: {
      float* d = static_cast<float*>(dst);
      const float* x = static_cast<const float*>(a);
      const float* y = static_cast<const float*>(b);
      const float div = static_cast<float>(divisor);
      for (size_t i = 0; i < count; ++i) d[i] = (x[i] + y[i]) / div;
      break;
    }
    case obcclFloat64: {
      double* d = static_cast<double*>(dst);
      const double* x = static_cast<const double*>(a);
      const double* y = static_cast<const double*>(b);
      const double div = static_cast<double>(divisor);
      for (size_t i = 0; i < count; ++i) d[i] = (x[i] + y[i]) / div;
      break;
    }
    case obcclFloat16:
      halfLoop(static_cast<uint16_t*>(dst), static_cast<const uint16_t*>(a),
               static_cast<const uint16_t*>(b), count, SumDiv{static_cast<float>(divisor)});
      break;
    case obcclBfloat16:
      bf16Loop(static_cast<uint16_t*>(dst), static_cast<const uint16_t*>(a),
               static_cast<const uint16_t*>(b), count, SumDiv{static_cast<float>(divisor)});
      break;
    default:
      break;
  }
}

void divideBy(void* dst, const void* src, size_t count, obcclDataType_t datatype, int divisor) {
  switch (datatype) {
    case obcclFloat32: {
      float* d = static_cast<float*>(dst);
      const float* s = static_cast<const float*>(src);
      const float div = static_cast<float>(divisor);
      for (size_t i = 0; i < count; ++i) d[i] = s[i] / div;
      break;
    }
    case obcclFloat64: {
      double* d = static_cast<double*>(dst);
      const double* s = static_cast<const double*>(src);
      const double div = static_cast<double>(divisor);
      for (size_t i = 0; i < count; ++i) d[i] = s[i] / div;
      break;
    }
    case obcclFloat16:
      halfLoop(static_cast<uint16_t*>(dst), static_cast<const uint16_t*>(src),
               static_cast<const uint16_t*>(src), count, Div{static_cast<float>(divisor)});
      break;
    case obcclBfloat16:
      bf16Loop(static_cast<uint16_t*>(dst), static_cast<const uint16_t*>(src),
               static_cast<const uint16_t*>(src), count, Div{static_cast<float>(divisor)});
      break;
    default:
      break;
  }
}

}  // namespace obccl::core
