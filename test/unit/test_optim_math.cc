// 1-bit Adam helper: option checks, kernels against scalar references, the warmup against a
// reference Adam, the stage switch, and the single-rank compressed stage.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/onebit_adam.h"
#include "core/onebit_adam_kernels.h"
#include "unit/test_optim_sim.h"

namespace obccl::optim {
namespace {

using testing::makeSingle;
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

// Scalar reference of DESIGN.md section 6, written independently of the kernels.
struct RefAdam {
  std::vector<float> m, v;
  explicit RefAdam(size_t n) : m(n, 0.0f), v(n, 0.0f) {}
  void warmup(std::vector<float>& p, const std::vector<float>& g, const UpdateCoeffs& c) {
    for (size_t i = 0; i < p.size(); ++i) {
      m[i] = c.beta1 * m[i] + (1.0f - c.beta1) * g[i];
      v[i] = c.beta2 * v[i] + (1.0f - c.beta2) * (g[i] * g[i]);
      float u = m[i] / (std::sqrt(v[i]) + c.eps) + c.weightDecay * p[i];
      p[i] = p[i] - c.lr * u;
    }
  }
  // Compressed stage with one rank: momentum SGD with the frozen preconditioner.
  void frozen(std::vector<float>& p, const std::vector<float>& g, const UpdateCoeffs& c,
              const std::vector<float>* mask) {
    for (size_t i = 0; i < p.size(); ++i) {
      m[i] = c.beta1 * m[i] + (1.0f - c.beta1) * g[i];
      if (mask) m[i] = m[i] * (*mask)[i];
      float u = m[i] / (std::sqrt(v[i]) + c.eps) + c.weightDecay * p[i];
      p[i] = p[i] - c.lr * u;
    }
  }
};

Options testOptions(long long freezeStep) {
  Options o;
  o.lr = 1e-2f;
  o.weightDecay = 0.01f;
  o.freezeStep = freezeStep;
  o.rootFloor = 0.0;  // the paper's arithmetic unless a test says otherwise
  return o;
}

UpdateCoeffs coeffs(const Options& o) {
  return UpdateCoeffs{o.lr, o.beta1, o.beta2, o.eps, o.weightDecay};
}

TEST(OptimOptions, DefaultsAreValidAndAutoValuesFollowBeta2) {
  auto r = validateOptions(Options{});
  ASSERT_TRUE(r.isOk()) << r.status().message();
  EXPECT_EQ(r.value().autoFreeze.window, 100);
  EXPECT_EQ(r.value().autoFreeze.minSteps, 1000);
  EXPECT_EQ(r.value().autoFreeze.maxSteps, 5000);
  auto cfg = optionsFromConfig(nullptr);
  ASSERT_TRUE(cfg.isOk()) << cfg.status().message();
  EXPECT_EQ(cfg.value().freezeStep, OBCCL_FREEZE_AUTO);
  EXPECT_FLOAT_EQ(cfg.value().lr, 1e-3f);
}

TEST(OptimOptions, RejectsBadHyperParameters) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    const char* what;
    void (*edit)(Options&, float nan, float inf);
  } cases[] = {
      {"config->beta1", [](Options& o, float, float) { o.beta1 = 1.0f; }},
      {"config->beta1", [](Options& o, float, float) { o.beta1 = -0.1f; }},
      {"config->beta2", [](Options& o, float n, float) { o.beta2 = n; }},
      {"config->eps", [](Options& o, float, float) { o.eps = 0.0f; }},
      {"config->eps", [](Options& o, float, float) { o.eps = -1e-8f; }},
      {"config->lr", [](Options& o, float, float) { o.lr = -1.0f; }},
      {"config->lr", [](Options& o, float, float i) { o.lr = i; }},
      {"config->weightDecay", [](Options& o, float, float) { o.weightDecay = -0.1f; }},
      {"config->weightDecay", [](Options& o, float n, float) { o.weightDecay = n; }},
      {"config->freezeStep", [](Options& o, float, float) { o.freezeStep = 0; }},
      {"config->freezeStep", [](Options& o, float, float) { o.freezeStep = -2; }},
      {"OBCCL_ONEBIT_ROOT_FLOOR", [](Options& o, float, float) { o.rootFloor = -0.5; }},
      {"OBCCL_ONEBIT_FREEZE_TOL", [](Options& o, float, float) { o.autoFreeze.tolerance = 0; }},
      {"OBCCL_ONEBIT_FREEZE_MIN",
       [](Options& o, float, float) {
         o.autoFreeze.minSteps = 10;
         o.autoFreeze.maxSteps = 5;
       }},
  };
  for (const auto& c : cases) {
    Options o;
    c.edit(o, nan, inf);
    auto r = validateOptions(o);
    ASSERT_FALSE(r.isOk()) << c.what;
    EXPECT_EQ(r.status().code(), obcclInvalidArgument);
    EXPECT_NE(r.status().message().find(c.what), std::string::npos) << r.status().message();
  }
}

