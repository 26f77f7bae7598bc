// Test data and sequential references for the multirank collective tests: deterministic inputs
// per (rank, element) that are exactly representable in the datatype, a reference computed in
// double (floating types) or wrapping uint64 arithmetic (integers), and a tolerance suited to
// the reduction order of each type.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "obccl/obccl.h"
#include "util/half.h"

namespace obccl_test {

inline size_t typeSize(obcclDataType_t dt) {
  switch (dt) {
    case obcclFloat16:
    case obcclBfloat16:
      return 2;
    case obcclFloat32:
    case obcclInt32:
      return 4;
    case obcclFloat64:
    case obcclInt64:
      return 8;
    default:
      return 1;
  }
}

inline bool isFloat(obcclDataType_t dt) {
  return dt == obcclFloat32 || dt == obcclFloat64 || dt == obcclFloat16 || dt == obcclBfloat16;
}

inline const char* typeName(obcclDataType_t dt) {
  static const char* kNames[] = {"float32", "float16", "bfloat16", "float64",
                                 "int32",   "int64",   "uint8"};
  return kNames[dt];
}
inline const char* opName(obcclRedOp_t op) {
  static const char* kNames[] = {"sum", "prod", "max", "min", "avg"};
  return kNames[op];
}

// Unit roundoff of each floating type.
inline double unitRoundoff(obcclDataType_t dt) {
  switch (dt) {
    case obcclFloat16:
      return std::ldexp(1.0, -11);
    case obcclBfloat16:
      return std::ldexp(1.0, -8);
    case obcclFloat32:
      return std::ldexp(1.0, -24);
    default:
      return std::ldexp(1.0, -53);
  }
}

// A well-mixed 64-bit hash (splitmix64) of (seed, rank, index).
inline uint64_t mix(uint64_t seed, uint64_t r, uint64_t i) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ULL + r * 0xbf58476d1ce4e5b9ULL + i * 0x94d049bb133111ebULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
inline double uniform(uint64_t h, double lo, double hi) {
  return lo + (hi - lo) * static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);
}

// Stores v (already representable) into element i of a dt buffer.
inline void storeValue(obcclDataType_t dt, void* buf, size_t i, double v) {
  switch (dt) {
    case obcclFloat32:
      static_cast<float*>(buf)[i] = static_cast<float>(v);
      break;
    case obcclFloat64:
      static_cast<double*>(buf)[i] = v;
      break;
    case obcclFloat16:
      static_cast<uint16_t*>(buf)[i] = obccl::floatToHalf(static_cast<float>(v));
      break;
    case obcclBfloat16:
      static_cast<uint16_t*>(buf)[i] = obccl::floatToBf16(static_cast<float>(v));
      break;
    case obcclInt32:
      static_cast<int32_t*>(buf)[i] = static_cast<int32_t>(static_cast<int64_t>(v));
      break;
    case obcclInt64:
      static_cast<int64_t*>(buf)[i] = static_cast<int64_t>(v);
      break;
    default:
      static_cast<uint8_t*>(buf)[i] = static_cast<uint8_t>(static_cast<int64_t>(v));
      break;
  }
}

inline double loadValue(obcclDataType_t dt, const void* buf, size_t i) {
  switch (dt) {
    case obcclFloat32:
      return static_cast<const float*>(buf)[i];
    case obcclFloat64:
      return static_cast<const double*>(buf)[i];
    case obcclFloat16:
      return obccl::halfToFloat(static_cast<const uint16_t*>(buf)[i]);
    case obcclBfloat16:
      return obccl::bf16ToFloat(static_cast<const uint16_t*>(buf)[i]);
    case obcclInt32:
      return static_cast<const int32_t*>(buf)[i];
    case obcclInt64:
      return static_cast<double>(static_cast<const int64_t*>(buf)[i]);
    default:
      return static_cast<const uint8_t*>(buf)[i];
  }
}

