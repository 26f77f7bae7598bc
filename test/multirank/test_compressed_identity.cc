// Error feedback telescopes (DESIGN.md section 4): over T calls,
//   sum_t y_t = sum_t mean_r(x_r,t) + mean_r(e_r,0 - e_r,T) + (S_0 - S_T),
// S being the concatenation of the ranks' server errors. Checked over 300 calls, to rounding.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "multirank/test_compressed_harness.h"

namespace obccl_test {
namespace {

// Largest |lhs - rhs| of the identity over `calls` calls, with fresh random inputs each call.
double identityDefect(int n, int block, size_t count, int calls, double* magnitude) {
  World w = makeCompressedWorld(n, kAnyTransport, block);
  EXPECT_TRUE(w.ok()) << w.error;
  if (!w.ok()) return INFINITY;
  CompressedBuffers b = makeBuffers(w, obcclFloat32, count);
  const size_t chunk = b.errors.server[0].size();
  OnebitErrors start = b.errors;
  std::vector<double> sumY(count, 0.0), sumMean(count, 0.0);
  std::mt19937_64 rng(31 + n);
  for (int t = 0; t < calls; ++t) {
    fillInputs(&b, rng, t % 2 ? 1.0f : 0.25f);
    auto rcs = runCompressed(w, &b, false);
    for (int r = 0; r < n; ++r)
      if (rcs[r] != obcclSuccess) {
        ADD_FAILURE() << "call " << t << " rank " << r << ": " << obcclGetLastError(w[r]);
        return INFINITY;
      }
    const float* y = reinterpret_cast<const float*>(b.recv[0].data());
    for (size_t i = 0; i < count; ++i) {
      sumY[i] += y[i];
      double mean = 0.0;
      for (int r = 0; r < n; ++r) mean += b.x[r][i];
      sumMean[i] += mean / n;
    }
  }
  double worst = 0.0;
  *magnitude = 0.0;
  for (size_t i = 0; i < count; ++i) {
    double de = 0.0;
    for (int r = 0; r < n; ++r) de += double(start.worker[r][i]) - b.errors.worker[r][i];
    double ds = double(start.server[i / chunk][i % chunk]) - b.errors.server[i / chunk][i % chunk];
    double rhs = sumMean[i] + de / n + ds;
    worst = std::max(worst, std::fabs(sumY[i] - rhs));
    *magnitude = std::max(*magnitude, std::fabs(sumY[i]));
  }
  return worst;
}

TEST(CompressedIdentity, ErrorFeedbackTelescopesOver300Calls) {
  for (int block : {0, 64}) {
    double magnitude = 0.0;
    double defect = identityDefect(3, block, 1000, 300, &magnitude);
    std::printf("block %d: largest identity defect %.3g, largest |sum y| %.3g\n", block, defect,
                magnitude);
    // Each call adds a few fp32 roundings of O(1) values (~1e-7); a lost or doubled term would
    // be O(1).
    EXPECT_LT(defect, 2e-4) << "block " << block << ", largest |sum y| " << magnitude;
    EXPECT_GT(magnitude, 1.0) << "the sums should not be trivially small";
  }
}

}  // namespace
}  // namespace obccl_test
