#include "core/onebit_adam_state.h"

#include <cmath>
#include <cstring>
#include <string>

#include "util/crc32c.h"

namespace obccl::optim {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the state blob is little-endian; add byte swaps before porting to big-endian");

// Header field offsets (docs/ONEBIT_ADAM.md lists the same table).
enum Offset : size_t {
  kOffMagic = 0,
  kOffVersion = 4,
  kOffHeaderBytes = 8,
  kOffFlags = 12,
  kOffCount = 16,
  kOffRank = 24,
  kOffWorldSize = 28,
  kOffStep = 32,
  kOffStage = 40,
  kOffSkipped = 48,
  kOffWorkerCount = 56,
  kOffServerCount = 64,
  kOffPrevSum = 72,
  kOffChecksum = kStateChecksumOffset,
};

template <typename T>
void put(unsigned char* base, size_t off, T value) {
  std::memcpy(base + off, &value, sizeof(T));
}

template <typename T>
T get(const unsigned char* base, size_t off) {
  T value;
  std::memcpy(&value, base + off, sizeof(T));
  return value;
}

uint32_t blobChecksum(const unsigned char* blob, size_t bytes) {
  uint32_t crc = crc32c(blob, kOffChecksum);
  return crc32c(blob + kStateHeaderBytes, bytes - kStateHeaderBytes, crc);
}

void writeSection(unsigned char* dst, const float* src, size_t n, float fill) {
  if (src != nullptr) {
    std::memcpy(dst, src, n * sizeof(float));
    return;
  }
  for (size_t i = 0; i < n; ++i) std::memcpy(dst + i * sizeof(float), &fill, sizeof(float));
}

// Validates one section's values; `what` names it in the message.
Status checkSection(const unsigned char* p, size_t n, const char* what, bool nonNegative,
                    bool zeroOne) {
  for (size_t i = 0; i < n; ++i) {
    float x = get<float>(p, i * sizeof(float));
    bool ok =
        std::isfinite(x) && (!nonNegative || x >= 0.0f) && (!zeroOne || x == 0.0f || x == 1.0f);
    if (!ok)
      return invalidArgument(std::string("state blob: ") + what + "[" + std::to_string(i) +
                             "] = " + std::to_string(x) + " is not allowed there");
  }
  return Status::ok();
}

Status checkHeader(const StateHeader& h, uint32_t flags) {
  if ((flags & ~kStateKnownFlags) != 0)
    return invalidArgument("state blob: unknown flags 0x" + std::to_string(flags));
  if (h.stage != 0 && h.stage != 1)
    return invalidArgument("state blob: stage " + std::to_string(h.stage) + " is neither 0 nor 1");
  if (h.step < 0 || h.skipped < 0)
    return invalidArgument("state blob: negative step or skipped count");
  if (h.worldSize < 1 || h.rank < 0 || h.rank >= h.worldSize)
    return invalidArgument("state blob: rank " + std::to_string(h.rank) + " of world size " +
                           std::to_string(h.worldSize) + " is impossible");
  if ((flags & kStateUserMask) && (flags & kStateAutoMask))
    return invalidArgument("state blob: both user and automatic mask flags are set");
  if ((flags & kStateAutoMask) && h.stage != 1)
    return invalidArgument("state blob: an automatic mask in the warmup stage");
  if (!std::isfinite(h.prevVarianceSum) || h.prevVarianceSum < 0)
    return invalidArgument("state blob: bad auto-freeze history value");
  return Status::ok();
}

}  // namespace

size_t stateBlobBytes(const StateHeader& h) {
  const uint64_t kMax = SIZE_MAX / sizeof(float) / 4;
  if (h.count > kMax || h.workerErrorCount > kMax || h.serverErrorCount > kMax) return 0;
  return kStateHeaderBytes +
         sizeof(float) * (3 * h.count + h.workerErrorCount + h.serverErrorCount);
}

