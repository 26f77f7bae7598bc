#include "transports/tcp/tcp_transport.h"

#include <algorithm>
#include <map>

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

// waitReadable on the listener in short slices, checking ctx.interrupted between them.
Status waitForConnection(const ConnectContext& ctx, int listener, const std::string& what) {
  for (;;) {
    OBCCL_TRY(checkInterrupted(ctx));
    Status s = waitReadable(listener, nextSlice(ctx), what);
    if (s.isOk() || s.code() != obcclTimeout || ctx.deadline.expired()) return s;
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

// The accepting (lower-ranked) side: takes connections until every expected higher peer is in.
// Connections that fail the handshake are logged and dropped; the wait goes on.
Status acceptPeers(const ConnectContext& ctx, int listener, const SocketAddress& bound,
                   const std::map<int, size_t>& expected, const Settings& settings,
                   std::vector<std::unique_ptr<Connection>>* out) {
  size_t remaining = expected.size();
  while (remaining > 0) {
    std::string missing;
    for (const auto& [peer, index] : expected)
      if (!(*out)[index]) missing += (missing.empty() ? "" : ",") + std::to_string(peer);
    OBCCL_TRY(waitForConnection(
        ctx, listener, "tcp connections from ranks " + missing + " on " + bound.toString()));
    SocketAddress from;
    OBCCL_ASSIGN_OR_RETURN(UniqueFd fd, acceptOne(listener, &from));
    if (!fd.valid()) continue;
    Deadline hs = Deadline::earlier(ctx.deadline, Deadline::afterMs(settings.handshakeMs));
    Result<int64_t> peer = authenticatePeer(
        fd.get(),
        authOptions(ctx, AuthRole::kServer, std::nullopt, "connection from " + from.toString()),
        hs);
    if (!peer.isOk()) {
      OBCCL_WARN(kSubsysTransport, "tcp listener %s (rank %d): %s; connection dropped",
                 bound.toString().c_str(), ctx.rank, peer.status().message().c_str());
      continue;
    }
    auto it = expected.find(static_cast<int>(peer.value()));
    if (it == expected.end() || (*out)[it->second]) {
      OBCCL_WARN(kSubsysTransport,
                 "tcp listener %s (rank %d): dropping connection from %s: rank %lld is not "
                 "expected here or already connected",
                 bound.toString().c_str(), ctx.rank, from.toString().c_str(),
                 static_cast<long long>(peer.value()));
      continue;
    }
    (*out)[it->second] = makeTcpConnection(std::move(fd), connName(it->first, from));
    --remaining;
  }
  return Status::ok();
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
