// What one collective call is: the fields every rank must agree on, stamped into each frame
// header so that a call that does not match its peers fails instead of hanging or corrupting.
#pragma once

#include <cstdint>
#include <string>

#include "obccl/obccl.h"
#include "transports/transport.h"

namespace obccl::core {

// Carried in FrameHeader::op. Values are wire format: append, never renumber.
enum class OpKind : uint16_t {
  kNone = 0,
  kAllReduce = 1,
  kBroadcast = 2,
  kAllGather = 3,
  kReduceScatter = 4,
  kAllToAll = 5,
  kBarrier = 6,
  kCompressedAllReduce = 7,
  kOptimizer = 8,  // exchanges of the 1-bit Adam helper outside a compressed allreduce
  kInternal = 9,   // exchanges the library makes for itself (init, agreement on a flag)
};

// "allreduce", "broadcast", ...
const char* opName(OpKind op);
// "float32", "float16", ...; "datatype 9" for an invalid value.
const char* dataTypeName(int datatype);
// "sum", "prod", ...; "op 9" for an invalid value.
const char* redOpName(int redop);
// Size in bytes of one element; 0 for an invalid datatype.
size_t dataTypeSize(int datatype);
bool isFloatingType(obcclDataType_t datatype);

// One collective call as every rank must see it.
struct OpDesc {
  OpKind op = OpKind::kNone;
  uint64_t count = 0;  // element count as the caller passed it
  obcclDataType_t datatype = obcclUint8;
  obcclRedOp_t redop = obcclSum;
  int root = -1;            // root rank of a rooted collective, else -1
  bool compressed = false;  // frames carry kFlagCompressed

  bool sameAs(const OpDesc& o) const {
    return op == o.op && count == o.count && datatype == o.datatype && redop == o.redop &&
           root == o.root && compressed == o.compressed;
  }
};

// "allreduce(count=12, float32, sum)", "broadcast(count=3, int32, root=1)".
std::string describeOp(const OpDesc& desc);
// The OpDesc a received header describes.
OpDesc opDescOf(const transport::FrameHeader& header);

}  // namespace obccl::core
