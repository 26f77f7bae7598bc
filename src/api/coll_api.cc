// The collectives of obccl.h: argument checks naming the argument, then core::Comm.
#include <limits>

#include "api/guard.h"
#include "core/memory.h"
#include "core/op.h"
#if OBCCL_HAVE_CUDA
#include "core/device_path.h"
#endif

namespace obccl::api {
namespace {

// By reference, so that a bogus value is checked as an int before it is ever loaded as the enum.
Status checkDatatype(const obcclDataType_t& datatype) {
  int raw = rawEnum(datatype);
  if (raw < 0 || raw >= obcclNumTypes || core::dataTypeSize(datatype) == 0)
    return invalidArgument("datatype = " + std::to_string(raw) + " is not an obcclDataType_t");
  return Status::ok();
}

Status checkOp(const obcclRedOp_t& op, obcclDataType_t datatype) {
  int raw = rawEnum(op);
  if (raw < 0 || raw >= obcclNumOps)
    return invalidArgument("op = " + std::to_string(raw) + " is not an obcclRedOp_t");
  if (op == obcclAvg && !core::isFloatingType(datatype))
    return invalidArgument(std::string("op = obcclAvg needs a floating datatype, not ") +
                           core::dataTypeName(datatype));
  return Status::ok();
}

// count elements (times `blocks` ranks) must have a byte size that fits.
Status checkCount(size_t count, obcclDataType_t datatype, size_t blocks, const char* name) {
  const size_t limit = static_cast<size_t>(std::numeric_limits<int64_t>::max());
  if (count > limit / core::dataTypeSize(datatype) / blocks)
    return invalidArgument(std::string(name) + " = " + std::to_string(count) +
                           " overflows the buffer size in bytes");
  return Status::ok();
}

// Buffers must be non-NULL unless the call moves nothing.
Status checkBuffers(size_t count, const void* sendbuff, const char* sendName,
                    const void* recvbuff) {
  if (count == 0) return Status::ok();
  if (sendName != nullptr && sendbuff == nullptr) return nullArgument(sendName);
  if (recvbuff == nullptr) return nullArgument("recvbuff");
  return Status::ok();
}

#if OBCCL_HAVE_CUDA
// True when the call's buffers are device memory: it then runs on core's device path on the
// caller's stream. Mixed host and device buffers are obcclInvalidArgument naming them; count 0
// stays a host no-op.
Result<bool> onDevice(size_t count, const void* sendbuff, const void* recvbuff) {
  if (count == 0) return false;
  OBCCL_ASSIGN_OR_RETURN(core::MemoryKind kind,
                         core::callMemoryKind({{"sendbuff", sendbuff}, {"recvbuff", recvbuff}}));
  return kind == core::MemoryKind::kDevice;
}
#endif

}  // namespace
}  // namespace obccl::api

using obccl::Status;
using obccl::api::checkBuffers;
using obccl::api::checkCount;
using obccl::api::checkDatatype;
using obccl::api::checkOp;
using obccl::api::guard;
using obccl::api::readyComm;
#if OBCCL_HAVE_CUDA
using obccl::api::onDevice;
#endif

extern "C" {

OBCCL_API obcclResult_t obcclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                                       obcclDataType_t datatype, obcclRedOp_t op, obcclComm_t comm,
                                       obcclStream_t stream) {
  return guard(comm, [&]() -> Status {
    OBCCL_ASSIGN_OR_RETURN(obccl::core::Comm * c, readyComm(comm));
    OBCCL_TRY(checkDatatype(datatype));
    OBCCL_TRY(checkOp(op, datatype));
    OBCCL_TRY(checkCount(count, datatype, 1, "count"));
    OBCCL_TRY(checkBuffers(count, sendbuff, "sendbuff", recvbuff));
#if OBCCL_HAVE_CUDA
    OBCCL_ASSIGN_OR_RETURN(bool device, onDevice(count, sendbuff, recvbuff));
    if (device)
      return obccl::core::deviceAllReduce(*c, *comm->device, sendbuff, recvbuff, count, datatype,
                                          op, stream);
#endif
    return c->allReduce(sendbuff, recvbuff, count, datatype, op);
  });
}

