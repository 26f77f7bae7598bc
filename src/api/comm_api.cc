// Communicator lifetime: unique ids, init (blocking and non-blocking), destroy, abort, queries.
#include <chrono>
#include <thread>

#include "api/guard.h"
#include "core/config.h"
#include "core/init.h"
#if OBCCL_HAVE_CUDA
#include "core/device_path.h"
#endif
#include "util/log.h"

namespace obccl::api {
namespace {

// Creates the handle and joins the job: blocking, or on a thread (config blocking = 0), in which
// case *out is written and obcclInProgress returned, as NCCL's non-blocking mode does.
Status startComm(const core::JoinInfo& info, core::Config cfg, obcclComm_t* out) {
  bool blocking = cfg.blocking;
  OBCCL_ASSIGN_OR_RETURN(std::unique_ptr<core::Comm> created,
                         core::Comm::create(info.rank, info.nranks, std::move(cfg)));
  auto handle = std::make_unique<obcclComm>();
  handle->comm = std::shared_ptr<core::Comm>(std::move(created));
  handle->init = std::make_shared<InitState>();
#if OBCCL_HAVE_CUDA
  handle->device = core::makeDeviceContext();  // touches CUDA only when a device call needs it
#endif
  if (blocking) {
    setLogRank(info.rank);
    OBCCL_TRY(core::joinComm(*handle->comm, info));
    handle->init->done = true;
    *out = handle.release();
    return Status::ok();
  }
  std::shared_ptr<core::Comm> comm = handle->comm;
  std::shared_ptr<InitState> state = handle->init;
  handle->initThread = std::thread([comm, state, info] {
    setLogRank(info.rank);
    Status s = core::joinComm(*comm, info);
    std::lock_guard<std::mutex> lock(state->mu);
    state->result = std::move(s);
    state->done = true;
  });
  *out = handle.release();
  return Status(obcclInProgress,
                "non-blocking init started: poll obcclCommGetAsyncError until obcclSuccess");
}

Status initRank(obcclComm_t* comm, int nranks, const obcclUniqueId& commId, int rank,
                const obcclConfig_t* config) {
  if (comm == nullptr) return nullArgument("comm");
  if (nranks < 1) return invalidArgument("nranks = " + std::to_string(nranks) + " must be >= 1");
  if (rank < 0 || rank >= nranks)
    return invalidArgument("rank = " + std::to_string(rank) +
                           " is outside [0, nranks = " + std::to_string(nranks) + ")");
  OBCCL_ASSIGN_OR_RETURN(core::Config cfg, core::resolveConfig(config));
  OBCCL_ASSIGN_OR_RETURN(core::JoinInfo info, core::joinInfoFromUniqueId(commId, rank, nranks));
  return startComm(info, std::move(cfg), comm);
}

// Stops a running init (abort), waits a little for its thread, and detaches it if it is stuck
// in a call that cannot be interrupted (it holds its own references to what it uses).
void stopInitThread(obcclComm_t h) {
  if (!h->initThread.joinable()) return;
  bool done;
  {
    std::lock_guard<std::mutex> lock(h->init->mu);
    done = h->init->done;
  }
  if (!done) h->comm->abort();
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  while (!done && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::lock_guard<std::mutex> lock(h->init->mu);
    done = h->init->done;
  }
  if (done) {
    h->initThread.join();
  } else {
    OBCCL_WARN(kSubsysInit, "init thread still blocked; detaching it");
    h->initThread.detach();
  }
}

Status release(obcclComm_t comm, bool abort) {
  if (comm == nullptr) return nullArgument("comm");
  if (!validHandle(comm)) return invalidArgument("comm is not a live communicator");
  if (abort) comm->comm->abort();
#if OBCCL_HAVE_CUDA
  if (abort) core::abortDevice(*comm->device);  // interrupts NCCL work of device calls
#endif
  stopInitThread(comm);
  // Calls running on other threads leave quickly after an abort; wait for them so that nothing
  // touches the handle after it is freed.
  while (comm->activeCalls.load(std::memory_order_acquire) > 0)
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  comm->magic = 0;
  delete comm;
  return Status::ok();
}

}  // namespace
}  // namespace obccl::api

using obccl::Status;
using obccl::api::guard;
using obccl::api::nullArgument;

