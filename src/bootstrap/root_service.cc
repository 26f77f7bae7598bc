#include "bootstrap/root_service.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "bootstrap/protocol.h"
#include "util/auth.h"
#include "util/log.h"

namespace obccl::bootstrap {
namespace {

using Clock = std::chrono::steady_clock;

// Counts live services; never destroyed, so a service thread may end during process exit.
struct Registry {
  std::mutex mu;
  int active = 0;
  std::set<std::string> localClients;  // see noteLocalClient()
};
Registry& registry() {
  static Registry* r = new Registry();
  return *r;
}

// kDraining: nothing more is read; the queued output (an error) is flushed, then it closes.
enum class Stage { kHello, kProof, kJoin, kJoined, kDraining, kClosed };

bool beforeJoin(Stage s) { return s == Stage::kHello || s == Stage::kProof || s == Stage::kJoin; }

struct Peer {
  UniqueFd fd;
  std::string name;  // "host:port" of the remote end
  Stage stage = Stage::kHello;
  std::optional<AuthHandshake> auth;
  Clock::time_point stallDeadline;  // before kJoined: dropped when nothing arrives until then
  std::vector<uint8_t> in;          // the unit being read: sized to what it needs
  size_t have = 0;
  bool haveHeader = false;
  MsgHeader header;
  std::deque<std::pair<std::shared_ptr<const std::vector<uint8_t>>, size_t>> out;
  int rank = -1;
  uint64_t nextRound = 0;
  std::string lost;  // why a send failed; the main loop closes the peer
};

struct Round {
  std::vector<std::vector<uint8_t>> parts;
  std::vector<bool> have;
  int count = 0;
};

class RootService {
 public:
  RootService(UniqueFd listener, SocketAddress address, UniqueIdData id, RootServiceOptions opts)
      : listener_(std::move(listener)),
        address_(std::move(address)),
        id_(std::move(id)),
        opts_(opts),
        joinDeadline_(Deadline::afterMs(opts.joinTimeoutMs)) {}
  void run();

 private:
  void acceptNew();
  void onReadable(Peer& p);
  void processUnit(Peer& p);
  void onHello(Peer& p);
  void onProof(Peer& p);
  void onJoin(Peer& p);
  void onMessage(Peer& p);
  void onContribute(Peer& p, std::vector<uint8_t> data);
  void onJobFailed(Peer& p, std::vector<uint8_t> data);
  void completeRound(uint64_t round);
  void flush(Peer& p);
  void send(Peer& p, std::shared_ptr<const std::vector<uint8_t>> msg);
  void sendError(Peer& p, const Status& s);
  // To every connected rank, those in this process last (noteLocalClient).
  void sendToRanks(const std::shared_ptr<const std::vector<uint8_t>>& msg);
  void dropStranger(Peer& p, const std::string& why);
  // Sends the error, then closes once it is flushed.
  void drain(Peer& p, const Status& s);
  void onClosed(Peer& p, const std::string& why);
  void failJob(const Status& s);
  void checkTimers();
  std::string rankName(int rank) const;
  // The ranks that have not joined (comma-separated).
  std::string missingRanks() const;
  // Until the next timer (stalled handshake, join deadline, drain end); -1 when none runs.
  int pollTimeoutMs() const;
  bool finished() const;

