// The UCX transport between threads of this process: FIFO order, large exchanges, capacity
// enforcement, wake-up through the poll fd, counters. Run over UCX_TLS=tcp and UCX's defaults.
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdio>

#include "unit/test_ucx_harness.h"

namespace obccl::transport::ucxtest {
namespace {

struct Param {
  const char* tls;  // nullptr: UCX's defaults
  int ranks;
};

std::string paramName(const testing::TestParamInfo<Param>& info) {
  return std::string(info.param.tls ? info.param.tls : "default") + "_" +
         std::to_string(info.param.ranks) + "ranks";
}

class UcxTransportTest : public testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    const Param& p = GetParam();
    env_ = std::make_unique<ScopedEnv>("UCX_TLS",
                                       p.tls ? std::optional<std::string>(p.tls) : std::nullopt);
    std::string why = ucxUnavailableReason();
    if (!why.empty()) GTEST_SKIP() << "UCX cannot start here: " << why;
  }

  std::vector<Rank> connect() {
    std::vector<Rank> ranks = connectMesh(GetParam().ranks);
    for (size_t r = 0; r < ranks.size(); ++r) {
      EXPECT_TRUE(ranks[r].status.isOk()) << "rank " << r << ": " << ranks[r].status.message();
    }
    return ranks;
  }

  std::unique_ptr<ScopedEnv> env_;
};

constexpr size_t kMaxFrame = 1 << 20;
const std::vector<size_t> kSizes = {0,    1,     7,     63,    64,    1000,   8185,
                                    8186, 20000, 20553, 20554, 65536, 262145, kMaxFrame};

// One direction pair of a FIFO check: frames to `peer` and from it, a window in flight each way.
class Stream {
 public:
  static constexpr size_t kWindow = 8;
  Stream(Connection* c, int self, int peer, uint64_t frames)
      : c_(c), self_(self), peer_(peer), frames_(frames) {
    for (auto& b : rbuf_) b.resize(kMaxFrame);
  }
  bool finished() const { return sendDone_ == frames_ && recvDone_ == frames_; }

  // Reaps finished requests in order and posts more; sets *changed when anything moved.
  Status step(bool* changed) {
    while (sendDone_ < sendPosted_ && sreq_[sendDone_ % kWindow].done) {
      OBCCL_TRY(sreq_[sendDone_ % kWindow].status);
      ++sendDone_;
      *changed = true;
    }
    while (recvDone_ < recvPosted_ && rreq_[recvDone_ % kWindow].done) {
      OBCCL_TRY(verify(rreq_[recvDone_ % kWindow], rbuf_[recvDone_ % kWindow], recvDone_));
      ++recvDone_;
      *changed = true;
    }
    while (sendPosted_ < frames_ && sendPosted_ - sendDone_ < kWindow) {
      size_t slot = sendPosted_ % kWindow;
      size_t len = kSizes[sendPosted_ % kSizes.size()];
      sbuf_[slot].resize(len);
      fillPattern(sbuf_[slot].data(), len, self_, peer_, sendPosted_);
      OBCCL_TRY(c_->postSend(makeHeader(sendPosted_, len), sbuf_[slot].data(), &sreq_[slot]));
      ++sendPosted_;
      *changed = true;
    }
    while (recvPosted_ < frames_ && recvPosted_ - recvDone_ < kWindow) {
      size_t slot = recvPosted_ % kWindow;
      OBCCL_TRY(c_->postRecv(rbuf_[slot].data(), kMaxFrame, &rreq_[slot]));
      ++recvPosted_;
      *changed = true;
    }
    return Status::ok();
  }

 private:
  Status verify(const Request& req, const std::vector<uint8_t>& buf, uint64_t i) const {
    OBCCL_TRY(req.status);
    size_t len = kSizes[i % kSizes.size()];
    std::string what = "frame " + std::to_string(i) + " from rank " + std::to_string(peer_);
    if (req.header.seq != i) return internalError(what + " arrived out of order");
    if (req.bytes != len || req.header.length != len) return internalError(what + ": bad length");
    if (!checkPattern(buf.data(), len, peer_, self_, i)) return internalError(what + ": bad bytes");
    return Status::ok();
  }

