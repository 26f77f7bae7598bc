// api::guard: the body of every extern "C" function. It turns Status values and exceptions into
// result codes and records the message for obcclGetLastError (per communicator, and per thread).
//
// How another api file (compressed_api.cc, onebit_adam_api.cc) uses it:
//
//   extern "C" obcclResult_t obcclCompressedAllReduce(..., obcclComm_t comm, ...) {
//     return obccl::api::guard(comm, [&]() -> obccl::Status {
//       OBCCL_ASSIGN_OR_RETURN(obccl::core::Comm* c, obccl::api::readyComm(comm));
//       if (sendbuff == nullptr) return obccl::api::nullArgument("sendbuff");
//       return c->...;  // or obccl::core::compressedAllReduce(*c, ...)
//     });
//   }
//
// guard(comm, body) counts the call as active on comm (so obcclCommAbort/Destroy wait for it)
// and records a failure on comm and on the calling thread; guard(body) only on the thread.
// For an object that is not a communicator (an optimizer handle), use guard(commOfIt, body), or
// guard(body) and recordError(comm, status) yourself.
#pragma once

#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <utility>

#include "api/handle.h"
#include "obccl/obccl.h"
#include "util/status.h"

namespace obccl::api {

// Stores status's message as the last error of comm (when not null) and of this thread.
// Returns status.code(). A success stores nothing.
obcclResult_t recordError(obcclComm_t comm, const Status& status);

// The integer a caller passed for an enum parameter, read without loading it as the enum: an
// out-of-range value is undefined behaviour to load (UBSan reports it), so validate this first.
template <typename E>
int rawEnum(const E& value) {
  static_assert(sizeof(E) == sizeof(int), "C enums are int-sized");
  int raw;
  std::memcpy(&raw, &value, sizeof(raw));
  return raw;
}

// obcclInvalidArgument "<name> is NULL".
inline Status nullArgument(const char* name) {
  return invalidArgument(std::string(name) + " is NULL");
}

// The ready core communicator behind comm: obcclInvalidArgument for NULL or a destroyed handle,
// obcclInProgress while a non-blocking init runs, the init error when it failed.
Result<core::Comm*> readyComm(obcclComm_t comm);

// True when comm looks like a live handle (not NULL, magic intact).
bool validHandle(obcclComm_t comm);

template <typename F>
obcclResult_t guardImpl(obcclComm_t comm, F&& body) {
  Status status;
  try {
    status = body();
  } catch (const std::bad_alloc&) {
    status = systemError("out of memory");
  } catch (const std::exception& e) {
    status = internalError(std::string("unexpected exception: ") + e.what());
  } catch (...) {
    status = internalError("unexpected exception");
  }
  return recordError(comm, status);
}

template <typename F>
obcclResult_t guard(F&& body) {
  return guardImpl(nullptr, std::forward<F>(body));
}

template <typename F>
obcclResult_t guard(obcclComm_t comm, F&& body) {
  if (!validHandle(comm)) return guardImpl(nullptr, std::forward<F>(body));
  comm->activeCalls.fetch_add(1, std::memory_order_acq_rel);
  obcclResult_t rc = guardImpl(comm, std::forward<F>(body));
  comm->activeCalls.fetch_sub(1, std::memory_order_acq_rel);
  return rc;
}

}  // namespace obccl::api
