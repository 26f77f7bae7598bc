// Comm's collectives: argument checks, then the algorithm for the size at hand.
#include <cstring>
#include <limits>

#include "core/algorithms.h"
#include "core/reduce.h"

namespace obccl::core {
namespace {

Status checkType(const char* fn, obcclDataType_t dt) {
  if (dataTypeSize(dt) == 0)
    return invalidArgument(std::string(fn) + ": datatype " + std::to_string(static_cast<int>(dt)) +
                           " is not an obcclDataType_t");
  return Status::ok();
}

Status checkRedOp(const char* fn, obcclDataType_t dt, obcclRedOp_t op) {
  if (static_cast<int>(op) < 0 || op >= obcclNumOps)
    return invalidArgument(std::string(fn) + ": op " + std::to_string(static_cast<int>(op)) +
                           " is not an obcclRedOp_t");
  if (op == obcclAvg && !isFloatingType(dt))
    return invalidArgument(std::string(fn) + ": op avg needs a floating datatype, got " +
                           dataTypeName(dt));
  return Status::ok();
}

// count * elemSize * blocks must fit in size_t (and in the signed offsets the engines use).
Status checkBytes(const char* fn, size_t count, obcclDataType_t dt, size_t blocks) {
  const size_t limit = static_cast<size_t>(std::numeric_limits<int64_t>::max());
  if (count > limit / dataTypeSize(dt) / blocks)
    return invalidArgument(
        std::string(fn) + ": count " + std::to_string(count) + " of " + dataTypeName(dt) +
        (blocks > 1 ? " times " + std::to_string(blocks) + " ranks" : std::string()) +
        " overflows the byte size");
  return Status::ok();
}

Status checkBuffers(const char* fn, const void* send, const void* recv) {
  if (send == nullptr) return invalidArgument(std::string(fn) + ": sendbuff is NULL");
  if (recv == nullptr) return invalidArgument(std::string(fn) + ": recvbuff is NULL");
  return Status::ok();
}

}  // namespace

Status Comm::allReduce(const void* send, void* recv, size_t count, obcclDataType_t dt,
                       obcclRedOp_t op, const Group* group) {
  OBCCL_TRY(checkType("allreduce", dt));
  OBCCL_TRY(checkRedOp("allreduce", dt, op));
  OBCCL_TRY(checkBytes("allreduce", count, dt, 1));
  if (count == 0) return noOp();
  OBCCL_TRY(checkBuffers("allreduce", send, recv));
  const Group& g = group ? *group : world_;
  return runOp({OpKind::kAllReduce, count, dt, op, -1, false}, [&]() -> Status {
    const size_t bytes = count * dataTypeSize(dt);
    if (g.size() == 1) {
      if (send != recv) std::memcpy(recv, send, bytes);
      return Status::ok();
    }
    if (bytes <= config_.allreduceSmallBytes || count < static_cast<size_t>(g.size()))
      return recursiveDoublingAllReduce(*this, g, send, recv, count, dt, op);
    return ringAllReduce(*this, g, send, recv, count, dt, op);
  });
}

Status Comm::broadcast(const void* send, void* recv, size_t count, obcclDataType_t dt, int root,
                       const Group* group) {
  OBCCL_TRY(checkType("broadcast", dt));
  OBCCL_TRY(checkBytes("broadcast", count, dt, 1));
  const Group& g = group ? *group : world_;
  if (root < 0 || root >= g.size())
    return invalidArgument("broadcast: root " + std::to_string(root) + " is outside [0, " +
                           std::to_string(g.size()) + ")");
  if (count == 0) return noOp();
  if (recv == nullptr) return invalidArgument("broadcast: recvbuff is NULL");
  if (g.index == root && send == nullptr)
    return invalidArgument("broadcast: sendbuff is NULL on the root");
  return runOp({OpKind::kBroadcast, count, dt, obcclSum, root, false}, [&]() -> Status {
    const size_t bytes = count * dataTypeSize(dt);
    if (g.size() == 1) {
      if (send != recv) std::memcpy(recv, send, bytes);
      return Status::ok();
    }
    if (bytes <= config_.allreduceSmallBytes)
      return binomialBroadcast(*this, g, send, recv, count, dt, root);
    return chainBroadcast(*this, g, send, recv, count, dt, root);
  });
}

Status Comm::allGather(const void* send, void* recv, size_t sendCount, obcclDataType_t dt,
                       const Group* group) {
  const Group& g = group ? *group : world_;
  OBCCL_TRY(checkType("allgather", dt));
  OBCCL_TRY(checkBytes("allgather", sendCount, dt, g.size()));
  if (sendCount == 0) return noOp();
  OBCCL_TRY(checkBuffers("allgather", send, recv));
  return runOp({OpKind::kAllGather, sendCount, dt, obcclSum, -1, false}, [&]() -> Status {
    if (g.size() == 1) {
      if (send != recv) std::memcpy(recv, send, sendCount * dataTypeSize(dt));
      return Status::ok();
    }
    return ringAllGather(*this, g, send, recv, sendCount, dt);
  });
}

Status Comm::reduceScatter(const void* send, void* recv, size_t recvCount, obcclDataType_t dt,
                           obcclRedOp_t op, const Group* group) {
  const Group& g = group ? *group : world_;
  OBCCL_TRY(checkType("reducescatter", dt));
  OBCCL_TRY(checkRedOp("reducescatter", dt, op));
  OBCCL_TRY(checkBytes("reducescatter", recvCount, dt, g.size()));
  if (recvCount == 0) return noOp();
  OBCCL_TRY(checkBuffers("reducescatter", send, recv));
  return runOp({OpKind::kReduceScatter, recvCount, dt, op, -1, false}, [&]() -> Status {
    if (g.size() == 1) {
      if (send != recv) std::memcpy(recv, send, recvCount * dataTypeSize(dt));
      return Status::ok();
    }
    return ringReduceScatter(*this, g, send, recv, recvCount, dt, op);
  });
}

Status Comm::allToAll(const void* send, void* recv, size_t count, obcclDataType_t dt,
                      const Group* group) {
  const Group& g = group ? *group : world_;
  OBCCL_TRY(checkType("alltoall", dt));
  OBCCL_TRY(checkBytes("alltoall", count, dt, g.size()));
  if (count == 0) return noOp();
  OBCCL_TRY(checkBuffers("alltoall", send, recv));
  return runOp({OpKind::kAllToAll, count, dt, obcclSum, -1, false}, [&]() -> Status {
    if (g.size() == 1) {
      if (send != recv) std::memcpy(recv, send, count * dataTypeSize(dt));
      return Status::ok();
    }
    return pairwiseAllToAll(*this, g, send, recv, count, dt);
  });
}

Status Comm::barrier(const Group* group) {
  const Group& g = group ? *group : world_;
  return runOp({OpKind::kBarrier, 0, obcclUint8, obcclSum, -1, false}, [&]() -> Status {
    if (g.size() == 1) return Status::ok();
    return disseminationBarrier(*this, g);
  });
}

}  // namespace obccl::core
