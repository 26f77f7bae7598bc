#include "transports/tcp/tcp_transport.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>

#include "util/auth.h"
#include "util/log.h"
#include "util/params.h"

namespace obccl::transport {
namespace {

constexpr const char* kAuthPurpose = "tcp-data";

std::string connName(int peer, const SocketAddress& addr) {
  return "tcp to rank " + std::to_string(peer) + " (" + addr.toString() + ")";
}

AuthOptions authOptions(const ConnectContext& ctx, AuthRole role, std::optional<int64_t> peer,
                        const std::string& peerName) {
  AuthOptions ao;
  ao.purpose = kAuthPurpose;
  ao.commId = ctx.commId;
  ao.secret = ctx.secret;
  ao.role = role;
  ao.selfId = ctx.rank;
  ao.expectedPeerId = peer;
  ao.peerName = peerName;
  return ao;
}

struct Settings {
  int bufferBytes = 0;
  int64_t handshakeMs = 2000;
};

Result<Settings> readSettings() {
  Settings s;
  OBCCL_ASSIGN_OR_RETURN(int64_t buf, paramInt("OBCCL_SOCKET_BUFFER_BYTES"));
  OBCCL_ASSIGN_OR_RETURN(s.handshakeMs, paramInt("OBCCL_BOOTSTRAP_HANDSHAKE_MS"));
  s.bufferBytes = static_cast<int>(std::clamp<int64_t>(buf, 0, 1 << 30));
  return s;
}

// Every rank's listen address, from the out-of-band allgather (an empty address for a rank
// that has no tcp peers and so does not listen).
Result<std::vector<SocketAddress>> exchangeAddresses(const ConnectContext& ctx,
                                                     const SocketAddress& mine) {
  std::vector<uint8_t> wire(SocketAddress::kWireBytes, 0);
  if (!mine.empty()) mine.toWire(wire.data());
  std::vector<uint8_t> all;
  if (!ctx.allgather) return internalError("tcp connect: the context has no allgather");
  OBCCL_TRY(ctx.allgather(wire, &all).withContext("tcp: exchanging listen addresses"));
  if (all.size() != wire.size() * static_cast<size_t>(ctx.nranks))
    return internalError("tcp: address exchange returned " + std::to_string(all.size()) +
                         " bytes for " + std::to_string(ctx.nranks) + " ranks");
  std::vector<SocketAddress> out(ctx.nranks);
  for (int r = 0; r < ctx.nranks; ++r) {
    const uint8_t* w = all.data() + r * wire.size();
    if (w[0] == 0) continue;  // not listening
    OBCCL_ASSIGN_OR_RETURN(out[r], SocketAddress::fromWire(w));
  }
  return out;
}

// Ends a wait early when the job has failed elsewhere (ctx.interrupted).
Status checkInterrupted(const ConnectContext& ctx) {
  return ctx.interrupted ? ctx.interrupted() : Status::ok();
}

Deadline nextSlice(const ConnectContext& ctx, int ms = kInterruptCheckMs) {
  return Deadline::earlier(ctx.deadline, Deadline::afterMs(ms));
}

// connectTo in slices, checking ctx.interrupted between them: a peer that died after publishing
// its address refuses every attempt, and the root's notice ends the retries. A slice is long
// enough for a handshake over any sane link (a slice that ends mid-connect starts it again).
Result<UniqueFd> connectSliced(const ConnectContext& ctx, const SocketAddress& addr,
                               int bufferBytes) {
  for (;;) {
    OBCCL_TRY(checkInterrupted(ctx));
    Result<UniqueFd> fd = connectTo(addr, nextSlice(ctx, 5 * kInterruptCheckMs), bufferBytes);
    if (fd.isOk() || fd.status().code() != obcclTimeout || ctx.deadline.expired()) return fd;
  }
}

// The connecting (higher-ranked) side of one pair.
Result<std::unique_ptr<Connection>> connectToPeer(const ConnectContext& ctx, int peer,
                                                  const SocketAddress& addr,
                                                  const Settings& settings) {
  if (addr.empty())
    return invalidUsage("tcp: rank " + std::to_string(peer) +
                        " published no listen address, but rank " + std::to_string(ctx.rank) +
                        " expects a tcp connection to it (ranks disagree on transports?)");
  std::string name = connName(peer, addr);
  Result<UniqueFd> fd = connectSliced(ctx, addr, settings.bufferBytes);
  if (!fd.isOk()) return fd.status().withContext(name);
  Result<int64_t> auth =
      authenticatePeer(fd.value().get(),
                       authOptions(ctx, AuthRole::kClient, peer,
                                   "rank " + std::to_string(peer) + " at " + addr.toString()),
                       ctx.deadline);
  if (!auth.isOk()) return auth.status();
  return makeTcpConnection(std::move(fd).value(), name);
}

// A connection on the data listener that has not proven itself yet. Handshakes run side by side,
// so strangers that stall cost the listener a slot each, never a handshake timeout each in turn.
struct Stranger {
  UniqueFd fd;
  SocketAddress from;
  std::optional<AuthHandshake> auth;
  bool haveHello = false;   // the peer's hello arrived; the proof comes next
  std::vector<uint8_t> in;  // the message being read (hello, then proof)
  size_t have = 0;
  std::vector<uint8_t> out;            // our hello, then our proof, not yet written
  Deadline stall = Deadline::never();  // dropped when nothing arrives until then
};

// The accepting (lower-ranked) side: takes connections until every expected higher peer is in.
class Acceptor {
 public:
  Acceptor(const ConnectContext& ctx, int listener, const SocketAddress& bound,
           const std::map<int, size_t>& expected, const Settings& settings,
           std::vector<std::unique_ptr<Connection>>* out)
      : ctx_(ctx),
        listener_(listener),
        bound_(bound),
        expected_(expected),
        settings_(settings),
        out_(out),
        remaining_(expected.size()) {}
  Status run();

