// The NCCL path behind nccl_path.h. Communicators are created non-blocking so that every wait
// (init, a lazily connecting first collective, finalize) has a deadline.
#include "device/nccl_path.h"

#include <algorithm>
#include <string>
#include <thread>

#include "util/deadline.h"
#include "util/log.h"

#if defined(OBCCL_HAVE_NCCL)
#include <cuda_runtime.h>
#include <nccl.h>
#endif

namespace obccl::device {

#if defined(OBCCL_HAVE_NCCL)

namespace {

ncclComm_t asComm(void* p) { return static_cast<ncclComm_t>(p); }

Status ncclStatus(ncclResult_t r, const std::string& what, ncclComm_t comm = nullptr) {
  if (r == ncclSuccess || r == ncclInProgress) return Status::ok();
  std::string detail = ncclGetErrorString(r);
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && last[0] != '\0') detail += std::string(": ") + last;
  obcclResult_t code = r == ncclRemoteError          ? obcclRemoteError
                       : r == ncclInvalidArgument    ? obcclInvalidArgument
                       : r == ncclInvalidUsage       ? obcclInvalidUsage
                       : r == ncclSystemError        ? obcclSystemError
                       : r == ncclUnhandledCudaError ? obcclUnhandledCudaError
                                                     : obcclInternalError;
  return Status(code, what + ": " + detail);
}

// Polls a non-blocking communicator until its pending call has completed or failed.
Status pollReady(ncclComm_t comm, const Deadline& deadline, const std::string& what) {
  while (true) {
    ncclResult_t state = ncclSuccess;
    OBCCL_TRY(ncclStatus(ncclCommGetAsyncError(comm, &state), what + " (async error query)", comm));
    if (state != ncclInProgress) return ncclStatus(state, what, comm);
    if (deadline.expired()) return timeoutError(what + ": still in progress at the deadline");
    std::this_thread::yield();
  }
}

}  // namespace

bool ncclAvailable() { return true; }

Result<NcclUniqueIdBytes> ncclNewUniqueId() {
  ncclUniqueId id;
  OBCCL_TRY(ncclStatus(ncclGetUniqueId(&id), "ncclGetUniqueId"));
  NcclUniqueIdBytes bytes;
  static_assert(sizeof(id.internal) == kNcclUniqueIdBytes, "NCCL unique id size changed");
  std::copy(id.internal, id.internal + kNcclUniqueIdBytes, bytes.begin());
  return bytes;
}

Result<std::unique_ptr<NcclComm>> NcclComm::create(int nranks, int rank,
                                                   const NcclUniqueIdBytes& id, int timeoutMs) {
  if (nranks <= 0 || rank < 0 || rank >= nranks) {
    return invalidArgument("NCCL communicator: rank " + std::to_string(rank) + " of " +
                           std::to_string(nranks));
  }
  ncclUniqueId nid;
  std::copy(id.begin(), id.end(), nid.internal);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  const std::string what =
      "ncclCommInitRankConfig(rank " + std::to_string(rank) + " of " + std::to_string(nranks) + ")";
  OBCCL_TRY(ncclStatus(ncclCommInitRankConfig(&comm, nranks, nid, rank, &config), what));
  Status st = pollReady(comm, Deadline::afterMs(timeoutMs), what);
  if (!st.isOk()) {
    if (comm != nullptr) (void)ncclCommAbort(comm);
    OBCCL_WARN(kSubsysDevice, "%s", st.message().c_str());
    return st;
  }
  OBCCL_INFO(kSubsysDevice, "NCCL communicator ready: rank %d of %d", rank, nranks);
  return std::unique_ptr<NcclComm>(new NcclComm(comm, nranks, rank, timeoutMs));
}

NcclComm::~NcclComm() {
  ncclComm_t comm = asComm(comm_.exchange(nullptr));
  if (comm == nullptr) return;
  Status st = ncclStatus(ncclCommFinalize(comm), "ncclCommFinalize", comm);
  if (st.isOk()) st = pollReady(comm, Deadline::afterMs(timeoutMs_), "ncclCommFinalize");
  if (!st.isOk()) {
    OBCCL_WARN(kSubsysDevice, "%s; aborting the NCCL communicator", st.message().c_str());
    (void)ncclCommAbort(comm);
    return;
  }
  (void)ncclCommDestroy(comm);
}

