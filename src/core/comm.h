// Comm: one rank's communicator. It owns the bootstrap link, one transport Connection per peer,
// the immutable Config and the operation sequence counter, and it runs the collectives.
//
// How core code (collectives, the compressed allreduce, the optimizer helper) uses it:
//
//   return comm.runOp({OpKind::kCompressedAllReduce, count, dtype, obcclAvg, -1, true}, [&] {
//     OBCCL_TRY(comm.allToAll(bits, gathered, chunkBytes, obcclUint8));  // nested: same op
//     ...
//     return Status::ok();
//   });
//
// runOp() takes the next sequence number and stamps every frame of the body with the op's
// OpDesc, commId and seq. Collectives called inside a body run as part of that op (no new
// sequence number), so an op made of several internal collectives still matches across ranks
// as one call. Every received header is compared with what this rank expects; a difference is
// obcclInvalidUsage naming both calls. A failure inside a body (other than one every rank agreed
// on, see markFailureAgreed) sends a kFlagError frame to every peer, so peers fail fast instead
// of timing out, and leaves the communicator unusable (health() returns the failure). A mismatch
// in which no rank reads a frame of the other call (ranks that disagree on a broadcast root: the
// "roots" only send) completes, and its stale frames fail the next operation instead.
//
// Threading: one thread at a time per communicator (as NCCL); abort() may come from any thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/op.h"
#include "obccl/obccl.h"
#include "topo/topology.h"
#include "transports/transport.h"
#include "util/deadline.h"
#include "util/status.h"

namespace obccl::bootstrap {
class Bootstrap;
struct UniqueIdData;
}  // namespace obccl::bootstrap

namespace obccl::core {

class Waiter;

// One posted send or receive as core tracks it. It must not move while posted.
struct Transfer {
  int peer = -1;
  bool isRecv = false;
  size_t bytes = 0;            // payload bytes sent, or exactly expected on receive
  const void* data = nullptr;  // the payload (send) or the destination (receive)
  uint32_t step = 0;           // algorithm step, for diagnostics
  transport::Request req;
};

// A subset of the communicator's ranks that runs a collective on its own (hierarchical
// schedules). Every member calls the collective with an equal Group.
struct Group {
  std::vector<int> ranks;  // communicator ranks, in group order (group rank i is ranks[i])
  int index = 0;           // this rank's position in ranks
  int size() const { return static_cast<int>(ranks.size()); }
};

struct CommStats {
  uint64_t bytesSent = 0;
  uint64_t bytesReceived = 0;
  uint64_t collectives = 0;
};

// Scratch buffers owned by the communicator, reused across operations. Core collectives use the
// kScratchCore* slots; code that calls core collectives inside its own op uses kScratchUser*;
// the compressed allreduce keeps its frames in kScratchCompressed (so a schedule may call it on a
// buffer held in a user slot).
enum ScratchSlot {
  kScratchCore0 = 0,
  kScratchCore1,
  kScratchUser0,
  kScratchUser1,
  kScratchCompressed,
  kScratchSlots
};

class Comm {
 public:
  // A communicator that is not connected yet: init() or adoptConnections() connects it. Creation
  // and init are separate so that abort() can interrupt an init running on another thread.
  static Result<std::unique_ptr<Comm>> create(int rank, int nranks, Config config);
  ~Comm();
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  // Bootstrap::connect, host ids, then per-peer transport selection (config().transports).
  Status init(const bootstrap::UniqueIdData& id);
  // Tests and single-process tools: adopts ready connections, connections[peer] (nullptr for
  // this rank). Every rank must pass the same commId.
  Status adoptConnections(uint64_t commId,
                          std::vector<std::unique_ptr<transport::Connection>> connections);

  int rank() const { return rank_; }
  int nranks() const { return nranks_; }
  uint64_t commId() const { return commId_; }
  const Config& config() const { return config_; }
  // The connection to peer; nullptr for this rank or before init.
  transport::Connection* connection(int peer) const;
  // Name of the transport that serves peer ("tcp", "shm", "ucx"; "self" for this rank).
  const std::string& transportOf(int peer) const;
  // Which ranks share a host (from the gathered host ids or OBCCL_TOPO_FILE).
  const topo::HostMap& hostMap() const { return hostMap_; }
  // All ranks, in rank order.
  const Group& world() const { return world_; }
  // A group of the given communicator ranks; this rank must be one of them.
  Result<Group> makeGroup(std::vector<int> ranks) const;