  Connection* c_;
  int self_, peer_;
  uint64_t frames_;
  uint64_t sendPosted_ = 0, sendDone_ = 0, recvPosted_ = 0, recvDone_ = 0;
  std::array<Request, kWindow> sreq_, rreq_;
  std::array<std::vector<uint8_t>, kWindow> sbuf_, rbuf_;
};

// Runs one rank's streams to completion, sleeping in poll() whenever a progress pass moved
// nothing, so a wake-up that UCX failed to signal shows up as a timeout.
Status runStreams(std::vector<std::unique_ptr<Stream>>& streams,
                  const std::vector<Connection*>& conns, const Deadline& deadline) {
  for (;;) {
    bool changed = false;
    bool finished = true;
    for (auto& s : streams) {
      OBCCL_TRY(s->step(&changed));
      finished = finished && s->finished();
    }
    if (finished) return Status::ok();
    for (Connection* c : conns) OBCCL_TRY(c->progress());
    for (auto& s : streams) OBCCL_TRY(s->step(&changed));
    if (changed) continue;
    if (deadline.expired()) return timeoutError("streams still running at the deadline");
    std::vector<pollfd> fds;
    for (Connection* c : conns) fds.push_back({c->pollFd(), c->pollEvents(), 0});
    poll(fds.data(), fds.size(), deadline.remainingMs(5000));
  }
}

TEST_P(UcxTransportTest, FifoOrderOfManyMixedFrames) {
  std::vector<Rank> ranks = connect();
  ASSERT_FALSE(HasFailure());
  const int n = GetParam().ranks;
  const uint64_t frames = 3 * kSizes.size() + 5;
  std::vector<Status> results(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      std::vector<std::unique_ptr<Stream>> streams;
      std::vector<Connection*> conns;
      for (int p = 0; p < n; ++p) {
        if (p == r) continue;
        Connection* c = ranks[static_cast<size_t>(r)].conns[static_cast<size_t>(p)].get();
        conns.push_back(c);
        streams.push_back(std::make_unique<Stream>(c, r, p, frames));
      }
      results[static_cast<size_t>(r)] = runStreams(streams, conns, Deadline::afterMs(60000));
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < n; ++r) {
    EXPECT_TRUE(results[static_cast<size_t>(r)].isOk())
        << "rank " << r << ": " << results[static_cast<size_t>(r)].message();
  }
}

TEST_P(UcxTransportTest, Exchange64MiBBothWays) {
  std::vector<Rank> ranks = connect();
  ASSERT_FALSE(HasFailure());
  const int n = GetParam().ranks;
  constexpr size_t kBytes = 64u << 20;
  std::vector<Status> results(static_cast<size_t>(n));
  std::vector<double> seconds(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      int peer = r ^ 1;  // pairs (0,1), (2,3)
      Connection* c = ranks[static_cast<size_t>(r)].conns[static_cast<size_t>(peer)].get();
      std::vector<uint8_t> out(kBytes), in(kBytes);
      fillPattern(out.data(), kBytes, r, peer, 0);
      Request sreq, rreq;
      auto start = std::chrono::steady_clock::now();
      Status s = c->postRecv(in.data(), in.size(), &rreq);
      if (s.isOk()) s = c->postSend(makeHeader(0, kBytes), out.data(), &sreq);
      if (s.isOk()) s = waitRequests({c}, {&sreq, &rreq}, Deadline::afterMs(60000));
      seconds[static_cast<size_t>(r)] =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (s.isOk()) s = sreq.status.isOk() ? rreq.status : sreq.status;
      if (s.isOk() && (rreq.bytes != kBytes || !checkPattern(in.data(), kBytes, peer, r, 0))) {
        s = internalError("64 MiB payload from rank " + std::to_string(peer) + " is wrong");
      }
      results[static_cast<size_t>(r)] = s;
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < n; ++r) {
    EXPECT_TRUE(results[static_cast<size_t>(r)].isOk())
        << "rank " << r << ": " << results[static_cast<size_t>(r)].message();
  }
  std::printf("64 MiB each way, %d ranks, first use: %.3f s (%.2f GB/s per direction)\n", n,
              seconds[0], kBytes / seconds[0] / 1e9);
}

