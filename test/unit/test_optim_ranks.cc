// 1-bit Adam helper over simulated ranks: masks, the non-finite skip consensus, replicas that
// never drift, the auto-freeze criterion and the tiny-variance hazard with its protection.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <random>
#include <vector>

#include "core/onebit_adam.h"
#include "unit/test_optim_sim.h"

namespace obccl::optim {
namespace {

using testing::runRanks;
using testing::SimReducer;

std::vector<float> randomVec(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

bool bitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

Options testOptions(long long freezeStep) {
  Options o;
  o.lr = 1e-2f;
  o.freezeStep = freezeStep;
  o.rootFloor = 0.0;
  return o;
}

TEST(OptimRanks, ParametersStayBitwiseIdenticalOverManyCompressedSteps) {
  const size_t n = 1000;
  const int ranks = 4;
  Options o = testOptions(10);
  o.weightDecay = 0.01f;
  std::vector<std::vector<float>> finals(ranks), moms(ranks);
  runRanks(ranks, n, o, [&](int r, OnebitAdam& opt, SimReducer&) {
    auto p = randomVec(n, 1);
    for (int s = 0; s < 300; ++s) {
      auto g = randomVec(n, 1000 * s + r);
      ASSERT_TRUE(opt.step(p.data(), g.data(), -1.0f).isOk());
    }
    EXPECT_EQ(opt.stage(), obcclStageCompressed);
    finals[r] = p;
    moms[r] = opt.momentum();
  });
  for (int r = 1; r < ranks; ++r) {
    EXPECT_TRUE(bitwiseEqual(finals[0], finals[r])) << r;
    EXPECT_TRUE(bitwiseEqual(moms[0], moms[r])) << r;
  }
}

TEST(OptimRanks, UserMaskKeepsMaskedMomentumExactlyZero) {
  const size_t n = 64;
  Options o = testOptions(3);
  std::vector<float> mask(n);
  for (size_t i = 0; i < n; ++i) mask[i] = (i % 4 == 1) ? 0.0f : 1.0f;
  runRanks(3, n, o, [&](int r, OnebitAdam& opt, SimReducer&) {
    ASSERT_TRUE(opt.setMomentumMask(mask.data()).isOk());
    auto p = randomVec(n, 2);
    std::vector<float> atFreeze;
    for (int s = 0; s < 40; ++s) {
      auto g = randomVec(n, 77 * s + r);
      ASSERT_TRUE(opt.step(p.data(), g.data(), -1.0f).isOk());
      if (s + 1 == 3) atFreeze = p;
      if (opt.stage() != obcclStageCompressed || s < 3) continue;
      for (size_t i = 0; i < n; ++i) {
        if (mask[i] == 0.0f) {
          ASSERT_EQ(opt.momentum()[i], 0.0f) << i;
          ASSERT_EQ(p[i], atFreeze[i]) << i;  // no weight decay: a masked coordinate stays put
        }
      }
    }
    EXPECT_TRUE(opt.hasUserMask());
  });
}

TEST(OptimRanks, CoordinatesWithZeroVarianceAreMaskedAtTheFreeze) {
  const size_t n = 40;
  Options o = testOptions(5);
  runRanks(2, n, o, [&](int r, OnebitAdam& opt, SimReducer&) {
    std::vector<float> p(n, 1.0f);
    for (int s = 0; s < 25; ++s) {
      auto g = randomVec(n, 31 * s + r);
      // Coordinates 0..9 never see a gradient during the warmup, on any rank.
      if (s < 5)
        for (size_t i = 0; i < 10; ++i) g[i] = 0.0f;
      ASSERT_TRUE(opt.step(p.data(), g.data(), -1.0f).isOk());
    }
    ASSERT_EQ(opt.mask().size(), n);
    EXPECT_FALSE(opt.hasUserMask());
    for (size_t i = 0; i < n; ++i) {
      EXPECT_EQ(opt.mask()[i], i < 10 ? 0.0f : 1.0f);
      if (i < 10) {
        EXPECT_EQ(opt.momentum()[i], 0.0f);
        EXPECT_EQ(p[i], 1.0f);
      }
    }
  });
  // Without the automatic mask (a user mask of ones) those coordinates divide +-scale by eps.
  runRanks(2, n, o, [&](int r, OnebitAdam& opt, SimReducer&) {
    std::vector<float> ones(n, 1.0f), p(n, 1.0f);
    ASSERT_TRUE(opt.setMomentumMask(ones.data()).isOk());
    for (int s = 0; s < 6; ++s) {
      auto g = randomVec(n, 31 * s + r);
      if (s < 5)
        for (size_t i = 0; i < 10; ++i) g[i] = 0.0f;
      ASSERT_TRUE(opt.step(p.data(), g.data(), -1.0f).isOk());
    }
    EXPECT_GT(std::fabs(p[0] - 1.0f), 1e3f);
  });
}

struct Snapshot {
  std::vector<float> p, m, v, we, se;
  long long step;
  obcclOptimStage_t stage;
};

Snapshot snap(const OnebitAdam& opt, const std::vector<float>& p) {
  return {p,
          opt.momentum(),
          opt.variance(),
          opt.workerError(),
          opt.serverError(),
          opt.stepCount(),
          opt.stage()};
}

void expectSame(const Snapshot& a, const Snapshot& b) {
  EXPECT_TRUE(bitwiseEqual(a.p, b.p));
  EXPECT_TRUE(bitwiseEqual(a.m, b.m));
  EXPECT_TRUE(bitwiseEqual(a.v, b.v));
  EXPECT_TRUE(bitwiseEqual(a.we, b.we));
  EXPECT_TRUE(bitwiseEqual(a.se, b.se));
  EXPECT_EQ(a.step, b.step);
  EXPECT_EQ(a.stage, b.stage);
}

// One rank's non-finite gradient makes every rank skip, in both stages, with nothing changed.
TEST(OptimRanks, NonFiniteGradientOnOneRankSkipsTheStepEverywhere) {
  const size_t n = 57;
  const int ranks = 3;
  Options o = testOptions(6);
  const float bads[] = {std::numeric_limits<float>::quiet_NaN(),
                        std::numeric_limits<float>::infinity()};
  runRanks(ranks, n, o, [&](int r, OnebitAdam& opt, SimReducer&) {
    auto p = randomVec(n, 4);
    long long skipped = 0;
    for (int s = 0; s < 20; ++s) {
      auto g = randomVec(n, 13 * s + r);
      ASSERT_TRUE(opt.step(p.data(), g.data(), -1.0f).isOk());
      // Steps 3 (warmup) and 12 (compressed): rank 1 breaks, then everybody retries cleanly.
      if (s == 3 || s == 12) {
        Snapshot before = snap(opt, p);
        auto bad = g;
        if (r == 1) bad[n / 2] = bads[s == 3 ? 0 : 1];
        ASSERT_TRUE(opt.step(p.data(), bad.data(), -1.0f).isOk());
        ++skipped;
        EXPECT_EQ(opt.skippedSteps(), skipped);
        expectSame(before, snap(opt, p));
      }
    }
    EXPECT_EQ(opt.stepCount(), 20);
    EXPECT_EQ(opt.skippedSteps(), 2);
  });
}

// Stationary gradients: sum(v) follows (1 - b2^t) * const, so its relative change over a window
// W is about W (1-b2) b2^t / (1 - b2^t); with b2 = 0.99, W = 10 and tol = 0.01 that falls below
// the tolerance near t = 239. Gradients that keep growing never settle: the maximum applies.
TEST(OptimAutoFreeze, FreezesWhenTheVarianceSettlesAndAtTheMaximumOtherwise) {
  const size_t n = 2000;
  Options o = testOptions(OBCCL_FREEZE_AUTO);
  o.beta2 = 0.99f;
  auto run = [&](float growth) {
    long long frozeAt = -1;
    runRanks(2, n, o, [&](int r, OnebitAdam& opt, SimReducer&) {
      EXPECT_EQ(opt.options().autoFreeze.window, 10);
      EXPECT_EQ(opt.options().autoFreeze.minSteps, 100);
      EXPECT_EQ(opt.options().autoFreeze.maxSteps, 500);
      std::vector<float> p(n, 0.0f);
      for (int s = 0; s < 600 && opt.stage() == obcclStageWarmup; ++s) {
        auto g = randomVec(n, 7 * s + r, std::pow(growth, static_cast<float>(s)));
        ASSERT_TRUE(opt.step(p.data(), g.data(), -1.0f).isOk());
      }
      if (r == 0) frozeAt = opt.stepCount();
    });
    return frozeAt;
  };
  long long settled = run(1.0f);
  EXPECT_GE(settled, 220);
  EXPECT_LE(settled, 260);
  EXPECT_EQ(settled % 10, 0);
  EXPECT_EQ(run(1.01f), 500);
}

}  // namespace
}  // namespace obccl::optim
