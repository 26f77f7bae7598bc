// The transport interface: the only thing algorithms in core see of shm, ucx and tcp.
// A Connection carries framed messages to and from one peer, in FIFO order in each direction.
// Sends and receives are posted, then advanced by progress() without blocking, so a rank can
// send to one peer and receive from another at the same time (large exchanges cannot deadlock).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "util/deadline.h"
#include "util/status.h"

namespace obccl {

namespace transport {

constexpr uint32_t kFrameMagic = 0x0bcc1f7au;
constexpr uint16_t kFrameVersion = 1;

// Flags in FrameHeader::flags.
enum FrameFlags : uint8_t {
  kFlagCompressed = 1u << 0,  // payload holds packed signs and scales
  kFlagChecksum = 1u << 1,    // crc holds CRC32C of the payload
  kFlagError = 1u << 2,       // the sender failed this operation; payload is its message
};

// Header carried by every frame, in host byte order (all ranks of a job share one architecture).
// It makes a call that does not match its peers an error instead of a hang or corruption.
struct FrameHeader {
  uint32_t magic = kFrameMagic;
  uint16_t version = kFrameVersion;
  uint16_t op = 0;       // core::OpKind of the collective
  uint64_t commId = 0;   // communicator id (from the unique id)
  uint64_t seq = 0;      // operation sequence number within the communicator
  uint64_t count = 0;    // element count of the whole operation, as the caller passed it
  uint64_t length = 0;   // payload bytes that follow this header
  uint32_t step = 0;     // algorithm step, for diagnostics
  uint32_t crc = 0;      // CRC32C of the payload when kFlagChecksum is set
  int32_t root = -1;     // root rank for rooted collectives, else -1
  uint8_t datatype = 0;  // obcclDataType_t
  uint8_t redop = 0;     // obcclRedOp_t
  uint8_t flags = 0;     // FrameFlags
  uint8_t reserved = 0;
  uint32_t headerCrc = 0;  // CRC32C of the bytes above, so a garbled header is detected
};
static_assert(sizeof(FrameHeader) == 64, "FrameHeader is a fixed 64-byte wire format");

// Fills header.headerCrc; call after every other field is set.
void sealHeader(FrameHeader* header);
// Checks magic, version and headerCrc of a received header; describes what is wrong otherwise.
Status checkHeader(const FrameHeader& header, const std::string& peer);

// One posted send or receive. The transport fills it in; the caller polls done.
struct Request {
  bool done = false;
  Status status;
  FrameHeader header;  // for a receive: the header that arrived
  size_t bytes = 0;    // payload bytes moved
};

class Connection {
 public:
  virtual ~Connection() = default;
  // Queues a frame. header.length bytes at payload must stay valid until req->done.
  virtual Status postSend(const FrameHeader& header, const void* payload, Request* req) = 0;
  // Queues a receive of the next frame into buf. A payload longer than capacity completes the
  // request with obcclInvalidUsage (a mismatched call), never overflows buf.
  virtual Status postRecv(void* buf, size_t capacity, Request* req) = 0;
  // Advances posted requests as far as possible without blocking. A failed connection (EOF,
  // reset, dead peer) returns obcclRemoteError naming the peer; the failure is sticky.
  virtual Status progress() = 0;
  // A file descriptor that poll() can wait on for progress, with the events to wait for; -1 when
  // the transport has none (the caller then spins briefly and sleeps in short steps).
  virtual int pollFd() const = 0;
  virtual short pollEvents() const = 0;
  // True while any posted request is incomplete.
  virtual bool busy() const = 0;
  // "tcp to rank 3 (198.18.0.2:40123)": used in every message about this peer.
  virtual const std::string& describe() const = 0;
  // Bytes handed to and received from the wire, headers included.
  virtual uint64_t bytesSent() const = 0;
  virtual uint64_t bytesReceived() const = 0;
  // The caller gives up on every posted request (its operation failed) and will only destroy the
  // connection: before this returns, the transport stops using their buffers and Request objects
  // for good, even while closing later (the caller may free them once its call returns).
  // Transports that touch buffers only inside progress() need nothing here.
  virtual void abandon() {}
};

// What a transport needs to know about the communicator while connecting.
struct ConnectContext {
  int rank = 0;
  int nranks = 0;
  uint64_t commId = 0;
  std::vector<uint8_t> secret;  // job secret for the HMAC handshake
  Deadline deadline = Deadline::never();
  // Out-of-band allgather through the bootstrap: every rank contributes `mine` (same length on
  // all ranks) and receives all contributions concatenated in rank order.
  std::function<Status(const std::vector<uint8_t>& mine, std::vector<uint8_t>* all)> allgather;
  // Host identity of every rank (hostname plus boot id), from the topology layer.
  std::vector<std::string> hostOf;
  // Interfaces to use (OBCCL_SOCKET_IFNAME grammar), resolved by the caller.
  std::string ifname;
  // Optional. A transport that waits for peers outside the allgathers (accepting, retrying a
  // connect, a handshake) calls it at least every kInterruptCheckMs; an error (another rank left
  // the job, or obcclCommAbort) ends the connect with that error instead of at the deadline.
  std::function<Status()> interrupted;
};
constexpr int kInterruptCheckMs = 100;

class Transport {
 public:
  virtual ~Transport() = default;
  virtual const char* name() const = 0;
  // True when this transport can reach peer from self (e.g. shm: same host).
  virtual bool canConnect(const ConnectContext& ctx, int peer) const = 0;
  // Collective over all ranks (every rank calls it with the same peer set semantics): connects
  // this rank to each rank in `peers` (which may be empty; the call still takes part in the
  // allgathers). out[i] is the connection to peers[i].
  virtual Status connect(const ConnectContext& ctx, const std::vector<int>& peers,
                         std::vector<std::unique_ptr<Connection>>* out) = 0;
};

// Factory for the built-in transports ("shm", "ucx", "tcp"); nullptr when not built.
std::unique_ptr<Transport> makeTransport(const std::string& name);

}  // namespace transport
}  // namespace obccl