  // ---- Operations -------------------------------------------------------------------------
  // Runs body as one collective operation (see the top of this file). Returns body's Status,
  // prefixed with "allreduce #5: " on failure. Nested calls run body inside the outer op.
  Status runOp(const OpDesc& desc, const std::function<Status()>& body);
  bool inOp() const { return opDepth_ > 0; }
  // The current operation (valid inside runOp), and its sequence number (the last one outside).
  const OpDesc& currentOp() const { return op_; }
  uint64_t seq() const { return seq_; }
  // A frame header stamped with commId and the current sequence number.
  transport::FrameHeader header(OpKind op, uint64_t count, obcclDataType_t datatype,
                                obcclRedOp_t redop, int root) const;
  // The header of the current operation (kFlagCompressed set when its desc says so).
  transport::FrameHeader header() const;
  // The deadline of the current operation (config().timeoutMs after it started).
  const Deadline& opDeadline() const { return opDeadline_; }
  // Declares that the failure the body is about to return was reached by every rank together
  // (e.g. after agreeing on a flag), so peers need no error frame and the comm stays usable.
  void markFailureAgreed() { failureAgreed_ = true; }
  // Frames of a compressed op carry a payload checksum. A compressed schedule with uncompressed
  // phases (hierarchical.h) turns it off for them, as for any uncompressed collective;
  // config().checksum still forces one. Every op starts with it on.
  void setPayloadChecksums(bool on) { payloadChecksums_ = on; }

  // ---- Point to point inside an operation (the building blocks of the collectives) ----------
  // Posts a frame with the current op's header. data must stay valid until the transfer is done.
  Status postSend(int peer, const void* data, size_t bytes, Transfer* t, uint32_t step = 0);
  // Posts a receive of exactly `bytes` payload bytes into buf.
  Status postRecv(int peer, void* buf, size_t bytes, Transfer* t, uint32_t step = 0);
  // Drives progress until every transfer is done. Checks each received header against the
  // current op; fails on the first error (mismatch, error frame, broken peer, abort, deadline).
  // `what` names the algorithm phase in timeout messages. A failure has already told peers.
  Status waitAll(Transfer* const* transfers, size_t n, const Deadline& deadline,
                 const std::string& what);
  Status waitAll(std::initializer_list<Transfer*> transfers, const std::string& what);
  Status waitAll(std::vector<Transfer>& transfers, const std::string& what);

  // Lower-level pieces for algorithm engines that keep many transfers in flight:
  // advances the connections of `peers` once; *moved says whether any byte moved.
  Status progressPeers(const std::vector<int>& peers, bool* moved);
  // Waits (poll, or spin then short sleeps for fd-less transports) until one of the peers'
  // connections may progress, abort() is called, or a short cap passes. Fails on abort and on
  // `deadline`, naming `what` and the peers in `pending`.
  Status idleWait(const std::vector<int>& peers, const Deadline& deadline, int* idleRounds,
                  const std::string& what, const std::vector<int>& pending);
  // Validates a completed transfer: transport status, header against the current op, length.
  Status checkDone(const Transfer& t) const;
  // Records a failure of the current op: error frames to peers (bounded wait), comm unusable.
  // Returns `status` (for `return comm.fail(s);`). Engines call it before returning an error
  // while transfers are still posted, so buffers stay valid while the error frames go out.
  Status fail(Status status);

  // Communicator-owned memory of at least `bytes`, kept between operations.
  uint8_t* scratch(ScratchSlot slot, size_t bytes);

