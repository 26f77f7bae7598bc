// An independent simulation of the 1-bit compressed allreduce (DESIGN.md section 4) with every
// rank in one process: plain loops over plain vectors, no library code. Tests compare the library
// with it. Self-contained (standard library and util/half.h only), because test/common is linked
// into every test executable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace obccl_test {

enum class OnebitArithmetic {
  // The arithmetic DESIGN.md section 4 fixes (8-lane double norms combined in a fixed tree, the
  // fp32 rank-order sum times 1.0f/n): the library must match it bit for bit.
  kExact,
  // DeepSpeed's own unit-test simulation: sums of squares added in index order, the compressed
  // tensors averaged in float (sum, then divide by n), then per-chunk server compression. The
  // library matches it except where a server value is within rounding of zero.
  kDeepSpeed,
};

struct OnebitLayout {
  size_t count = 0, padded = 0, chunk = 0;
  int nranks = 1;
  size_t block = 0;  // compressBlock
};
OnebitLayout onebitLayout(size_t count, int nranks, size_t block);

// Every rank's error buffers: worker[r] has padded floats, server[r] has chunk floats.
struct OnebitErrors {
  std::vector<std::vector<float>> worker, server;
  static OnebitErrors zero(const OnebitLayout& l);
};

struct OnebitStepResult {
  std::vector<float> y;       // padded output values (fp32, before conversion to a datatype)
  std::vector<float> z;       // padded server values (average plus server error) per element
  std::vector<float> zScale;  // per element: a magnitude the rounding of z is relative to
};

// One call: x[r] holds count fp32 inputs of rank r. Updates errors in place.
OnebitStepResult onebitStep(const OnebitLayout& l, const std::vector<std::vector<float>>& x,
                            OnebitErrors* errors, OnebitArithmetic arithmetic);

// The value y as the datatype stores it (fp32 bits, or fp16/bf16 bits rounded to nearest even).
uint32_t onebitEncode(float y, int datatype);

}  // namespace obccl_test
