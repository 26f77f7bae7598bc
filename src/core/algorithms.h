// The collective algorithms behind Comm's collectives. Each runs inside the caller's runOp, on a
// Group (group rank g.index of g.size()), with arguments already validated, count > 0 and
// g.size() > 1.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/comm.h"

namespace obccl::core {

// ---- The pipeline engine: ordered frames to one peer and from another ----------------------
struct OutUnit {
  const uint8_t* src;
  size_t bytes;
  int64_t afterIn;  // index of the in-unit that must be processed before this is sent, or -1
};
struct InUnit {
  uint8_t* dst;      // direct destination, or nullptr to receive into a scratch slot
  size_t bytes;      // at most slotBytes when dst is nullptr
  int64_t afterOut;  // index of the out-unit whose send must finish before this is posted, or -1
};
// Called once per in-unit, in order, with the received payload.
using ProcessFn = std::function<void(size_t in, const uint8_t* data)>;

// Sends outs to sendPeer and receives ins from recvPeer (either may be -1 when its list is
// empty), keeping several frames in flight, until everything is sent and processed.
Status runPipeline(Comm& comm, int sendPeer, int recvPeer, const std::vector<OutUnit>& outs,
                   const std::vector<InUnit>& ins, size_t slotBytes, const ProcessFn& process,
                   const std::string& what);

// ---- Algorithms ---------------------------------------------------------------------------
Status ringAllReduce(Comm& comm, const Group& g, const void* send, void* recv, size_t count,
                     obcclDataType_t dt, obcclRedOp_t op);
Status recursiveDoublingAllReduce(Comm& comm, const Group& g, const void* send, void* recv,
                                  size_t count, obcclDataType_t dt, obcclRedOp_t op);
Status ringAllGather(Comm& comm, const Group& g, const void* send, void* recv, size_t count,
                     obcclDataType_t dt);
Status ringReduceScatter(Comm& comm, const Group& g, const void* send, void* recv, size_t count,
                         obcclDataType_t dt, obcclRedOp_t op);
// root is a group rank.
Status chainBroadcast(Comm& comm, const Group& g, const void* send, void* recv, size_t count,
                      obcclDataType_t dt, int root);
Status binomialBroadcast(Comm& comm, const Group& g, const void* send, void* recv, size_t count,
                         obcclDataType_t dt, int root);
Status pairwiseAllToAll(Comm& comm, const Group& g, const void* send, void* recv, size_t count,
                        obcclDataType_t dt);
Status disseminationBarrier(Comm& comm, const Group& g);

}  // namespace obccl::core
