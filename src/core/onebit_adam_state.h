// The saved-state blob of the 1-bit Adam helper: a fixed little-endian header followed by the
// fp32 sections m, v, mask, worker error, server error (docs/ONEBIT_ADAM.md, "State blob").
#pragma once

#include <cstddef>
#include <cstdint>

#include "util/status.h"

namespace obccl::optim {

constexpr uint32_t kStateMagic = 0x4131424fu;  // the bytes "OB1A"
constexpr uint32_t kStateVersion = 1;
constexpr size_t kStateHeaderBytes = 96;
constexpr size_t kStateChecksumOffset = 92;

// Header flags.
enum StateFlags : uint32_t {
  kStateUserMask = 1u << 0,     // the mask section holds a mask the user set
  kStateAutoMask = 1u << 1,     // the mask section holds the mask made at the freeze
  kStateHavePrevSum = 1u << 2,  // prevVarianceSum is valid (auto-freeze window history)
  kStateKnownFlags = kStateUserMask | kStateAutoMask | kStateHavePrevSum,
};

struct StateHeader {
  uint64_t count = 0;
  int32_t rank = 0;
  int32_t worldSize = 1;
  int64_t step = 0;
  int32_t stage = 0;  // obcclOptimStage_t
  uint32_t flags = 0;
  int64_t skipped = 0;
  uint64_t workerErrorCount = 0;
  uint64_t serverErrorCount = 0;
  double prevVarianceSum = 0;  // auto-freeze: sum of v at the last window boundary
};

// The five sections for writing; m and v have count elements, the errors their own counts.
struct StateSections {
  const float* m = nullptr;
  const float* v = nullptr;
  const float* mask = nullptr;         // null: written as all ones
  const float* workerError = nullptr;  // null: written as zeros
  const float* serverError = nullptr;  // null: written as zeros
};

// Where the sections lie inside a parsed blob (the caller's buffer may be unaligned, so these
// are bytes; copy them out with copyFloats).
struct ParsedSections {
  const unsigned char* m = nullptr;
  const unsigned char* v = nullptr;
  const unsigned char* mask = nullptr;
  const unsigned char* workerError = nullptr;
  const unsigned char* serverError = nullptr;
};

// Bytes of a blob with this header's count and error counts; 0 when that overflows size_t.
size_t stateBlobBytes(const StateHeader& h);
// Writes header and sections into buf (exactly stateBlobBytes(h) bytes), checksum last.
void writeStateBlob(const StateHeader& h, const StateSections& s, void* buf);
// Checks size, magic, version, header fields, checksum and section contents (finite m, finite
// v >= 0, a mask of zeros and ones, finite errors) without changing anything. On success fills
// *h and *s (pointing into buf).
Status parseStateBlob(const void* buf, size_t bytes, StateHeader* h, ParsedSections* s);
// Copies n floats from blob bytes.
void copyFloats(float* dst, const unsigned char* src, size_t n);

}  // namespace obccl::optim
