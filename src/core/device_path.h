// Device buffers in obccl's collectives (docs/DEVICE_PATH.md). The api layer classifies a call's
// buffers with callMemoryKind(); when they are device memory it calls the device* functions
// below with the communicator's DeviceContext and the caller's stream (a cudaStream_t; nullptr is
// the legacy default stream). Built only with CUDA (OBCCL_HAVE_CUDA); callers guard with #if.
//
// - Uncompressed collectives are staged: device -> pinned copy on the stream, wait, the host
//   collective (the same frames as host buffers), pinned -> device copy on the stream. The call
//   returns with that last copy enqueued.
// - The compressed allreduce runs its heavy passes with the device kernels. On the direct path
//   (every rank on its own GPU with NCCL, or one rank) nothing waits for the device: a non-finite
//   input makes every rank skip the update on the device, and the failure is reported later by
//   deviceAsyncError (obcclCommGetAsyncError). On the staged path (ranks sharing a GPU, or no
//   NCCL) only the packed bytes (1/32 of fp32 data) go through pinned memory and the host
//   transports, with the host engine's frames, and a non-finite input fails the call itself.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/memory.h"
#include "obccl/obccl.h"
#include "util/status.h"

namespace obccl::core {

class Comm;
class DeviceContext;

struct NamedBuffer {
  const char* name;
  const void* ptr;  // null buffers are not classified
};

// kHost when every named non-null buffer is host memory, kDevice when every one is device
// memory; otherwise obcclInvalidArgument naming which are which.
Result<MemoryKind> callMemoryKind(std::initializer_list<NamedBuffer> buffers);
// The same rule over kinds already known (unit tests).
Result<MemoryKind> combineMemoryKinds(const std::vector<std::pair<std::string, MemoryKind>>& kinds);

// A communicator's device state; makes no CUDA call until a device call needs one.
std::shared_ptr<DeviceContext> makeDeviceContext();
// Any thread: interrupts the direct path's exchange (NCCL) and refuses later device calls.
void abortDevice(DeviceContext& ctx);
// Any thread, never waits: a skipped direct compressed allreduce not reported yet (once), the
// exchange's asynchronous failure, or ok.
Status deviceAsyncError(DeviceContext& ctx);

Status deviceAllReduce(Comm& comm, DeviceContext& ctx, const void* send, void* recv, size_t count,
                       obcclDataType_t datatype, obcclRedOp_t op, void* stream);
Status deviceBroadcast(Comm& comm, DeviceContext& ctx, const void* send, void* recv, size_t count,
                       obcclDataType_t datatype, int root, void* stream);
Status deviceAllGather(Comm& comm, DeviceContext& ctx, const void* send, void* recv,
                       size_t sendCount, obcclDataType_t datatype, void* stream);
Status deviceReduceScatter(Comm& comm, DeviceContext& ctx, const void* send, void* recv,
                           size_t recvCount, obcclDataType_t datatype, obcclRedOp_t op,
                           void* stream);
Status deviceAllToAll(Comm& comm, DeviceContext& ctx, const void* send, void* recv, size_t count,
                      obcclDataType_t datatype, void* stream);

// Options of one device compressed allreduce beyond the C API's.
struct DeviceCompressedOptions {
  // Direct path: where the call's verdict lands (device memory, 1 = skipped), valid until the
  // next device call; set to null when the call decided on the host (staged path).
  const int** skipFlag = nullptr;
  // Direct path: whether a skip is reported through deviceAsyncError (the optimizer reads
  // skipFlag itself instead).
  bool reportSkip = true;
};

// DESIGN.md section 4 on device buffers (send, recv, workerError, serverError all device memory).
Status deviceCompressedAllReduce(Comm& comm, DeviceContext& ctx, const void* send, void* recv,
                                 size_t count, obcclDataType_t datatype, float* workerError,
                                 float* serverError, void* stream,
                                 const DeviceCompressedOptions& options = {});

}  // namespace obccl::core
