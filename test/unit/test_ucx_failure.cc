// Peers that leave: a closed connection or a destroyed worker fails what can no longer complete
// within 2 s, never hangs, and never fails a rank that only drains what was already sent.
// Also: a rank with the wrong secret cannot connect, and a stranger cannot inject frames.
#include <gtest/gtest.h>

#include <chrono>

#include "transports/ucx/ucx_tags.h"
#include "unit/test_ucx_harness.h"

namespace obccl::transport::ucxtest {
namespace {

using Clock = std::chrono::steady_clock;

class UcxFailureTest : public testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    env_ = std::make_unique<ScopedEnv>(
        "UCX_TLS", GetParam() ? std::optional<std::string>(GetParam()) : std::nullopt);
    std::string why = ucxUnavailableReason();
    if (!why.empty()) GTEST_SKIP() << "UCX cannot start here: " << why;
    ranks_ = connectMesh(2);
    for (auto& r : ranks_) ASSERT_TRUE(r.status.isOk()) << r.status.message();
  }
  Connection* conn(int from, int to) {
    return ranks_[static_cast<size_t>(from)].conns[static_cast<size_t>(to)].get();
  }

  // Progresses c (sleeping on its fd) until progress() fails; returns that failure and how long
  // it took, or a timeout after 5 s.
  static Status waitForFailure(Connection* c, double* seconds) {
    auto start = Clock::now();
    Deadline deadline = Deadline::afterMs(5000);
    for (;;) {
      Status s = c->progress();
      *seconds = std::chrono::duration<double>(Clock::now() - start).count();
      if (!s.isOk()) return s;
      if (deadline.expired()) return Status::ok();
      pollfd pfd{c->pollFd(), c->pollEvents(), 0};
      poll(&pfd, 1, 100);
    }
  }

  std::unique_ptr<ScopedEnv> env_;
  std::vector<Rank> ranks_;
};

TEST_P(UcxFailureTest, ClosedConnectionFailsAWaitingReceiverWithin2s) {
  std::vector<uint8_t> buf(1 << 20);
  Request rreq;
  ASSERT_TRUE(conn(1, 0)->postRecv(buf.data(), buf.size(), &rreq).isOk());
  ASSERT_TRUE(conn(1, 0)->progress().isOk());
  auto start = Clock::now();
  ranks_[0].conns[1].reset();
  double closeSeconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_LT(closeSeconds, 0.5) << "closing must not wait for the peer";
  double seconds = 0;
  Status s = waitForFailure(conn(1, 0), &seconds);
  EXPECT_EQ(s.code(), obcclRemoteError) << s.message();
  EXPECT_NE(s.message().find("rank 0"), std::string::npos) << s.message();
  EXPECT_LT(seconds, 2.0);
  EXPECT_TRUE(rreq.done);
  EXPECT_EQ(rreq.status.code(), obcclRemoteError);
  EXPECT_FALSE(conn(1, 0)->postRecv(buf.data(), buf.size(), &rreq).isOk()) << "failure is sticky";
}

TEST_P(UcxFailureTest, DestroyedTransportFailsAWaitingReceiverWithin2s) {
  std::vector<uint8_t> buf(64);
  Request rreq;
  ASSERT_TRUE(conn(1, 0)->postRecv(buf.data(), buf.size(), &rreq).isOk());
  ASSERT_TRUE(conn(1, 0)->progress().isOk());
  ranks_[0].conns.clear();
  ranks_[0].transport.reset();  // the last owner: the worker goes too
  double seconds = 0;
  Status s = waitForFailure(conn(1, 0), &seconds);
  EXPECT_EQ(s.code(), obcclRemoteError) << s.message();
  EXPECT_NE(s.message().find("rank 0"), std::string::npos) << s.message();
  EXPECT_LT(seconds, 2.0);
}

TEST_P(UcxFailureTest, ReceiverDrainsWhatAClosedPeerSentBeforeFailing) {
  // Rank 0 sends three frames and leaves; rank 1, idle meanwhile, must not fail until it asks
  // for a fourth.
  std::vector<std::vector<uint8_t>> out(3, std::vector<uint8_t>(500));
  std::vector<Request> sreq(3);
  for (size_t i = 0; i < 3; ++i) {
    fillPattern(out[i].data(), out[i].size(), 0, 1, i);
    ASSERT_TRUE(conn(0, 1)->postSend(makeHeader(i, 500), out[i].data(), &sreq[i]).isOk());
  }
  Status s = waitRequests({conn(0, 1)}, {&sreq[0], &sreq[1], &sreq[2]}, Deadline::afterMs(5000));
  ASSERT_TRUE(s.isOk()) << s.message();
  ranks_[0].conns[1].reset();
  ranks_[0].transport.reset();
  ranks_[0].conns.clear();  // worker destroyed: the goodbye is followed by the socket closing
  auto until = Clock::now() + std::chrono::milliseconds(300);
  while (Clock::now() < until) ASSERT_TRUE(conn(1, 0)->progress().isOk()) << "idle: no failure";
  std::vector<uint8_t> in(500);
  for (uint64_t i = 0; i < 3; ++i) {
    Request rreq;
    ASSERT_TRUE(conn(1, 0)->postRecv(in.data(), in.size(), &rreq).isOk());
    s = waitRequests({conn(1, 0)}, {&rreq}, Deadline::afterMs(5000));
    ASSERT_TRUE(s.isOk()) << "frame " << i << ": " << s.message();
    ASSERT_TRUE(rreq.status.isOk()) << rreq.status.message();
    EXPECT_TRUE(checkPattern(in.data(), in.size(), 0, 1, i));
  }
  Request rreq;
  ASSERT_TRUE(conn(1, 0)->postRecv(in.data(), in.size(), &rreq).isOk());
  double seconds = 0;
  s = waitForFailure(conn(1, 0), &seconds);
  EXPECT_EQ(s.code(), obcclRemoteError) << s.message();
  EXPECT_NE(s.message().find("after sending 3 frames"), std::string::npos) << s.message();
  EXPECT_LT(seconds, 2.0);
}

