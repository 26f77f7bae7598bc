// obcclCompressedAllReduce against the one-process simulation in test/common/onebit_reference.h:
// bit for bit against the exact arithmetic of DESIGN.md section 4 (outputs and both error
// buffers, several calls in a row, padding, compressBlock, many frames per chunk, fp16/bf16,
// in place), and against DeepSpeed's own float simulation with differences allowed only where
// the server value is within rounding of zero. Ranks {1,2,3,4,5,8} x counts
// {1,7,16,1000,4097,262147}.
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "multirank/test_compressed_harness.h"

namespace obccl_test {
namespace {

const size_t kCounts[] = {1, 7, 16, 1000, 4097, 262147};

std::string describe(int n, int block, size_t count, obcclDataType_t dt, bool inPlace, int call) {
  return std::to_string(n) + " ranks, block " + std::to_string(block) + ", count " +
         std::to_string(count) + ", " + floatTypeName(dt) + (inPlace ? ", in place" : "") +
         ", call " + std::to_string(call);
}

bool allSucceeded(const std::vector<obcclResult_t>& rcs, const std::vector<std::string>& msgs,
                  const std::string& what) {
  for (size_t r = 0; r < rcs.size(); ++r) {
    if (rcs[r] != obcclSuccess) {
      ADD_FAILURE() << what << ": rank " << r << " returned " << rcs[r] << ": " << msgs[r];
      return false;
    }
  }
  return true;
}

// Every rank's output is bitwise rank 0's, the guard element after it is intact.
bool outputsIdentical(const CompressedBuffers& b, bool inPlace, const std::string& what) {
  const size_t bytes = b.count * elemBytes(b.dt);
  for (size_t r = 0; r < b.send.size(); ++r) {
    const std::vector<uint8_t>& out = outputOf(b, static_cast<int>(r), inPlace);
    if (std::memcmp(out.data(), outputOf(b, 0, inPlace).data(), bytes) != 0) {
      ADD_FAILURE() << what << ": rank " << r << "'s output differs bitwise from rank 0's";
      return false;
    }
    if (!inPlace && out[bytes] != 0xcd) {
      ADD_FAILURE() << what << ": rank " << r << " wrote past count";
      return false;
    }
  }
  return true;
}

uint32_t storedBits(const std::vector<uint8_t>& out, size_t i, obcclDataType_t dt) {
  uint32_t v = 0;
  std::memcpy(&v, &out[i * elemBytes(dt)], elemBytes(dt));
  return v;
}

long firstDifference(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], 4) != 0) return static_cast<long>(i);
  return -1;
}

// Runs `calls` calls; after each, output and error buffers must equal the exact simulation.
void checkExactSequence(World& w, int block, size_t count, obcclDataType_t dt, bool inPlace,
                        int calls, std::mt19937_64& rng) {
  const int n = w.size();
  OnebitLayout layout = onebitLayout(count, n, static_cast<size_t>(block));
  CompressedBuffers b = makeBuffers(w, dt, count);
  ASSERT_EQ(b.errors.worker[0].size(), layout.padded);
  ASSERT_EQ(b.errors.server[0].size(), layout.chunk);
  OnebitErrors sim = OnebitErrors::zero(layout);
  for (int call = 0; call < calls; ++call) {
    std::string what = describe(n, block, count, dt, inPlace, call);
    fillInputs(&b, rng, call == 0 ? 1.0f : 0.01f);  // the scale changes: errors matter
    OnebitStepResult want = onebitStep(layout, b.x, &sim, OnebitArithmetic::kExact);
    std::vector<std::string> msgs;
    auto rcs = runCompressed(w, &b, inPlace, &msgs);
    ASSERT_TRUE(allSucceeded(rcs, msgs, what));
    ASSERT_TRUE(outputsIdentical(b, inPlace, what));
    const std::vector<uint8_t>& out = outputOf(b, 0, inPlace);
    for (size_t i = 0; i < count; ++i) {
      ASSERT_EQ(storedBits(out, i, dt), onebitEncode(want.y[i], dt))
          << what << ": element " << i << " (server value " << want.z[i] << ")";
    }
    for (int r = 0; r < n; ++r) {
      long d = firstDifference(b.errors.worker[r], sim.worker[r]);
      ASSERT_EQ(d, -1) << what << ": rank " << r << " worker error " << d;
      d = firstDifference(b.errors.server[r], sim.server[r]);
      ASSERT_EQ(d, -1) << what << ": rank " << r << " server error " << d;
    }
  }
}

