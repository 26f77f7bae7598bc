// The collectives of obccl.h: argument checks naming the argument, then core::Comm.
#include <limits>

#include "api/guard.h"
#include "core/memory.h"
#include "core/op.h"

namespace obccl::api {
namespace {

Status checkDatatype(obcclDataType_t datatype) {
  if (core::dataTypeSize(datatype) == 0)
    return invalidArgument("datatype = " + std::to_string(static_cast<int>(datatype)) +
                           " is not an obcclDataType_t");
  return Status::ok();
}

Status checkOp(obcclRedOp_t op, obcclDataType_t datatype) {
  if (static_cast<int>(op) < 0 || op >= obcclNumOps)
    return invalidArgument("op = " + std::to_string(static_cast<int>(op)) +
                           " is not an obcclRedOp_t");
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

// Buffers must be non-NULL unless the call moves nothing. Device buffers need the CUDA path,
// which is not wired into the host collectives yet (core::classifyPointer is the hook).
Status checkBuffers(size_t count, const void* sendbuff, const char* sendName,
                    const void* recvbuff) {
  if (count == 0) return Status::ok();
  if (sendName != nullptr && sendbuff == nullptr) return nullArgument(sendName);
  if (recvbuff == nullptr) return nullArgument("recvbuff");
  if ((sendbuff && core::classifyPointer(sendbuff) == core::MemoryKind::kDevice) ||
      core::classifyPointer(recvbuff) == core::MemoryKind::kDevice)
    return invalidUsage("device buffers are not supported by the uncompressed collectives yet");
  return Status::ok();
}

}  // namespace
}  // namespace obccl::api

using obccl::Status;
using obccl::api::checkBuffers;
using obccl::api::checkCount;
using obccl::api::checkDatatype;
using obccl::api::checkOp;
using obccl::api::guard;
using obccl::api::readyComm;

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
