// TcpConnection over socketpairs and loopback TCP: ordering, large bidirectional exchanges,
// corruption, mismatched sizes and peer failures.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "transports/tcp/tcp_transport.h"
#include "util/crc32c.h"

namespace obccl::transport {
namespace {

struct Pair {
  std::unique_ptr<Connection> a, b;
};

Pair socketPair(int bufferBytes = 0) {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  for (int fd : fds) {
    if (bufferBytes > 0) {
      EXPECT_EQ(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufferBytes, sizeof(bufferBytes)), 0);
      EXPECT_EQ(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufferBytes, sizeof(bufferBytes)), 0);
    }
  }
  return {makeTcpConnection(UniqueFd(fds[0]), "tcp to rank 1 (socketpair)"),
          makeTcpConnection(UniqueFd(fds[1]), "tcp to rank 0 (socketpair)")};
}

// A connected TCP pair over 127.0.0.1, built with the util socket helpers.
Pair loopbackPair(int bufferBytes) {
  SocketAddress bound;
  auto lis = listenOn(SocketAddress::parse("127.0.0.1:0").value(), &bound, 16, bufferBytes);
  EXPECT_TRUE(lis.isOk()) << lis.status().message();
  auto c = connectTo(bound, Deadline::afterMs(5000), bufferBytes);
  EXPECT_TRUE(c.isOk()) << c.status().message();
  EXPECT_TRUE(waitReadable(lis.value().get(), Deadline::afterMs(5000), "accept").isOk());
  SocketAddress peer;
  auto s = acceptOne(lis.value().get(), &peer);
  EXPECT_TRUE(s.isOk() && s.value().valid());
  return {makeTcpConnection(std::move(c).value(), "tcp to rank 1 (" + bound.toString() + ")"),
          makeTcpConnection(std::move(s).value(), "tcp to rank 0 (" + peer.toString() + ")")};
}

FrameHeader header(uint64_t seq, uint64_t length) {
  FrameHeader h;
  h.commId = 0x1234;
  h.seq = seq;
  h.length = length;
  h.count = length;
  sealHeader(&h);
  return h;
}

// Progresses both ends until every request is done or a connection fails; waits in poll().
Status drive(Connection* a, Connection* b, const std::vector<Request*>& reqs, int timeoutMs) {
  Deadline deadline = Deadline::afterMs(timeoutMs);
  for (;;) {
    Status sa = a->progress();
    Status sb = b->progress();
    if (!sa.isOk()) return sa;
    if (!sb.isOk()) return sb;
    bool all = true;
    for (Request* r : reqs) all = all && r->done;
    if (all) return Status::ok();
    if (deadline.expired()) return timeoutError("drive: requests still pending");
    pollfd p[2] = {{a->pollFd(), a->pollEvents(), 0}, {b->pollFd(), b->pollEvents(), 0}};
    ::poll(p, 2, std::min(deadline.remainingMs(), 100));
  }
}

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& x : v) x = static_cast<uint8_t>(rng());
  return v;
}

TEST(TcpConnection, ManyFramesArriveInFifoOrder) {
  Pair p = socketPair();
  constexpr int kFrames = 500;
  std::mt19937 rng(7);
  std::vector<std::vector<uint8_t>> payloads;
  for (int i = 0; i < kFrames; ++i) payloads.push_back(pattern(rng() % 3000, i));
  std::vector<Request> sends(kFrames), recvs(kFrames);
  std::vector<std::vector<uint8_t>> bufs(kFrames, std::vector<uint8_t>(3000));
  std::vector<Request*> all;
  for (int i = 0; i < kFrames; ++i) {
    ASSERT_TRUE(p.b->postRecv(bufs[i].data(), bufs[i].size(), &recvs[i]).isOk());
    all.push_back(&recvs[i]);
  }
  for (int i = 0; i < kFrames; ++i) {
    ASSERT_TRUE(p.a->postSend(header(i, payloads[i].size()), payloads[i].data(), &sends[i]).isOk());
    all.push_back(&sends[i]);
  }
  Status s = drive(p.a.get(), p.b.get(), all, 10000);
  ASSERT_TRUE(s.isOk()) << s.message();
  uint64_t total = 0;
  for (int i = 0; i < kFrames; ++i) {
    ASSERT_TRUE(recvs[i].status.isOk());
    EXPECT_EQ(recvs[i].header.seq, static_cast<uint64_t>(i));
    ASSERT_EQ(recvs[i].bytes, payloads[i].size());
    EXPECT_EQ(0, std::memcmp(bufs[i].data(), payloads[i].data(), payloads[i].size()));
    total += sizeof(FrameHeader) + payloads[i].size();
  }
  EXPECT_EQ(p.a->bytesSent(), total);
  EXPECT_EQ(p.b->bytesReceived(), total);
  EXPECT_FALSE(p.a->busy());
  EXPECT_FALSE(p.b->busy());
}

