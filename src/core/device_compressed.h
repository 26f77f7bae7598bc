// Internal to the device path: the engines of the compressed allreduce on device buffers
// (device_compressed.cc: dispatch, setup and the direct engine; device_staged.cc: the staged
// engine) and the pure pieces the unit tests check. Built only with CUDA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/compressed_allreduce.h"
#include "core/device_context.h"
#include "core/device_path.h"

namespace obccl::core {

// One call's arguments.
struct DeviceCall {
  const void* send = nullptr;
  void* recv = nullptr;
  size_t count = 0;
  obcclDataType_t datatype = obcclFloat32;
  float* workerError = nullptr;
  float* serverError = nullptr;
  void* stream = nullptr;
};

// What each rank tells the others before the first device compressed allreduce (sent as bytes).
struct DevicePeerInfo {
  uint32_t magic = 0;
  int32_t preference = 0;  // DevicePreference
  int32_t ncclBuilt = 0;
  int32_t device = -1;
  char hostName[64] = {};
  char hostId[128] = {};
  char busId[32] = {};
};

enum DevicePreference : int32_t {
  kPreferAuto = 0,
  kPreferNccl = 1,
  kPreferStaged = 2,
  kPreferHostExchange = 3,
  kPreferTestExchange = 4,  // a test installed setDeviceExchangeFactoryForTesting
};

enum class DeviceExchangeKind { kNone, kNccl, kHost, kTest };

struct DevicePathChoice {
  DevicePath path = DevicePath::kStaged;
  DeviceExchangeKind exchange = DeviceExchangeKind::kNone;
  std::string reason;
};

// OBCCL_DEVICE_PATH as a preference; an unknown value is obcclInvalidArgument.
Result<DevicePreference> parseDevicePreference(const std::string& value);
// The decision every rank reaches from the same gathered infos (docs/DEVICE_PATH.md).
Result<DevicePathChoice> decideDevicePath(const std::vector<DevicePeerInfo>& ranks);

// Decides the path on the first call (collective: one internal op), creating the exchange.
Status ensureDevicePath(Comm& comm, DeviceContext& ctx);

// The engines; each runs one whole call inside its own op.
Status runDirect(Comm& comm, DeviceContext& ctx, const CompressedLayout& layout,
                 const DeviceCall& call, const DeviceCompressedOptions& options);
Status runStaged(Comm& comm, DeviceContext& ctx, const CompressedLayout& layout,
                 const DeviceCall& call);
// Everything through pinned memory and the host compressed allreduce (the hierarchical schedule).
Status runFullyStaged(Comm& comm, DeviceContext& ctx, const DeviceCall& call);

// Segments and frames of the host engine (compressed_allreduce.cc), which the staged engine
// reproduces byte for byte so that host and device ranks can meet in one call.
struct StagedGeometry {
  int n = 1, r = 0;
  size_t count = 0, padded = 0, chunk = 0;
  size_t block = 0;  // compressBlock; 0: one scale per vector (worker) or chunk (server)
  size_t seg = 0;    // elements per segment: a multiple of 8 and of block
  size_t segs = 0;   // segments per chunk
  size_t words = 0;  // 32-bit words of a rank set

  size_t segLen(size_t s) const { return seg < chunk - s * seg ? seg : chunk - s * seg; }
  size_t scalesIn(size_t s) const { return block == 0 ? 1 : (segLen(s) + block - 1) / block; }
  size_t p1Bytes(size_t s) const { return 4 * scalesIn(s) + segLen(s) / 8; }
  size_t p2Bytes(size_t s) const { return 4 * words + p1Bytes(s); }
  // Index of segment s's first block among its chunk's blocks (compressBlock > 0).
  size_t firstBlock(size_t s) const { return block == 0 ? 0 : s * (seg / block); }
};
StagedGeometry stagedGeometry(const CompressedLayout& layout, int nranks, int rank,
                              int compressBlock, size_t segmentBytes);

}  // namespace obccl::core
