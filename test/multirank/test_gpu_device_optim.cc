// The 1-bit Adam helper with device buffers against the same run with host buffers, through the
// public C API: parameters after every step, the step/stage/skip counters and the saved state
// must be bitwise equal, through warmup, the freeze (with an automatic mask), both skip kinds and
// a final step back on host buffers. Both device paths of the compressed allreduce are used.
// Skips without a CUDA device; perf/gpu/emulate_integration.sh runs it on the CPU.
#include "multirank/gpu_device_harness.h"
#include "obccl/onebit_adam.h"

namespace obccl_gpu_test {
namespace {

constexpr int kRanks = 2;
constexpr size_t kCount = 1500;
constexpr int kSteps = 8;  // the last one on host buffers

// Rank r's gradient at step t: random, zero on the first 16 coordinates (their v stays 0, so the
// freeze masks them), a NaN on rank 1 at step 1 (warmup) and on rank 0 at step 5 (compressed).
std::vector<float> gradient(int r, int t) {
  std::vector<uint8_t> bytes = randomInput(obcclFloat32, kCount, 7000 + 31 * t + r, 0.5f);
  std::vector<float> g(kCount);
  std::memcpy(g.data(), bytes.data(), bytes.size());
  for (size_t i = 0; i < 16; ++i) g[i] = 0.0f;
  if ((r == 1 && t == 1) || (r == 0 && t == 5)) g[kCount / 3] = std::nanf("");
  return g;
}

struct Trace {
  std::vector<std::vector<uint8_t>> params;  // after each step
  long long step = 0, skipped = 0;
  obcclOptimStage_t stage = obcclStageWarmup;
  std::vector<uint8_t> state;
  obcclResult_t rc = obcclSuccess;
  std::string error;
};

Trace run(obcclComm_t comm, int r, bool device) {
  Trace tr;
  obcclOnebitAdamConfig_t cfg = OBCCL_ONEBIT_ADAM_CONFIG_INITIALIZER;
  cfg.freezeStep = 3;
  cfg.weightDecay = 0.01f;
  obcclOnebitAdam_t opt = nullptr;
  tr.rc = obcclOnebitAdamCreate(comm, kCount, &cfg, &opt);
  if (tr.rc != obcclSuccess) return tr;
  std::vector<float> p(kCount);
  for (size_t i = 0; i < kCount; ++i) p[i] = 0.01f * static_cast<float>(i % 97);
  DevBuf dp(p);
  cudaStream_t stream = nullptr;
  if (device) cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  for (int t = 0; t < kSteps && tr.rc == obcclSuccess; ++t) {
    std::vector<float> g = gradient(r, t);
    if (device && t + 1 < kSteps) {
      DevBuf dg(g);
      tr.rc = obcclOnebitAdamStep(opt, dp.f(), dg.f(), -1.0f, stream);
      tr.params.push_back(dp.bytes());
    } else {
      if (device && t + 1 == kSteps) std::memcpy(p.data(), dp.bytes().data(), kCount * 4);
      tr.rc = obcclOnebitAdamStep(opt, p.data(), g.data(), -1.0f, nullptr);
      tr.params.push_back(asBytes(p));
    }
  }
  if (tr.rc != obcclSuccess) tr.error = obcclGetLastError(comm);
  obcclOnebitAdamGetInfo(opt, &tr.step, &tr.stage, &tr.skipped);
  size_t bytes = 0;
  obcclOnebitAdamStateSize(opt, &bytes);
  tr.state.resize(bytes);
  obcclOnebitAdamSaveState(opt, tr.state.data(), bytes);
  obcclOnebitAdamDestroy(opt);
  if (stream != nullptr) cudaStreamDestroy(stream);
  return tr;
}

void checkPath(const char* path) {
  World w = makeDeviceWorld(kRanks);
  ASSERT_TRUE(w.ok()) << w.error;
  ScopedEnv env("OBCCL_DEVICE_PATH", path);
  auto host = runRanks<Trace>(
      kRanks, [&](int r) { return run(w[r], r, false); }, &w.comms);
  auto dev = runRanks<Trace>(
      kRanks, [&](int r) { return run(w[r], r, true); }, &w.comms);
  for (int r = 0; r < kRanks; ++r) {
    ASSERT_EQ(host[r].rc, obcclSuccess) << host[r].error;
    ASSERT_EQ(dev[r].rc, obcclSuccess) << path << ": " << dev[r].error;
    ASSERT_EQ(dev[r].params.size(), host[r].params.size());
    for (size_t t = 0; t < host[r].params.size(); ++t)
      EXPECT_EQ(firstDifference(dev[r].params[t], host[r].params[t]), -1)
          << path << ": params after step " << t << ", rank " << r;
    EXPECT_EQ(dev[r].step, host[r].step);
    EXPECT_EQ(dev[r].skipped, host[r].skipped);
    EXPECT_EQ(dev[r].stage, host[r].stage);
    EXPECT_EQ(firstDifference(dev[r].state, host[r].state), -1) << path << ": saved state";
  }
  EXPECT_EQ(host[0].skipped, 2);
  EXPECT_EQ(host[0].stage, obcclStageCompressed);
}

TEST(DeviceOnebitAdam, StagedPathSameBitsAsHost) {
  OBCCL_GPU_SKIP_WITHOUT_DEVICE();
  checkPath("staged");
}

TEST(DeviceOnebitAdam, DirectPathSameBitsAsHost) {
  OBCCL_GPU_SKIP_WITHOUT_DEVICE();
  checkPath("host-exchange");
}

TEST(DeviceOnebitAdam, MixedParamsAndGradientsAreInvalidArguments) {
  OBCCL_GPU_SKIP_WITHOUT_DEVICE();
  World w = makeDeviceWorld(1);
  ASSERT_TRUE(w.ok()) << w.error;
  obcclOnebitAdam_t opt = nullptr;
  ASSERT_EQ(obcclOnebitAdamCreate(w[0], 64, nullptr, &opt), obcclSuccess);
  DevBuf dp(std::vector<float>(64, 1.0f));
  std::vector<float> g(64, 0.5f);
  EXPECT_EQ(obcclOnebitAdamStep(opt, dp.f(), g.data(), -1.0f, nullptr), obcclInvalidArgument);
  EXPECT_NE(std::string(obcclGetLastError(w[0]))
                .find("params is device memory but localGrads is "
                      "host memory"),
            std::string::npos)
      << obcclGetLastError(w[0]);
  long long step = -1, skipped = -1;
  obcclOptimStage_t stage;
  ASSERT_EQ(obcclOnebitAdamGetInfo(opt, &step, &stage, &skipped), obcclSuccess);
  EXPECT_EQ(step, 0);
  EXPECT_EQ(obcclOnebitAdamDestroy(opt), obcclSuccess);
}

}  // namespace
}  // namespace obccl_gpu_test
