// Device buffers in the uncompressed collectives, staged through pinned host memory
// (device_path.h), and the classification of a call's buffers.
#if OBCCL_HAVE_CUDA

#include <functional>
#include <string>

#include "core/comm.h"
#include "core/device_context.h"
#include "core/device_path.h"
#include "core/op.h"

namespace obccl::core {

Result<MemoryKind> combineMemoryKinds(
    const std::vector<std::pair<std::string, MemoryKind>>& kinds) {
  std::string host, dev;
  for (const auto& [name, kind] : kinds) {
    std::string& list = kind == MemoryKind::kDevice ? dev : host;
    list += (list.empty() ? "" : ", ") + name;
  }
  if (dev.empty()) return MemoryKind::kHost;
  if (host.empty()) return MemoryKind::kDevice;
  return invalidArgument(dev + (dev.find(',') == std::string::npos ? " is" : " are") +
                         " device memory but " + host +
                         (host.find(',') == std::string::npos ? " is" : " are") +
                         " host memory; one call's buffers must all be on the device or all on "
                         "the host");
}

Result<MemoryKind> callMemoryKind(std::initializer_list<NamedBuffer> buffers) {
  std::vector<std::pair<std::string, MemoryKind>> kinds;
  for (const NamedBuffer& b : buffers)
    if (b.ptr != nullptr) kinds.emplace_back(b.name, classifyPointer(b.ptr));
  return combineMemoryKinds(kinds);
}

std::shared_ptr<DeviceContext> makeDeviceContext() { return std::make_shared<DeviceContext>(); }

void abortDevice(DeviceContext& ctx) { ctx.abort(); }

Status deviceAsyncError(DeviceContext& ctx) { return ctx.asyncError(); }

namespace {

// Copies `sendBytes` of send to pinned A, waits, runs host(A, B) and copies `recvBytes` of B to
// recv on the stream. send may be null when sendBytes is 0 (broadcast off the root).
Status staged(DeviceContext& ctx, const void* send, size_t sendBytes, void* recv, size_t recvBytes,
              void* stream, const std::function<Status(void*, void*)>& host) {
  if (ctx.aborted()) return systemError("device collective: communicator was aborted");
  OBCCL_TRY(ctx.begin(stream));
  OBCCL_ASSIGN_OR_RETURN(uint8_t * a, ctx.pinned(kPinnedA, sendBytes));
  OBCCL_ASSIGN_OR_RETURN(uint8_t * b, ctx.pinned(kPinnedB, recvBytes));
  if (sendBytes > 0) OBCCL_TRY(device::copyAsync(a, send, sendBytes, stream));
  OBCCL_TRY(device::streamSynchronize(stream));
  Status st = host(a, b);
  if (st.isOk()) st = device::copyAsync(recv, b, recvBytes, stream);
  Status end = ctx.end(stream);
  OBCCL_TRY(st);
  return end;
}

size_t bytesOf(size_t count, obcclDataType_t dt) { return count * dataTypeSize(dt); }

}  // namespace

Status deviceAllReduce(Comm& comm, DeviceContext& ctx, const void* send, void* recv, size_t count,
                       obcclDataType_t dt, obcclRedOp_t op, void* stream) {
  const size_t bytes = bytesOf(count, dt);
  return staged(ctx, send, bytes, recv, bytes, stream,
                [&](void* a, void* b) { return comm.allReduce(a, b, count, dt, op); });
}

Status deviceBroadcast(Comm& comm, DeviceContext& ctx, const void* send, void* recv, size_t count,
                       obcclDataType_t dt, int root, void* stream) {
  const size_t bytes = bytesOf(count, dt);
  const bool isRoot = comm.rank() == root;
  return staged(ctx, isRoot ? send : nullptr, isRoot ? bytes : 0, recv, bytes, stream,
                [&](void* a, void* b) { return comm.broadcast(a, b, count, dt, root); });
}

Status deviceAllGather(Comm& comm, DeviceContext& ctx, const void* send, void* recv,
                       size_t sendCount, obcclDataType_t dt, void* stream) {
  const size_t bytes = bytesOf(sendCount, dt);
  const size_t n = static_cast<size_t>(comm.nranks());
  return staged(ctx, send, bytes, recv, n * bytes, stream,
                [&](void* a, void* b) { return comm.allGather(a, b, sendCount, dt); });
}

Status deviceReduceScatter(Comm& comm, DeviceContext& ctx, const void* send, void* recv,
                           size_t recvCount, obcclDataType_t dt, obcclRedOp_t op, void* stream) {
  const size_t bytes = bytesOf(recvCount, dt);
  const size_t n = static_cast<size_t>(comm.nranks());
  return staged(ctx, send, n * bytes, recv, bytes, stream,
                [&](void* a, void* b) { return comm.reduceScatter(a, b, recvCount, dt, op); });
}

Status deviceAllToAll(Comm& comm, DeviceContext& ctx, const void* send, void* recv, size_t count,
                      obcclDataType_t dt, void* stream) {
  const size_t bytes = bytesOf(count, dt) * static_cast<size_t>(comm.nranks());
  return staged(ctx, send, bytes, recv, bytes, stream,
                [&](void* a, void* b) { return comm.allToAll(a, b, count, dt); });
}

}  // namespace obccl::core

#endif  // OBCCL_HAVE_CUDA
