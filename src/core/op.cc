#include "core/op.h"

namespace obccl::core {

const char* opName(OpKind op) {
  switch (op) {
    case OpKind::kNone:
      return "none";
    case OpKind::kAllReduce:
      return "allreduce";
    case OpKind::kBroadcast:
      return "broadcast";
    case OpKind::kAllGather:
      return "allgather";
    case OpKind::kReduceScatter:
      return "reducescatter";
    case OpKind::kAllToAll:
      return "alltoall";
    case OpKind::kBarrier:
      return "barrier";
    case OpKind::kCompressedAllReduce:
      return "compressed allreduce";
    case OpKind::kOptimizer:
      return "optimizer step";
    case OpKind::kInternal:
      return "internal exchange";
  }
  return "unknown op";
}

const char* dataTypeName(int datatype) {
  switch (datatype) {
    case obcclFloat32:
      return "float32";
    case obcclFloat16:
      return "float16";
    case obcclBfloat16:
      return "bfloat16";
    case obcclFloat64:
      return "float64";
    case obcclInt32:
      return "int32";
    case obcclInt64:
      return "int64";
    case obcclUint8:
      return "uint8";
    default:
      return "invalid datatype";
  }
}

const char* redOpName(int redop) {
  switch (redop) {
    case obcclSum:
      return "sum";
    case obcclProd:
      return "prod";
    case obcclMax:
      return "max";
    case obcclMin:
      return "min";
    case obcclAvg:
      return "avg";
    default:
      return "invalid op";
  }
}

size_t dataTypeSize(int datatype) {
  switch (datatype) {
    case obcclFloat32:
    case obcclInt32:
      return 4;
    case obcclFloat16:
    case obcclBfloat16:
      return 2;
    case obcclFloat64:
    case obcclInt64:
      return 8;
    case obcclUint8:
      return 1;
    default:
      return 0;
  }
}

bool isFloatingType(obcclDataType_t datatype) {
  return datatype == obcclFloat32 || datatype == obcclFloat16 || datatype == obcclBfloat16 ||
         datatype == obcclFloat64;
}

static bool hasRedOp(OpKind op) {
  return op == OpKind::kAllReduce || op == OpKind::kReduceScatter ||
         op == OpKind::kCompressedAllReduce;
}

std::string describeOp(const OpDesc& d) {
  std::string s = opName(d.op);
  if (d.op == OpKind::kBarrier) return s + "()";
  s += "(count=" + std::to_string(d.count) + ", " + dataTypeName(d.datatype);
  if (hasRedOp(d.op)) s += std::string(", ") + redOpName(d.redop);
  if (d.root >= 0) s += ", root=" + std::to_string(d.root);
  if (d.compressed && d.op != OpKind::kCompressedAllReduce) s += ", compressed";
  return s + ")";
}

OpDesc opDescOf(const transport::FrameHeader& h) {
  OpDesc d;
  d.op = static_cast<OpKind>(h.op);
  d.count = h.count;
  d.datatype = static_cast<obcclDataType_t>(h.datatype);
  d.redop = static_cast<obcclRedOp_t>(h.redop);
  d.root = h.root;
  d.compressed = (h.flags & transport::kFlagCompressed) != 0;
  return d;
}

}  // namespace obccl::core