TEST(TcpConnection, SimultaneousBidirectional64MiBWithSmallBuffers) {
  Pair p = socketPair(16 * 1024);
  constexpr size_t kBytes = 64u << 20;
  std::vector<uint8_t> outA = pattern(kBytes, 1), outB = pattern(kBytes, 2);
  std::vector<uint8_t> inA(kBytes), inB(kBytes);
  Request sa, sb, ra, rb;
  // Both sides send before either receives: without non-blocking progress this deadlocks.
  ASSERT_TRUE(p.a->postSend(header(1, kBytes), outA.data(), &sa).isOk());
  ASSERT_TRUE(p.b->postSend(header(1, kBytes), outB.data(), &sb).isOk());
  ASSERT_TRUE(p.a->postRecv(inA.data(), kBytes, &ra).isOk());
  ASSERT_TRUE(p.b->postRecv(inB.data(), kBytes, &rb).isOk());
  Status s = drive(p.a.get(), p.b.get(), {&sa, &sb, &ra, &rb}, 30000);
  ASSERT_TRUE(s.isOk()) << s.message();
  EXPECT_TRUE(inA == outB);
  EXPECT_TRUE(inB == outA);
}

TEST(TcpConnection, CorruptedHeaderIsDetected) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  UniqueFd raw(fds[0]);
  auto conn = makeTcpConnection(UniqueFd(fds[1]), "tcp to rank 2 (socketpair)");
  FrameHeader h = header(5, 0);
  h.seq ^= 0x10;  // One flipped bit after sealing.
  ASSERT_EQ(::write(raw.get(), &h, sizeof(h)), static_cast<ssize_t>(sizeof(h)));
  std::vector<uint8_t> buf(16);
  Request r;
  ASSERT_TRUE(conn->postRecv(buf.data(), buf.size(), &r).isOk());
  Status s = conn->progress();
  EXPECT_EQ(s.code(), obcclRemoteError);
  EXPECT_NE(s.message().find("rank 2"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("corrupted"), std::string::npos) << s.message();
  EXPECT_TRUE(r.done);
  EXPECT_EQ(r.status.code(), obcclRemoteError);
  // Sticky: later calls fail the same way.
  Request r2;
  EXPECT_EQ(conn->postRecv(buf.data(), buf.size(), &r2).code(), obcclRemoteError);
  EXPECT_TRUE(r2.done);
}

