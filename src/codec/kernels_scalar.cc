// The scalar reference variant: plain loops that spell out the semantics in codec.h. The SIMD
// variants must reproduce its results bit for bit.
#include "codec/codec_internal.h"

namespace obccl::codec {
namespace {

inline float workerU(const void* x, obcclDataType_t dtype, size_t valid, const float* e, size_t i) {
  return i < valid ? loadElement(x, dtype, i) + e[i] : e[i];
}

inline bool packedBit(const uint8_t* bits, size_t i) { return (bits[i >> 3] >> (7 - (i & 7))) & 1; }

inline float serverZ(const ServerSpan& in, size_t i, size_t k, float invN) {
  float acc = 0.0f;
  for (size_t r = 0; r < in.nranks; ++r) {
    const float a = in.scales[r][k], plusMinus[2] = {-a, a};  // indexed: random signs, no branch
    acc += plusMinus[packedBit(in.bits[r], i)];
  }
  return acc * invN + in.s[i];
}

inline void addSquare(NormAccumulator& acc, size_t i, float v) {
  double d = v;
  acc.lane[i & 7] += d * d;
}

struct ScalarImpl {
  static void workerEncode(const void* x, obcclDataType_t dtype, size_t valid, const float* e,
                           size_t len, uint8_t* bits, NormAccumulator& acc) {
    for (size_t g = 0; g < len; g += 8) {
      unsigned byte = 0;
      for (size_t j = 0; j < 8; ++j) {
        float u = workerU(x, dtype, valid, e, g + j);
        byte |= static_cast<unsigned>(signBit(u)) << (7 - j);
        addSquare(acc, j, u);
      }
      bits[g / 8] = static_cast<uint8_t>(byte);
    }
  }

  static void workerUpdate(const void* x, obcclDataType_t dtype, size_t valid, float* e, size_t len,
                           float a) {
    for (size_t i = 0; i < len; ++i) {
      float u = workerU(x, dtype, valid, e, i);
      e[i] = u - (signBit(u) ? a : -a);
    }
  }

  static void serverNorm(const ServerSpan& in, size_t off, size_t len, size_t k,
                         NormAccumulator& acc) {
    float invN = 1.0f / static_cast<float>(in.nranks);
    for (size_t i = off; i < off + len; ++i) addSquare(acc, i, serverZ(in, i, k, invN));
  }

  static void serverEncode(const ServerSpan& in, size_t off, size_t len, size_t k, float b,
                           uint8_t* bits, float* sOut) {
    float invN = 1.0f / static_cast<float>(in.nranks);
    for (size_t g = 0; g < len; g += 8) {
      unsigned byte = 0;
      for (size_t j = 0; j < 8; ++j) {
        float z = serverZ(in, off + g + j, k, invN);
        bool positive = signBit(z);
        byte |= static_cast<unsigned>(positive) << (7 - j);
        if (sOut) sOut[g + j] = z - (positive ? b : -b);
      }
      if (bits) bits[g / 8] = static_cast<uint8_t>(byte);
    }
  }

  static void decode(const uint8_t* bits, size_t len, float b, void* y, obcclDataType_t dtype) {
    uint32_t pos = encodeElement(b, dtype);
    uint32_t neg = encodeElement(-b, dtype);
    for (size_t i = 0; i < len; ++i) storeElement(y, dtype, i, packedBit(bits, i) ? pos : neg);
  }
};

}  // namespace

const Kernels& scalarKernels() {
  static const Kernels k = BlockedKernels<ScalarImpl>::make(Variant::kScalar, "scalar");
  return k;
}

}  // namespace obccl::codec
