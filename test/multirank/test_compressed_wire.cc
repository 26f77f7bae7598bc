// Wire volume of one compressed allreduce, from obcclCommGetStats: every rank sends
// 2(n-1)/n * Np/8 bytes of packed signs plus frame headers and O(n) scale bytes, within 5%.
#include <cstdio>
#include <random>
#include <vector>

#include "multirank/test_compressed_harness.h"

namespace obccl_test {
namespace {

using Param = std::tuple<const char*, int>;

class CompressedWire : public ::testing::TestWithParam<Param> {};

TEST_P(CompressedWire, SendsTwoPhasesOfPackedSigns) {
  auto [transport, n] = GetParam();
  World w = makeCompressedWorld(n, transport, 0);
  if (transportUnavailable(w)) GTEST_SKIP() << transport << " unavailable: " << w.error;
  ASSERT_TRUE(w.ok()) << w.error;
  const size_t count = size_t{1} << 22;  // 16 MiB of fp32 per rank
  CompressedBuffers b = makeBuffers(w, obcclFloat32, count);
  std::mt19937_64 rng(5);
  fillInputs(&b, rng);

  std::vector<obcclCommStats_t> before(n), after(n);
  for (int r = 0; r < n; ++r) {
    before[r].size = after[r].size = sizeof(obcclCommStats_t);
    ASSERT_EQ(obcclCommGetStats(w[r], &before[r]), obcclSuccess);
  }
  auto rcs = runCompressed(w, &b, false);
  for (int r = 0; r < n; ++r) {
    ASSERT_EQ(rcs[r], obcclSuccess) << obcclGetLastError(w[r]);
    ASSERT_EQ(obcclCommGetStats(w[r], &after[r]), obcclSuccess);
  }
  const double padded = static_cast<double>(b.errors.worker[0].size());
  const double signs = 2.0 * (n - 1) / n * padded / 8;
  // Frames: one per 1 MiB of fp32 input (the default OBCCL_SEGMENT_BYTES) per peer and phase,
  // each a 64-byte header plus at most 4 + 4 scale and status bytes.
  const double chunk = padded / n, segs = std::ceil(chunk / (1 << 18));
  const double model = signs + 2.0 * (n - 1) * segs * (64 + 8);
  for (int r = 0; r < n; ++r) {
    double sent = static_cast<double>(after[r].bytesSent - before[r].bytesSent);
    double received = static_cast<double>(after[r].bytesReceived - before[r].bytesReceived);
    std::printf("%s, %d ranks, rank %d: sent %.0f bytes, received %.0f, model %.0f (%.4f)\n",
                transport, n, r, sent, received, model, sent / model);
    EXPECT_NEAR(sent, model, 0.05 * model) << "rank " << r;
    EXPECT_NEAR(received, model, 0.05 * model) << "rank " << r;
    // Against the uncompressed fp32 ring: 32x less, headers aside.
    EXPECT_LT(sent * 30, 2.0 * (n - 1) / n * 4 * count) << "rank " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Transports, CompressedWire,
                         ::testing::Combine(::testing::Values("shm", "tcp"),
                                            ::testing::Values(2, 4)),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           return std::string(std::get<0>(info.param)) + "_" +
                                  std::to_string(std::get<1>(info.param)) + "ranks";
                         });

}  // namespace
}  // namespace obccl_test
