// NCCL path for device buffers: a communicator built from an id that core distributes through
// its own bootstrap, and the two byte-level collectives the compressed allreduce needs. Plain
// C++ (no NCCL or CUDA header); streams are cudaStream_t passed as void*. Nothing here
// synchronises with the host: every collective is only enqueued on the stream.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <memory>

#include "util/status.h"

namespace obccl::device {

constexpr size_t kNcclUniqueIdBytes = 128;  // NCCL_UNIQUE_ID_BYTES
using NcclUniqueIdBytes = std::array<char, kNcclUniqueIdBytes>;

// True when obccl was built against NCCL (otherwise every call below fails with a message).
bool ncclAvailable();
// A fresh NCCL unique id (rank 0 makes it; core passes its bytes to every rank).
Result<NcclUniqueIdBytes> ncclNewUniqueId();

class NcclComm {
 public:
  // Collective: every rank calls it with the same id and its rank, on the CUDA device the
  // communicator should use (the current device). Fails with obcclTimeout, after aborting, when
  // the other ranks have not joined within timeoutMs.
  static Result<std::unique_ptr<NcclComm>> create(int nranks, int rank, const NcclUniqueIdBytes& id,
                                                  int timeoutMs);
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;
  // Finalizes and destroys (aborts when finalizing fails or takes longer than the timeout).
  ~NcclComm();

  int rank() const { return rank_; }
  int nranks() const { return nranks_; }
  // Alltoall of bytes as one group of sends and receives: send + r*bytesPerPeer goes to rank r,
  // recv + r*bytesPerPeer comes from rank r (device buffers).
  Status alltoall(const void* send, void* recv, size_t bytesPerPeer, void* stream);
  // Allgather of bytes: recv + r*bytesPerRank receives rank r's send buffer.
  Status allgather(const void* send, void* recv, size_t bytesPerRank, void* stream);
  // The communicator's asynchronous error (a failed peer, a network error), as a Status.
  Status asyncError();
  // Aborts outstanding work and frees the communicator; it may interrupt a call blocked on
  // another thread, but no new call may start afterwards.
  Status abort();

 private:
  NcclComm(void* comm, int nranks, int rank, int timeoutMs)
      : comm_(comm), nranks_(nranks), rank_(rank), timeoutMs_(timeoutMs) {}
  // Waits (up to the timeout) while a non-blocking NCCL call is still in progress.
  Status waitReady(const char* what);

  std::atomic<void*> comm_;  // ncclComm_t; null after abort()
  int nranks_;
  int rank_;
  int timeoutMs_;
};

}  // namespace obccl::device
