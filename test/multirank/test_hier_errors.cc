// Failures of the hierarchical compressed allreduce: non-finite input anywhere fails every rank
// with obcclInvalidArgument naming the culprit, and leaves every rank's error buffers (and
// recvbuff) unchanged, the communicator usable; values large enough to overflow the cross-host
// step take the checked path, which succeeds exactly or fails on every rank alike; forcing the
// hierarchy on hosts with different rank counts is obcclInvalidUsage.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "multirank/test_hier_harness.h"

namespace obccl_test {
namespace {

const HostLayout k2x2{"2x2", {0, 0, 1, 1}};  // hosts {0, 1} and {2, 3}; groups {0, 2}, {1, 3}
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

void setInput(CompressedBuffers* b, int r, size_t i, float v) {
  b->x[r][i] = v;
  std::memcpy(&b->send[r][4 * i], &v, 4);
}

// Runs one call expecting every rank to fail with `code` and a message containing `want`, and
// every buffer (inputs, outputs, error buffers) to be left exactly as it was.
void expectAllFailUnchanged(World& w, CompressedBuffers* b, obcclResult_t code,
                            const std::string& want) {
  const CompressedBuffers before = *b;
  std::vector<std::string> msgs;
  auto rcs = runCompressed(w, b, false, &msgs);
  for (int r = 0; r < w.size(); ++r) {
    EXPECT_EQ(rcs[r], code) << "rank " << r << ": " << msgs[r];
    EXPECT_NE(msgs[r].find(want), std::string::npos) << "rank " << r << ": " << msgs[r];
    // Bitwise: a NaN planted by the test must still be there.
    EXPECT_EQ(firstBitDifference(b->errors.worker[r], before.errors.worker[r]), -1)
        << "rank " << r << " worker error";
    EXPECT_EQ(firstBitDifference(b->errors.server[r], before.errors.server[r]), -1)
        << "rank " << r << " server error";
    EXPECT_EQ(b->recv[r], before.recv[r]) << "rank " << r << " recvbuff was written";
    EXPECT_EQ(b->send[r], before.send[r]) << "rank " << r << " sendbuff was written";
  }
}

// One good call, checked against the reference.
void expectGoodCall(World& w, CompressedBuffers* b, HierReference* ref, std::mt19937_64& rng,
                    float scale = 1.0f) {
  fillInputs(b, rng, scale);
  std::vector<float> want = ref->step(b->x);
  std::vector<std::string> msgs;
  auto rcs = runCompressed(w, b, false, &msgs);
  ASSERT_EQ(firstFailure(rcs, msgs), "");
  for (int r = 0; r < w.size(); ++r) {
    for (size_t i = 0; i < b->count; ++i)
      ASSERT_EQ(storedBitsAt(b->recv[r], i, obcclFloat32), onebitEncode(want[i], obcclFloat32))
          << "rank " << r << " element " << i;
    ASSERT_EQ(firstBitDifference(b->errors.worker[r], ref->worker(r)), -1) << "rank " << r;
    ASSERT_EQ(firstBitDifference(b->errors.server[r], ref->server(r)), -1) << "rank " << r;
  }
}

class HierErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    w_ = makeHierWorld(k2x2, HierOptions());
    ASSERT_TRUE(w_.ok()) << w_.error;
    b_ = makeBuffers(w_, obcclFloat32, kCount);
    ref_ = std::make_unique<HierReference>(k2x2, kCount, 0);
    ASSERT_EQ(b_.errors.worker[0].size(), ref_->shard());
    expectGoodCall(w_, &b_, ref_.get(), rng_);  // error buffers are no longer zero
  }

  // count 50 on 4 ranks: Np = 64, S = 32 (shard 1 holds 18 values and 14 of padding), c = 16.
  static constexpr size_t kCount = 50;
  World w_;
  CompressedBuffers b_;
  std::unique_ptr<HierReference> ref_;
  std::mt19937_64 rng_{0x5eed};
};

TEST_F(HierErrors, NaNInOneRanksInputFailsEveryRank) {
  fillInputs(&b_, rng_);
  setInput(&b_, 1, 3, kNaN);  // shard 0: reduced by rank 0, compressed by group {0, 2}
  expectAllFailUnchanged(w_, &b_, obcclInvalidArgument, "sendbuff holds NaN or Inf on rank(s) 1");
  expectGoodCall(w_, &b_, ref_.get(), rng_);  // usable, and the failed call changed nothing
}

