#include "transports/shm/shm_transport.h"

#include <unistd.h>

#include <cstring>
#include <new>
#include <random>
#include <set>

#include "transports/shm/shm_connection.h"
#include "transports/shm/shm_ring.h"
#include "transports/shm/shm_segment.h"
#include "util/log.h"
#include "util/params.h"

namespace obccl::transport::shm {
namespace {

constexpr uint32_t kAnnounceMagic = 0x73686d61;  // "shma"
constexpr int64_t kMinRingBytes = 64 * 1024;
constexpr int64_t kMaxRingBytes = int64_t{1} << 30;

// What each rank contributes to the connect allgathers (same size on every rank).
struct Announce {
  uint32_t magic;
  uint32_t ok;
  int64_t pid;
  uint64_t nonce;
};

// The objects of one peer while connecting.
struct PeerSetup {
  int peer = -1;
  ShmSegment segment;
  Doorbell bellIn;   // ours: we read it, the peer rings it
  Doorbell bellOut;  // the peer's
};

Result<uint64_t> ringBytesParam() {
  OBCCL_ASSIGN_OR_RETURN(int64_t bytes, paramInt("OBCCL_SHM_RING_BYTES"));
  if (bytes < kMinRingBytes || bytes > kMaxRingBytes || (bytes & (bytes - 1)) != 0)
    return invalidArgument("OBCCL_SHM_RING_BYTES: " + std::to_string(bytes) +
                           " is not a power of two between 65536 and 1073741824");
  return static_cast<uint64_t>(bytes);
}

uint64_t freshNonce() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32 | rd()) & 0xffffffffu;
}

Status checkPeers(const ConnectContext& ctx, const std::vector<int>& peers) {
  std::set<int> seen;
  for (int p : peers) {
    if (p < 0 || p >= ctx.nranks || p == ctx.rank)
      return invalidUsage("shm: cannot connect rank " + std::to_string(ctx.rank) + " to rank " +
                          std::to_string(p) + " (nranks " + std::to_string(ctx.nranks) + ")");
    if (!seen.insert(p).second)
      return invalidUsage("shm: rank " + std::to_string(p) + " listed twice");
    if (static_cast<int>(ctx.hostOf.size()) != ctx.nranks || ctx.hostOf[p] != ctx.hostOf[ctx.rank])
      return invalidUsage("shm: rank " + std::to_string(p) + " is not on this rank's host");
  }
  return Status::ok();
}

void initSegment(void* base, uint64_t ringBytes, uint64_t commId, int lo, int hi) {
  auto* h = new (base) SegmentHeader{};
  h->magic = kSegmentMagic;
  h->version = kSegmentVersion;
  h->ringBytes = ringBytes;
  h->commId = commId;
  h->rank[0] = lo;
  h->rank[1] = hi;
  auto* ctl = static_cast<uint8_t*>(base) + kControlOffset;
  new (ctl) RingControl();
  new (ctl + sizeof(RingControl)) RingControl();
}

Status checkSegment(const ShmSegment& seg, const ConnectContext& ctx, int lo, int hi,
                    const std::string& name) {
  const auto* h = static_cast<const SegmentHeader*>(seg.data());
  uint64_t ring = h->ringBytes;
  if (seg.size() < kDataOffset || h->magic != kSegmentMagic || h->version != kSegmentVersion ||
      h->commId != ctx.commId || h->rank[0] != lo || h->rank[1] != hi || ring == 0 ||
      (ring & (ring - 1)) != 0 || seg.size() < segmentBytes(ring))
    return internalError("shm: segment " + name + " does not belong to this pair of ranks");
  return Status::ok();
}

// Creates this rank's objects: the segment of each pair where it is the lower rank, and its own
// doorbell for every peer.
Status createOwned(const ConnectContext& ctx, const std::vector<int>& peers, uint64_t nonce,
                   uint64_t ringBytes, std::vector<PeerSetup>* setups) {
  pid_t pid = ::getpid();
  for (int p : peers) {
    PeerSetup s;
    s.peer = p;
    if (ctx.rank < p) {
      OBCCL_ASSIGN_OR_RETURN(s.segment,
                             ShmSegment::create(segmentName(ctx.commId, pid, nonce, ctx.rank, p),
                                                segmentBytes(ringBytes)));
      initSegment(s.segment.data(), ringBytes, ctx.commId, ctx.rank, p);
    }
    OBCCL_ASSIGN_OR_RETURN(s.bellIn,
                           Doorbell::create(doorbellPath(ctx.commId, pid, nonce, ctx.rank, p)));
    setups->push_back(std::move(s));
  }
  return Status::ok();
}

