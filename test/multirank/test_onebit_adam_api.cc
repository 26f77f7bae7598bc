// The 1-bit Adam helper through the public C API, ranks as threads (multirank/harness.h):
// the warmup against a reference Adam, independence from the rank count, the stage switch, a
// frozen v, replicas that never drift, masks, the non-finite skip consensus, and state blobs.
// The blob is read here by its documented layout (docs/ONEBIT_ADAM.md), which tests it too.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "multirank/harness.h"
#include "obccl/onebit_adam.h"

namespace {

using obccl_test::runRanks;

constexpr const char* kTransports = "shm,tcp";

std::vector<float> randomVec(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

// Small dyadic rationals: every sum and average of them is exact in any order.
std::vector<float> dyadicVec(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> d(-64, 64);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(d(gen)) / 64.0f;
  return v;
}

bool bitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

obcclOnebitAdamConfig_t config(long long freezeStep, float lr = 1e-2f) {
  obcclOnebitAdamConfig_t c = OBCCL_ONEBIT_ADAM_CONFIG_INITIALIZER;
  c.lr = lr;
  c.freezeStep = freezeStep;
  return c;
}

// A saved state, read through the documented layout.
struct Blob {
  std::vector<unsigned char> bytes;
  uint64_t count() const { return get<uint64_t>(16); }
  int32_t rank() const { return get<int32_t>(24); }
  int32_t worldSize() const { return get<int32_t>(28); }
  int64_t step() const { return get<int64_t>(32); }
  int32_t stage() const { return get<int32_t>(40); }
  int64_t skipped() const { return get<int64_t>(48); }
  std::vector<float> section(int which) const {  // 0 m, 1 v, 2 mask
    std::vector<float> out(count());
    std::memcpy(out.data(), &bytes[96 + which * count() * 4], count() * 4);
    return out;
  }
  std::vector<float> errors() const {
    size_t n = (bytes.size() - 96) / 4 - 3 * count();
    std::vector<float> out(n);
    std::memcpy(out.data(), &bytes[96 + 3 * count() * 4], n * 4);
    return out;
  }
  template <typename T>
  T get(size_t off) const {
    T v;
    std::memcpy(&v, &bytes[off], sizeof(T));
    return v;
  }
};

Blob save(obcclOnebitAdam_t opt) {
  size_t n = 0;
  EXPECT_EQ(obcclOnebitAdamStateSize(opt, &n), obcclSuccess);
  Blob b;
  b.bytes.resize(n);
  EXPECT_EQ(obcclOnebitAdamSaveState(opt, b.bytes.data(), n), obcclSuccess);
  return b;
}

// One optimizer per rank of a world, destroyed with it.
struct Optimizers {
  std::vector<obcclOnebitAdam_t> opts;
  ~Optimizers() {
    for (auto o : opts) obcclOnebitAdamDestroy(o);
  }
};

void createAll(const obccl_test::World& w, size_t count, const obcclOnebitAdamConfig_t& cfg,
               Optimizers* out) {
  out->opts.assign(w.size(), nullptr);
  for (int r = 0; r < w.size(); ++r)
    ASSERT_EQ(obcclOnebitAdamCreate(w[r], count, &cfg, &out->opts[r]), obcclSuccess)
        << obcclGetLastError(w[r]);
}

TEST(OnebitAdamApi, RejectsBadArgumentsWithAMessageAndCreatesNothing) {
  OBCCL_MAKE_WORLD(w, 1, kTransports);
  obcclOnebitAdam_t sentinel = reinterpret_cast<obcclOnebitAdam_t>(0x1);
  struct Case {
    const char* what;
    void (*edit)(obcclOnebitAdamConfig_t*);
  } cases[] = {
      {"config->size", [](obcclOnebitAdamConfig_t* c) { c->size = 8; }},
      {"config->magic", [](obcclOnebitAdamConfig_t* c) { c->magic = 0; }},
      {"config->version", [](obcclOnebitAdamConfig_t* c) { c->version = 999999; }},
      {"config->beta1", [](obcclOnebitAdamConfig_t* c) { c->beta1 = 1.0f; }},
      {"config->beta2", [](obcclOnebitAdamConfig_t* c) { c->beta2 = -0.5f; }},
      {"config->eps", [](obcclOnebitAdamConfig_t* c) { c->eps = 0.0f; }},
      {"config->lr", [](obcclOnebitAdamConfig_t* c) { c->lr = -1e-3f; }},
      {"config->lr",
       [](obcclOnebitAdamConfig_t* c) { c->lr = std::numeric_limits<float>::infinity(); }},
      {"config->weightDecay", [](obcclOnebitAdamConfig_t* c) { c->weightDecay = -1.0f; }},
      {"config->freezeStep", [](obcclOnebitAdamConfig_t* c) { c->freezeStep = 0; }},
  };
  for (const auto& c : cases) {
    obcclOnebitAdamConfig_t cfg = config(10);
    c.edit(&cfg);
    obcclOnebitAdam_t opt = sentinel;
    EXPECT_EQ(obcclOnebitAdamCreate(w[0], 10, &cfg, &opt), obcclInvalidArgument) << c.what;
    EXPECT_EQ(opt, sentinel);
    EXPECT_NE(std::string(obcclGetLastError(w[0])).find(c.what), std::string::npos)
        << obcclGetLastError(w[0]);
  }
  obcclOnebitAdamConfig_t cfg = config(10);
  EXPECT_EQ(obcclOnebitAdamCreate(nullptr, 10, &cfg, &sentinel), obcclInvalidArgument);
  EXPECT_EQ(obcclOnebitAdamCreate(w[0], 10, &cfg, nullptr), obcclInvalidArgument);

  obcclOnebitAdam_t opt = nullptr;
  ASSERT_EQ(obcclOnebitAdamCreate(w[0], 10, &cfg, &opt), obcclSuccess);
  std::vector<float> p(10, 1.0f), g(10, 0.5f), mask(10, 1.0f);
  EXPECT_EQ(obcclOnebitAdamStep(opt, nullptr, g.data(), -1, nullptr), obcclInvalidArgument);
  EXPECT_NE(std::string(obcclGetLastError(w[0])).find("params"), std::string::npos);
  EXPECT_EQ(obcclOnebitAdamStep(opt, p.data(), nullptr, -1, nullptr), obcclInvalidArgument);
  EXPECT_EQ(obcclOnebitAdamStep(nullptr, p.data(), g.data(), -1, nullptr), obcclInvalidArgument);
  EXPECT_EQ(obcclOnebitAdamStep(opt, p.data(), g.data(), std::nanf(""), nullptr),
            obcclInvalidArgument);
  mask[2] = 2.0f;
  EXPECT_EQ(obcclOnebitAdamSetMomentumMask(opt, mask.data()), obcclInvalidArgument);
  EXPECT_NE(std::string(obcclGetLastError(w[0])).find("mask[2]"), std::string::npos);
  EXPECT_EQ(obcclOnebitAdamSetMomentumMask(opt, nullptr), obcclInvalidArgument);
  EXPECT_EQ(obcclOnebitAdamSaveState(opt, nullptr, 100), obcclInvalidArgument);
  EXPECT_EQ(obcclOnebitAdamLoadState(opt, nullptr, 100), obcclInvalidArgument);
  long long step = -1, skipped = -1;
  obcclOptimStage_t stage;
  ASSERT_EQ(obcclOnebitAdamGetInfo(opt, &step, &stage, &skipped), obcclSuccess);
  EXPECT_EQ(step, 0);
  EXPECT_EQ(p, std::vector<float>(10, 1.0f));
  EXPECT_EQ(obcclOnebitAdamDestroy(opt), obcclSuccess);
  EXPECT_EQ(obcclOnebitAdamDestroy(nullptr), obcclSuccess);
}

// Dyadic gradients keep every average exact, so the reference is bitwise: plain Adam without
// bias correction on the average of the ranks' gradients.
TEST(OnebitAdamApi, WarmupIsReferenceAdamAndIndependentOfTheRankCount) {
  const size_t n = 301, batch = 8;
  const int steps = 15;
  const float lr = 1e-2f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
  std::vector<float> p0 = dyadicVec(n, 3), pr = p0, m(n, 0.0f), v(n, 0.0f);
  auto sample = [&](int s, size_t b) { return dyadicVec(n, 1000 * s + static_cast<int>(b)); };
  for (int s = 0; s < steps; ++s) {
    std::vector<float> g(n, 0.0f);
    for (size_t b = 0; b < batch; ++b) {
      auto gs = sample(s, b);
      for (size_t i = 0; i < n; ++i) g[i] += gs[i];
    }
    for (size_t i = 0; i < n; ++i) {
      g[i] /= batch;
      m[i] = b1 * m[i] + (1.0f - b1) * g[i];
      v[i] = b2 * v[i] + (1.0f - b2) * (g[i] * g[i]);
      pr[i] = pr[i] - lr * (m[i] / (std::sqrt(v[i]) + eps));
    }
  }
  for (int ranks : {1, 2, 4}) {
    OBCCL_MAKE_WORLD(w, ranks, kTransports);
    Optimizers o;
    createAll(w, n, config(1000, lr), &o);
    auto finals = runRanks<std::vector<float>>(
        ranks,
        [&](int r) {
          std::vector<float> p = p0;
          const size_t local = batch / ranks;
          for (int s = 0; s < steps; ++s) {
            std::vector<float> g(n, 0.0f);
            for (size_t b = r * local; b < (r + 1) * local; ++b) {
              auto gs = sample(s, b);
              for (size_t i = 0; i < n; ++i) g[i] += gs[i];
            }
            for (auto& x : g) x /= local;
            EXPECT_EQ(obcclOnebitAdamStep(o.opts[r], p.data(), g.data(), -1, nullptr), obcclSuccess)
                << obcclGetLastError(w[r]);
          }
          return p;
        },
        &w.comms);
    for (int r = 0; r < ranks; ++r) {
      EXPECT_TRUE(bitwiseEqual(finals[r], pr)) << ranks << " ranks, rank " << r;
      Blob b = save(o.opts[r]);
      EXPECT_TRUE(bitwiseEqual(b.section(0), m));
      EXPECT_TRUE(bitwiseEqual(b.section(1), v));
      EXPECT_EQ(b.step(), steps);
      EXPECT_EQ(b.stage(), obcclStageWarmup);
    }
  }
}

TEST(OnebitAdamApi, SwitchesAfterFreezeStepAndReplicasNeverDrift) {
  const size_t n = 1500;
  const int ranks = 4, steps = 150;
  const long long freeze = 7;
  OBCCL_MAKE_WORLD(w, ranks, kTransports);
  Optimizers o;
  createAll(w, n, config(freeze), &o);
  auto finals = runRanks<std::vector<float>>(
      ranks,
      [&](int r) {
        std::vector<float> p = randomVec(n, 1), vFrozen;
        for (int s = 1; s <= steps; ++s) {
          auto g = randomVec(n, 100 * s + r);
          EXPECT_EQ(obcclOnebitAdamStep(o.opts[r], p.data(), g.data(), -1, nullptr), obcclSuccess)
              << obcclGetLastError(w[r]);
          if (s > freeze + 2 && s % 50 != 0) continue;
          long long step, skipped;
          obcclOptimStage_t stage;
          EXPECT_EQ(obcclOnebitAdamGetInfo(o.opts[r], &step, &stage, &skipped), obcclSuccess);
          EXPECT_EQ(step, s);
          EXPECT_EQ(stage, s < freeze ? obcclStageWarmup : obcclStageCompressed) << s;
          Blob b = save(o.opts[r]);
          if (s == freeze) vFrozen = b.section(1);
          if (s > freeze) {
            EXPECT_TRUE(bitwiseEqual(b.section(1), vFrozen)) << s;
          }
        }
        return p;
      },
      &w.comms);
  for (int r = 1; r < ranks; ++r) EXPECT_TRUE(bitwiseEqual(finals[0], finals[r])) << r;
  std::vector<float> m0 = save(o.opts[0]).section(0);
  for (int r = 1; r < ranks; ++r) EXPECT_TRUE(bitwiseEqual(save(o.opts[r]).section(0), m0));
}

TEST(OnebitAdamApi, MaskKeepsMomentumZeroAndNonFiniteGradientsAreSkippedEverywhere) {
  const size_t n = 200;
  const int ranks = 3;
  OBCCL_MAKE_WORLD(w, ranks, kTransports);
  Optimizers o;
  createAll(w, n, config(4), &o);
  std::vector<float> mask(n, 1.0f);
  for (size_t i = 0; i < n; i += 5) mask[i] = 0.0f;
  for (int r = 0; r < ranks; ++r)
    ASSERT_EQ(obcclOnebitAdamSetMomentumMask(o.opts[r], mask.data()), obcclSuccess);
  runRanks<int>(
      ranks,
      [&](int r) {
        std::vector<float> p = randomVec(n, 2);
        for (int s = 0; s < 30; ++s) {
          auto g = randomVec(n, 7 * s + r);
          EXPECT_EQ(obcclOnebitAdamStep(o.opts[r], p.data(), g.data(), -1, nullptr), obcclSuccess)
              << obcclGetLastError(w[r]);
          if (s == 2 || s == 20) {  // once in each stage: rank 2 sends a NaN / an infinity
            Blob before = save(o.opts[r]);
            auto pBefore = p;
            if (r == 2)
              g[n / 3] = s == 2 ? std::numeric_limits<float>::quiet_NaN()
                                : -std::numeric_limits<float>::infinity();
            EXPECT_EQ(obcclOnebitAdamStep(o.opts[r], p.data(), g.data(), -1, nullptr), obcclSuccess)
                << obcclGetLastError(w[r]);
            Blob after = save(o.opts[r]);
            EXPECT_EQ(after.skipped(), before.skipped() + 1);
            EXPECT_EQ(after.step(), before.step());
            EXPECT_TRUE(bitwiseEqual(after.section(0), before.section(0)));
            EXPECT_TRUE(bitwiseEqual(after.section(1), before.section(1)));
            EXPECT_TRUE(bitwiseEqual(after.errors(), before.errors()));
            EXPECT_TRUE(bitwiseEqual(p, pBefore));
          }
          if (s >= 4) {
            auto m = save(o.opts[r]).section(0);
            for (size_t i = 0; i < n; i += 5) EXPECT_EQ(m[i], 0.0f) << i;
          }
        }
        return 0;
      },
      &w.comms);
  for (int r = 0; r < ranks; ++r) {
    long long step, skipped;
    obcclOptimStage_t stage;
    ASSERT_EQ(obcclOnebitAdamGetInfo(o.opts[r], &step, &stage, &skipped), obcclSuccess);
    EXPECT_EQ(step, 30);
    EXPECT_EQ(skipped, 2);
  }
}

// Saves in the compressed stage, continues, reloads and replays: bitwise the same. Then the
// blobs move to other ranks and another world size: m, v, step and stage stay, errors go.
TEST(OnebitAdamApi, StateRoundTripsAndMovesAcrossRanksAndWorldSizes) {
  const size_t n = 333;
  const int ranks = 2;
  std::vector<Blob> saved(ranks);
  {
    OBCCL_MAKE_WORLD(w, ranks, kTransports);
    Optimizers o;
    createAll(w, n, config(3), &o);
    runRanks<int>(
        ranks,
        [&](int r) {
          std::vector<float> p = randomVec(n, 4);
          auto play = [&](int from, int to) {
            for (int s = from; s < to; ++s) {
              auto g = randomVec(n, 11 * s + r);
              EXPECT_EQ(obcclOnebitAdamStep(o.opts[r], p.data(), g.data(), -1, nullptr),
                        obcclSuccess);
            }
          };
          play(0, 8);
          saved[r] = save(o.opts[r]);
          auto pSaved = p;
          play(8, 14);
          auto pFirst = p;
          Blob first = save(o.opts[r]);
          EXPECT_EQ(
              obcclOnebitAdamLoadState(o.opts[r], saved[r].bytes.data(), saved[r].bytes.size()),
              obcclSuccess);
          p = pSaved;
          play(8, 14);
          EXPECT_TRUE(bitwiseEqual(p, pFirst));
          EXPECT_EQ(save(o.opts[r]).bytes, first.bytes);
          return 0;
        },
        &w.comms);
  }
  for (int world : {2, 3}) {
    OBCCL_MAKE_WORLD(w, world, kTransports);
    Optimizers o;
    createAll(w, n, config(3), &o);
    for (int r = 0; r < world; ++r) {
      const Blob& from = saved[(r + 1) % ranks];  // never this rank's own blob
      ASSERT_EQ(obcclOnebitAdamLoadState(o.opts[r], from.bytes.data(), from.bytes.size()),
                obcclSuccess)
          << obcclGetLastError(w[r]);
      Blob now = save(o.opts[r]);
      EXPECT_TRUE(bitwiseEqual(now.section(0), from.section(0)));
      EXPECT_TRUE(bitwiseEqual(now.section(1), from.section(1)));
      EXPECT_EQ(now.step(), 8);
      EXPECT_EQ(now.stage(), obcclStageCompressed);
      EXPECT_EQ(now.rank(), r);
      EXPECT_EQ(now.worldSize(), world);
      for (float e : now.errors()) ASSERT_EQ(e, 0.0f);
    }
    // A damaged blob is refused and changes nothing.
    Blob before = save(o.opts[0]);
    auto bad = saved[0].bytes;
    bad[200] ^= 1;
    EXPECT_EQ(obcclOnebitAdamLoadState(o.opts[0], bad.data(), bad.size()), obcclInvalidArgument);
    EXPECT_NE(std::string(obcclGetLastError(w[0])).find("checksum"), std::string::npos);
    EXPECT_EQ(obcclOnebitAdamLoadState(o.opts[0], bad.data(), bad.size() - 4),
              obcclInvalidArgument);
    EXPECT_EQ(save(o.opts[0]).bytes, before.bytes);
    runRanks<int>(
        world,
        [&](int r) {
          std::vector<float> p(n, 0.0f);
          auto g = randomVec(n, 5 + r);
          EXPECT_EQ(obcclOnebitAdamStep(o.opts[r], p.data(), g.data(), -1, nullptr), obcclSuccess)
              << obcclGetLastError(w[r]);
          return 0;
        },
        &w.comms);
  }
}

TEST(OnebitAdamApi, ResetErrorFeedbackZeroesOnlyTheErrorBuffers) {
  const size_t n = 100;
  OBCCL_MAKE_WORLD(w, 2, kTransports);
  Optimizers o;
  createAll(w, n, config(2), &o);
  runRanks<int>(
      2,
      [&](int r) {
        std::vector<float> p(n, 0.0f);
        for (int s = 0; s < 5; ++s) {
          auto g = randomVec(n, 3 * s + r);
          EXPECT_EQ(obcclOnebitAdamStep(o.opts[r], p.data(), g.data(), -1, nullptr), obcclSuccess);
        }
        return 0;
      },
      &w.comms);
  for (int r = 0; r < 2; ++r) {
    Blob before = save(o.opts[r]);
    bool nonzero = false;
    for (float e : before.errors()) nonzero = nonzero || e != 0.0f;
    EXPECT_TRUE(nonzero);
    ASSERT_EQ(obcclOnebitAdamResetErrorFeedback(o.opts[r]), obcclSuccess);
    Blob after = save(o.opts[r]);
    for (float e : after.errors()) ASSERT_EQ(e, 0.0f);
    EXPECT_TRUE(bitwiseEqual(after.section(0), before.section(0)));
    EXPECT_TRUE(bitwiseEqual(after.section(1), before.section(1)));
    EXPECT_EQ(after.step(), before.step());
  }
  EXPECT_EQ(obcclOnebitAdamResetErrorFeedback(nullptr), obcclInvalidArgument);
}

}  // namespace