TEST_P(UcxTransportTest, OversizePayloadIsInvalidUsageAndStreamStaysInStep) {
  std::vector<Rank> ranks = connect();
  ASSERT_FALSE(HasFailure());
  Connection* a = ranks[0].conns[1].get();
  Connection* b = ranks[1].conns[0].get();
  const std::vector<size_t> sent = {1000, 1 << 20, 100, 0, 5000};
  const std::vector<size_t> capacity = {100, 4096, 100, 0, 5000};
  std::vector<std::vector<uint8_t>> out(sent.size()), in(sent.size());
  std::vector<Request> sreq(sent.size()), rreq(sent.size());
  std::vector<Request*> all;
  for (size_t i = 0; i < sent.size(); ++i) {
    out[i].resize(sent[i]);
    fillPattern(out[i].data(), sent[i], 0, 1, i);
    in[i].resize(capacity[i]);
    ASSERT_TRUE(a->postSend(makeHeader(i, sent[i], 3), out[i].data(), &sreq[i]).isOk());
    ASSERT_TRUE(b->postRecv(capacity[i] ? in[i].data() : nullptr, capacity[i], &rreq[i]).isOk());
    all.push_back(&sreq[i]);
    all.push_back(&rreq[i]);
  }
  Status s = waitRequests({a, b}, all, Deadline::afterMs(20000));
  ASSERT_TRUE(s.isOk()) << s.message();
  for (size_t i = 0; i < sent.size(); ++i) {
    EXPECT_TRUE(sreq[i].status.isOk()) << "send " << i << ": " << sreq[i].status.message();
    if (sent[i] > capacity[i]) {
      EXPECT_EQ(rreq[i].status.code(), obcclInvalidUsage) << "frame " << i;
      EXPECT_NE(rreq[i].status.message().find(std::to_string(sent[i])), std::string::npos)
          << rreq[i].status.message();
      EXPECT_EQ(rreq[i].header.length, sent[i]);  // the caller learns what was announced
    } else {
      ASSERT_TRUE(rreq[i].status.isOk()) << "frame " << i << ": " << rreq[i].status.message();
      EXPECT_EQ(rreq[i].bytes, sent[i]);
      EXPECT_EQ(rreq[i].header.seq, i);
      EXPECT_TRUE(checkPattern(in[i].data(), sent[i], 0, 1, i)) << "frame " << i;
    }
  }
  // The mismatch failed only its own request; the connection is still healthy.
  EXPECT_TRUE(a->progress().isOk());
  EXPECT_TRUE(b->progress().isOk());
}

TEST_P(UcxTransportTest, HeadersAndCountersRoundTrip) {
  std::vector<Rank> ranks = connect();
  ASSERT_FALSE(HasFailure());
  Connection* a = ranks[0].conns[1].get();
  Connection* b = ranks[1].conns[0].get();
  EXPECT_EQ(a->describe().rfind("ucx to rank 1", 0), 0u) << a->describe();
  EXPECT_GE(a->pollFd(), 0);
  EXPECT_EQ(a->pollEvents(), POLLIN);
  uint64_t sent0 = a->bytesSent(), recv0 = b->bytesReceived();
  FrameHeader h = makeHeader(42, 3000, 9);
  h.root = 2;
  h.datatype = 5;
  h.redop = 1;
  h.flags = kFlagChecksum;
  h.crc = 0xabcdef01u;
  sealHeader(&h);
  std::vector<uint8_t> out(3000, 0x5a), in(4000);
  Request sreq, rreq;
  ASSERT_TRUE(b->postRecv(in.data(), in.size(), &rreq).isOk());
  ASSERT_TRUE(a->postSend(h, out.data(), &sreq).isOk());
  EXPECT_TRUE(a->busy());
  EXPECT_TRUE(b->busy());
  Status s = waitRequests({a, b}, {&sreq, &rreq}, Deadline::afterMs(20000));
  ASSERT_TRUE(s.isOk()) << s.message();
  ASSERT_TRUE(rreq.status.isOk()) << rreq.status.message();
  // Every field up to headerCrc; the 4 tail bytes are padding.
  size_t fields = offsetof(FrameHeader, headerCrc) + sizeof(h.headerCrc);
  EXPECT_EQ(std::memcmp(&rreq.header, &h, fields), 0);
  EXPECT_EQ(rreq.bytes, 3000u);
  EXPECT_EQ(a->bytesSent() - sent0, sizeof(FrameHeader) + 3000);
  EXPECT_EQ(b->bytesReceived() - recv0, sizeof(FrameHeader) + 3000);
  EXPECT_FALSE(a->busy());
  EXPECT_FALSE(b->busy());
}