  UniqueFd listener_;
  SocketAddress address_;
  UniqueIdData id_;
  RootServiceOptions opts_;
  Deadline joinDeadline_;
  std::vector<std::unique_ptr<Peer>> peers_;
  int nranks_ = 0;
  std::vector<Peer*> byRank_;
  std::vector<std::string> rankHost_;  // host:port each rank joined from
  std::vector<int64_t> leftAtRound_;   // -1 while the rank is connected
  int joined_ = 0, departed_ = 0;
  bool welcomed_ = false;
  bool failing_ = false;
  Status failure_;          // why the job failed, once failing_
  bool jobFailed_ = false;  // a rank reported a failed operation (forwarded once)
  Clock::time_point drainUntil_;
  std::map<uint64_t, Round> rounds_;
};

std::string RootService::missingRanks() const {
  std::string missing;
  for (int r = 0; r < nranks_; ++r)
    if (byRank_[r] == nullptr && leftAtRound_[r] < 0)
      missing += (missing.empty() ? "" : ",") + std::to_string(r);
  return missing;
}

std::string RootService::rankName(int rank) const {
  return "rank " + std::to_string(rank) + " (" + rankHost_[rank] + ")";
}

void RootService::send(Peer& p, std::shared_ptr<const std::vector<uint8_t>> msg) {
  if (p.stage == Stage::kClosed) return;
  p.out.emplace_back(std::move(msg), 0);
  flush(p);
}

void RootService::sendToRanks(const std::shared_ptr<const std::vector<uint8_t>>& msg) {
  std::vector<Peer*> local;
  {
    std::lock_guard<std::mutex> lock(registry().mu);
    for (Peer* q : byRank_)
      if (q != nullptr && registry().localClients.count(q->name) > 0) local.push_back(q);
  }
  for (Peer* q : byRank_)
    if (q != nullptr && std::find(local.begin(), local.end(), q) == local.end()) send(*q, msg);
  for (Peer* q : local) send(*q, msg);
}

void RootService::sendError(Peer& p, const Status& s) {
  send(p, std::make_shared<const std::vector<uint8_t>>(makeErrorMessage(s)));
}

void RootService::flush(Peer& p) {
  while (!p.out.empty() && p.fd.valid()) {
    auto& [buf, off] = p.out.front();
    ssize_t n =
        ::send(p.fd.get(), buf->data() + off, buf->size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      // Closed by the main loop: closing here could re-enter onClosed() from inside it.
      p.lost = std::string("send failed: ") + std::strerror(errno);
      p.out.clear();
      break;
    }
    off += static_cast<size_t>(n);
    if (off == buf->size()) p.out.pop_front();
  }
  if (p.stage == Stage::kDraining && p.out.empty()) {
    p.stage = Stage::kClosed;
    p.fd.reset();
  }
}

void RootService::drain(Peer& p, const Status& s) {
  if (p.stage == Stage::kJoined && p.rank >= 0 && byRank_[p.rank] == &p) byRank_[p.rank] = nullptr;
  sendError(p, s);
  if (p.stage != Stage::kClosed) p.stage = Stage::kDraining;
  flush(p);
}

void RootService::dropStranger(Peer& p, const std::string& why) {
  OBCCL_WARN(kSubsysBootstrap, "bootstrap root %s: dropping connection from %s: %s",
             address_.toString().c_str(), p.name.c_str(), why.c_str());
  p.stage = Stage::kClosed;
  p.fd.reset();
}

void RootService::failJob(const Status& s) {
  if (failing_) return;
  OBCCL_WARN(kSubsysBootstrap, "bootstrap root %s: %s", address_.toString().c_str(),
             s.message().c_str());
  failing_ = true;
  failure_ = s;
  drainUntil_ = Clock::now() + std::chrono::seconds(2);
  for (auto& p : peers_)
    if (p->stage == Stage::kJoined) drain(*p, s);
}

void RootService::onClosed(Peer& p, const std::string& why) {
  Stage was = p.stage;
  p.stage = Stage::kClosed;
  p.fd.reset();
  if (was != Stage::kJoined) {
    if (beforeJoin(was))
      OBCCL_WARN(kSubsysBootstrap,
                 "bootstrap root %s: dropping connection from %s: it went away before joining "
                 "(%s)",
                 address_.toString().c_str(), p.name.c_str(), why.c_str());
    return;
  }
  int r = p.rank;
  byRank_[r] = nullptr;
  leftAtRound_[r] = static_cast<int64_t>(p.nextRound);
  ++departed_;
  if (!welcomed_) {
    failJob(remoteError(rankName(r) + " left before all " + std::to_string(nranks_) +
                        " ranks joined (" + why + "); ranks that never joined: " + missingRanks()));
    return;
  }
  // Rounds this rank never contributed to can no longer complete: fail them now, not at the
  // other ranks' deadlines.
  for (auto it = rounds_.begin(); it != rounds_.end();) {
    if (it->second.have[r]) {
      ++it;
      continue;
    }
    Status err = remoteError(rankName(r) + " left the job before contributing to bootstrap " +
                             "allgather round " + std::to_string(it->first) + " (" + why + ")");
    for (int q = 0; q < nranks_; ++q)
      if (it->second.have[q] && byRank_[q] != nullptr) sendError(*byRank_[q], err);
    it = rounds_.erase(it);
  }
  // The first departure also reaches every other rank: one still connecting its transports
  // (which waits on peers, not on a round) checks for it and fails now instead of at its
  // deadline. Ranks past init never read their bootstrap connection again, so a normal exit
  // costs one unread message per rank.
  if (departed_ == 1) {
    sendToRanks(std::make_shared<const std::vector<uint8_t>>(makeErrorMessage(
        remoteError(rankName(r) + " left the job while it was starting (" + why + ")"))));
  }
}

void RootService::acceptNew() {
  for (;;) {
    SocketAddress from;
    Result<UniqueFd> fd = acceptOne(listener_.get(), &from);
    if (!fd.isOk()) {
      OBCCL_WARN(kSubsysBootstrap, "bootstrap root %s: %s", address_.toString().c_str(),
                 fd.status().message().c_str());
      return;
    }
    if (!fd.value().valid()) return;
    int pending = 0;
    Peer* oldest = nullptr;
    for (auto& p : peers_) {
      if (beforeJoin(p->stage)) {
        ++pending;
        if (oldest == nullptr) oldest = p.get();
      }
    }
    // Evict the oldest rather than refuse the newest: a flood of strangers then cannot lock a
    // rank out for longer than it takes the rank to finish its handshake.
    if (pending >= opts_.maxPendingHandshakes && oldest != nullptr)
      dropStranger(*oldest, "too many unauthenticated connections");
    auto p = std::make_unique<Peer>();
    p->fd = std::move(fd).value();
    p->name = from.toString();
    p->stallDeadline = Clock::now() + std::chrono::milliseconds(opts_.handshakeTimeoutMs);
    AuthOptions ao;
    ao.purpose = kAuthPurpose;
    ao.commId = id_.commId;
    ao.secret = id_.secret;
    ao.role = AuthRole::kServer;
    ao.selfId = kRootAuthId;
    ao.peerName = "connection from " + p->name;
    Result<AuthHandshake> h = AuthHandshake::start(std::move(ao));
    if (!h.isOk()) {
      dropStranger(*p, h.status().message());
      continue;
    }
    p->auth.emplace(std::move(h).value());
    p->in.resize(kAuthHelloBytes);
    send(*p, std::make_shared<const std::vector<uint8_t>>(p->auth->hello().begin(),
                                                          p->auth->hello().end()));
    peers_.push_back(std::move(p));
  }
}

void RootService::onReadable(Peer& p) {
  while (beforeJoin(p.stage) || p.stage == Stage::kJoined) {
    if (p.have == p.in.size()) {
      processUnit(p);
      continue;
    }
    ssize_t n = ::recv(p.fd.get(), p.in.data() + p.have, p.in.size() - p.have, MSG_DONTWAIT);
    if (n > 0) {
      p.have += static_cast<size_t>(n);
      if (p.stage != Stage::kJoined)
        p.stallDeadline = Clock::now() + std::chrono::milliseconds(opts_.handshakeTimeoutMs);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    onClosed(p, n == 0 ? "connection closed" : std::string(std::strerror(errno)));
  }
}

void RootService::processUnit(Peer& p) {
  switch (p.stage) {
    case Stage::kHello:
      return onHello(p);
    case Stage::kProof:
      return onProof(p);
    case Stage::kJoin:
      return onJoin(p);
    case Stage::kJoined:
      return onMessage(p);
    case Stage::kDraining:
    case Stage::kClosed:
      return;
  }
}

void RootService::onHello(Peer& p) {
  Result<AuthProof> proof = p.auth->onPeerHello(p.in.data());
  if (!proof.isOk()) return dropStranger(p, proof.status().message());
  send(p, std::make_shared<const std::vector<uint8_t>>(proof.value().begin(), proof.value().end()));
  p.stage = Stage::kProof;
  p.in.assign(kAuthProofBytes, 0);
  p.have = 0;
}

void RootService::onProof(Peer& p) {
  Status s = p.auth->onPeerProof(p.in.data());
  if (!s.isOk()) return dropStranger(p, s.message());
  p.stage = Stage::kJoin;
  p.in.assign(sizeof(MsgHeader) + sizeof(JoinPayload), 0);
  p.have = 0;
}

void RootService::onJoin(Peer& p) {
  MsgHeader h;
  JoinPayload j;
  std::memcpy(&h, p.in.data(), sizeof(h));
  std::memcpy(&j, p.in.data() + sizeof(h), sizeof(j));
  if (h.magic != kMsgMagic || h.type != static_cast<uint32_t>(MsgType::kJoin) ||
      h.length != sizeof(JoinPayload))
    return dropStranger(p, "authenticated, but sent a malformed join message");
  if (p.auth->peerId() != j.rank)
    return dropStranger(p, "authenticated as rank " + std::to_string(p.auth->peerId()) +
                               " but joins as rank " + std::to_string(j.rank));
  p.auth.reset();  // Wipes this connection's copy of the secret.
  p.in.assign(sizeof(MsgHeader), 0);
  p.have = 0;
  p.rank = j.rank;
  std::string who = "rank " + std::to_string(j.rank) + " (" + p.name + ")";
  // A join read in the same poll round as the job's failure: the latecomer gets the failure.
  if (failing_) return drain(p, failure_);
  if (welcomed_) {
    // The job runs with a full set of ranks; only the latecomer learns about its mistake.
    return drain(p, invalidUsage(who + " tried to join, but all " + std::to_string(nranks_) +
                                 " ranks of this job have joined already (a rank started twice?)"));
  }
  if (nranks_ == 0 && j.nranks > 0) {
    nranks_ = j.nranks;
    byRank_.assign(nranks_, nullptr);
    rankHost_.assign(nranks_, "");
    leftAtRound_.assign(nranks_, -1);
  }
  Status bad;
  if (j.nranks != nranks_) {
    int other = 0;
    while (other < nranks_ && byRank_[other] == nullptr) ++other;
    bad = invalidUsage("ranks disagree on the number of ranks: " + who + " says " +
                       std::to_string(j.nranks) + ", " +
                       (other < nranks_ ? rankName(other) : std::string("an earlier rank")) +
                       " says " + std::to_string(nranks_));
  } else if (j.rank < 0 || j.rank >= nranks_) {
    bad = invalidUsage(who + " is outside 0.." + std::to_string(nranks_ - 1));
  } else if (byRank_[j.rank] != nullptr || leftAtRound_[j.rank] >= 0) {
    bad = invalidUsage("rank " + std::to_string(j.rank) + " joined twice: from " +
                       rankHost_[j.rank] + " and from " + p.name);
  }
  if (!bad.isOk()) {
    drain(p, bad);
    return failJob(bad);
  }
  p.stage = Stage::kJoined;
  byRank_[j.rank] = &p;
  rankHost_[j.rank] = p.name;
  ++joined_;
  OBCCL_DEBUG(kSubsysBootstrap, "bootstrap root %s: %s joined (%d of %d)",
              address_.toString().c_str(), who.c_str(), joined_, nranks_);
  if (joined_ == nranks_) {
    welcomed_ = true;
    sendToRanks(std::make_shared<const std::vector<uint8_t>>(
        makeMessage(MsgType::kWelcome, 0, nullptr, 0)));
    OBCCL_INFO(kSubsysBootstrap, "bootstrap root %s: all %d ranks joined",
               address_.toString().c_str(), nranks_);
  }
}

void RootService::onMessage(Peer& p) {
  if (!p.haveHeader) {
    std::memcpy(&p.header, p.in.data(), sizeof(MsgHeader));
    bool failure = p.header.type == static_cast<uint32_t>(MsgType::kJobFailed);
    if (p.header.magic != kMsgMagic ||
        (!failure && p.header.type != static_cast<uint32_t>(MsgType::kContribute)) ||
        p.header.length > (failure ? kMaxErrorBytes + 4 : kMaxContributionBytes) ||
        (!failure && p.header.seq != p.nextRound)) {
      return onClosed(p, "protocol error (bad message header)");
    }
    p.haveHeader = true;
    p.in.assign(p.header.length, 0);
    p.have = 0;
    if (p.header.length > 0) return;
  }
  std::vector<uint8_t> data = std::move(p.in);
  p.haveHeader = false;
  p.in.assign(sizeof(MsgHeader), 0);
  p.have = 0;
  if (p.header.type == static_cast<uint32_t>(MsgType::kJobFailed))
    return onJobFailed(p, std::move(data));
  onContribute(p, std::move(data));
}

void RootService::onJobFailed(Peer& p, std::vector<uint8_t> data) {
  // The first report reaches every other rank, so that ranks waiting on some other peer fail
  // now instead of at their deadline; later reports (the others failing in turn) are dropped.
  if (jobFailed_ || !welcomed_) return;
  jobFailed_ = true;
  Status s = parseErrorPayload(data);
  OBCCL_INFO(kSubsysBootstrap, "bootstrap root %s: %s reports: %s", address_.toString().c_str(),
             rankName(p.rank).c_str(), s.message().c_str());
  std::string text = "rank " + std::to_string(p.rank) + " failed: " + s.message();
  if (text.size() > kMaxErrorBytes) text.resize(kMaxErrorBytes);
  std::vector<uint8_t> payload(4 + text.size());
  int32_t code = s.code();
  std::memcpy(payload.data(), &code, 4);
  std::memcpy(payload.data() + 4, text.data(), text.size());
  auto msg = std::make_shared<const std::vector<uint8_t>>(
      makeMessage(MsgType::kJobFailed, p.header.seq, payload.data(), payload.size()));
  for (Peer* q : byRank_)
    if (q != nullptr && q != &p) send(*q, msg);
}

void RootService::onContribute(Peer& p, std::vector<uint8_t> data) {
  uint64_t round = p.nextRound++;
  if (!welcomed_) return onClosed(p, "protocol error (allgather before every rank joined)");
  for (int q = 0; q < nranks_; ++q) {
    if (leftAtRound_[q] >= 0 && static_cast<uint64_t>(leftAtRound_[q]) <= round) {
      sendError(p, remoteError(rankName(q) +
                               " left the job before contributing to bootstrap "
                               "allgather round " +
                               std::to_string(round)));
      return;
    }
  }
  Round& r = rounds_[round];
  if (r.parts.empty()) {
    r.parts.resize(nranks_);
    r.have.assign(nranks_, false);
  }
  r.parts[p.rank] = std::move(data);
  r.have[p.rank] = true;
  if (++r.count == nranks_) completeRound(round);
}

void RootService::completeRound(uint64_t round) {
  Round& r = rounds_[round];
  size_t total = 8 * static_cast<size_t>(nranks_);
  for (const auto& part : r.parts) total += part.size();
  auto msg = std::make_shared<std::vector<uint8_t>>(sizeof(MsgHeader) + total);
  MsgHeader h = makeHeader(MsgType::kResult, round, total);
  uint8_t* out = msg->data();
  std::memcpy(out, &h, sizeof(h));
  out += sizeof(h);
  for (const auto& part : r.parts) {
    uint64_t len = part.size();
    std::memcpy(out, &len, 8);
    out += 8;
  }
  for (const auto& part : r.parts) {
    if (!part.empty()) std::memcpy(out, part.data(), part.size());
    out += part.size();
  }
  rounds_.erase(round);
  sendToRanks(std::move(msg));
}

void RootService::checkTimers() {
  auto now = Clock::now();
  for (auto& p : peers_) {
    if (beforeJoin(p->stage) && now >= p->stallDeadline)
      dropStranger(*p, "stalled for " + std::to_string(opts_.handshakeTimeoutMs) +
                           " ms before authenticating");
  }
  if (!welcomed_ && !failing_ && joinDeadline_.expired()) {
    std::string missing = missingRanks();
    failJob(timeoutError("only " + std::to_string(joined_) + " of " + std::to_string(nranks_) +
                         " ranks joined the bootstrap root at " + address_.toString() + " within " +
                         std::to_string(opts_.joinTimeoutMs) +
                         " ms (OBCCL_TIMEOUT_MS); missing ranks: " + missing));
  }
}

int RootService::pollTimeoutMs() const {
  Deadline next = Deadline::never();
  if (failing_) next = Deadline(drainUntil_);
  if (!welcomed_ && !failing_) next = Deadline::earlier(next, joinDeadline_);
  for (const auto& p : peers_)
    if (beforeJoin(p->stage)) next = Deadline::earlier(next, Deadline(p->stallDeadline));
  return next.at() == Clock::time_point::max() ? -1 : next.remainingMs();
}

bool RootService::finished() const {
  if (failing_) {
    if (Clock::now() >= drainUntil_) return true;
    for (const auto& p : peers_)
      if (p->stage == Stage::kDraining) return false;
    return true;
  }
  return welcomed_ && departed_ == nranks_;
}

void RootService::run() {
  std::vector<pollfd> fds;
  while (!finished()) {
    fds.clear();
    fds.push_back({listener_.get(), static_cast<short>(failing_ ? 0 : POLLIN), 0});
    for (auto& p : peers_) {
      short ev = (beforeJoin(p->stage) || p->stage == Stage::kJoined) && !failing_ ? POLLIN : 0;
      if (!p->out.empty()) ev |= POLLOUT;
      fds.push_back({p->fd.get(), ev, 0});
    }
    int rc = ::poll(fds.data(), fds.size(), pollTimeoutMs());
    if (rc < 0 && errno != EINTR) {
      failJob(errnoStatus("bootstrap root poll", errno));
      break;
    }
    size_t n = peers_.size();
    for (size_t i = 0; i < n && rc > 0; ++i) {
      Peer& p = *peers_[i];
      short re = fds[i + 1].revents;
      if (p.stage == Stage::kClosed || re == 0) continue;
      if (re & POLLOUT) flush(p);
      if (p.stage == Stage::kClosed) continue;
      if ((fds[i + 1].events & POLLIN) && (re & (POLLIN | POLLHUP | POLLERR)))
        onReadable(p);
      else if (re & (POLLHUP | POLLERR))
        onClosed(p, "connection lost");
    }
    for (size_t i = 0; i < n; ++i)
      if (!peers_[i]->lost.empty() && peers_[i]->stage != Stage::kClosed)
        onClosed(*peers_[i], peers_[i]->lost);
    if (rc > 0 && (fds[0].revents & POLLIN)) acceptNew();
    checkTimers();
    // Closed entries go; a joined rank's Peer is referenced from byRank_ only while open.
    peers_.erase(std::remove_if(peers_.begin(), peers_.end(),
                                [](const auto& p) { return p->stage == Stage::kClosed; }),
                 peers_.end());
  }
  OBCCL_DEBUG(kSubsysBootstrap, "bootstrap root %s: done", address_.toString().c_str());
}

}  // namespace

Status launchRootService(UniqueFd listener, SocketAddress address, UniqueIdData id,
                         const RootServiceOptions& options) {
  auto service =
      std::make_unique<RootService>(std::move(listener), address, std::move(id), options);
  {
    std::lock_guard<std::mutex> lock(registry().mu);
    ++registry().active;
  }
  try {
    std::thread([s = std::move(service)] {
      s->run();
      std::lock_guard<std::mutex> lock(registry().mu);
      --registry().active;
    }).detach();
  } catch (const std::system_error& e) {
    std::lock_guard<std::mutex> lock(registry().mu);
    --registry().active;
    return systemError(std::string("cannot start the bootstrap root thread: ") + e.what());
  }
  OBCCL_INFO(kSubsysBootstrap, "bootstrap root listening on %s", address.toString().c_str());
  return Status::ok();
}

void noteLocalClient(const std::string& address, bool connected) {
  std::lock_guard<std::mutex> lock(registry().mu);
  if (connected) {
    registry().localClients.insert(address);
  } else {
    registry().localClients.erase(address);
  }
}

int activeRootServices() {
  std::lock_guard<std::mutex> lock(registry().mu);
  return registry().active;
}

}  // namespace obccl::bootstrap