// The input value of element i on rank r: a range that keeps every op meaningful (products near
// 1 for floats, small factors for integers so that sums and products exercise wrap-around only
// for uint8).
inline double inputValue(obcclDataType_t dt, obcclRedOp_t op, int r, size_t i, uint64_t seed) {
  uint64_t h = mix(seed, static_cast<uint64_t>(r), i);
  if (isFloat(dt)) {
    double v = op == obcclProd                      ? uniform(h, 0.5, 1.5)
               : (op == obcclMax || op == obcclMin) ? uniform(h, -100, 100)
                                                    : uniform(h, -1, 1);
    // Round to the type so that the reference sees exactly what the library sees.
    uint16_t tmp;
    switch (dt) {
      case obcclFloat16:
        tmp = obccl::floatToHalf(static_cast<float>(v));
        return obccl::halfToFloat(tmp);
      case obcclBfloat16:
        tmp = obccl::floatToBf16(static_cast<float>(v));
        return obccl::bf16ToFloat(tmp);
      case obcclFloat32:
        return static_cast<float>(v);
      default:
        return v;
    }
  }
  if (dt == obcclUint8) return static_cast<double>(h % 256);
  if (op == obcclProd) return static_cast<double>(static_cast<int64_t>(h % 7) - 3);
  if (op == obcclMax || op == obcclMin)
    return static_cast<double>(static_cast<int64_t>(h % 2000001) - 1000000);
  return static_cast<double>(static_cast<int64_t>(h % 2001) - 1000);
}

// Fills count elements of rank r's buffer.
inline void fillInput(obcclDataType_t dt, obcclRedOp_t op, int r, size_t count, uint64_t seed,
                      void* buf, size_t offset = 0) {
  for (size_t i = 0; i < count; ++i)
    storeValue(dt, buf, i, inputValue(dt, op, r, offset + i, seed));
}

// Reference reduction over ranks of element i, and the allowed absolute error.
struct Expected {
  double value;
  double tolerance;
};

inline Expected reduceReference(obcclDataType_t dt, obcclRedOp_t op, int n, size_t i,
                                uint64_t seed) {
  if (!isFloat(dt)) {
    // Integer semantics: wrap-around in the type's width.
    uint64_t acc = op == obcclProd ? 1 : 0;
    int64_t best = 0;
    for (int r = 0; r < n; ++r) {
      int64_t v = static_cast<int64_t>(inputValue(dt, op, r, i, seed));
      if (op == obcclSum) acc += static_cast<uint64_t>(v);
      if (op == obcclProd) acc *= static_cast<uint64_t>(v);
      if (r == 0 || (op == obcclMax && v > best) || (op == obcclMin && v < best)) best = v;
    }
    double out;
    if (op == obcclMax || op == obcclMin) {
      out = static_cast<double>(best);
    } else if (dt == obcclUint8) {
      out = static_cast<double>(acc & 0xff);
    } else if (dt == obcclInt32) {
      out = static_cast<double>(static_cast<int32_t>(static_cast<uint32_t>(acc)));
    } else {
      out = static_cast<double>(static_cast<int64_t>(acc));
    }
    return {out, 0.0};
  }
  double acc = op == obcclProd ? 1.0 : 0.0, absSum = 0, best = 0;
  for (int r = 0; r < n; ++r) {
    double v = inputValue(dt, op, r, i, seed);
    absSum += std::fabs(v);
    if (op == obcclSum || op == obcclAvg) acc += v;
    if (op == obcclProd) acc *= v;
    if (r == 0 || (op == obcclMax && v > best) || (op == obcclMin && v < best)) best = v;
  }
  const double u = unitRoundoff(dt);
  switch (op) {
    case obcclMax:
    case obcclMin:
      return {best, 0.0};
    case obcclProd:
      return {acc, (n + 1) * u * std::fabs(acc) * 1.01};
    case obcclAvg:
      return {acc / n, ((n + 1) * u * absSum) / n + u * std::fabs(acc / n) + 1e-300};
    default:
      return {acc, (n + 1) * u * absSum + 1e-300};
  }
}

}  // namespace obccl_test
