// The tiny-variance hazard of 1-bit Adam (obccl issue 5, item 3) and the root floor against it.
//
// Features that are almost always zero get a tiny but nonzero frozen v. In the compressed stage
// their momentum comes back as +-scale, where the scale is the RMS of the whole chunk, so their
// step lr * scale / sqrt(v) is orders of magnitude larger than any Adam step. Error feedback
// keeps the time average right, but the weights jump around by those amounts every step.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/onebit_adam.h"
#include "unit/test_optim_sim.h"

namespace obccl::optim {
namespace {

using testing::runRanks;
using testing::SimReducer;

constexpr size_t kDense = 48, kRare = 16, kDim = kDense + kRare, kBatch = 16;
constexpr long long kFreeze = 100;
constexpr int kSteps = 300;

struct Outcome {
  float maxRareStep = 0;   // largest |delta w| of a rare coordinate in one compressed step
  float maxDenseStep = 0;  // the same for dense coordinates
  float maxRareWeight = 0;
  float rareLoss = 0;  // squared error on samples where the rare features are present
  float rootFloor = 0;
  size_t below = 0;  // coordinates whose sqrt(v) is under the floor
};

// Linear least squares towards w* (w*_j = 0 on the rare features). Each rare feature shows up
// once, with a small value, in one sample of the warmup, and never again.
Outcome train(double rootFloor) {
  Options o;
  o.lr = 1e-3f;
  o.freezeStep = kFreeze;
  o.rootFloor = rootFloor;
  Outcome out;
  runRanks(2, kDim, o, [&](int r, OnebitAdam& opt, SimReducer&) {
    std::mt19937 gen(17 + r);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> wStar(kDim, 0.0f), w(kDim, 0.0f), x(kDim), g(kDim);
    std::mt19937 target(5);
    for (size_t j = 0; j < kDense; ++j) wStar[j] = std::normal_distribution<float>(0, 1)(target);
    Outcome mine;
    for (int s = 0; s < kSteps; ++s) {
      std::fill(g.begin(), g.end(), 0.0f);
      for (size_t b = 0; b < kBatch; ++b) {
        for (size_t j = 0; j < kDense; ++j) x[j] = nd(gen);
        for (size_t j = kDense; j < kDim; ++j)
          x[j] = (r == 0 && b == 0 && s == 10 + static_cast<int>(j - kDense)) ? 1e-2f : 0.0f;
        float err = 0;
        for (size_t j = 0; j < kDim; ++j) err += (w[j] - wStar[j]) * x[j];
        for (size_t j = 0; j < kDim; ++j) g[j] += err * x[j] / kBatch;
      }
      auto before = w;
      ASSERT_TRUE(opt.step(w.data(), g.data(), -1.0f).isOk());
      if (opt.stepCount() <= kFreeze + 1) continue;
      for (size_t j = 0; j < kDim; ++j) {
        float d = std::fabs(w[j] - before[j]);
        float& slot = j < kDense ? mine.maxDenseStep : mine.maxRareStep;
        slot = std::max(slot, d);
        if (j >= kDense) mine.maxRareWeight = std::max(mine.maxRareWeight, std::fabs(w[j]));
      }
    }
    // Loss on inputs where every rare feature is 1 and the dense ones are 0.
    float e = 0;
    for (size_t j = kDense; j < kDim; ++j) e += w[j];
    mine.rareLoss = 0.5f * e * e;
    mine.rootFloor = opt.rootFloorValue();
    for (size_t j = 0; j < kDim; ++j) mine.below += std::sqrt(opt.variance()[j]) < mine.rootFloor;
    if (r == 0) out = mine;
  });
  return out;
}

TEST(OptimHazard, TinyFrozenVarianceGivesHugeStepsWithThePapersArithmetic) {
  Outcome exact = train(0.0);
  EXPECT_EQ(exact.rootFloor, 0.0f);
  // Dense coordinates move by a few lr per step; the rare ones by hundreds of thousands of lr.
  EXPECT_LT(exact.maxDenseStep, 10 * 1e-3f);
  EXPECT_GT(exact.maxRareStep, 1e4f * exact.maxDenseStep);
  EXPECT_GT(exact.maxRareWeight, 100.0f);
  EXPECT_GT(exact.rareLoss, 1e3f);
}

TEST(OptimHazard, RootFloorBoundsTheStepsOfTinyVarianceCoordinatesOnly) {
  const double rho = 0.1;
  Outcome floored = train(rho), exact = train(0.0);
  EXPECT_GT(floored.rootFloor, 0.0f);
  EXPECT_EQ(floored.below, kRare);  // only the rare coordinates sit under the floor
  // Coordinates above the floor keep the paper's arithmetic: the dense trajectory is the same.
  EXPECT_EQ(floored.maxDenseStep, exact.maxDenseStep);
  // A floored step is at most 1/rho times that of a coordinate of typical variance.
  EXPECT_LT(floored.maxRareStep, (1.0 / rho) * floored.maxDenseStep);
  EXPECT_LT(floored.maxRareWeight, 0.5f);
  EXPECT_LT(floored.rareLoss, 1e-6f * exact.rareLoss);
}

}  // namespace
}  // namespace obccl::optim
