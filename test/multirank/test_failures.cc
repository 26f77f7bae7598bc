// Failures across ranks: mismatched calls, a peer that never comes (timeout), abort from another
// thread, and non-blocking init. Every rank must return an error, never hang.
#include <chrono>
#include <cstring>

#include "multirank/harness.h"

namespace obccl_test {
namespace {

using Clock = std::chrono::steady_clock;

long long msSince(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
}

// A rank's call and what it returned, with the message of that thread.
struct Outcome {
  obcclResult_t rc;
  std::string message;
};

class Mismatch : public ::testing::TestWithParam<const char*> {
 protected:
  // Runs `call(rank)` on every rank of a 4-rank world and expects obcclInvalidUsage everywhere,
  // then an unusable communicator (obcclCommGetAsyncError reports the failure).
  void expectInvalidUsageEverywhere(int n,
                                    const std::function<obcclResult_t(int, obcclComm_t)>& call,
                                    const char* mention = nullptr) {
    OBCCL_MAKE_WORLD(w, n, GetParam());
    auto out = runRanks<Outcome>(
        n,
        [&](int r) {
          obcclResult_t rc = call(r, w[r]);
          return Outcome{rc, obcclGetLastError(nullptr)};
        },
        &w.comms, 30000);
    bool mentioned = mention == nullptr;
    for (int r = 0; r < n; ++r) {
      EXPECT_EQ(out[r].rc, obcclInvalidUsage) << "rank " << r << ": " << out[r].message;
      mentioned = mentioned || out[r].message.find(mention) != std::string::npos;
      obcclResult_t async = obcclSuccess;
      EXPECT_EQ(obcclCommGetAsyncError(w[r], &async), obcclSuccess);
      EXPECT_EQ(async, obcclInvalidUsage) << "rank " << r;
    }
    EXPECT_TRUE(mentioned) << "no rank's message mentions '" << mention << "'";
  }
};

TEST_P(Mismatch, DifferentCollective) {
  std::vector<std::vector<float>> v(4, std::vector<float>(48));
  expectInvalidUsageEverywhere(
      4,
      [&](int r, obcclComm_t c) {
        if (r == 1) return obcclAllGather(v[r].data(), v[r].data(), 10, obcclFloat32, c, nullptr);
        return obcclAllReduce(v[r].data(), v[r].data(), 12, obcclFloat32, obcclSum, c, nullptr);
      },
      "allgather(count=10, float32)");
}

TEST_P(Mismatch, DifferentCountLargerAndSmaller) {
  for (size_t delta : {size_t{1}, size_t{0}}) {
    const size_t base = 300000;  // ring path: many frames in flight
    std::vector<std::vector<float>> v(5, std::vector<float>(base + 1));
    expectInvalidUsageEverywhere(
        5,
        [&](int r, obcclComm_t c) {
          size_t count = r == 2 ? base + delta : base + 1 - delta;
          return obcclAllReduce(v[r].data(), v[r].data(), count, obcclFloat32, obcclSum, c,
                                nullptr);
        },
        "count=");
  }
}

TEST_P(Mismatch, DifferentDatatypeAndOp) {
  std::vector<std::vector<double>> v(3, std::vector<double>(100));
  expectInvalidUsageEverywhere(
      3,
      [&](int r, obcclComm_t c) {
        return obcclAllReduce(v[r].data(), v[r].data(), 50, r == 1 ? obcclInt64 : obcclFloat64,
                              obcclSum, c, nullptr);
      },
      "int64");
  expectInvalidUsageEverywhere(
      3,
      [&](int r, obcclComm_t c) {
        return obcclAllReduce(v[r].data(), v[r].data(), 50, obcclFloat64,
                              r == 1 ? obcclMax : obcclSum, c, nullptr);
      },
      "max");
}

// Ranks that disagree on the root may all finish the broadcast itself (no rank reads a frame of
// the other call: the "roots" only send); the stale frames then fail the next operation.
TEST_P(Mismatch, DifferentRootFailsByTheNextOperation) {
  std::vector<std::vector<double>> v(3, std::vector<double>(100));
  expectInvalidUsageEverywhere(
      3,
      [&](int r, obcclComm_t c) -> obcclResult_t {
        obcclResult_t rc =
            obcclBroadcast(v[r].data(), v[r].data(), 50, obcclFloat64, r == 1 ? 1 : 0, c, nullptr);
        if (rc != obcclSuccess) return rc;
        return obcclBarrier(c);
      },
      "root=");
}

TEST_P(Mismatch, OneRankRunsAheadByOneOperation) {
  std::vector<std::vector<float>> v(3, std::vector<float>(16));
  expectInvalidUsageEverywhere(3, [&](int r, obcclComm_t c) -> obcclResult_t {
    if (r == 0) {
      obcclResult_t rc = obcclBarrier(c);
      if (rc != obcclSuccess) return rc;
    }
    return obcclAllReduce(v[r].data(), v[r].data(), 16, obcclFloat32, obcclSum, c, nullptr);
  });
}

INSTANTIATE_TEST_SUITE_P(Transports, Mismatch, ::testing::Values("tcp", "shm", "ucx"));

TEST(Failures, AbsentPeerTimesOutNamingTheOperationAndPeer) {
  World w = makeWorld(2, "tcp", 400);
  ASSERT_TRUE(w.ok()) << w.error;
  float x[4] = {1, 2, 3, 4};
  auto t0 = Clock::now();
  obcclResult_t rc = obcclAllReduce(x, x, 4, obcclFloat32, obcclSum, w[0], nullptr);
  EXPECT_EQ(rc, obcclTimeout);
  std::string msg = obcclGetLastError(w[0]);
  EXPECT_NE(msg.find("allreduce #1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank 1"), std::string::npos) << msg;
  EXPECT_LT(msSince(t0), 5000);
}

TEST(Failures, AbortFromAnotherThreadEndsABlockedCallQuickly) {
  World w = makeWorld(2, "tcp", 60000);
  ASSERT_TRUE(w.ok()) << w.error;
  std::vector<float> v(1000, 1.f);
  obcclComm_t c0 = w.comms[0];
  // Rank 0 waits for rank 1, which does not call; another thread aborts rank 0.
  auto t0 = Clock::now();
  auto out = runRanks<Outcome>(2, [&](int r) -> Outcome {
    if (r == 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      auto a0 = Clock::now();
      obcclResult_t rc = obcclCommAbort(c0);
      return Outcome{rc, "abort took " + std::to_string(msSince(a0)) + " ms"};
    }
    obcclResult_t rc =
        obcclAllReduce(v.data(), v.data(), 1000, obcclFloat32, obcclSum, c0, nullptr);
    return Outcome{rc, obcclGetLastError(nullptr)};
  });
  w.comms[0] = nullptr;  // freed by the abort
  EXPECT_EQ(out[1].rc, obcclSuccess);
  EXPECT_NE(out[0].rc, obcclSuccess);
  EXPECT_NE(out[0].message.find("obcclCommAbort"), std::string::npos) << out[0].message;
  EXPECT_LT(msSince(t0), 3000) << out[1].message;
  // The aborted rank's connections are gone: rank 1 fails at once instead of timing out (its
  // first call may still complete with the frame rank 0 sent before the abort).
  t0 = Clock::now();
  obcclResult_t rc = obcclSuccess;
  for (int i = 0; i < 2 && rc == obcclSuccess; ++i)
    rc = obcclAllReduce(v.data(), v.data(), 1000, obcclFloat32, obcclSum, w[1], nullptr);
  EXPECT_EQ(rc, obcclRemoteError) << obcclGetLastError(w[1]);
  EXPECT_LT(msSince(t0), 3000);
}

TEST(Failures, NonBlockingInitReportsInProgressThenWorks) {
  const int n = 3;
  obcclUniqueId id;
  ASSERT_EQ(obcclGetUniqueId(&id), obcclSuccess);
  obcclConfig_t cfg = makeConfig("tcp", 20000);
  cfg.blocking = 0;
  World w;
  w.comms.assign(n, nullptr);
  // Rank 0 alone cannot finish: its calls report obcclInProgress meanwhile.
  obcclResult_t rc0 = obcclCommInitRankConfig(&w.comms[0], n, id, 0, &cfg);
  ASSERT_TRUE(rc0 == obcclInProgress || rc0 == obcclSuccess) << obcclGetLastError(nullptr);
  ASSERT_NE(w.comms[0], nullptr);
  float x = 1;
  EXPECT_EQ(obcclAllReduce(&x, &x, 1, obcclFloat32, obcclSum, w.comms[0], nullptr),
            obcclInProgress);
  obcclResult_t async = obcclSuccess;
  ASSERT_EQ(obcclCommGetAsyncError(w.comms[0], &async), obcclSuccess);
  EXPECT_EQ(async, obcclInProgress);
  for (int r = 1; r < n; ++r) {
    obcclResult_t rc = obcclCommInitRankConfig(&w.comms[r], n, id, r, &cfg);
    ASSERT_TRUE(rc == obcclInProgress || rc == obcclSuccess) << obcclGetLastError(nullptr);
  }
  auto t0 = Clock::now();
  for (int r = 0; r < n; ++r) {
    do {
      ASSERT_EQ(obcclCommGetAsyncError(w.comms[r], &async), obcclSuccess);
      if (async == obcclInProgress) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    } while (async == obcclInProgress && msSince(t0) < 20000);
    ASSERT_EQ(async, obcclSuccess) << "rank " << r << ": " << obcclGetLastError(w.comms[r]);
  }
  std::vector<float> v(n, 2.f);
  auto rcs = runRanks<obcclResult_t>(
      n,
      [&](int r) {
        return obcclAllReduce(&v[r], &v[r], 1, obcclFloat32, obcclSum, w.comms[r], nullptr);
      },
      &w.comms);
  for (int r = 0; r < n; ++r) EXPECT_EQ(rcs[r], obcclSuccess);
  EXPECT_EQ(v[2], 6.f);
}

TEST(Failures, AbortDuringNonBlockingInitIsQuick) {
  obcclUniqueId id;
  ASSERT_EQ(obcclGetUniqueId(&id), obcclSuccess);
  obcclConfig_t cfg = makeConfig("tcp", 60000);
  cfg.blocking = 0;
  obcclComm_t c = nullptr;
  obcclResult_t rc = obcclCommInitRankConfig(&c, 2, id, 0, &cfg);  // rank 1 never comes
  ASSERT_EQ(rc, obcclInProgress) << obcclGetLastError(nullptr);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto t0 = Clock::now();
  EXPECT_EQ(obcclCommAbort(c), obcclSuccess);
  EXPECT_LT(msSince(t0), 1000);  // the bootstrap connect sees the abort within ~100 ms
}

}  // namespace
}  // namespace obccl_test