TEST(OptimOptions, RejectsBadConfigStruct) {
  obcclOnebitAdamConfig_t good = OBCCL_ONEBIT_ADAM_CONFIG_INITIALIZER;
  ASSERT_TRUE(optionsFromConfig(&good).isOk());
  obcclOnebitAdamConfig_t c = good;
  c.size = sizeof(c) - 8;
  EXPECT_NE(optionsFromConfig(&c).status().message().find("config->size"), std::string::npos);
  c = good;
  c.magic ^= 1;
  EXPECT_NE(optionsFromConfig(&c).status().message().find("config->magic"), std::string::npos);
  c = good;
  c.version = OBCCL_VERSION_CODE + 1;
  EXPECT_NE(optionsFromConfig(&c).status().message().find("config->version"), std::string::npos);
}

TEST(OptimKernels, MatchScalarReferenceBitwiseForEveryTailLength) {
  UpdateCoeffs c{0.01f, 0.9f, 0.999f, 1e-8f, 0.1f};
  for (size_t n : {0u, 1u, 3u, 4u, 5u, 17u, 64u, 131u}) {
    auto p = randomVec(n, 1), g = randomVec(n, 2), m = randomVec(n, 3), v = randomVec(n, 4);
    for (auto& x : v) x = x * x;
    RefAdam ref(n);
    ref.m = m;
    ref.v = v;
    auto pr = p;
    ref.warmup(pr, g, c);
    warmupUpdate(p.data(), m.data(), v.data(), g.data(), n, c);
    EXPECT_TRUE(bitwiseEqual(p, pr)) << n;
    EXPECT_TRUE(bitwiseEqual(m, ref.m)) << n;
    EXPECT_TRUE(bitwiseEqual(v, ref.v)) << n;

    std::vector<float> blend(n), mask(n);
    momentumBlend(blend.data(), m.data(), g.data(), n, c.beta1);
    for (size_t i = 0; i < n; ++i) {
      EXPECT_EQ(blend[i], c.beta1 * m[i] + (1.0f - c.beta1) * g[i]);
      mask[i] = static_cast<float>(i % 3 != 0);
    }
    auto p2 = p, m2 = m;
    frozenUpdate(p2.data(), m2.data(), v.data(), mask.data(), n, c, 0.0f);
    for (size_t i = 0; i < n; ++i) {
      float mi = m[i] * mask[i];
      float want = p[i] - c.lr * (mi / (std::sqrt(v[i]) + c.eps) + c.weightDecay * p[i]);
      EXPECT_EQ(p2[i], want) << n << " " << i;
      EXPECT_EQ(m2[i], mi);
    }
  }
}

TEST(OptimKernels, FiniteScanFindsTheFirstBadElement) {
  std::vector<float> x(300, 1.0f);
  EXPECT_TRUE(allFinite(x.data(), x.size()));
  for (size_t at : {0u, 63u, 64u, 200u, 299u}) {
    for (float bad :
         {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
          std::numeric_limits<float>::quiet_NaN()}) {
      auto y = x;
      y[at] = bad;
      EXPECT_EQ(firstNonFinite(y.data(), y.size()), at);
    }
  }
}

TEST(OptimWarmup, EqualsReferenceAdamOnAveragedGradients) {
  const size_t n = 203;
  const int ranks = 3, steps = 20;
  Options o = testOptions(1000);
  auto p0 = randomVec(n, 7);
  // The reference sees the average of the three local gradients, computed as the sim does.
  RefAdam ref(n);
  auto pr = p0;
  for (int s = 0; s < steps; ++s) {
    std::vector<float> g(n, 0.0f);
    for (int r = 0; r < ranks; ++r) {
      auto gl = randomVec(n, 100 * s + r);
      for (size_t i = 0; i < n; ++i) g[i] += gl[i];
    }
    for (auto& x : g) x /= static_cast<float>(ranks);
    ref.warmup(pr, g, coeffs(o));
  }
  runRanks(ranks, n, o, [&](int r, OnebitAdam& opt, SimReducer&) {
    auto p = p0;
    for (int s = 0; s < steps; ++s) {
      auto gl = randomVec(n, 100 * s + r);
      ASSERT_TRUE(opt.step(p.data(), gl.data(), -1.0f).isOk());
    }
    EXPECT_TRUE(bitwiseEqual(p, pr));
    EXPECT_TRUE(bitwiseEqual(opt.momentum(), ref.m));
    EXPECT_TRUE(bitwiseEqual(opt.variance(), ref.v));
    EXPECT_EQ(opt.stepCount(), steps);
    EXPECT_EQ(opt.stage(), obcclStageWarmup);
  });
}