// Maps the segments created by lower peers and opens every peer's doorbell.
Status openPeers(const ConnectContext& ctx, const std::vector<Announce>& all,
                 std::vector<PeerSetup>* setups) {
  for (PeerSetup& s : *setups) {
    const Announce& a = all[s.peer];
    if (s.peer < ctx.rank) {
      std::string name = segmentName(ctx.commId, a.pid, a.nonce, s.peer, ctx.rank);
      auto seg = ShmSegment::open(name);
      if (!seg.isOk())
        return seg.status().withContext("shm: rank " + std::to_string(s.peer) +
                                        " made no segment for rank " + std::to_string(ctx.rank) +
                                        " (do both ranks list each other as peers?)");
      s.segment = std::move(seg).value();
      OBCCL_TRY(checkSegment(s.segment, ctx, s.peer, ctx.rank, name));
    }
    OBCCL_ASSIGN_OR_RETURN(s.bellOut, Doorbell::openForRinging(doorbellPath(
                                          ctx.commId, a.pid, a.nonce, s.peer, ctx.rank)));
  }
  return Status::ok();
}

// Allgathers this rank's announcement; fails when the allgather does.
Status exchange(const ConnectContext& ctx, bool ok, uint64_t nonce, std::vector<Announce>* all) {
  Announce mine{kAnnounceMagic, ok ? 1u : 0u, static_cast<int64_t>(::getpid()), nonce};
  std::vector<uint8_t> in(sizeof(mine)), out;
  std::memcpy(in.data(), &mine, sizeof(mine));
  OBCCL_TRY(ctx.allgather(in, &out));
  if (out.size() != sizeof(Announce) * static_cast<size_t>(ctx.nranks))
    return internalError("shm: connect allgather returned " + std::to_string(out.size()) +
                         " bytes for " + std::to_string(ctx.nranks) + " ranks");
  all->resize(ctx.nranks);
  std::memcpy(all->data(), out.data(), out.size());
  return Status::ok();
}

// The first rank that reported a failure, as an error for this rank.
Status othersFailed(const std::vector<Announce>& all, const char* stage) {
  for (size_t r = 0; r < all.size(); ++r)
    if (all[r].magic != kAnnounceMagic || all[r].ok == 0)
      return remoteError(std::string("shm: rank ") + std::to_string(r) + " failed while " + stage +
                         " its shared-memory segments (see its log)");
  return Status::ok();
}

}  // namespace

bool ShmTransport::canConnect(const ConnectContext& ctx, int peer) const {
  int n = static_cast<int>(ctx.hostOf.size());
  return peer != ctx.rank && peer >= 0 && peer < n && ctx.rank >= 0 && ctx.rank < n &&
         ctx.hostOf[peer] == ctx.hostOf[ctx.rank];
}

namespace {

// Checks the arguments; reads the ring size.
Result<uint64_t> validate(const ConnectContext& ctx, const std::vector<int>& peers) {
  OBCCL_TRY(checkPeers(ctx, peers));
  return ringBytesParam();
}

// Collective: every rank reports whether `local` is ok; the first failure anywhere is returned.
// A local failure still takes part, so that no peer waits for it.
Status agree(const ConnectContext& ctx, const Status& local, uint64_t nonce, const char* stage,
             std::vector<Announce>* all) {
  if (!local.isOk()) OBCCL_WARN(kSubsysTransport, "%s", local.message().c_str());
  OBCCL_TRY(exchange(ctx, local.isOk(), nonce, all));
  OBCCL_TRY(local);
  return othersFailed(*all, stage);
}

}  // namespace

Status ShmTransport::connect(const ConnectContext& ctx, const std::vector<int>& peers,
                             std::vector<std::unique_ptr<Connection>>* out) {
  const uint64_t nonce = freshNonce();
  removeStaleNames();
  // Nothing is created before every rank has arrived: a job killed while ranks are still
  // missing then leaves nothing in /dev/shm.
  auto ringBytes = validate(ctx, peers);
  std::vector<Announce> all;
  OBCCL_TRY(agree(ctx, ringBytes.status(), nonce, "checking", &all));
  std::vector<PeerSetup> setups;
  OBCCL_TRY(agree(ctx, createOwned(ctx, peers, nonce, ringBytes.value(), &setups), nonce,
                  "creating", &all));

  std::vector<Announce> again;
  Status mapped = agree(ctx, openPeers(ctx, all, &setups), nonce, "mapping", &again);
  for (PeerSetup& s : setups) {  // every peer has opened what it needs (or given up)
    s.segment.unlink();
    s.bellIn.unlink();
  }
  OBCCL_TRY(mapped);

  out->clear();
  for (PeerSetup& s : setups) {
    int side = ctx.rank < s.peer ? 0 : 1;
    auto conn = std::make_unique<ShmConnection>(std::move(s.segment), side, std::move(s.bellIn),
                                                std::move(s.bellOut), s.peer,
                                                static_cast<pid_t>(all[s.peer].pid));
    OBCCL_INFO(kSubsysTransport, "rank %d: %s connected", ctx.rank, conn->describe().c_str());
    out->push_back(std::move(conn));
  }
  return Status::ok();
}

}  // namespace obccl::transport::shm

namespace obccl::transport {
std::unique_ptr<Transport> makeShmTransport() { return std::make_unique<shm::ShmTransport>(); }
}  // namespace obccl::transport