TEST(TcpConnection, GarbageInsteadOfHeaderIsDetected) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  UniqueFd raw(fds[0]);
  auto conn = makeTcpConnection(UniqueFd(fds[1]), "tcp to rank 2 (socketpair)");
  std::vector<uint8_t> junk = pattern(sizeof(FrameHeader), 9);
  ASSERT_EQ(::write(raw.get(), junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
  Request r;
  ASSERT_TRUE(conn->postRecv(nullptr, 0, &r).isOk());
  EXPECT_EQ(conn->progress().code(), obcclRemoteError);
}

TEST(TcpConnection, OversizePayloadIsInvalidUsageAndSkipped) {
  Pair p = socketPair(16 * 1024);
  // Larger than the socket buffers, so the skipped payload arrives over several progress calls.
  std::vector<uint8_t> big = pattern(1 << 20, 3), small = pattern(100, 4), in(999);
  Request s1, s2, r1, r2;
  ASSERT_TRUE(p.a->postSend(header(7, big.size()), big.data(), &s1).isOk());
  ASSERT_TRUE(p.a->postSend(header(8, small.size()), small.data(), &s2).isOk());
  ASSERT_TRUE(p.b->postRecv(in.data(), in.size(), &r1).isOk());
  ASSERT_TRUE(p.b->postRecv(in.data(), in.size(), &r2).isOk());
  Status st = drive(p.a.get(), p.b.get(), {&s1, &s2, &r1, &r2}, 5000);
  EXPECT_TRUE(st.isOk()) << st.message();
  ASSERT_TRUE(r1.done);
  EXPECT_EQ(r1.status.code(), obcclInvalidUsage);
  EXPECT_EQ(r1.header.seq, 7u);  // the caller can tell what the peer sent
  EXPECT_EQ(r1.header.length, big.size());
  EXPECT_NE(r1.status.message().find(std::to_string(big.size())), std::string::npos)
      << r1.status.message();
  EXPECT_NE(r1.status.message().find("999"), std::string::npos) << r1.status.message();
  EXPECT_NE(r1.status.message().find("rank 0"), std::string::npos) << r1.status.message();
  // The stream stays in step: the next frame arrives intact.
  ASSERT_TRUE(r2.done);
  ASSERT_TRUE(r2.status.isOk()) << r2.status.message();
  EXPECT_EQ(r2.header.seq, 8u);
  ASSERT_EQ(r2.bytes, small.size());
  EXPECT_EQ(0, std::memcmp(in.data(), small.data(), small.size()));
  EXPECT_EQ(p.b->bytesReceived(), 2 * sizeof(FrameHeader) + big.size() + small.size());
}

TEST(TcpConnection, PeerCloseIsStickyRemoteError) {
  Pair p = socketPair();
  std::vector<uint8_t> in(64);
  Request r;
  ASSERT_TRUE(p.b->postRecv(in.data(), in.size(), &r).isOk());
  p.a.reset();  // The peer goes away.
  Deadline deadline = Deadline::afterMs(5000);
  Status s;
  while (s.isOk() && !deadline.expired()) {
    pollfd pf{p.b->pollFd(), p.b->pollEvents(), 0};
    ::poll(&pf, 1, 100);
    s = p.b->progress();
  }
  EXPECT_EQ(s.code(), obcclRemoteError);
  EXPECT_NE(s.message().find("tcp to rank 0 (socketpair)"), std::string::npos) << s.message();
  EXPECT_TRUE(r.done);
  EXPECT_EQ(r.status.code(), obcclRemoteError);
  Request w;
  std::vector<uint8_t> out(8);
  EXPECT_EQ(p.b->postSend(header(0, out.size()), out.data(), &w).code(), obcclRemoteError);
  EXPECT_EQ(p.b->progress().code(), obcclRemoteError);
}

TEST(TcpConnection, SendToClosedPeerFails) {
  Pair p = socketPair(16 * 1024);
  p.b.reset();
  std::vector<uint8_t> out(1 << 20);
  Request w;
  Status s = p.a->postSend(header(0, out.size()), out.data(), &w);
  Deadline deadline = Deadline::afterMs(5000);
  while (s.isOk() && !w.done && !deadline.expired()) s = p.a->progress();
  EXPECT_EQ(s.code(), obcclRemoteError) << s.message();
  EXPECT_TRUE(w.done);
}

TEST(TcpConnection, PollEventsFollowQueuedWork) {
  Pair p = socketPair(16 * 1024);
  // Idle: only a hangup wakes the caller, not data that arrives before its receive is posted.
  EXPECT_EQ(p.a->pollEvents() & POLLOUT, 0);
  EXPECT_EQ(p.a->pollEvents() & POLLIN, 0);
  EXPECT_NE(p.a->pollEvents() & POLLRDHUP, 0);
  std::vector<uint8_t> early(8), in(8);
  Request e, r;
  ASSERT_TRUE(p.b->postSend(header(0, early.size()), early.data(), &e).isOk());
  ASSERT_TRUE(p.b->progress().isOk());
  pollfd idle{p.a->pollFd(), p.a->pollEvents(), 0};
  EXPECT_EQ(::poll(&idle, 1, 0), 0) << "early data woke an idle connection";
  ASSERT_TRUE(p.a->postRecv(in.data(), in.size(), &r).isOk());
  EXPECT_NE(p.a->pollEvents() & POLLIN, 0);
  pollfd waiting{p.a->pollFd(), p.a->pollEvents(), 0};
  EXPECT_EQ(::poll(&waiting, 1, 1000), 1);
  ASSERT_TRUE(p.a->progress().isOk());
  EXPECT_TRUE(r.done);
  std::vector<uint8_t> out(4 << 20);
  Request w;
  ASSERT_TRUE(p.a->postSend(header(0, out.size()), out.data(), &w).isOk());
  EXPECT_FALSE(w.done);  // 4 MiB cannot fit the small buffers.
  EXPECT_TRUE(p.a->busy());
  EXPECT_NE(p.a->pollEvents() & POLLOUT, 0);
}

TEST(TcpConnection, LoopbackTcpExchange) {
  Pair p = loopbackPair(4 << 20);
  std::vector<uint8_t> out = pattern(8 << 20, 4), in(8 << 20);
  Request s, r;
  ASSERT_TRUE(p.a->postSend(header(0, out.size()), out.data(), &s).isOk());
  ASSERT_TRUE(p.b->postRecv(in.data(), in.size(), &r).isOk());
  ASSERT_TRUE(drive(p.a.get(), p.b.get(), {&s, &r}, 10000).isOk());
  EXPECT_TRUE(in == out);
}

// Throughput of one connection pair over loopback TCP: both ends driven by this thread, or with
// OBCCL_TCP_BENCH_THREADS=1 one thread per end. Run with OBCCL_TCP_BENCH=1; sizes in MiB from
// OBCCL_TCP_BENCH_TOTAL_MIB and OBCCL_TCP_BENCH_FRAME_MIB, socket buffer bytes from
// OBCCL_TCP_BENCH_SOCKBUF (0: kernel autotuning).
TEST(TcpConnection, LoopbackThroughput) {
  if (std::getenv("OBCCL_TCP_BENCH") == nullptr) GTEST_SKIP() << "set OBCCL_TCP_BENCH=1 to run";
  auto envMiB = [](const char* name, size_t def) {
    const char* v = std::getenv(name);
    return (v ? std::strtoull(v, nullptr, 10) : def) << 20;
  };
  const size_t total = envMiB("OBCCL_TCP_BENCH_TOTAL_MIB", 1024);
  const size_t frame = envMiB("OBCCL_TCP_BENCH_FRAME_MIB", 64);
  const char* bufEnv = std::getenv("OBCCL_TCP_BENCH_SOCKBUF");
  int sockbuf = bufEnv ? std::atoi(bufEnv) : (4 << 20);
  const bool threads = std::getenv("OBCCL_TCP_BENCH_THREADS") != nullptr;
  Pair p = loopbackPair(sockbuf);
  std::vector<uint8_t> out = pattern(frame, 5), in(frame);
  // Waits for one request on one connection, as a rank does.
  auto wait = [](Connection* c, Request* r) {
    while (!r->done) {
      Status s = c->progress();
      if (!s.isOk()) return s;
      if (r->done) break;
      pollfd pf{c->pollFd(), c->pollEvents(), 0};
      ::poll(&pf, 1, 100);
    }
    return r->status;
  };
  auto start = std::chrono::steady_clock::now();
  if (threads) {
    // One thread per end, like two ranks.
    std::thread rx([&] {
      for (size_t got = 0; got < total; got += frame) {
        Request r;
        ASSERT_TRUE(p.b->postRecv(in.data(), in.size(), &r).isOk());
        ASSERT_TRUE(wait(p.b.get(), &r).isOk());
      }
    });
    for (size_t sent = 0; sent < total; sent += frame) {
      Request s;
      ASSERT_TRUE(p.a->postSend(header(sent / frame, frame), out.data(), &s).isOk());
      ASSERT_TRUE(wait(p.a.get(), &s).isOk());
    }
    rx.join();
  } else {
    for (size_t sent = 0; sent < total; sent += frame) {
      Request s, r;
      ASSERT_TRUE(p.a->postSend(header(sent / frame, frame), out.data(), &s).isOk());
      ASSERT_TRUE(p.b->postRecv(in.data(), in.size(), &r).isOk());
      ASSERT_TRUE(drive(p.a.get(), p.b.get(), {&s, &r}, 60000).isOk());
    }
  }
  double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_TRUE(in == out);
  std::printf("loopback tcp (%s): %zu MiB in %zu MiB frames, sockbuf %d: %.3f s, %.2f GB/s\n",
              threads ? "2 threads" : "1 thread", total >> 20, frame >> 20, sockbuf, sec,
              total / sec / 1e9);
}

}  // namespace
}  // namespace obccl::transport