extern "C" {

OBCCL_API obcclResult_t obcclGetUniqueId(obcclUniqueId* uniqueId) {
  return guard([&]() -> Status {
    if (uniqueId == nullptr) return nullArgument("uniqueId");
    OBCCL_ASSIGN_OR_RETURN(obcclUniqueId id, obccl::core::newUniqueId());
    *uniqueId = id;
    return Status::ok();
  });
}

OBCCL_API obcclResult_t obcclCommInitRank(obcclComm_t* comm, int nranks, obcclUniqueId commId,
                                          int rank) {
  return guard([&] { return obccl::api::initRank(comm, nranks, commId, rank, nullptr); });
}

OBCCL_API obcclResult_t obcclCommInitRankConfig(obcclComm_t* comm, int nranks, obcclUniqueId commId,
                                                int rank, const obcclConfig_t* config) {
  return guard([&] { return obccl::api::initRank(comm, nranks, commId, rank, config); });
}

OBCCL_API obcclResult_t obcclCommInitFromEnv(obcclComm_t* comm, const obcclConfig_t* config) {
  return guard([&]() -> Status {
    if (comm == nullptr) return nullArgument("comm");
    OBCCL_ASSIGN_OR_RETURN(obccl::core::Config cfg, obccl::core::resolveConfig(config));
    OBCCL_ASSIGN_OR_RETURN(obccl::core::JoinInfo info, obccl::core::joinInfoFromEnv());
    return obccl::api::startComm(info, std::move(cfg), comm);
  });
}

OBCCL_API obcclResult_t obcclCommDestroy(obcclComm_t comm) {
  return guard([&] { return obccl::api::release(comm, false); });
}

OBCCL_API obcclResult_t obcclCommAbort(obcclComm_t comm) {
  return guard([&] { return obccl::api::release(comm, true); });
}

OBCCL_API obcclResult_t obcclCommGetAsyncError(obcclComm_t comm, obcclResult_t* asyncError) {
  return guard(comm, [&]() -> Status {
    if (comm == nullptr) return nullArgument("comm");
    if (asyncError == nullptr) return nullArgument("asyncError");
    if (!obccl::api::validHandle(comm))
      return obccl::invalidArgument("comm is not a live communicator");
    {
      std::lock_guard<std::mutex> lock(comm->init->mu);
      if (!comm->init->done) {
        *asyncError = obcclInProgress;
        return Status::ok();
      }
      if (!comm->init->result.isOk()) {
        // obcclGetLastError(comm) then says why, not what an earlier call said while waiting.
        *asyncError = obccl::api::recordError(comm, comm->init->result);
        return Status::ok();
      }
    }
    Status health = comm->comm->health();
    *asyncError = health.isOk() ? obcclSuccess : obccl::api::recordError(comm, health);
#if OBCCL_HAVE_CUDA
    // A device compressed allreduce that every rank skipped on the device (non-finite input)
    // is reported here once, with its message for obcclGetLastError (docs/DEVICE_PATH.md).
    if (*asyncError == obcclSuccess) {
      Status device = obccl::core::deviceAsyncError(*comm->device);
      if (!device.isOk()) *asyncError = obccl::api::recordError(comm, device);
    }
#endif
    return Status::ok();
  });
}

OBCCL_API obcclResult_t obcclCommCount(obcclComm_t comm, int* count) {
  return guard(comm, [&]() -> Status {
    if (comm == nullptr) return nullArgument("comm");
    if (count == nullptr) return nullArgument("count");
    if (!obccl::api::validHandle(comm))
      return obccl::invalidArgument("comm is not a live communicator");
    *count = comm->comm->nranks();
    return Status::ok();
  });
}

OBCCL_API obcclResult_t obcclCommUserRank(obcclComm_t comm, int* rank) {
  return guard(comm, [&]() -> Status {
    if (comm == nullptr) return nullArgument("comm");
    if (rank == nullptr) return nullArgument("rank");
    if (!obccl::api::validHandle(comm))
      return obccl::invalidArgument("comm is not a live communicator");
    *rank = comm->comm->rank();
    return Status::ok();
  });
}

OBCCL_API obcclResult_t obcclCommGetStats(obcclComm_t comm, obcclCommStats_t* stats) {
  return guard(comm, [&]() -> Status {
    if (comm == nullptr) return nullArgument("comm");
    if (stats == nullptr) return nullArgument("stats");
    if (!obccl::api::validHandle(comm))
      return obccl::invalidArgument("comm is not a live communicator");
    if (stats->size < sizeof(obcclCommStats_t))
      return obccl::invalidArgument("stats->size = " + std::to_string(stats->size) +
                                    " is smaller than sizeof(obcclCommStats_t) = " +
                                    std::to_string(sizeof(obcclCommStats_t)) +
                                    "; set it before the call");
    obccl::core::CommStats s = comm->comm->stats();
    stats->bytesSent = s.bytesSent;
    stats->bytesReceived = s.bytesReceived;
    stats->collectives = s.collectives;
    return Status::ok();
  });
}

}  // extern "C"
