#include "core/comm.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <new>

#include "core/progress.h"
#include "util/crc32c.h"
#include "util/log.h"

namespace obccl::core {
namespace {

// Clears a flag when the scope ends.
class BusyGuard {
 public:
  explicit BusyGuard(std::atomic<bool>* flag) : flag_(flag) {}
  ~BusyGuard() { flag_->store(false, std::memory_order_release); }

 private:
  std::atomic<bool>* flag_;
};

}  // namespace

Comm::Comm(int rank, int nranks, Config config)
    : rank_(rank), nranks_(nranks), config_(std::move(config)) {
  transportOf_.assign(nranks, "");
  transportOf_[rank] = "self";
  world_.index = rank;
  for (int r = 0; r < nranks; ++r) world_.ranks.push_back(r);
  scratch_.resize(kScratchSlots);
}

Result<std::unique_ptr<Comm>> Comm::create(int rank, int nranks, Config config) {
  if (nranks < 1) return invalidArgument("nranks = " + std::to_string(nranks) + " must be >= 1");
  if (rank < 0 || rank >= nranks)
    return invalidArgument("rank = " + std::to_string(rank) +
                           " is outside [0, nranks = " + std::to_string(nranks) + ")");
  std::unique_ptr<Comm> comm(new Comm(rank, nranks, std::move(config)));
  OBCCL_ASSIGN_OR_RETURN(comm->waiter_, Waiter::create());
  return comm;
}

Status Comm::adoptConnections(uint64_t commId,
                              std::vector<std::unique_ptr<transport::Connection>> connections) {
  if (static_cast<int>(connections.size()) != nranks_)
    return invalidArgument("adoptConnections: " + std::to_string(connections.size()) +
                           " connections for " + std::to_string(nranks_) + " ranks");
  for (int p = 0; p < nranks_; ++p) {
    if ((p == rank_) != (connections[p] == nullptr))
      return invalidArgument("adoptConnections: connection " + std::to_string(p) +
                             (p == rank_ ? " must be null (self)" : " is missing"));
    if (p != rank_) transportOf_[p] = "adopted";
  }
  commId_ = commId;
  connections_ = std::move(connections);
  std::vector<std::string> hosts(nranks_, "local");
  hostMap_ = topo::makeHostMap(hosts);
  return Status::ok();
}

transport::Connection* Comm::connection(int peer) const {
  if (peer < 0 || peer >= static_cast<int>(connections_.size())) return nullptr;
  return connections_[peer].get();
}

const std::string& Comm::transportOf(int peer) const { return transportOf_.at(peer); }

Result<Group> Comm::makeGroup(std::vector<int> ranks) const {
  Group g;
  g.index = -1;
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (ranks[i] < 0 || ranks[i] >= nranks_)
      return invalidArgument("group rank " + std::to_string(ranks[i]) + " is outside [0, " +
                             std::to_string(nranks_) + ")");
    for (size_t j = 0; j < i; ++j)
      if (ranks[j] == ranks[i])
        return invalidArgument("group names rank " + std::to_string(ranks[i]) + " twice");
    if (ranks[i] == rank_) g.index = static_cast<int>(i);
  }
  if (g.index < 0)
    return invalidArgument("group does not contain this rank (" + std::to_string(rank_) + ")");
  g.ranks = std::move(ranks);
  return g;
}

// ---- Operations ---------------------------------------------------------------------------

Status Comm::beginOp(const OpDesc& desc) {
  if (aborted()) return systemError(describeOp(desc) + ": communicator was aborted");
  OBCCL_TRY(health());
  if (nranks_ > 1 && connections_.empty())
    return invalidUsage(describeOp(desc) + ": communicator is not initialized");
  // Another rank's failure reported through the root (a mismatch this rank's last call could
  // complete without noticing, for one): this call fails with it instead of waiting for peers.
  if (Status job = jobFailure(seq_ + 1); !job.isOk()) {
    Status s(job.code(), describeOp(desc) + " #" + std::to_string(seq_ + 1) + ": " + job.message());
    std::lock_guard<std::mutex> lock(healthMu_);
    if (health_.isOk()) health_ = s;
    return s;
  }
  ++seq_;
  op_ = desc;
  opDepth_ = 1;
  opDeadline_ = Deadline::afterMs(config_.timeoutMs);
  failureAgreed_ = false;
  failed_ = false;
  failureFromJob_ = false;
  payloadChecksums_ = true;
  errorFrameFrom_.assign(nranks_, false);
  return Status::ok();
}