TEST_P(UcxFailureTest, SendToAClosedPeerFails) {
  ranks_[0].conns[1].reset();
  std::vector<uint8_t> out(1 << 20, 1);
  Request sreq;
  // Let the goodbye arrive first; then a large (rendezvous) send can never complete.
  auto until = Clock::now() + std::chrono::milliseconds(200);
  while (Clock::now() < until) ASSERT_TRUE(conn(1, 0)->progress().isOk());
  ASSERT_TRUE(conn(1, 0)->postSend(makeHeader(0, out.size()), out.data(), &sreq).isOk());
  double seconds = 0;
  Status s = waitForFailure(conn(1, 0), &seconds);
  EXPECT_EQ(s.code(), obcclRemoteError) << s.message();
  EXPECT_LT(seconds, 2.0);
  // The send request completes (with the failure) before anyone may reuse its buffer.
  for (int i = 0; i < 100 && !sreq.done; ++i) {
    (void)conn(1, 0)->progress();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(sreq.done);
  EXPECT_FALSE(sreq.status.isOk());
}

TEST_P(UcxFailureTest, ClosingWithPendingRequestsIsBounded) {
  // Rank 0 leaves in the middle of an exchange that rank 1 never serves, as an aborting
  // communicator does. Neither the close nor rank 1's detection may hang.
  std::vector<uint8_t> in(1 << 20), out(8 << 20, 2);
  Request rreq, sreq;
  ASSERT_TRUE(conn(0, 1)->postRecv(in.data(), in.size(), &rreq).isOk());
  ASSERT_TRUE(conn(0, 1)->postSend(makeHeader(0, out.size()), out.data(), &sreq).isOk());
  ASSERT_TRUE(conn(0, 1)->progress().isOk());
  Request late;
  ASSERT_TRUE(conn(1, 0)->postRecv(in.data(), 64, &late).isOk());
  auto start = Clock::now();
  ranks_[0].conns.clear();
  ranks_[0].transport.reset();
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 1.5);
  double seconds = 0;
  Status s = waitForFailure(conn(1, 0), &seconds);
  EXPECT_EQ(s.code(), obcclRemoteError) << s.message();
  EXPECT_LT(seconds, 2.0);
}

TEST_P(UcxFailureTest, GoodbyeReachesAProgressingPeerDespitePendingSends) {
  std::vector<uint8_t> out(8 << 20, 2), in(out.size());
  Request sreq;
  ASSERT_TRUE(conn(0, 1)->postSend(makeHeader(0, out.size()), out.data(), &sreq).isOk());
  ASSERT_TRUE(conn(0, 1)->progress().isOk());
  Status s;
  double seconds = 0;
  std::thread peer([&] {
    // Idle while rank 0 leaves (its send unserved), then ask for the frame it never finished.
    auto until = Clock::now() + std::chrono::milliseconds(400);
    while (Clock::now() < until) {
      s = conn(1, 0)->progress();
      if (!s.isOk()) return;
    }
    Request late;
    s = conn(1, 0)->postRecv(in.data(), in.size(), &late);
    if (s.isOk()) s = waitForFailure(conn(1, 0), &seconds);
  });
  ranks_[0].conns[1].reset();  // the worker stays: only the goodbye can tell rank 1
  peer.join();
  EXPECT_EQ(s.code(), obcclRemoteError) << s.message();
  EXPECT_NE(s.message().find("after sending 0 frames"), std::string::npos) << s.message();
  EXPECT_LT(seconds, 2.0);
}

INSTANTIATE_TEST_SUITE_P(Ucx, UcxFailureTest, testing::Values("tcp", nullptr),
                         [](const testing::TestParamInfo<const char*>& info) {
                           return std::string(info.param ? info.param : "default");
                         });

class UcxAuthTest : public testing::Test {
 protected:
  void SetUp() override {
    std::string why = ucxUnavailableReason();
    if (!why.empty()) GTEST_SKIP() << "UCX cannot start here: " << why;
  }
};

