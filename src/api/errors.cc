// Error reporting: result strings, last-error messages, the version, and the handle checks
// shared by every api file.
#include <string>

#include "api/guard.h"
#include "obccl/obccl.h"
#include "util/log.h"

namespace obccl::api {
namespace {

// The last message of this thread's calls (what obcclGetLastError(NULL) returns).
std::string& threadLastError() {
  static thread_local std::string message;
  return message;
}

}  // namespace

obcclResult_t recordError(obcclComm_t comm, const Status& status) {
  if (status.isOk()) return obcclSuccess;
  std::string message =
      status.message().empty() ? obcclGetErrorString(status.code()) : status.message();
  threadLastError() = message;
  if (validHandle(comm)) {
    std::lock_guard<std::mutex> lock(comm->errorMu);
    comm->lastError = std::move(message);
  }
  return status.code();
}

bool validHandle(obcclComm_t comm) { return comm != nullptr && comm->magic == kCommMagic; }

Result<core::Comm*> readyComm(obcclComm_t comm) {
  if (comm == nullptr) return nullArgument("comm");
  if (comm->magic != kCommMagic)
    return invalidArgument("comm is not a live communicator (destroyed or never created)");
  std::lock_guard<std::mutex> lock(comm->init->mu);
  if (!comm->init->done)
    return Status(obcclInProgress,
                  "comm is still initializing (non-blocking init): poll obcclCommGetAsyncError "
                  "until it returns obcclSuccess");
  if (!comm->init->result.isOk())
    return Status(comm->init->result.code(),
                  "comm failed to initialize: " + comm->init->result.message());
  setLogRank(comm->comm->rank());  // several ranks may share a process (one per thread)
  return comm->comm.get();
}

}  // namespace obccl::api

using obccl::api::guard;

extern "C" {

OBCCL_API const char* obcclGetErrorString(obcclResult_t result) {
  switch (result) {
    case obcclSuccess:
      return "no error";
    case obcclUnhandledCudaError:
      return "unhandled CUDA error";
    case obcclSystemError:
      return "system error (a system call failed, or the call was aborted)";
    case obcclInternalError:
      return "internal error (a bug in obccl)";
    case obcclInvalidArgument:
      return "invalid argument";
    case obcclInvalidUsage:
      return "invalid usage (e.g. ranks called mismatched collectives)";
    case obcclRemoteError:
      return "remote error (a peer failed or the connection broke)";
    case obcclInProgress:
      return "operation in progress";
    case obcclTimeout:
      return "timeout";
    default:
      return "unknown result code";
  }
}

OBCCL_API const char* obcclGetLastError(obcclComm_t comm) {
  if (comm == nullptr) return obccl::api::threadLastError().c_str();
  if (!obccl::api::validHandle(comm)) return "comm is not a live communicator";
  std::lock_guard<std::mutex> lock(comm->errorMu);
  return comm->lastError.c_str();
}

OBCCL_API obcclResult_t obcclGetVersion(int* version) {
  return guard([&]() -> obccl::Status {
    if (version == nullptr) return obccl::api::nullArgument("version");
    *version = OBCCL_VERSION_CODE;
    return obccl::Status::ok();
  });
}

}  // extern "C"