// A rank that sleeps in poll() on pollFd() is woken by the peer's send; it never has to spin.
TEST_P(UcxTransportTest, PollFdWakesASleepingReceiver) {
  std::vector<Rank> ranks = connect();
  ASSERT_FALSE(HasFailure());
  Connection* a = ranks[0].conns[1].get();
  Connection* b = ranks[1].conns[0].get();
  for (size_t len : {size_t{16}, size_t{4} << 20}) {
    std::vector<uint8_t> out(len, 0x33), in(len);
    Request sreq, rreq;
    ASSERT_TRUE(b->postRecv(in.data(), in.size(), &rreq).isOk());
    ASSERT_TRUE(b->progress().isOk());
    std::thread sender([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      Status s = a->postSend(makeHeader(0, len), out.data(), &sreq);
      if (s.isOk()) s = waitRequests({a}, {&sreq}, Deadline::afterMs(20000));
      EXPECT_TRUE(s.isOk()) << s.message();
    });
    // Each poll may sleep 10 s; only a correctly armed fd finishes well inside the deadline.
    auto start = std::chrono::steady_clock::now();
    Status s = Status::ok();
    while (s.isOk() && !rreq.done) {
      pollfd pfd{b->pollFd(), b->pollEvents(), 0};
      poll(&pfd, 1, 10000);
      s = b->progress();
    }
    double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    sender.join();
    ASSERT_TRUE(s.isOk()) << s.message();
    EXPECT_TRUE(rreq.status.isOk()) << rreq.status.message();
    EXPECT_LT(waited, 5.0) << len << "-byte frame: the poll fd did not wake the receiver";
  }
}

class UcxConnectTest : public testing::Test {
 protected:
  void SetUp() override {
    std::string why = ucxUnavailableReason();
    if (!why.empty()) GTEST_SKIP() << "UCX cannot start here: " << why;
  }
};

TEST_F(UcxConnectTest, PartialPeerSetsAndRepeatedConnects) {
  // Ranks 0 and 1 are UCX peers; rank 2 has none (it takes part in the allgathers only). A
  // second connect() on the same transports gets fresh, independent connections.
  auto peersOf = [](int r) { return r == 2 ? std::vector<int>{} : std::vector<int>{1 - r}; };
  std::vector<Rank> first = connectMesh(
      3, 20000, [](int) { return testSecret(); }, peersOf);
  for (auto& r : first) ASSERT_TRUE(r.status.isOk()) << r.status.message();
  EXPECT_EQ(first[2].conns[0], nullptr);
  std::vector<uint8_t> out(100, 9), in(100);
  Request s, r;
  ASSERT_TRUE(first[0].conns[1]->postSend(makeHeader(0, 100), out.data(), &s).isOk());
  ASSERT_TRUE(first[1].conns[0]->postRecv(in.data(), in.size(), &r).isOk());
  Status st = waitRequests({first[0].conns[1].get(), first[1].conns[0].get()}, {&s, &r},
                           Deadline::afterMs(10000));
  ASSERT_TRUE(st.isOk()) << st.message();
  EXPECT_EQ(in, out);

  // Connect again on the same transports (same worker, new tag keys): now a full mesh.
  ThreadAllgather ag(3);
  std::vector<std::vector<std::unique_ptr<Connection>>> second(3);
  std::vector<Status> status(3);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 3; ++rank) {
    threads.emplace_back([&, rank] {
      status[rank] = first[rank].transport->connect(makeContext(rank, 3, &ag, testSecret()),
                                                    allPeers(rank, 3), &second[rank]);
    });
  }
  for (auto& t : threads) t.join();
  for (auto& x : status) ASSERT_TRUE(x.isOk()) << x.message();
  // Frames on the new 0->1 connection do not match receives on the old one, and vice versa.
  Request oldRecv, newRecv, newSend;
  std::vector<uint8_t> in2(100);
  ASSERT_TRUE(first[1].conns[0]->postRecv(in.data(), in.size(), &oldRecv).isOk());
  ASSERT_TRUE(second[1][0]->postRecv(in2.data(), in2.size(), &newRecv).isOk());
  ASSERT_TRUE(second[0][0]->postSend(makeHeader(1, 100), out.data(), &newSend).isOk());
  st = waitRequests({second[0][0].get(), second[1][0].get(), first[1].conns[0].get()},
                    {&newSend, &newRecv}, Deadline::afterMs(10000));
  ASSERT_TRUE(st.isOk()) << st.message();
  EXPECT_EQ(newRecv.header.seq, 1u);
  EXPECT_FALSE(oldRecv.done);
}