void Comm::endOp(bool ok) {
  opDepth_ = 0;
  if (ok) collectives_.fetch_add(1, std::memory_order_relaxed);
  refreshStats();
}

Status Comm::runOp(const OpDesc& desc, const std::function<Status()>& body) {
  if (opDepth_ > 0) return body();
  bool idle = false;
  if (!busy_.compare_exchange_strong(idle, true, std::memory_order_acq_rel))
    return invalidUsage(describeOp(desc) +
                        ": the communicator is already in use by another thread");
  BusyGuard busy(&busy_);
  OBCCL_TRY(beginOp(desc));
  Status s;
  // An exception must not leave the op open (opDepth_) or skip telling the peers.
  try {
    s = body();
  } catch (const std::bad_alloc&) {
    s = systemError(describeOp(desc) + ": out of memory");
  } catch (const std::exception& e) {
    s = internalError(describeOp(desc) + ": unexpected exception: " + e.what());
  }
  if (!s.isOk() && !failed_ && !failureAgreed_) (void)fail(s);
  endOp(s.isOk());
  if (s.isOk()) return s;
  return s.withContext(std::string(opName(desc.op)) + " #" + std::to_string(seq_));
}

transport::FrameHeader Comm::header(OpKind op, uint64_t count, obcclDataType_t datatype,
                                    obcclRedOp_t redop, int root) const {
  transport::FrameHeader h;
  h.op = static_cast<uint16_t>(op);
  h.commId = commId_;
  h.seq = seq_;
  h.count = count;
  h.datatype = static_cast<uint8_t>(datatype);
  h.redop = static_cast<uint8_t>(redop);
  h.root = root;
  return h;
}

transport::FrameHeader Comm::header() const {
  transport::FrameHeader h = header(op_.op, op_.count, op_.datatype, op_.redop, op_.root);
  if (op_.compressed) h.flags |= transport::kFlagCompressed;
  return h;
}

std::string Comm::peerName(int peer) const {
  transport::Connection* c = connection(peer);
  return c ? c->describe() : "rank " + std::to_string(peer);
}

Status Comm::postSend(int peer, const void* data, size_t bytes, Transfer* t, uint32_t step) {
  transport::Connection* c = connection(peer);
  if (c == nullptr)
    return fail(internalError("postSend to rank " + std::to_string(peer) + ": no connection"));
  t->peer = peer;
  t->isRecv = false;
  t->bytes = bytes;
  t->step = step;
  t->data = data;
  t->req = transport::Request();
  transport::FrameHeader h = header();
  h.length = bytes;
  h.step = step;
  if (bytes > 0 && (config_.checksum || (op_.compressed && payloadChecksums_))) {
    h.flags |= transport::kFlagChecksum;
    h.crc = crc32c(data, bytes);
  }
  transport::sealHeader(&h);
  Status s = c->postSend(h, data, &t->req);
  if (!s.isOk()) return fail(s);
  return s;
}

Status Comm::postRecv(int peer, void* buf, size_t bytes, Transfer* t, uint32_t step) {
  transport::Connection* c = connection(peer);
  if (c == nullptr)
    return fail(internalError("postRecv from rank " + std::to_string(peer) + ": no connection"));
  t->peer = peer;
  t->isRecv = true;
  t->bytes = bytes;
  t->step = step;
  t->data = buf;
  t->req = transport::Request();
  Status s = c->postRecv(buf, bytes, &t->req);
  if (!s.isOk()) return fail(s);
  return s;
}