TEST_F(UcxAuthTest, WrongSecretCannotConnect) {
  std::vector<Rank> ranks = connectMesh(2, 1500, [](int r) { return testSecret(r == 1 ? 99 : 0); });
  for (auto& r : ranks) {
    EXPECT_EQ(r.status.code(), obcclTimeout) << r.status.message();
    EXPECT_NE(r.status.message().find("handshake"), std::string::npos) << r.status.message();
  }
}

// A stranger holding rank 1's worker address (which the bootstrap never gives it) but not the
// secret opens an endpoint and sprays tagged messages: none matches rank 1's receive.
TEST_F(UcxAuthTest, StrangerCannotInjectFrames) {
  // Capture the worker addresses as they pass through the allgather.
  std::vector<Rank> ranks(2);
  ThreadAllgather ag(2);
  std::vector<uint8_t> lens, addrs;
  std::mutex mu;
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      ConnectContext ctx = makeContext(r, 2, &ag, testSecret());
      int round = 0;
      ctx.allgather = [&, r, round](const std::vector<uint8_t>& mine,
                                    std::vector<uint8_t>* all) mutable {
        Status s = ag.run(r, mine, all);
        std::lock_guard<std::mutex> lock(mu);
        (round++ == 0 ? lens : addrs) = *all;
        return s;
      };
      ranks[static_cast<size_t>(r)].transport = makeUcxTransport();
      std::vector<std::unique_ptr<Connection>> out;
      ranks[static_cast<size_t>(r)].status =
          ranks[static_cast<size_t>(r)].transport->connect(ctx, {1 - r}, &out);
      ranks[static_cast<size_t>(r)].conns = std::move(out);
    });
  }
  for (auto& t : threads) t.join();
  for (auto& r : ranks) ASSERT_TRUE(r.status.isOk()) << r.status.message();
  Connection* a = ranks[0].conns[0].get();
  Connection* b = ranks[1].conns[0].get();
  uint64_t len1 = 0;
  std::memcpy(&len1, lens.data() + 8, 8);
  size_t stride = addrs.size() / 2;
  std::vector<uint8_t> target(addrs.begin() + static_cast<ptrdiff_t>(stride),
                              addrs.begin() + static_cast<ptrdiff_t>(stride + len1));

  auto context = ucx::UcxContext::create(1, false);
  ASSERT_TRUE(context.isOk());
  auto stranger = ucx::UcxWorker::create(context.value());
  ASSERT_TRUE(stranger.isOk());
  ucp_ep_params_t ep{};
  ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
  ep.address = reinterpret_cast<const ucp_address_t*>(target.data());
  ucp_ep_h handle = nullptr;
  ASSERT_EQ(ucp_ep_create(stranger.value()->get(), &ep, &handle), UCS_OK);

  std::vector<uint8_t> in(4096);
  Request rreq;
  ASSERT_TRUE(b->postRecv(in.data(), in.size(), &rreq).isOk());
  // Guesses: small tags, and tags keyed like the real ones but with a wrong secret.
  FrameHeader forged = makeHeader(0, 16);
  std::vector<uint8_t> junk(16, 0xee);
  std::vector<std::unique_ptr<ucx::UcxRequest>> sends;
  auto spray = [&](uint64_t tag) {
    for (const void* msg : {static_cast<const void*>(&forged), static_cast<const void*>(&junk)}) {
      sends.push_back(std::make_unique<ucx::UcxRequest>());
      sends.back()->send(handle, msg, msg == &forged ? sizeof(forged) : junk.size(), tag);
    }
  };
  for (uint64_t t = 0; t < 64; ++t) spray(t);
  ucx::TagKey wrong = ucx::deriveTagKey(testSecret(1), 0x5eed0000c0ffeeull, 0, 0, 1);
  for (uint64_t seq = 0; seq < 4; ++seq) {
    spray(ucx::makeTag(wrong, ucx::TagKind::kHeader, seq));
    spray(ucx::makeTag(wrong, ucx::TagKind::kPayload, seq));
  }
  auto until = Clock::now() + std::chrono::milliseconds(300);
  while (Clock::now() < until) {
    ucp_worker_progress(stranger.value()->get());
    ASSERT_TRUE(b->progress().isOk());
  }
  EXPECT_FALSE(rreq.done) << "a stranger's message matched a receive";
  // The real frame still arrives intact.
  std::vector<uint8_t> out(1000);
  fillPattern(out.data(), out.size(), 0, 1, 0);
  Request sreq;
  ASSERT_TRUE(a->postSend(makeHeader(0, out.size()), out.data(), &sreq).isOk());
  Status s = waitRequests({a, b}, {&sreq, &rreq}, Deadline::afterMs(5000));
  ASSERT_TRUE(s.isOk()) << s.message();
  ASSERT_TRUE(rreq.status.isOk()) << rreq.status.message();
  EXPECT_EQ(rreq.bytes, 1000u);
  EXPECT_TRUE(checkPattern(in.data(), 1000, 0, 1, 0));
  for (auto& r : sends) r->release();
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  param.flags = UCP_EP_CLOSE_FLAG_FORCE;
  ucs_status_ptr_t close = ucp_ep_close_nbx(handle, &param);
  if (UCS_PTR_IS_PTR(close)) ucp_request_free(close);
}

}  // namespace
}  // namespace obccl::transport::ucxtest
