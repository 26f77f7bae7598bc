// How accurate the compressed average is with one scale per chunk (compressBlock = 0, the
// paper's scheme) and with one scale per block of 256 or 2048 elements: relative L2 error of one
// call, and of the running average over 100 calls (where error feedback cancels most of it).
// Inputs: a fixed signal plus per-rank, per-call noise, either of uniform magnitude or with the
// magnitude changing 1000-fold between 1024-element regions (as gradients do across layers).
// Prints the table perf/RESULTS.md quotes.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "multirank/test_compressed_harness.h"

namespace obccl_test {
namespace {

struct Accuracy {
  double oneCall = 0.0, average = 0.0;
};

double relativeError(const std::vector<double>& got, const std::vector<double>& want) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

Accuracy measure(int n, int block, bool heterogeneous, size_t count, int calls) {
  World w = makeCompressedWorld(n, kAnyTransport, block);
  EXPECT_TRUE(w.ok()) << w.error;
  if (!w.ok()) return {};
  CompressedBuffers b = makeBuffers(w, obcclFloat32, count);
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> exponent(-2.0f, 1.0f);
  std::vector<float> signal(count), magnitude(count, 1.0f);
  for (size_t i = 0; i < count; ++i) signal[i] = normal(rng);
  if (heterogeneous)
    for (size_t q = 0; q < count; q += 1024) {
      float m = std::pow(10.0f, exponent(rng));
      for (size_t i = q; i < std::min(count, q + 1024); ++i) magnitude[i] = m;
    }
  std::vector<double> sumY(count, 0.0), sumMean(count, 0.0);
  Accuracy acc;
  for (int t = 0; t < calls; ++t) {
    std::vector<double> mean(count, 0.0), y(count);
    for (int r = 0; r < n; ++r) {
      float* x = reinterpret_cast<float*>(b.send[r].data());
      for (size_t i = 0; i < count; ++i) {
        x[i] = magnitude[i] * (signal[i] + normal(rng));
        mean[i] += x[i] / n;
      }
    }
    auto rcs = runCompressed(w, &b, false);
    for (int r = 0; r < n; ++r) EXPECT_EQ(rcs[r], obcclSuccess) << obcclGetLastError(w[r]);
    const float* out = reinterpret_cast<const float*>(b.recv[0].data());
    for (size_t i = 0; i < count; ++i) {
      y[i] = out[i];
      sumY[i] += y[i];
      sumMean[i] += mean[i];
    }
    if (t == 0) acc.oneCall = relativeError(y, mean);
  }
  acc.average = relativeError(sumY, sumMean);
  return acc;
}

TEST(CompressedAccuracy, BlockScalesAgainstOneScalePerChunk) {
  const int n = 4, calls = 100;
  const size_t count = size_t{1} << 15;
  std::printf("| data | compressBlock | one call | average of %d calls |\n", calls);
  std::printf("|---|---|---|---|\n");
  for (bool heterogeneous : {false, true}) {
    Accuracy whole;
    for (int block : {0, 256, 2048}) {
      Accuracy a = measure(n, block, heterogeneous, count, calls);
      std::printf("| %s | %d | %.3f | %.4f |\n",
                  heterogeneous ? "1000x magnitude range" : "uniform", block, a.oneCall, a.average);
      EXPECT_LT(a.average, a.oneCall / 5) << "error feedback should cancel most of the error";
      if (block == 0) whole = a;
      if (heterogeneous && block > 0) {
        EXPECT_LT(a.oneCall, whole.oneCall) << block;
      }
    }
  }
}

}  // namespace
}  // namespace obccl_test