void writeStateBlob(const StateHeader& h, const StateSections& s, void* buf) {
  auto* out = static_cast<unsigned char*>(buf);
  size_t bytes = stateBlobBytes(h);
  std::memset(out, 0, kStateHeaderBytes);
  put<uint32_t>(out, kOffMagic, kStateMagic);
  put<uint32_t>(out, kOffVersion, kStateVersion);
  put<uint32_t>(out, kOffHeaderBytes, static_cast<uint32_t>(kStateHeaderBytes));
  put<uint32_t>(out, kOffFlags, h.flags);
  put<uint64_t>(out, kOffCount, h.count);
  put<int32_t>(out, kOffRank, h.rank);
  put<int32_t>(out, kOffWorldSize, h.worldSize);
  put<int64_t>(out, kOffStep, h.step);
  put<int32_t>(out, kOffStage, h.stage);
  put<int64_t>(out, kOffSkipped, h.skipped);
  put<uint64_t>(out, kOffWorkerCount, h.workerErrorCount);
  put<uint64_t>(out, kOffServerCount, h.serverErrorCount);
  put<double>(out, kOffPrevSum, h.prevVarianceSum);
  unsigned char* p = out + kStateHeaderBytes;
  const size_t n = h.count * sizeof(float);
  writeSection(p, s.m, h.count, 0.0f);
  writeSection(p + n, s.v, h.count, 0.0f);
  writeSection(p + 2 * n, s.mask, h.count, 1.0f);
  writeSection(p + 3 * n, s.workerError, h.workerErrorCount, 0.0f);
  writeSection(p + 3 * n + h.workerErrorCount * sizeof(float), s.serverError, h.serverErrorCount,
               0.0f);
  put<uint32_t>(out, kOffChecksum, blobChecksum(out, bytes));
}

Status parseStateBlob(const void* buf, size_t bytes, StateHeader* out, ParsedSections* s) {
  const auto* in = static_cast<const unsigned char*>(buf);
  if (bytes < kStateHeaderBytes)
    return invalidArgument("state blob: " + std::to_string(bytes) +
                           " bytes is shorter than its header (" +
                           std::to_string(kStateHeaderBytes) + ")");
  if (get<uint32_t>(in, kOffMagic) != kStateMagic)
    return invalidArgument("state blob: bad magic (not a 1-bit Adam state)");
  uint32_t version = get<uint32_t>(in, kOffVersion);
  if (version != kStateVersion)
    return invalidArgument("state blob: version " + std::to_string(version) +
                           " is not supported (this library reads version " +
                           std::to_string(kStateVersion) + ")");
  if (get<uint32_t>(in, kOffHeaderBytes) != kStateHeaderBytes)
    return invalidArgument("state blob: unexpected header size");
  StateHeader h;
  uint32_t flags = get<uint32_t>(in, kOffFlags);
  h.flags = flags;
  h.count = get<uint64_t>(in, kOffCount);
  h.rank = get<int32_t>(in, kOffRank);
  h.worldSize = get<int32_t>(in, kOffWorldSize);
  h.step = get<int64_t>(in, kOffStep);
  h.stage = get<int32_t>(in, kOffStage);
  h.skipped = get<int64_t>(in, kOffSkipped);
  h.workerErrorCount = get<uint64_t>(in, kOffWorkerCount);
  h.serverErrorCount = get<uint64_t>(in, kOffServerCount);
  h.prevVarianceSum = get<double>(in, kOffPrevSum);
  size_t want = stateBlobBytes(h);
  if (want == 0 || want != bytes)
    return invalidArgument("state blob: " + std::to_string(bytes) + " bytes, but its header (" +
                           std::to_string(h.count) + " elements, error buffers " +
                           std::to_string(h.workerErrorCount) + " + " +
                           std::to_string(h.serverErrorCount) + ") needs " + std::to_string(want) +
                           " (truncated or padded)");
  uint32_t stored = get<uint32_t>(in, kOffChecksum);
  if (stored != blobChecksum(in, bytes))
    return invalidArgument("state blob: checksum mismatch (corrupted)");
  OBCCL_TRY(checkHeader(h, flags));
  ParsedSections p;
  const size_t n = h.count * sizeof(float);
  p.m = in + kStateHeaderBytes;
  p.v = p.m + n;
  p.mask = p.v + n;
  p.workerError = p.mask + n;
  p.serverError = p.workerError + h.workerErrorCount * sizeof(float);
  OBCCL_TRY(checkSection(p.m, h.count, "m", false, false));
  OBCCL_TRY(checkSection(p.v, h.count, "v", true, false));
  OBCCL_TRY(checkSection(p.mask, h.count, "mask", false, true));
  OBCCL_TRY(checkSection(p.workerError, h.workerErrorCount, "worker error", false, false));
  OBCCL_TRY(checkSection(p.serverError, h.serverErrorCount, "server error", false, false));
  *out = h;
  *s = p;
  return Status::ok();
}

void copyFloats(float* dst, const unsigned char* src, size_t n) {
  if (n > 0) std::memcpy(dst, src, n * sizeof(float));
}

}  // namespace obccl::optim
