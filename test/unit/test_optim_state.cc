// 1-bit Adam helper: saving and loading state (round trips in both stages, across ranks and
// world sizes) and rejection of damaged blobs with nothing changed.
#include <gtest/gtest.h>

#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "core/onebit_adam.h"
#include "core/onebit_adam_state.h"
#include "unit/test_optim_sim.h"
#include "util/log.h"

namespace obccl::optim {
namespace {

using testing::makeSingle;
using testing::runRanks;
using testing::SimReducer;

std::vector<float> randomVec(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
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

std::vector<unsigned char> save(const OnebitAdam& opt) {
  std::vector<unsigned char> blob(opt.stateSize());
  EXPECT_TRUE(opt.saveState(blob.data(), blob.size()).isOk());
  return blob;
}

// Captures WARN lines of the optimizer while alive.
class WarnCapture {
 public:
  WarnCapture() {
    old_ = setLogHandler([this](LogLevel level, unsigned subsys, const std::string& line) {
      std::lock_guard<std::mutex> lock(mu_);
      if (level == LogLevel::kWarn && (subsys & kSubsysOptim)) lines_.push_back(line);
    });
  }
  ~WarnCapture() { setLogHandler(old_); }
  // True when one captured line contains every one of the pieces.
  bool contains(const std::vector<std::string>& pieces) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& l : lines_) {
      bool all = true;
      for (const auto& p : pieces) all = all && l.find(p) != std::string::npos;
      if (all) return true;
    }
    return false;
  }