  // ---- Collectives on host buffers (validate arguments; count 0 is a no-op) -----------------
  // group == nullptr means every rank. In place (send == recv) is allowed everywhere; for
  // allGather in place means send == recv + index * sendCount elements.
  Status allReduce(const void* send, void* recv, size_t count, obcclDataType_t datatype,
                   obcclRedOp_t op, const Group* group = nullptr);
  // send is read on the root only.
  Status broadcast(const void* send, void* recv, size_t count, obcclDataType_t datatype, int root,
                   const Group* group = nullptr);
  Status allGather(const void* send, void* recv, size_t sendCount, obcclDataType_t datatype,
                   const Group* group = nullptr);
  Status reduceScatter(const void* send, void* recv, size_t recvCount, obcclDataType_t datatype,
                       obcclRedOp_t op, const Group* group = nullptr);
  // Block i of send goes to group rank i; block j of recv comes from group rank j.
  Status allToAll(const void* send, void* recv, size_t count, obcclDataType_t datatype,
                  const Group* group = nullptr);
  Status barrier(const Group* group = nullptr);

  // ---- State -------------------------------------------------------------------------------
  // Any thread, quick: wakes every wait (which then fails) and unblocks a running init.
  void abort();
  bool aborted() const { return aborted_.load(std::memory_order_acquire); }
  // Ok, or the failure that left the communicator unusable.
  Status health() const;
  CommStats stats() const;

 private:
  Comm(int rank, int nranks, Config config);
  Status selectTransports(const bootstrap::UniqueIdData& id, const Deadline& deadline);
  void abortBootstrap();  // with bootstrapMu_ held
  // The bootstrap root as an out-of-band failure channel after init (see Comm::fail): tell the
  // other ranks about this rank's failure; read another rank's report without blocking; the fd
  // to poll for such a report (-1: none).
  void reportFailure(const Status& failure);
  // Another rank's reported failure that concerns operation seq (or an earlier one); ok else.
  Status jobFailure(uint64_t seq);
  int jobFailureFd() const;
  Status beginOp(const OpDesc& desc);
  void endOp(bool ok);
  void refreshStats();
  // Returns "" or a note naming the peers that went silent (neither failed nor closed).
  std::string drainAfterFailure(obcclResult_t code);
  // A collective with nothing to move (count 0) still counts as completed.
  Status noOp() {
    if (opDepth_ == 0) collectives_.fetch_add(1, std::memory_order_relaxed);
    return Status::ok();
  }
  Status checkHeaderMatches(const Transfer& t) const;
  std::string peerName(int peer) const;

  const int rank_;
  const int nranks_;
  const Config config_;
  uint64_t commId_ = 0;
  // Transports outlive their connections (members are destroyed in reverse order).
  std::vector<std::unique_ptr<transport::Transport>> transports_;
  std::vector<std::unique_ptr<transport::Connection>> connections_;
  std::vector<std::string> transportOf_;
  topo::HostMap hostMap_;
  Group world_;
  std::unique_ptr<Waiter> waiter_;

  std::mutex bootstrapMu_;  // guards bootstrap_ against abort() from another thread
  // shared_ptr: destructible where Bootstrap is incomplete (the layer may be absent).
  std::shared_ptr<bootstrap::Bootstrap> bootstrap_;

  // The current operation.
  int opDepth_ = 0;
  uint64_t seq_ = 0;
  OpDesc op_;
  Deadline opDeadline_ = Deadline::never();
  bool failureAgreed_ = false;
  bool failed_ = false;           // fail() ran during this op
  bool payloadChecksums_ = true;  // see setPayloadChecksums
  // Peers whose error frame this rank has read during this op (they failed, they are not silent).
  mutable std::vector<bool> errorFrameFrom_;
  mutable uint64_t payloadsReceived_ = 0;  // for config().testCorruptRx
  bool failureFromJob_ = false;            // this op failed on another rank's report

  std::atomic<bool> aborted_{false};
  std::atomic<bool> busy_{false};
  mutable std::mutex healthMu_;
  Status health_;

  std::atomic<uint64_t> bytesSent_{0};
  std::atomic<uint64_t> bytesReceived_{0};
  std::atomic<uint64_t> collectives_{0};

  std::vector<std::vector<uint8_t>> scratch_;
};

}  // namespace obccl::core