TEST_F(UcxConnectTest, AsymmetricPeerSetsFailFast) {
  auto peersOf = [](int r) { return r == 0 ? std::vector<int>{1} : std::vector<int>{}; };
  auto start = std::chrono::steady_clock::now();
  std::vector<Rank> ranks = connectMesh(
      2, 20000, [](int) { return testSecret(); }, peersOf);
  EXPECT_EQ(ranks[0].status.code(), obcclRemoteError) << ranks[0].status.message();
  EXPECT_NE(ranks[0].status.message().find("rank 1"), std::string::npos);
  EXPECT_TRUE(ranks[1].status.isOk());
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5);
}

// A small frame posted after a large one never completes before it, in either direction.
TEST_F(UcxConnectTest, RequestsCompleteInPostingOrder) {
  std::vector<Rank> ranks = connectMesh(2);
  for (auto& r : ranks) ASSERT_TRUE(r.status.isOk()) << r.status.message();
  Connection* a = ranks[0].conns[1].get();
  Connection* b = ranks[1].conns[0].get();
  std::vector<uint8_t> big(8 << 20, 1), small(16, 2), bigIn(big.size()), smallIn(16);
  Request sendBig, sendSmall, recvBig, recvSmall;
  ASSERT_TRUE(a->postSend(makeHeader(0, big.size()), big.data(), &sendBig).isOk());
  ASSERT_TRUE(a->postSend(makeHeader(1, small.size()), small.data(), &sendSmall).isOk());
  // Only the sender progresses: the small eager send is done inside UCX, the large one waits.
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
  while (std::chrono::steady_clock::now() < until) ASSERT_TRUE(a->progress().isOk());
  EXPECT_FALSE(sendBig.done);
  EXPECT_FALSE(sendSmall.done) << "completed ahead of the frame posted before it";
  ASSERT_TRUE(b->postRecv(bigIn.data(), bigIn.size(), &recvBig).isOk());
  ASSERT_TRUE(b->postRecv(smallIn.data(), smallIn.size(), &recvSmall).isOk());
  Deadline deadline = Deadline::afterMs(20000);
  while (!(sendSmall.done && recvSmall.done) && !deadline.expired()) {
    ASSERT_TRUE(a->progress().isOk());
    ASSERT_TRUE(b->progress().isOk());
    ASSERT_FALSE(sendSmall.done && !sendBig.done);
    ASSERT_FALSE(recvSmall.done && !recvBig.done);
  }
  EXPECT_TRUE(recvBig.status.isOk() && recvSmall.status.isOk());
  EXPECT_EQ(recvSmall.header.seq, 1u);
}

TEST_F(UcxConnectTest, RejectsBadPeers) {
  ThreadAllgather ag(1);
  auto transport = makeUcxTransport();
  std::vector<std::unique_ptr<Connection>> out;
  for (std::vector<int> peers : {std::vector<int>{0}, {3}, {-1}}) {
    Status s = transport->connect(makeContext(0, 2, &ag, testSecret()), peers, &out);
    EXPECT_EQ(s.code(), obcclInvalidArgument) << s.message();
  }
  EXPECT_FALSE(transport->canConnect(makeContext(0, 2, &ag, testSecret()), 0));
  EXPECT_TRUE(transport->canConnect(makeContext(0, 2, &ag, testSecret()), 1));
  EXPECT_STREQ(transport->name(), "ucx");
}

INSTANTIATE_TEST_SUITE_P(Ucx, UcxTransportTest,
                         testing::Values(Param{"tcp", 2}, Param{"tcp", 4}, Param{nullptr, 2},
                                         Param{nullptr, 4}),
                         paramName);

}  // namespace
}  // namespace obccl::transport::ucxtest
