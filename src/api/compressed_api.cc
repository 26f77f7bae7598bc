// The compressed allreduce of obccl.h: argument checks naming the argument, then
// core::compressedAllReduce (DESIGN.md section 4).
#include "api/guard.h"
#include "core/compressed_allreduce.h"
#include "core/op.h"
#if OBCCL_HAVE_CUDA
#include "core/device_path.h"
#endif

using obccl::Status;
using obccl::api::guard;
using obccl::api::nullArgument;
using obccl::api::readyComm;

namespace {

// By reference, so that a bogus value is checked as an int before it is ever loaded as the enum.
Status checkCompressedDatatype(const obcclDataType_t& value) {
  int raw = obccl::api::rawEnum(value);
  if (raw < 0 || raw >= obcclNumTypes)
    return obccl::invalidArgument("datatype = " + std::to_string(raw) +
                                  " is not an obcclDataType_t");
  obcclDataType_t datatype = value;
  if (datatype == obcclFloat32 || datatype == obcclFloat16 || datatype == obcclBfloat16)
    return Status::ok();
  if (obccl::core::dataTypeSize(datatype) == 0)
    return obccl::invalidArgument("datatype = " + std::to_string(raw) +
                                  " is not an obcclDataType_t");
  return obccl::invalidArgument(std::string("datatype = ") + obccl::core::dataTypeName(datatype) +
                                " cannot be compressed (use float32, float16 or bfloat16)");
}

}  // namespace

extern "C" {

OBCCL_API obcclResult_t obcclCompressedAllReduceErrorCounts(size_t count, obcclComm_t comm,
                                                            size_t* workerErrorCount,
                                                            size_t* serverErrorCount) {
  return guard(comm, [&]() -> Status {
    OBCCL_ASSIGN_OR_RETURN(obccl::core::Comm * c, readyComm(comm));
    if (workerErrorCount == nullptr) return nullArgument("workerErrorCount");
    if (serverErrorCount == nullptr) return nullArgument("serverErrorCount");
    size_t worker = 0, server = 0;
    OBCCL_TRY(obccl::core::compressedErrorCounts(*c, count, &worker, &server));
    *workerErrorCount = worker;
    *serverErrorCount = server;
    return Status::ok();
  });
}

OBCCL_API obcclResult_t obcclCompressedAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                                                 obcclDataType_t datatype, float* workerError,
                                                 float* serverError, obcclComm_t comm,
                                                 obcclStream_t stream) {
  return guard(comm, [&]() -> Status {
    OBCCL_ASSIGN_OR_RETURN(obccl::core::Comm * c, readyComm(comm));
    OBCCL_TRY(checkCompressedDatatype(datatype));
    if (count > 0) {
      if (sendbuff == nullptr) return nullArgument("sendbuff");
      if (recvbuff == nullptr) return nullArgument("recvbuff");
      if (workerError == nullptr) return nullArgument("workerError");
      if (serverError == nullptr) return nullArgument("serverError");
    }
#if OBCCL_HAVE_CUDA
    // Device buffers (all four) run on core's device path on `stream`; mixing is an error.
    if (count > 0) {
      OBCCL_ASSIGN_OR_RETURN(obccl::core::MemoryKind kind,
                             obccl::core::callMemoryKind({{"sendbuff", sendbuff},
                                                          {"recvbuff", recvbuff},
                                                          {"workerError", workerError},
                                                          {"serverError", serverError}}));
      if (kind == obccl::core::MemoryKind::kDevice)
        return obccl::core::deviceCompressedAllReduce(*c, *comm->device, sendbuff, recvbuff, count,
                                                      datatype, workerError, serverError, stream);
    }
#endif
    return obccl::core::compressedAllReduce(*c, sendbuff, recvbuff, count, datatype, workerError,
                                            serverError);
  });
}

}  // extern "C"
