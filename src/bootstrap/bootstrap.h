// Bootstrap: the unique id, the authenticated TCP rendezvous at the root, and the out-of-band
// allgather that communicators use to exchange transport addresses and topology.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "obccl/obccl.h"
#include "util/deadline.h"
#include "util/socket.h"
#include "util/status.h"

namespace obccl::bootstrap {

constexpr size_t kSecretBytes = 32;  // 256-bit job secret

// What an obcclUniqueId carries: where the root listens, the job secret and a communicator id.
struct UniqueIdData {
  SocketAddress root;
  std::vector<uint8_t> secret;  // kSecretBytes
  uint64_t commId = 0;
};

// Serialises into / parses from the 128 opaque bytes. A garbled id is obcclInvalidArgument.
obcclUniqueId encodeUniqueId(const UniqueIdData& data);
Result<UniqueIdData> decodeUniqueId(const obcclUniqueId& id);

// How a root service behaves; the defaults come from the parameter registry.
struct RootServiceOptions {
  int64_t joinTimeoutMs = -1;       // every rank must join within this; -1: OBCCL_TIMEOUT_MS
  int64_t handshakeTimeoutMs = -1;  // a connection that stalls this long before joining is
                                    // dropped; -1: OBCCL_BOOTSTRAP_HANDSHAKE_MS
  int maxPendingHandshakes = 128;   // beyond this, the oldest unauthenticated one is dropped
  std::string ifname;               // interface spec for createUniqueId; empty: the parameter
};

// Makes a fresh id: a random secret and comm id, and a root service listening on a port chosen
// by the kernel on the selected interface (OBCCL_SOCKET_IFNAME). The root service runs in a
// background thread of this process until every rank of the job has left or it times out.
Result<UniqueIdData> createUniqueId();
Result<UniqueIdData> createUniqueId(const RootServiceOptions& options);
// Starts a root service listening at an address fixed in advance (obcclCommInitFromEnv on rank
// 0 with OBCCL_ROOT / MASTER_ADDR:MASTER_PORT).
Status startRootService(const UniqueIdData& data);
Status startRootService(const UniqueIdData& data, const RootServiceOptions& options);
// Number of root services still running in this process (tests check that they exit).
int activeRootServices();

// One rank's connection to the root service.
class Bootstrap {
 public:
  virtual ~Bootstrap() = default;
  // Connects and authenticates to the root, announcing rank and nranks; the root checks that
  // every rank agrees on nranks and that no rank joins twice.
  static Result<std::unique_ptr<Bootstrap>> connect(const UniqueIdData& id, int rank, int nranks,
                                                    const Deadline& deadline);
  // As above; setting *cancel (from any thread) makes a pending connect fail within ~100 ms.
  static Result<std::unique_ptr<Bootstrap>> connect(const UniqueIdData& id, int rank, int nranks,
                                                    const Deadline& deadline,
                                                    const std::atomic<bool>* cancel);
  // Every rank contributes `mine` (any length, may differ per rank); all[i] is rank i's bytes.
  virtual Status allgather(const std::vector<uint8_t>& mine, std::vector<std::vector<uint8_t>>* all,
                           const Deadline& deadline) = 0;
  virtual Status barrier(const Deadline& deadline) = 0;
  // Without blocking, between rounds: an error when the root has reported a failure of the job
  // (e.g. another rank left while it was starting) or the root connection broke; ok otherwise.
  virtual Status checkRoot() = 0;
  // After init. Tells the root that this rank's operation failed; the root forwards the first
  // such report to every other rank (best effort, a short bounded write).
  virtual void reportFailure(const Status& failure, uint64_t seq) = 0;
  // After init, without blocking: the failure another rank reported through the root, or ok
  // (also once the root is gone, which is no failure of the job). Sticky once reported; *seq
  // receives the operation sequence number the reporting rank failed in.
  virtual Status jobFailure(uint64_t* seq) = 0;
  // The fd to poll for jobFailure() news; -1 once the root is gone.
  virtual int jobFailureFd() const = 0;
  // Unblocks any pending call (it fails with obcclRemoteError or a timeout); safe from any thread.
  virtual void abort() = 0;
  virtual int rank() const = 0;
  virtual int nranks() const = 0;
  // This rank's local address as seen on the bootstrap connection (the interface to listen on).
  virtual const SocketAddress& localAddress() const = 0;
};

}  // namespace obccl::bootstrap