OBCCL_API obcclResult_t obcclBroadcast(const void* sendbuff, void* recvbuff, size_t count,
                                       obcclDataType_t datatype, int root, obcclComm_t comm,
                                       obcclStream_t stream) {
  return guard(comm, [&]() -> Status {
    OBCCL_ASSIGN_OR_RETURN(obccl::core::Comm * c, readyComm(comm));
    OBCCL_TRY(checkDatatype(datatype));
    if (root < 0 || root >= c->nranks())
      return obccl::invalidArgument("root = " + std::to_string(root) + " is outside [0, nranks = " +
                                    std::to_string(c->nranks()) + ")");
    OBCCL_TRY(checkCount(count, datatype, 1, "count"));
    // sendbuff is read on the root only (NCCL's rule); other ranks may pass NULL.
    OBCCL_TRY(checkBuffers(count, sendbuff, c->rank() == root ? "sendbuff" : nullptr, recvbuff));
#if OBCCL_HAVE_CUDA
    OBCCL_ASSIGN_OR_RETURN(bool device,
                           onDevice(count, c->rank() == root ? sendbuff : nullptr, recvbuff));
    if (device)
      return obccl::core::deviceBroadcast(*c, *comm->device, sendbuff, recvbuff, count, datatype,
                                          root, stream);
#endif
    return c->broadcast(sendbuff, recvbuff, count, datatype, root);
  });
}

OBCCL_API obcclResult_t obcclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
                                       obcclDataType_t datatype, obcclComm_t comm,
                                       obcclStream_t stream) {
  return guard(comm, [&]() -> Status {
    OBCCL_ASSIGN_OR_RETURN(obccl::core::Comm * c, readyComm(comm));
    OBCCL_TRY(checkDatatype(datatype));
    OBCCL_TRY(checkCount(sendcount, datatype, c->nranks(), "sendcount"));
    OBCCL_TRY(checkBuffers(sendcount, sendbuff, "sendbuff", recvbuff));
#if OBCCL_HAVE_CUDA
    OBCCL_ASSIGN_OR_RETURN(bool device, onDevice(sendcount, sendbuff, recvbuff));
    if (device)
      return obccl::core::deviceAllGather(*c, *comm->device, sendbuff, recvbuff, sendcount,
                                          datatype, stream);
#endif
    return c->allGather(sendbuff, recvbuff, sendcount, datatype);
  });
}

OBCCL_API obcclResult_t obcclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount,
                                           obcclDataType_t datatype, obcclRedOp_t op,
                                           obcclComm_t comm, obcclStream_t stream) {
  return guard(comm, [&]() -> Status {
    OBCCL_ASSIGN_OR_RETURN(obccl::core::Comm * c, readyComm(comm));
    OBCCL_TRY(checkDatatype(datatype));
    OBCCL_TRY(checkOp(op, datatype));
    OBCCL_TRY(checkCount(recvcount, datatype, c->nranks(), "recvcount"));
    OBCCL_TRY(checkBuffers(recvcount, sendbuff, "sendbuff", recvbuff));
#if OBCCL_HAVE_CUDA
    OBCCL_ASSIGN_OR_RETURN(bool device, onDevice(recvcount, sendbuff, recvbuff));
    if (device)
      return obccl::core::deviceReduceScatter(*c, *comm->device, sendbuff, recvbuff, recvcount,
                                              datatype, op, stream);
#endif
    return c->reduceScatter(sendbuff, recvbuff, recvcount, datatype, op);
  });
}

OBCCL_API obcclResult_t obcclAlltoAll(const void* sendbuff, void* recvbuff, size_t count,
                                      obcclDataType_t datatype, obcclComm_t comm,
                                      obcclStream_t stream) {
  return guard(comm, [&]() -> Status {
    OBCCL_ASSIGN_OR_RETURN(obccl::core::Comm * c, readyComm(comm));
    OBCCL_TRY(checkDatatype(datatype));
    OBCCL_TRY(checkCount(count, datatype, c->nranks(), "count"));
    OBCCL_TRY(checkBuffers(count, sendbuff, "sendbuff", recvbuff));
#if OBCCL_HAVE_CUDA
    OBCCL_ASSIGN_OR_RETURN(bool device, onDevice(count, sendbuff, recvbuff));
    if (device)
      return obccl::core::deviceAllToAll(*c, *comm->device, sendbuff, recvbuff, count, datatype,
                                         stream);
#endif
    return c->allToAll(sendbuff, recvbuff, count, datatype);
  });
}

OBCCL_API obcclResult_t obcclBarrier(obcclComm_t comm) {
  return guard(comm, [&]() -> Status {
    OBCCL_ASSIGN_OR_RETURN(obccl::core::Comm * c, readyComm(comm));
    return c->barrier();
  });
}

}  // extern "C"