struct WorldConfig {
  int block;
  size_t segmentBytes;  // 0: default (one frame per chunk for these counts)
};

class CompressedReference : public ::testing::TestWithParam<int> {};

TEST_P(CompressedReference, MatchesTheExactSimulationBitForBit) {
  const int n = GetParam();
  std::mt19937_64 rng(1000 + n);
  // Default frames; blocks of 256 with 8 blocks per frame; the paper's scheme over many frames.
  for (WorldConfig cfg : {WorldConfig{0, 0}, WorldConfig{256, 8192}, WorldConfig{0, 4096}}) {
    World w = makeCompressedWorld(n, kAnyTransport, cfg.block, cfg.segmentBytes);
    ASSERT_TRUE(w.ok()) << w.error;
    int variant = 0;
    for (size_t count : kCounts) {
      const obcclDataType_t types[] = {obcclFloat32, obcclFloat16, obcclBfloat16};
      obcclDataType_t dt = types[variant % 3];
      bool inPlace = variant % 2 == 1;
      ++variant;
      checkExactSequence(w, cfg.block, count, dt, inPlace, 2, rng);
      if (HasFatalFailure()) return;
    }
  }
}

// DeepSpeed's comparison: a different float order for the average and the norms may flip the
// sign of a server value only where it is within rounding of zero, and moves scales by rounding.
void checkAgainstDeepSpeed(World& w, size_t count, std::mt19937_64& rng) {
  const int n = w.size();
  OnebitLayout layout = onebitLayout(count, n, 0);
  CompressedBuffers b = makeBuffers(w, obcclFloat32, count);
  for (int call = 0; call < 2; ++call) {
    std::string what = describe(n, 0, count, obcclFloat32, false, call) + " (DeepSpeed)";
    fillInputs(&b, rng);
    OnebitErrors sim = b.errors;  // start from the library's state: no drift between calls
    OnebitStepResult want = onebitStep(layout, b.x, &sim, OnebitArithmetic::kDeepSpeed);
    std::vector<std::string> msgs;
    auto rcs = runCompressed(w, &b, false, &msgs);
    ASSERT_TRUE(allSucceeded(rcs, msgs, what));
    ASSERT_TRUE(outputsIdentical(b, false, what));
    const float* y = reinterpret_cast<const float*>(b.recv[0].data());
    size_t flips = 0;
    for (size_t i = 0; i < count; ++i) {
      if ((y[i] < 0) != (want.y[i] < 0)) {
        float nearZero = 16.0f * n * std::ldexp(1.0f, -24) * want.zScale[i];
        ASSERT_LE(std::fabs(want.z[i]), nearZero)
            << what << ": element " << i << " has the opposite sign of a server value " << want.z[i]
            << " that is not within rounding of zero";
        ++flips;
        continue;
      }
      ASSERT_NEAR(y[i], want.y[i], 1e-5 * std::fabs(want.y[i]) + 1e-30) << what << " " << i;
    }
    EXPECT_LE(flips, count / 1000 + 1) << what;
  }
}

TEST_P(CompressedReference, AgreesWithDeepSpeedsSimulation) {
  const int n = GetParam();
  std::mt19937_64 rng(2000 + n);
  World w = makeCompressedWorld(n, kAnyTransport, 0);
  ASSERT_TRUE(w.ok()) << w.error;
  for (size_t count : kCounts) {
    checkAgainstDeepSpeed(w, count, rng);
    if (HasFatalFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, CompressedReference, ::testing::Values(1, 2, 3, 4, 5, 8),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::to_string(info.param) + "ranks";
                         });

}  // namespace
}  // namespace obccl_test
