// Sign/scale compression kernels of the 1-bit compressed allreduce (DESIGN.md section 4): a scalar
// reference plus AVX2 and AVX-512 variants that produce identical bits, behind one dispatch point.
//
// Every kernel works on a span of one vector: pointers point at the span's first element, and the
// span starts at an index of the whole vector that is a multiple of 8 (so lane j of a
// NormAccumulator always receives the elements whose vector index is j mod 8). A span is cut into
// blocks of `block` elements (0: one block of the whole span; the last block may be shorter); block
// k uses scales[k] and norms[k]. Blocks are multiples of 8 elements, so is every span of an encode
// or norm kernel; only decode accepts any length.
//
// The arithmetic is fp32 except the norms (double). sigma(v) = -1 if v < 0 else +1 (so +0.0, -0.0
// and NaN give +1); a packed bit is 1 for +1, and element 8k+j of a span is bit (7-j) of byte k.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "obccl/obccl.h"
#include "util/status.h"

namespace obccl::codec {

// Sum of squares with one fixed summation order, so every variant and every way of cutting a
// vector into spans gives the same double: lane j adds double(v)*double(v) for the elements whose
// vector index is j mod 8, in increasing index order; finish() combines the lanes as
// ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)). A non-finite element makes finish() non-finite (squares are
// never negative, so no cancellation): callers detect bad input that way, without a separate flag.
struct NormAccumulator {
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  double finish() const;
};

// float(sqrt(sumsq / count)) in double: the scale of a block of `count` elements.
float rmsScale(double sumsq, size_t count);
// The scale of the elements an accumulator saw: rmsScale(acc.finish(), count).
inline float rmsScale(const NormAccumulator& acc, size_t count) {
  return rmsScale(acc.finish(), count);
}
// Blocks in a span of `len` elements with block size `block` (0: one block).
inline size_t blockCount(size_t len, size_t block) {
  if (len == 0) return 0;
  return block == 0 ? 1 : (len + block - 1) / block;
}

// The server step's inputs for one span of this rank's chunk.
struct ServerSpan {
  size_t nranks = 0;                     // n
  const uint8_t* const* bits = nullptr;  // n pointers: rank i's packed signs for this span
  const float* const* scales = nullptr;  // n pointers: rank i's scales, one per block of the span
  const float* s = nullptr;              // the server error of the span (read only)
};

enum class Variant { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };
inline constexpr int kNumVariants = 3;

// One variant's kernels. `dtype` is obcclFloat32, obcclFloat16 or obcclBfloat16 (checked by the
// caller); x and y may have any alignment.
struct Kernels {
  Variant variant;
  const char* name;
  // Worker encode: u_i = x_i + e_i for i < valid, u_i = e_i for valid <= i < len (padding; x is
  // not read there). Writes len/8 bytes of packed signs of u and adds u^2 of block k to norms[k].
  // Never writes e: the error update waits until every rank's input is known to be finite.
  void (*workerEncode)(const void* x, obcclDataType_t dtype, size_t valid, const float* e,
                       size_t len, size_t block, uint8_t* bits, NormAccumulator* norms);
  // Worker error update: e_i = u_i - scales[k] * sigma(u_i), u recomputed exactly as above.
  void (*workerUpdate)(const void* x, obcclDataType_t dtype, size_t valid, float* e, size_t len,
                       size_t block, const float* scales);
  // Server norm: z_k = (sum over ranks i in rank order of a_i * sigma_ik, accumulated in fp32
  // from 0.0f) * (1.0f / n) + s_k, with a_i = in.scales[i][block of k]; adds z^2 of block k to
  // norms[k]. Writes nothing.
  void (*serverNorm)(const ServerSpan& in, size_t len, size_t block, NormAccumulator* norms);
  // Server encode: recomputes z as above; when `bits` is not null writes len/8 bytes of packed
  // signs of z; when `sOut` is not null (it may equal in.s) writes s_k = z_k - b * sigma(z_k) with
  // b = scales[block of k].
  void (*serverEncode)(const ServerSpan& in, size_t len, size_t block, const float* scales,
                       uint8_t* bits, float* sOut);
  // Decode: y_k = scales[block of k] * sigma_k for k < len (any length), converted to dtype with
  // round-to-nearest-even.
  void (*decode)(const uint8_t* bits, size_t len, size_t block, const float* scales, void* y,
                 obcclDataType_t dtype);
};

const char* variantName(Variant v);
// True when the variant is built into this library and this CPU (and OS) can run it.
bool variantSupported(Variant v);
// The fastest supported variant.
Variant bestVariant();
// The kernels of `v`, or nullptr when it is not supported here.
const Kernels* kernelsFor(Variant v);
// "auto" (or empty) picks bestVariant(); "scalar", "avx2", "avx512" force one. An unknown name or
// a variant this CPU cannot run is obcclInvalidArgument with a message naming it.
Result<const Kernels*> kernelsByName(const std::string& name);
// The kernels OBCCL_CODEC selects, decided once per process (logged at INFO). Collectives call
// this so that a bad OBCCL_CODEC fails the call with the message from kernelsByName().
Result<const Kernels*> selectKernels();
// selectKernels(), or bestVariant()'s kernels (with one warning) when OBCCL_CODEC is bad: for
// tools and benchmarks that have no way to report an error.
const Kernels& kernels();

}  // namespace obccl::codec