TEST_F(HierErrors, InfInTheWorkerErrorsPaddingFailsEveryRank) {
  fillInputs(&b_, rng_);
  b_.errors.worker[3][31] = kInf;  // rank 3 holds shard 1, whose element 31 is padding
  expectAllFailUnchanged(w_, &b_, obcclInvalidArgument,
                         "workerError holds NaN or Inf on rank(s) 3");
}

TEST_F(HierErrors, NaNInOneServerErrorFailsEveryRank) {
  fillInputs(&b_, rng_);
  b_.errors.server[1][5] = kNaN;
  expectAllFailUnchanged(w_, &b_, obcclInvalidArgument,
                         "serverError holds NaN or Inf on rank(s) 1");
}

TEST_F(HierErrors, OverflowingHostSumFailsEveryRank) {
  fillInputs(&b_, rng_);
  setInput(&b_, 2, 40, 3e38f);  // finite inputs whose sum on host {2, 3} is not
  setInput(&b_, 3, 40, 3e38f);
  expectAllFailUnchanged(w_, &b_, obcclInvalidArgument, "overflowed in the shard on rank(s) 3");
  expectGoodCall(w_, &b_, ref_.get(), rng_);
}

// |v + e| above 2^64 takes the checked path; it must still give the exact result.
TEST_F(HierErrors, LargeValuesTakeTheCheckedPathAndMatch) {
  expectGoodCall(w_, &b_, ref_.get(), rng_, 1e30f);
  expectGoodCall(w_, &b_, ref_.get(), rng_, 1.0f);
}

// Group {0, 2} (shard 0) overflows in its server step while group {1, 3} succeeds: every rank
// must fail, and ranks 1 and 3 must get their error buffers back.
TEST_F(HierErrors, OverflowInOneHostGroupFailsEveryRank) {
  fillInputs(&b_, rng_);
  for (int r = 0; r < 4; ++r)
    for (size_t i = 0; i < 32; ++i) setInput(&b_, r, i, 1e38f);  // host averages 1e38
  b_.errors.server[0][0] = 3e38f;  // z = 1e38 + 3e38 overflows on rank 0's server chunk
  expectAllFailUnchanged(w_, &b_, obcclInvalidArgument,
                         "overflowed fp32 in the cross-host step of local rank(s) 0");
  // Still usable: a call with sane values succeeds everywhere, identically.
  b_.errors.server[0][0] = 0.0f;
  fillInputs(&b_, rng_);
  std::vector<std::string> msgs;
  auto rcs = runCompressed(w_, &b_, false, &msgs);
  ASSERT_EQ(firstFailure(rcs, msgs), "");
  for (int r = 1; r < 4; ++r) EXPECT_EQ(b_.recv[r], b_.recv[0]) << "rank " << r;
}

TEST(HierLayouts, ForcedOnUnevenHostsIsInvalidUsage) {
  HostLayout uneven{"3+1", {0, 0, 1, 0}};
  HierOptions o;
  o.hierarchical = 1;
  World w = makeHierWorld(uneven, o);
  ASSERT_TRUE(w.ok()) << w.error;
  size_t worker = 0, server = 0;
  EXPECT_EQ(obcclCompressedAllReduceErrorCounts(64, w[0], &worker, &server), obcclInvalidUsage);
  EXPECT_NE(std::string(obcclGetLastError(w[0])).find("same number of ranks on every host"),
            std::string::npos)
      << obcclGetLastError(w[0]);
  // The call itself fails on every rank, before any communication.
  std::vector<float> data(64, 1.0f), e(64, 0.0f), s(64, 0.0f);
  std::vector<std::vector<float>> bufs(4, data), es(4, e), ss(4, s);
  std::vector<std::string> msgs(4);
  auto rcs = runRanks<obcclResult_t>(4, [&](int r) {
    obcclResult_t rc = obcclCompressedAllReduce(bufs[r].data(), bufs[r].data(), 64, obcclFloat32,
                                                es[r].data(), ss[r].data(), w[r], nullptr);
    if (rc != obcclSuccess) msgs[r] = obcclGetLastError(w[r]);
    return rc;
  });
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(rcs[r], obcclInvalidUsage) << msgs[r];
    EXPECT_NE(msgs[r].find("host 'fake0' has 3 rank(s) (0, 1, 3)"), std::string::npos) << msgs[r];
  }
  // Auto on the same layout runs the flat schedule.
  World flat = makeHierWorld(uneven, HierOptions());
  ASSERT_TRUE(flat.ok()) << flat.error;
  EXPECT_EQ(obcclCompressedAllReduceErrorCounts(64, flat[0], &worker, &server), obcclSuccess);
  EXPECT_EQ(worker, 64u);
}

}  // namespace
}  // namespace obccl_test