 private:
  static constexpr size_t kMaxStrangers = 128;  // beyond this the oldest is dropped
  void acceptAll();
  // Reads and writes what it can; false when the stranger is done (joined or dropped).
  bool advance(Stranger& s);
  bool drop(Stranger& s, const std::string& why);
  bool onMessage(Stranger& s);
  std::string missing() const;

  const ConnectContext& ctx_;
  int listener_;
  const SocketAddress& bound_;
  const std::map<int, size_t>& expected_;
  const Settings& settings_;
  std::vector<std::unique_ptr<Connection>>* out_;
  size_t remaining_;
  std::vector<std::unique_ptr<Stranger>> strangers_;
};

std::string Acceptor::missing() const {
  std::string m;
  for (const auto& [peer, index] : expected_)
    if (!(*out_)[index]) m += (m.empty() ? "" : ",") + std::to_string(peer);
  return m;
}

bool Acceptor::drop(Stranger& s, const std::string& why) {
  OBCCL_WARN(kSubsysTransport, "tcp listener %s (rank %d): dropping connection from %s: %s",
             bound_.toString().c_str(), ctx_.rank, s.from.toString().c_str(), why.c_str());
  return false;
}

void Acceptor::acceptAll() {
  for (;;) {
    SocketAddress from;
    Result<UniqueFd> fd = acceptOne(listener_, &from);
    if (!fd.isOk() || !fd.value().valid()) return;
    if (strangers_.size() >= kMaxStrangers) {
      drop(*strangers_.front(), "too many unauthenticated connections");
      strangers_.erase(strangers_.begin());
    }
    auto s = std::make_unique<Stranger>();
    s->fd = std::move(fd).value();
    s->from = from;
    Result<AuthHandshake> h = AuthHandshake::start(
        authOptions(ctx_, AuthRole::kServer, std::nullopt, "connection from " + from.toString()));
    if (!h.isOk()) {
      drop(*s, h.status().message());
      continue;
    }
    s->auth.emplace(std::move(h).value());
    s->out.assign(s->auth->hello().begin(), s->auth->hello().end());
    s->in.assign(kAuthHelloBytes, 0);
    s->stall = Deadline::afterMs(settings_.handshakeMs);
    strangers_.push_back(std::move(s));
  }
}

bool Acceptor::onMessage(Stranger& s) {
  if (!s.haveHello) {
    Result<AuthProof> proof = s.auth->onPeerHello(s.in.data());
    if (!proof.isOk()) return drop(s, proof.status().message());
    s.out.insert(s.out.end(), proof.value().begin(), proof.value().end());
    s.haveHello = true;
    s.in.assign(kAuthProofBytes, 0);
    s.have = 0;
    return true;
  }
  Status ok = s.auth->onPeerProof(s.in.data());
  if (!ok.isOk()) return drop(s, ok.message());
  int64_t peer = s.auth->peerId();
  auto it = expected_.find(static_cast<int>(peer));
  if (it == expected_.end() || (*out_)[it->second])
    return drop(s, "rank " + std::to_string(peer) + " is not expected here or already connected");
  (*out_)[it->second] = makeTcpConnection(std::move(s.fd), connName(it->first, s.from));
  --remaining_;
  return false;
}

bool Acceptor::advance(Stranger& s) {
  while (!s.out.empty()) {
    ssize_t n = ::send(s.fd.get(), s.out.data(), s.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n < 0) return drop(s, std::string("send failed: ") + std::strerror(errno));
    s.out.erase(s.out.begin(), s.out.begin() + n);
  }
  for (;;) {
    ssize_t n = ::recv(s.fd.get(), s.in.data() + s.have, s.in.size() - s.have, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) return drop(s, n == 0 ? "closed before authenticating" : std::strerror(errno));
    s.have += static_cast<size_t>(n);
    s.stall = Deadline::afterMs(settings_.handshakeMs);
    if (s.have < s.in.size()) continue;
    // The proof is written before the peer's proof is read, so flush it first.
    if (!onMessage(s)) return false;
    if (!s.out.empty()) return advance(s);
  }
  if (s.stall.expired())
    return drop(
        s, "stalled for " + std::to_string(settings_.handshakeMs) + " ms before authenticating");
  return true;
}

Status Acceptor::run() {
  while (remaining_ > 0) {
    OBCCL_TRY(checkInterrupted(ctx_));
    if (ctx_.deadline.expired())
      return timeoutError("timed out waiting for tcp connections from ranks " + missing() + " on " +
                          bound_.toString());
    std::vector<pollfd> fds{{listener_, POLLIN, 0}};
    for (const auto& s : strangers_)
      fds.push_back({s->fd.get(), static_cast<short>(POLLIN | (s->out.empty() ? 0 : POLLOUT)), 0});
    Deadline wake = nextSlice(ctx_);
    for (const auto& s : strangers_) wake = Deadline::earlier(wake, s->stall);
    if (::poll(fds.data(), fds.size(), wake.remainingMs()) < 0 && errno != EINTR)
      return errnoStatus("poll on the tcp listener " + bound_.toString(), errno);
    std::vector<std::unique_ptr<Stranger>> still;
    for (auto& s : strangers_)
      if (advance(*s)) still.push_back(std::move(s));
    strangers_.swap(still);
    if (fds[0].revents & POLLIN) acceptAll();
  }
  return Status::ok();
}

Status acceptPeers(const ConnectContext& ctx, int listener, const SocketAddress& bound,
                   const std::map<int, size_t>& expected, const Settings& settings,
                   std::vector<std::unique_ptr<Connection>>* out) {
  return Acceptor(ctx, listener, bound, expected, settings, out).run();
}

}  // namespace

Status TcpTransport::connect(const ConnectContext& ctx, const std::vector<int>& peers,
                             std::vector<std::unique_ptr<Connection>>* out) {
  out->clear();
  out->resize(peers.size());
  OBCCL_ASSIGN_OR_RETURN(Settings settings, readSettings());
  std::map<int, size_t> lower, higher;  // peer -> index in peers
  for (size_t i = 0; i < peers.size(); ++i) {
    int p = peers[i];
    if (p < 0 || p >= ctx.nranks || p == ctx.rank)
      return invalidArgument("tcp connect: peer " + std::to_string(p) + " is not another rank of " +
                             std::to_string(ctx.nranks));
    (p < ctx.rank ? lower : higher)[p] = i;
  }
  // Listen only when some higher rank will connect here, on the interface the user chose.
  UniqueFd listener;
  SocketAddress bound;
  if (!higher.empty()) {
    OBCCL_ASSIGN_OR_RETURN(SocketAddress where, chooseInterfaceAddress(ctx.ifname));
    where.setPort(0);
    OBCCL_ASSIGN_OR_RETURN(
        listener, listenOn(where, &bound, std::max(128, ctx.nranks), settings.bufferBytes));
  }
  OBCCL_ASSIGN_OR_RETURN(std::vector<SocketAddress> addrs, exchangeAddresses(ctx, bound));
  // Lower peers first, in rank order, then accept the higher ones: each rank's connect phase
  // needs only lower ranks that are already accepting, so the pairwise handshakes cannot wait
  // on each other in a cycle.
  for (const auto& [peer, index] : lower) {
    OBCCL_ASSIGN_OR_RETURN((*out)[index], connectToPeer(ctx, peer, addrs[peer], settings));
  }
  if (!higher.empty()) OBCCL_TRY(acceptPeers(ctx, listener.get(), bound, higher, settings, out));
  OBCCL_DEBUG(kSubsysTransport, "tcp: rank %d connected to %zu peers", ctx.rank, peers.size());
  return Status::ok();
}

std::unique_ptr<Transport> makeTcpTransport() { return std::make_unique<TcpTransport>(); }

}  // namespace obccl::transport