Status Comm::checkHeaderMatches(const Transfer& t) const {
  const transport::FrameHeader& h = t.req.header;
  std::string from = "rank " + std::to_string(t.peer);
  OBCCL_TRY(transport::checkHeader(h, peerName(t.peer)));
  if (h.flags & transport::kFlagError) {
    if (t.peer >= 0 && t.peer < static_cast<int>(errorFrameFrom_.size()))
      errorFrameFrom_[t.peer] = true;
    obcclResult_t code = static_cast<obcclResult_t>(h.step);
    if (h.step == obcclSuccess || h.step >= obcclNumResults) code = obcclRemoteError;
    // Both calls, so that every rank's message shows a mismatch whoever detected it.
    return Status(code, from + " failed its " + describeOp(opDescOf(h)) + " #" +
                            std::to_string(h.seq) + " (see that rank's log); this rank called " +
                            describeOp(op_) + " #" + std::to_string(seq_));
  }
  if (h.commId != commId_)
    return invalidUsage(from + " sent a frame of another communicator (id " +
                        std::to_string(h.commId) + ", this one " + std::to_string(commId_) + ")");
  OpDesc theirs = opDescOf(h);
  if (h.seq != seq_ || !theirs.sameAs(op_)) {
    std::string their = describeOp(theirs);
    if (h.seq != seq_) their += " as its operation #" + std::to_string(h.seq);
    return invalidUsage(from + " called " + their + ", this rank " + describeOp(op_));
  }
  if (h.length != t.bytes)
    return invalidUsage(from + " sent " + std::to_string(h.length) + " bytes at step " +
                        std::to_string(h.step) + ", this rank expected " + std::to_string(t.bytes) +
                        " (ranks disagree on the group or layout)");
  return Status::ok();
}

Status Comm::checkDone(const Transfer& t) const {
  if (t.isRecv && t.req.header.magic == transport::kFrameMagic) {
    OBCCL_TRY(checkHeaderMatches(t));
  }
  if (!t.req.status.isOk()) return t.req.status;
  if (t.isRecv && t.bytes > 0 && config_.testCorruptRx > 0 &&
      ++payloadsReceived_ % static_cast<uint64_t>(config_.testCorruptRx) == 0) {
    // OBCCL_TEST_CORRUPT_RX: damage the delivered payload as a bad link or NIC would.
    size_t bit = (payloadsReceived_ * 2654435761u) % (t.bytes * 8);
    static_cast<uint8_t*>(const_cast<void*>(t.data))[bit / 8] ^=
        static_cast<uint8_t>(1u << (bit % 8));
  }
  if (t.isRecv && (t.req.header.flags & transport::kFlagChecksum) && t.bytes > 0 &&
      crc32c(t.data, t.bytes) != t.req.header.crc)
    return remoteError("payload from " + peerName(t.peer) + " at step " +
                       std::to_string(t.req.header.step) + " failed its CRC32C check");
  return Status::ok();
}

Status Comm::progressPeers(const std::vector<int>& peers, bool* moved) {
  *moved = false;
  for (int p : peers) {
    transport::Connection* c = connection(p);
    uint64_t before = c->bytesSent() + c->bytesReceived();
    Status s = c->progress();
    if (!s.isOk()) return s;
    if (c->bytesSent() + c->bytesReceived() != before) *moved = true;
  }
  return Status::ok();
}

Status Comm::idleWait(const std::vector<int>& peers, const Deadline& deadline, int* idleRounds,
                      const std::string& what, const std::vector<int>& pending) {
  if (aborted()) return systemError(what + ": aborted by obcclCommAbort");
  if (deadline.expired()) {
    std::string who;
    for (int p : pending) who += (who.empty() ? "" : ", ") + peerName(p);
    return timeoutError(what + ": timed out after " + std::to_string(config_.timeoutMs) +
                        " ms waiting for " + (who.empty() ? "peers" : who));
  }
  std::vector<transport::Connection*> conns;
  conns.reserve(peers.size());
  for (int p : peers) conns.push_back(connection(p));
  bool news = waiter_->wait(conns, deadline, idleRounds, jobFailureFd());
  if (aborted()) return systemError(what + ": aborted by obcclCommAbort");
  if (news) {
    Status job = jobFailure(seq_);
    if (!job.isOk()) {
      failureFromJob_ = true;
      return Status(job.code(), what + ": " + job.message());
    }
  }
  return Status::ok();
}

Status Comm::waitAll(Transfer* const* ts, size_t n, const Deadline& deadline,
                     const std::string& what) {
  std::vector<bool> checked(n, false);
  std::vector<int> peers;
  for (size_t i = 0; i < n; ++i)
    if (std::find(peers.begin(), peers.end(), ts[i]->peer) == peers.end())
      peers.push_back(ts[i]->peer);
  int idle = 0;
  for (;;) {
    bool moved = false;
    Status s = progressPeers(peers, &moved);
    if (!s.isOk()) return fail(s);
    std::vector<int> pending;
    for (size_t i = 0; i < n; ++i) {
      if (!ts[i]->req.done) {
        pending.push_back(ts[i]->peer);
      } else if (!checked[i]) {
        checked[i] = true;
        Status c = checkDone(*ts[i]);
        if (!c.isOk()) return fail(c);
      }
    }
    if (pending.empty()) return Status::ok();
    if (moved) {
      idle = 0;
      continue;
    }
    s = idleWait(peers, deadline, &idle, what, pending);
    if (!s.isOk()) return fail(s);
  }
}