Status NcclComm::waitReady(const char* what) {
  ncclComm_t comm = asComm(comm_.load());
  if (comm == nullptr) return invalidUsage(std::string(what) + ": NCCL communicator was aborted");
  return pollReady(comm, Deadline::afterMs(timeoutMs_), what);
}

Status NcclComm::alltoall(const void* send, void* recv, size_t bytesPerPeer, void* stream) {
  ncclComm_t comm = asComm(comm_.load());
  if (comm == nullptr) return invalidUsage("NCCL alltoall: communicator was aborted");
  if (bytesPerPeer == 0) return Status::ok();
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const char* sendBytes = static_cast<const char*>(send);
  char* recvBytes = static_cast<char*>(recv);
  OBCCL_TRY(ncclStatus(ncclGroupStart(), "ncclGroupStart", comm));
  Status st;
  for (int r = 0; r < nranks_ && st.isOk(); ++r) {
    size_t off = static_cast<size_t>(r) * bytesPerPeer;
    st = ncclStatus(ncclSend(sendBytes + off, bytesPerPeer, ncclUint8, r, comm, s),
                    "ncclSend to rank " + std::to_string(r), comm);
    if (st.isOk()) {
      st = ncclStatus(ncclRecv(recvBytes + off, bytesPerPeer, ncclUint8, r, comm, s),
                      "ncclRecv from rank " + std::to_string(r), comm);
    }
  }
  // The group must be closed even after a failed call inside it.
  Status end = ncclStatus(ncclGroupEnd(), "ncclGroupEnd (alltoall)", comm);
  OBCCL_TRY(st);
  OBCCL_TRY(end);
  return waitReady("NCCL alltoall");
}

Status NcclComm::allgather(const void* send, void* recv, size_t bytesPerRank, void* stream) {
  ncclComm_t comm = asComm(comm_.load());
  if (comm == nullptr) return invalidUsage("NCCL allgather: communicator was aborted");
  if (bytesPerRank == 0) return Status::ok();
  OBCCL_TRY(ncclStatus(
      ncclAllGather(send, recv, bytesPerRank, ncclUint8, comm, static_cast<cudaStream_t>(stream)),
      "ncclAllGather", comm));
  return waitReady("NCCL allgather");
}

Status NcclComm::asyncError() {
  ncclComm_t comm = asComm(comm_.load());
  if (comm == nullptr) return invalidUsage("NCCL communicator was aborted");
  ncclResult_t state = ncclSuccess;
  OBCCL_TRY(ncclStatus(ncclCommGetAsyncError(comm, &state), "ncclCommGetAsyncError", comm));
  return ncclStatus(state, "NCCL asynchronous error", comm);
}

Status NcclComm::abort() {
  ncclComm_t comm = asComm(comm_.exchange(nullptr));
  if (comm == nullptr) return Status::ok();
  return ncclStatus(ncclCommAbort(comm), "ncclCommAbort");
}

#else  // !OBCCL_HAVE_NCCL

namespace {
Status noNccl(const char* what) {
  return invalidUsage(std::string(what) + ": obccl was built without NCCL");
}
}  // namespace

bool ncclAvailable() { return false; }
Result<NcclUniqueIdBytes> ncclNewUniqueId() { return noNccl("ncclNewUniqueId"); }
Result<std::unique_ptr<NcclComm>> NcclComm::create(int, int, const NcclUniqueIdBytes&, int) {
  return noNccl("NCCL communicator");
}
NcclComm::~NcclComm() = default;
Status NcclComm::waitReady(const char* what) { return noNccl(what); }
Status NcclComm::alltoall(const void*, void*, size_t, void*) { return noNccl("NCCL alltoall"); }
Status NcclComm::allgather(const void*, void*, size_t, void*) { return noNccl("NCCL allgather"); }
Status NcclComm::asyncError() { return noNccl("NCCL asyncError"); }
Status NcclComm::abort() { return noNccl("NCCL abort"); }

#endif  // OBCCL_HAVE_NCCL

}  // namespace obccl::device