// Per-sample gradients that are small dyadic rationals: every average is exact whatever the
// order of the sums, so the result must not depend on how the global batch is split.
TEST(OptimWarmup, IndependentOfRankCountForTheSameGlobalBatch) {
  const size_t n = 50, batch = 8;
  const int steps = 12;
  Options o = testOptions(1000);
  auto sample = [&](int s, size_t b) {
    std::mt19937 gen(1000 * s + static_cast<int>(b));
    std::uniform_int_distribution<int> d(-64, 64);
    std::vector<float> g(n);
    for (auto& x : g) x = static_cast<float>(d(gen)) / 64.0f;
    return g;
  };
  std::vector<std::vector<float>> results;
  for (int ranks : {1, 2, 4, 8}) {
    std::vector<float> out;
    runRanks(ranks, n, o, [&](int r, OnebitAdam& opt, SimReducer&) {
      std::vector<float> p(n, 0.5f);
      const size_t local = batch / ranks;
      for (int s = 0; s < steps; ++s) {
        std::vector<float> g(n, 0.0f);
        for (size_t b = r * local; b < (r + 1) * local; ++b) {
          auto gs = sample(s, b);
          for (size_t i = 0; i < n; ++i) g[i] += gs[i];
        }
        for (auto& x : g) x /= static_cast<float>(local);
        ASSERT_TRUE(opt.step(p.data(), g.data(), -1.0f).isOk());
      }
      if (r == 0) out = p;
    });
    results.push_back(out);
  }
  for (size_t k = 1; k < results.size(); ++k) EXPECT_TRUE(bitwiseEqual(results[0], results[k]));
}

TEST(OptimStages, SwitchHappensExactlyAfterFreezeStepUpdatesAndVIsFrozen) {
  const size_t n = 33;
  const long long freeze = 5;
  Options o = testOptions(freeze);
  runRanks(2, n, o, [&](int r, OnebitAdam& opt, SimReducer& red) {
    auto p = randomVec(n, 3);
    std::vector<float> vFrozen;
    for (int s = 1; s <= 15; ++s) {
      auto g = randomVec(n, 10 * s + r);
      ASSERT_TRUE(opt.step(p.data(), g.data(), -1.0f).isOk());
      EXPECT_EQ(opt.stepCount(), s);
      EXPECT_EQ(opt.stage(), s < freeze ? obcclStageWarmup : obcclStageCompressed) << s;
      if (s == freeze) vFrozen = opt.variance();
      if (s > freeze) {
        EXPECT_TRUE(bitwiseEqual(opt.variance(), vFrozen)) << s;
      }
    }
    EXPECT_EQ(red.allReduceCalls, freeze);
    EXPECT_EQ(red.compressedCalls, 15 - freeze);
  });
}

TEST(OptimStages, OneRankIsMomentumSgdWithTheFrozenPreconditioner) {
  const size_t n = 77;
  const long long freeze = 4;
  Options o = testOptions(freeze);
  auto opt = makeSingle(n, o);
  ASSERT_NE(opt, nullptr);
  RefAdam ref(n);
  auto p = randomVec(n, 5), pr = p;
  for (int s = 0; s < 20; ++s) {
    auto g = randomVec(n, 50 + s);
    float lr = s % 2 ? -1.0f : 0.003f;  // negative: the configured lr
    UpdateCoeffs c = coeffs(o);
    c.lr = lr < 0 ? o.lr : lr;
    if (s < freeze) {
      ref.warmup(pr, g, c);
    } else {
      ref.frozen(pr, g, c, nullptr);
    }
    ASSERT_TRUE(opt->step(p.data(), g.data(), lr).isOk());
  }
  EXPECT_TRUE(bitwiseEqual(p, pr));
  EXPECT_TRUE(bitwiseEqual(opt->momentum(), ref.m));
  EXPECT_TRUE(opt->workerError().empty());  // one rank never compresses
}

TEST(OptimStages, StepRejectsBadArgumentsWithoutChangingState) {
  const size_t n = 8;
  auto opt = makeSingle(n, testOptions(2));
  ASSERT_NE(opt, nullptr);
  std::vector<float> p(n, 1.0f), g(n, 0.5f);
  EXPECT_EQ(opt->step(nullptr, g.data(), -1).code(), obcclInvalidArgument);
  EXPECT_EQ(opt->step(p.data(), nullptr, -1).code(), obcclInvalidArgument);
  Status s = opt->step(p.data(), g.data(), std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(s.code(), obcclInvalidArgument);
  EXPECT_NE(s.message().find("lr"), std::string::npos);
  EXPECT_EQ(opt->stepCount(), 0);
  EXPECT_EQ(p, std::vector<float>(n, 1.0f));
  std::vector<float> mask(n, 1.0f);
  mask[3] = 0.5f;
  s = opt->setMomentumMask(mask.data());
  EXPECT_EQ(s.code(), obcclInvalidArgument);
  EXPECT_NE(s.message().find("mask[3]"), std::string::npos);
  EXPECT_TRUE(opt->mask().empty());
  EXPECT_EQ(opt->setMomentumMask(nullptr).code(), obcclInvalidArgument);
}

}  // namespace
}  // namespace obccl::optim