Status Comm::waitAll(std::initializer_list<Transfer*> transfers, const std::string& what) {
  return waitAll(transfers.begin(), transfers.size(), opDeadline_, what);
}

Status Comm::waitAll(std::vector<Transfer>& transfers, const std::string& what) {
  std::vector<Transfer*> ptrs;
  ptrs.reserve(transfers.size());
  for (Transfer& t : transfers) ptrs.push_back(&t);
  return waitAll(ptrs.data(), ptrs.size(), opDeadline_, what);
}

Status Comm::fail(Status status) {
  if (failed_ || status.isOk()) return status;
  failed_ = true;
  {
    std::lock_guard<std::mutex> lock(healthMu_);
    if (health_.isOk())
      health_ = status.withContext(std::string(opName(op_.op)) + " #" + std::to_string(seq_));
  }
  OBCCL_WARN(kSubsysColl, "%s #%llu failed: %s", opName(op_.op),
             static_cast<unsigned long long>(seq_), status.message().c_str());
  // Through the root, the other ranks learn of it even while they wait on other peers (their
  // error frames arrive only where a receive is posted). Only a rank that found the failure
  // itself reports, so the root's first report is the cause, not an echo: not one that failed on
  // a peer's error frame, nor one that already holds another rank's report (a peer that failed
  // and left looks like a lost connection here). A timeout is reported after the drain, which
  // names the peers that went silent.
  std::string op = std::string(opName(op_.op)) + " #" + std::to_string(seq_);
  bool fromPeer =
      std::find(errorFrameFrom_.begin(), errorFrameFrom_.end(), true) != errorFrameFrom_.end();
  bool echo = failureFromJob_ || aborted();
  Status first = echo ? Status::ok() : jobFailure(UINT64_MAX);
  bool report = !echo && !fromPeer && first.isOk();
  if (report && status.code() != obcclTimeout) reportFailure(status.withContext(op));
  std::string silent = aborted() ? "" : drainAfterFailure(status.code());
  if (report && status.code() == obcclTimeout)
    reportFailure(Status(status.code(), status.message() + (silent.empty() ? "" : "; " + silent))
                      .withContext(op));
  // The caller's buffers may go once the call returns: no transport may use them from now on.
  for (auto& c : connections_)
    if (c) c->abandon();
  // The notes: the silent peers of a timeout (the peer this rank waited for may itself wait for
  // the one that stopped), and the job's first failure when this one was passed on.
  if (!echo && !report && first.isOk()) first = jobFailure(UINT64_MAX);
  std::string note = silent;
  if (!first.isOk()) note += (note.empty() ? "" : "; ") + ("first failure: " + first.message());
  obcclResult_t code = status.code();
  if (!first.isOk() && code == obcclRemoteError) code = first.code();
  if (note.empty()) return status;
  status = Status(code, status.message() + "; " + note);
  OBCCL_WARN(kSubsysColl, "%s #%llu: %s", opName(op_.op), static_cast<unsigned long long>(seq_),
             note.c_str());
  std::lock_guard<std::mutex> lock(healthMu_);
  health_ = status.withContext(std::string(opName(op_.op)) + " #" + std::to_string(seq_));
  return status;
}

