// TcpTransport::connect with ranks as threads, rendezvous through a real Bootstrap.
#include <gtest/gtest.h>
#include <poll.h>

#include <future>
#include <numeric>

#include "bootstrap/bootstrap.h"
#include "transports/tcp/tcp_transport.h"
#include "util/auth.h"

namespace obccl::transport {
namespace {

bootstrap::UniqueIdData makeId() {
  bootstrap::RootServiceOptions o;
  o.joinTimeoutMs = 20000;
  o.ifname = "=lo";
  auto id = bootstrap::createUniqueId(o);
  EXPECT_TRUE(id.isOk()) << id.status().message();
  return id.value();
}

ConnectContext makeContext(bootstrap::Bootstrap* bs, const bootstrap::UniqueIdData& id,
                           const Deadline& deadline) {
  ConnectContext ctx;
  ctx.rank = bs->rank();
  ctx.nranks = bs->nranks();
  ctx.commId = id.commId;
  ctx.secret = id.secret;
  ctx.deadline = deadline;
  ctx.ifname = "=lo";
  ctx.allgather = [bs, deadline](const std::vector<uint8_t>& mine, std::vector<uint8_t>* all) {
    std::vector<std::vector<uint8_t>> parts;
    OBCCL_TRY(bs->allgather(mine, &parts, deadline));
    all->clear();
    for (const auto& p : parts) all->insert(all->end(), p.begin(), p.end());
    return Status::ok();
  };
  return ctx;
}

// Sends one frame to every connection and receives one from each; checks who it came from.
Status exchange(int rank, const std::vector<int>& peers,
                std::vector<std::unique_ptr<Connection>>& conns, const Deadline& deadline) {
  size_t n = peers.size();
  std::vector<std::vector<int32_t>> out(n), in(n, std::vector<int32_t>(4096));
  std::vector<Request> sends(n), recvs(n);
  for (size_t i = 0; i < n; ++i) {
    out[i].assign(1000 + 100 * peers[i], rank * 1000 + peers[i]);
    FrameHeader h;
    h.seq = 1;
    h.length = out[i].size() * sizeof(int32_t);
    OBCCL_TRY(conns[i]->postRecv(in[i].data(), in[i].size() * sizeof(int32_t), &recvs[i]));
    OBCCL_TRY(conns[i]->postSend(h, out[i].data(), &sends[i]));
  }
  for (;;) {
    bool done = true;
    std::vector<pollfd> pfds;
    for (size_t i = 0; i < n; ++i) {
      OBCCL_TRY(conns[i]->progress());
      done = done && sends[i].done && recvs[i].done;
      pfds.push_back({conns[i]->pollFd(), conns[i]->pollEvents(), 0});
    }
    if (done) break;
    if (deadline.expired()) return timeoutError("exchange");
    ::poll(pfds.data(), pfds.size(), 50);
  }
  for (size_t i = 0; i < n; ++i) {
    OBCCL_TRY(recvs[i].status);
    size_t expect = (1000 + 100 * rank) * sizeof(int32_t);
    if (recvs[i].bytes != expect || in[i][0] != peers[i] * 1000 + rank)
      return internalError("rank " + std::to_string(rank) + ": wrong frame from rank " +
                           std::to_string(peers[i]));
    if (conns[i]->describe().find("rank " + std::to_string(peers[i])) == std::string::npos)
      return internalError("describe() does not name the peer: " + conns[i]->describe());
  }
  return Status::ok();
}

// Runs nranks threads; peersOf(rank) gives each rank's tcp peers (symmetric).
// expectInDescribe, when set, must appear in every connection's describe().
void runJob(int nranks, const std::function<std::vector<int>(int)>& peersOf,
            const std::string& expectInDescribe = "") {
  bootstrap::UniqueIdData id = makeId();
  auto rankMain = [&](int rank) -> Status {
    Deadline deadline = Deadline::afterMs(20000);
    OBCCL_ASSIGN_OR_RETURN(auto bs, bootstrap::Bootstrap::connect(id, rank, nranks, deadline));
    ConnectContext ctx = makeContext(bs.get(), id, deadline);
    auto t = makeTcpTransport();
    if (std::string(t->name()) != "tcp" || !t->canConnect(ctx, (rank + 1) % nranks))
      return internalError("tcp transport identity");
    std::vector<int> peers = peersOf(rank);
    std::vector<std::unique_ptr<Connection>> conns;
    OBCCL_TRY(t->connect(ctx, peers, &conns));
    if (conns.size() != peers.size()) return internalError("connection count");
    for (const auto& c : conns)
      if (c->describe().find(expectInDescribe) == std::string::npos)
        return internalError("unexpected peer address: " + c->describe());
    OBCCL_TRY(exchange(rank, peers, conns, deadline));
    return bs->barrier(deadline);  // nobody closes while a peer still reads
  };
  std::vector<std::future<Status>> f;
  for (int r = 0; r < nranks; ++r) f.push_back(std::async(std::launch::async, rankMain, r));
  for (int r = 0; r < nranks; ++r) {
    Status s = f[r].get();
    EXPECT_TRUE(s.isOk()) << "rank " << r << ": " << s.message();
  }
}

TEST(TcpTransport, FourRanksFullyConnected) {
  runJob(4, [](int rank) {
    std::vector<int> peers;
    for (int p = 3; p >= 0; --p)  // any order: the transport sorts out who connects
      if (p != rank) peers.push_back(p);
    return peers;
  });
}

TEST(TcpTransport, RingNeighboursOnlyAndARankWithoutPeers) {
  // Ranks 0..3 form a ring; rank 4 has no tcp peers but still takes part in the exchange.
  runJob(5, [](int rank) -> std::vector<int> {
    if (rank == 4) return {};
    return {(rank + 1) % 4, (rank + 3) % 4};
  });
}

TEST(TcpTransport, Ipv6Loopback) {
  SocketAddress probe;
  if (!listenOn(SocketAddress::parse("[::1]:0").value(), &probe).isOk())
    GTEST_SKIP() << "no IPv6 loopback on this host";
  struct FamilyEnv {
    FamilyEnv() { ::setenv("OBCCL_SOCKET_FAMILY", "AF_INET6", 1); }
    ~FamilyEnv() { ::unsetenv("OBCCL_SOCKET_FAMILY"); }
  } env;
  auto data = chooseInterfaceAddress("=lo");
  ASSERT_TRUE(data.isOk()) << data.status().message();
  EXPECT_EQ(data.value().family(), AF_INET6);
  // The root's id then carries [::1]:port, and every data connection is IPv6.
  runJob(
      3,
      [](int rank) {
        std::vector<int> peers;
        for (int p = 0; p < 3; ++p)
          if (p != rank) peers.push_back(p);
        return peers;
      },
      "[::1]:");
}

TEST(TcpTransport, StrangersOnTheDataListenerAreDropped) {
  bootstrap::UniqueIdData id = makeId();
  auto rankMain = [&](int rank) -> Status {
    Deadline deadline = Deadline::afterMs(20000);
    OBCCL_ASSIGN_OR_RETURN(auto bs, bootstrap::Bootstrap::connect(id, rank, 2, deadline));
    ConnectContext ctx = makeContext(bs.get(), id, deadline);
    std::vector<UniqueFd> strangers;
    if (rank == 1) {
      // Before rank 1 connects, strangers reach rank 0's listener: garbage and a wrong secret.
      auto inner = ctx.allgather;
      ctx.allgather = [&, inner](const std::vector<uint8_t>& mine, std::vector<uint8_t>* all) {
        OBCCL_TRY(inner(mine, all));
        OBCCL_ASSIGN_OR_RETURN(SocketAddress rank0, SocketAddress::fromWire(all->data()));
        OBCCL_ASSIGN_OR_RETURN(UniqueFd junk, connectTo(rank0, deadline));
        std::vector<uint8_t> bytes(kAuthHelloBytes, 0xee);
        OBCCL_TRY(writeFull(junk.get(), bytes.data(), bytes.size(), deadline, "rank 0"));
        strangers.push_back(std::move(junk));
        OBCCL_ASSIGN_OR_RETURN(UniqueFd impostor, connectTo(rank0, deadline));
        AuthOptions ao;
        ao.purpose = "tcp-data";
        ao.commId = id.commId;
        ao.secret = std::vector<uint8_t>(id.secret.size(), 0);
        ao.selfId = 1;
        ao.peerName = "rank 0";
        if (authenticatePeer(impostor.get(), ao, deadline).isOk())
          return internalError("impostor authenticated");
        return Status::ok();
      };
    }
    std::vector<int> peers = {1 - rank};
    std::vector<std::unique_ptr<Connection>> conns;
    OBCCL_TRY(makeTcpTransport()->connect(ctx, peers, &conns));
    OBCCL_TRY(exchange(rank, peers, conns, deadline));
    return bs->barrier(deadline);
  };
  auto r1 = std::async(std::launch::async, rankMain, 1);
  Status s0 = rankMain(0);
  Status s1 = r1.get();
  EXPECT_TRUE(s0.isOk()) << s0.message();
  EXPECT_TRUE(s1.isOk()) << s1.message();
}

TEST(TcpTransport, RejectsBadPeers) {
  ConnectContext ctx;
  ctx.rank = 0;
  ctx.nranks = 2;
  std::vector<std::unique_ptr<Connection>> conns;
  auto t = makeTcpTransport();
  EXPECT_EQ(t->connect(ctx, {0}, &conns).code(), obcclInvalidArgument);
  EXPECT_EQ(t->connect(ctx, {2}, &conns).code(), obcclInvalidArgument);
}

}  // namespace
}  // namespace obccl::transport