 private:
  LogHandler old_;
  std::mutex mu_;
  std::vector<std::string> lines_;
};

// Saves after `before` steps, runs `after` more, loads, replays them: bitwise the same.
void roundTrip(int ranks, long long freeze, int before, int after) {
  const size_t n = 45;
  runRanks(ranks, n, testOptions(freeze), [&](int r, OnebitAdam& opt, SimReducer&) {
    auto p = randomVec(n, 9);
    for (int s = 0; s < before; ++s) {
      auto g = randomVec(n, 5 * s + r);
      ASSERT_TRUE(opt.step(p.data(), g.data(), -1.0f).isOk());
    }
    auto blob = save(opt);
    auto pSaved = p;
    auto play = [&] {
      for (int s = before; s < before + after; ++s) {
        auto g = randomVec(n, 5 * s + r);
        ASSERT_TRUE(opt.step(p.data(), g.data(), -1.0f).isOk());
      }
    };
    play();
    auto pFirst = p, mFirst = opt.momentum(), weFirst = opt.workerError();
    ASSERT_TRUE(opt.loadState(blob.data(), blob.size()).isOk());
    EXPECT_EQ(opt.stepCount(), before);
    p = pSaved;
    play();
    EXPECT_TRUE(bitwiseEqual(p, pFirst));
    EXPECT_TRUE(bitwiseEqual(opt.momentum(), mFirst));
    EXPECT_TRUE(bitwiseEqual(opt.workerError(), weFirst));
  });
}

TEST(OptimState, RoundTripInWarmupAcrossTheFreezeAndInTheCompressedStage) {
  roundTrip(1, 10, 4, 12);  // saved in warmup, replay crosses the freeze
  roundTrip(2, 10, 4, 12);
  roundTrip(3, 5, 9, 10);  // saved in the compressed stage, with error buffers
}

TEST(OptimState, SizeIsFixedForTheOptimizersLife) {
  const size_t n = 100;
  runRanks(2, n, testOptions(2), [&](int r, OnebitAdam& opt, SimReducer&) {
    size_t first = opt.stateSize();
    EXPECT_EQ(first, kStateHeaderBytes + 4 * (3 * n + 112 + 56));
    std::vector<float> p(n, 0.0f);
    for (int s = 0; s < 4; ++s) {
      auto g = randomVec(n, s + 10 * r);
      ASSERT_TRUE(opt.step(p.data(), g.data(), -1.0f).isOk());
    }
    EXPECT_EQ(opt.stateSize(), first);
    std::vector<unsigned char> small(first - 1);
    EXPECT_EQ(opt.saveState(small.data(), small.size()).code(), obcclInvalidArgument);
  });
}

TEST(OptimState, LoadingAnotherRanksOrWorldSizesStateKeepsMomentsAndZeroesErrors) {
  const size_t n = 70;
  std::vector<std::vector<unsigned char>> blobs(2);
  std::vector<std::vector<float>> ms(2), vs(2);
  runRanks(2, n, testOptions(3), [&](int r, OnebitAdam& opt, SimReducer&) {
    std::vector<float> p(n, 0.0f);
    for (int s = 0; s < 8; ++s) {
      auto g = randomVec(n, s + 10 * r);
      ASSERT_TRUE(opt.step(p.data(), g.data(), -1.0f).isOk());
    }
    blobs[r] = save(opt);
    ms[r] = opt.momentum();
    vs[r] = opt.variance();
  });
  // One capture for all rank threads: the log handler is process-wide.
  WarnCapture warn;
  auto check = [&](OnebitAdam& opt, int from, int rank, int world) {
    ASSERT_TRUE(opt.loadState(blobs[from].data(), blobs[from].size()).isOk());
    EXPECT_TRUE(bitwiseEqual(opt.momentum(), ms[from]));
    EXPECT_TRUE(bitwiseEqual(opt.variance(), vs[from]));
    EXPECT_EQ(opt.stepCount(), 8);
    EXPECT_EQ(opt.stage(), obcclStageCompressed);
    for (float e : opt.workerError()) ASSERT_EQ(e, 0.0f);
    for (float e : opt.serverError()) ASSERT_EQ(e, 0.0f);
    EXPECT_TRUE(warn.contains(
        {"saved by rank " + std::to_string(from) + " of 2 ",
         "loaded into rank " + std::to_string(rank) + " of " + std::to_string(world) + " ",
         "error-feedback buffers were zeroed"}));
  };
  // Rank 1 takes rank 0's state, in the same world.
  runRanks(2, n, testOptions(3), [&](int r, OnebitAdam& opt, SimReducer&) {
    if (r == 1) check(opt, 0, 1, 2);
  });
  // Other world sizes: 4 ranks and 1 rank; they keep stepping afterwards.
  for (int world : {4, 1}) {
    runRanks(world, n, testOptions(3), [&](int r, OnebitAdam& opt, SimReducer&) {
      check(opt, r % 2, r, world);
      std::vector<float> p(n, 0.0f);
      auto g = randomVec(n, 99 + r);
      ASSERT_TRUE(opt.step(p.data(), g.data(), -1.0f).isOk());
      EXPECT_EQ(opt.stepCount(), 9);
    });
  }
}

TEST(OptimState, DamagedOrForeignBlobsAreRejectedWithNothingChanged) {
  const size_t n = 30;
  auto opt = makeSingle(n, testOptions(2));
  ASSERT_NE(opt, nullptr);
  std::vector<float> p(n, 0.0f);
  for (int s = 0; s < 4; ++s) {
    auto g = randomVec(n, s);
    ASSERT_TRUE(opt->step(p.data(), g.data(), -1.0f).isOk());
  }
  const auto good = save(*opt);
  // A different state to load into, so "nothing changed" is visible.
  auto other = makeSingle(n, testOptions(2));
  auto g = randomVec(n, 50);
  ASSERT_TRUE(other->step(p.data(), g.data(), -1.0f).isOk());
  const auto otherBlob = save(*other);
  auto expectRejected = [&](const std::vector<unsigned char>& blob, const char* what) {
    Status s = other->loadState(blob.data(), blob.size());
    EXPECT_EQ(s.code(), obcclInvalidArgument) << what;
    EXPECT_NE(s.message().find(what), std::string::npos) << s.message();
    EXPECT_EQ(save(*other), otherBlob) << what;
  };
  expectRejected({good.begin(), good.end() - 1}, "truncated");
  expectRejected({good.begin(), good.begin() + 10}, "shorter than its header");
  auto padded = good;
  padded.push_back(0);
  expectRejected(padded, "truncated or padded");
  for (size_t at : {size_t{50}, size_t{100}, good.size() - 1}) {
    auto bad = good;
    bad[at] ^= 0x10;
    expectRejected(bad, "checksum");
  }
  auto badMagic = good;
  badMagic[0] ^= 1;
  expectRejected(badMagic, "magic");
  auto badVersion = good;
  badVersion[4] = 9;
  expectRejected(badVersion, "version");
  auto bigger = makeSingle(n + 1, testOptions(2));
  auto foreign = save(*bigger);
  expectRejected(foreign, "elements");
  // Well-formed blobs with bad contents (checksum recomputed by the writer).
  StateHeader h;
  h.count = n;
  std::vector<float> m(n, 0.0f), v(n, 1.0f), mask(n, 1.0f);
  mask[7] = 0.5f;
  h.flags = kStateUserMask;
  std::vector<unsigned char> crafted(stateBlobBytes(h));
  writeStateBlob(h, StateSections{m.data(), v.data(), mask.data(), nullptr, nullptr},
                 crafted.data());
  expectRejected(crafted, "mask[7]");
  v[3] = -1.0f;
  mask[7] = 1.0f;
  writeStateBlob(h, StateSections{m.data(), v.data(), mask.data(), nullptr, nullptr},
                 crafted.data());
  expectRejected(crafted, "v[3]");
  EXPECT_EQ(other->loadState(nullptr, 10).code(), obcclInvalidArgument);
  // And the good one loads.
  ASSERT_TRUE(other->loadState(good.data(), good.size()).isOk());
  EXPECT_EQ(save(*other), good);
}

TEST(OptimState, AutoFreezeHistoryAndMasksSurviveARoundTrip) {
  const size_t n = 500;
  Options o = testOptions(OBCCL_FREEZE_AUTO);
  o.beta2 = 0.99f;
  auto straight = makeSingle(n, o), resumed = makeSingle(n, o);
  std::vector<float> p1(n, 0.0f), p2(n, 0.0f);
  for (int s = 0; s < 600 && straight->stage() == obcclStageWarmup; ++s) {
    auto g = randomVec(n, s);
    ASSERT_TRUE(straight->step(p1.data(), g.data(), -1.0f).isOk());
    if (s < 155) {
      ASSERT_TRUE(resumed->step(p2.data(), g.data(), -1.0f).isOk());
      if (s == 154) {
        auto blob = save(*resumed);
        resumed = makeSingle(n, o);
        ASSERT_TRUE(resumed->loadState(blob.data(), blob.size()).isOk());
      }
    } else {
      ASSERT_TRUE(resumed->step(p2.data(), g.data(), -1.0f).isOk());
    }
  }
  EXPECT_EQ(resumed->stage(), obcclStageCompressed);
  EXPECT_EQ(resumed->stepCount(), straight->stepCount());
  EXPECT_TRUE(bitwiseEqual(p1, p2));
}

}  // namespace
}  // namespace obccl::optim