// Tells every peer (kFlagError frame), so that ranks waiting on this one fail now instead of at
// their deadline, then keeps the connections moving for a while: frames of this op still queued
// to peers need progress (UCX rendezvous, ring backlogs), and peers still sending to this rank
// need a reader until they reach the error frame of their own. It ends when every peer has sent
// its error frame, when nothing moved for kQuietMs, or after kErrorGraceMs. The caller's
// buffers are still valid here; after it returns the connections are never progressed again.
std::string Comm::drainAfterFailure(obcclResult_t code) {
  constexpr int kErrorGraceMs = 2000;
  constexpr int kQuietMs = 100;
  const int n = static_cast<int>(connections_.size());
  transport::FrameHeader h = header();
  h.flags |= transport::kFlagError;
  h.step = static_cast<uint32_t>(code);
  h.length = 0;
  transport::sealHeader(&h);
  std::vector<Transfer> errs(n);
  std::vector<std::deque<Transfer>> discards(n);  // deque: posted requests must not move
  std::vector<int> live;                          // peers not known to have failed yet
  for (int p = 0; p < n; ++p) {
    if (p == rank_ || !connections_[p]) continue;
    if (!connections_[p]->postSend(h, nullptr, &errs[p].req).isOk()) continue;
    if (errorFrameFrom_[p]) continue;  // it failed first and sends nothing more
    discards[p].emplace_back();
    if (connections_[p]->postRecv(nullptr, 0, &discards[p].back().req).isOk()) live.push_back(p);
  }
  Deadline grace = Deadline::afterMs(kErrorGraceMs);
  Deadline quiet = Deadline::afterMs(kQuietMs);
  std::vector<bool> heard(n, false);  // bytes arrived from the peer during the drain
  int idle = 0;
  while (!live.empty() && !grace.expired() && !quiet.expired() && !aborted()) {
    std::vector<int> still;
    bool moved = false;
    for (int p : live) {
      transport::Connection* c = connections_[p].get();
      uint64_t before = c->bytesSent() + c->bytesReceived();
      uint64_t received = c->bytesReceived();
      if (!c->progress().isOk()) continue;  // a broken connection needs nothing more
      moved = moved || c->bytesSent() + c->bytesReceived() != before;
      if (c->bytesReceived() != received) heard[p] = true;
      transport::Request& r = discards[p].back().req;
      if (r.done) {
        if (r.header.magic == transport::kFrameMagic && (r.header.flags & transport::kFlagError))
          continue;  // the peer failed too
        discards[p].emplace_back();
        if (!c->postRecv(nullptr, 0, &discards[p].back().req).isOk()) continue;
      }
      still.push_back(p);
    }
    live.swap(still);
    if (moved) {
      quiet = Deadline::afterMs(kQuietMs);
      idle = 0;
      continue;
    }
    std::vector<transport::Connection*> conns;
    for (int p : live) conns.push_back(connections_[p].get());
    waiter_->wait(conns, Deadline::earlier(grace, quiet), &idle, -1);
  }
  // Peers that sent nothing at all while every live peer failed too, and whose connection did
  // not break: stopped, hung or cut off. Reported for timeouts, where the peer this rank waited
  // for may itself be waiting for the silent one.
  if (code != obcclTimeout || aborted()) return "";
  std::string silent;
  for (int p : live)
    if (!heard[p] && !errorFrameFrom_[p]) silent += (silent.empty() ? "" : ", ") + peerName(p);
  if (silent.empty()) return "";
  return "peers silent after the failure (neither failed nor closed): " + silent;
}

uint8_t* Comm::scratch(ScratchSlot slot, size_t bytes) {
  std::vector<uint8_t>& buf = scratch_[slot];
  if (buf.size() < bytes) {
    buf.clear();
    buf.shrink_to_fit();
    buf.resize(bytes);
  }
  return buf.data();
}

// ---- State ----------------------------------------------------------------------------------

void Comm::abort() {
  waiter_->abort();
  aborted_.store(true, std::memory_order_release);
  std::lock_guard<std::mutex> lock(bootstrapMu_);
  abortBootstrap();
}

Status Comm::health() const {
  std::lock_guard<std::mutex> lock(healthMu_);
  if (health_.isOk()) return health_;
  return Status(health_.code(),
                "communicator is unusable after an earlier failure: " + health_.message());
}

void Comm::refreshStats() {
  uint64_t sent = 0, received = 0;
  for (const auto& c : connections_) {
    if (!c) continue;
    sent += c->bytesSent();
    received += c->bytesReceived();
  }
  bytesSent_.store(sent, std::memory_order_relaxed);
  bytesReceived_.store(received, std::memory_order_relaxed);
}

CommStats Comm::stats() const {
  CommStats s;
  s.bytesSent = bytesSent_.load(std::memory_order_relaxed);
  s.bytesReceived = bytesReceived_.load(std::memory_order_relaxed);
  s.collectives = collectives_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace obccl::core
