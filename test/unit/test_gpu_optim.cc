// Device optimizer kernels against the host reference of the same formulas (device/reference.h,
// the operations of core/onebit_adam_kernels.cc): bitwise equal for every element.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "device/device.h"
#include "device/reference.h"
#include "test_gpu_util.h"

namespace obccl::device {
namespace {

using namespace obccl::device::testing;

struct OptimCase {
  size_t n;
  size_t misalign;  // bytes (multiple of 4)
  bool mask;
  float rootFloor;
  float weightDecay;
};

std::string describe(const OptimCase& c) {
  return "n" + std::to_string(c.n) + "_off" + std::to_string(c.misalign) + (c.mask ? "_mask" : "") +
         (c.rootFloor > 0 ? "_floor" : "") + (c.weightDecay > 0 ? "_wd" : "");
}
void PrintTo(const OptimCase& c, std::ostream* os) { *os << describe(c); }

class GpuOptim : public ::testing::TestWithParam<OptimCase> {
 protected:
  void SetUp() override {
    const OptimCase& p = GetParam();
    std::mt19937_64 rng(p.n * 13 + p.misalign);
    p_ = randomFloats(p.n, 1.0f, rng);
    m_ = randomFloats(p.n, 0.1f, rng);
    g_ = randomFloats(p.n, 0.5f, rng);
    v_ = randomFloats(p.n, 0.01f, rng);
    for (size_t i = 0; i < p.n; ++i) {
      v_[i] = v_[i] * v_[i];
      if (i % 11 == 4) v_[i] = 0.0f;  // frozen zero variance
      mask_.push_back(v_[i] == 0.0f ? 0.0f : 1.0f);
    }
    params_.lr = 3e-3f;
    params_.beta1 = 0.9f;
    params_.beta2 = 0.999f;
    params_.eps = 1e-8f;
    params_.weightDecay = p.weightDecay;
  }

  std::vector<float> p_, m_, v_, g_, mask_;
  AdamParams params_;
};

TEST_P(GpuOptim, WarmupUpdateMatchesReference) {
  OBCCL_SKIP_WITHOUT_DEVICE();
  const OptimCase& c = GetParam();
  DevMem dp = upload(p_, c.misalign), dm = upload(m_, c.misalign), dv = upload(v_, c.misalign);
  DevMem dg = upload(g_, c.misalign);
  for (int step = 0; step < 2; ++step) {
    OBCCL_ASSERT_OK(warmupUpdate(dp.as<float>(), dm.as<float>(), dv.as<float>(), dg.as<float>(),
                                 c.n, params_, nullptr));
    ref::warmupUpdate(p_.data(), m_.data(), v_.data(), g_.data(), c.n, params_);
  }
  EXPECT_EQ(firstBitDifference(download<float>(dp.at(), c.n), p_), -1);
  EXPECT_EQ(firstBitDifference(download<float>(dm.at(), c.n), m_), -1);
  EXPECT_EQ(firstBitDifference(download<float>(dv.at(), c.n), v_), -1);
}

TEST_P(GpuOptim, CompressedStageMatchesReference) {
  OBCCL_SKIP_WITHOUT_DEVICE();
  const OptimCase& c = GetParam();
  DevMem dp = upload(p_, c.misalign), dm = upload(m_, c.misalign), dv = upload(v_, c.misalign);
  DevMem dg = upload(g_, c.misalign), dmask = upload(mask_, c.misalign);
  DevMem dout = devAlloc(c.n * 4, c.misalign);
  // Out of place, then in place.
  OBCCL_ASSERT_OK(
      momentumBlend(dout.as<float>(), dm.as<float>(), dg.as<float>(), c.n, params_.beta1, nullptr));
  OBCCL_ASSERT_OK(
      momentumBlend(dm.as<float>(), dm.as<float>(), dg.as<float>(), c.n, params_.beta1, nullptr));
  std::vector<float> blended(c.n);
  ref::momentumBlend(blended.data(), m_.data(), g_.data(), c.n, params_.beta1);
  EXPECT_EQ(firstBitDifference(download<float>(dout.at(), c.n), blended), -1);
  EXPECT_EQ(firstBitDifference(download<float>(dm.at(), c.n), blended), -1);

  const float* maskDev = c.mask ? dmask.as<float>() : nullptr;
  OBCCL_ASSERT_OK(frozenUpdate(dp.as<float>(), dm.as<float>(), dv.as<float>(), maskDev, c.n,
                               params_, c.rootFloor, nullptr));
  ref::frozenUpdate(p_.data(), blended.data(), v_.data(), c.mask ? mask_.data() : nullptr, c.n,
                    params_, c.rootFloor);
  EXPECT_EQ(firstBitDifference(download<float>(dp.at(), c.n), p_), -1);
  EXPECT_EQ(firstBitDifference(download<float>(dm.at(), c.n), blended), -1);
}

TEST_P(GpuOptim, ZeroVarianceMaskMatches) {
  OBCCL_SKIP_WITHOUT_DEVICE();
  const OptimCase& c = GetParam();
  DevMem dv = upload(v_, c.misalign), dmask = devAlloc(c.n * 4, c.misalign);
  OBCCL_ASSERT_OK(zeroVarianceMask(dv.as<float>(), dmask.as<float>(), c.n, nullptr));
  EXPECT_EQ(firstBitDifference(download<float>(dmask.at(), c.n), mask_), -1);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, GpuOptim,
    ::testing::Values(OptimCase{1, 0, false, 0.0f, 0.0f}, OptimCase{7, 4, true, 0.0f, 0.01f},
                      OptimCase{4099, 0, true, 1e-4f, 0.1f}, OptimCase{4099, 8, false, 0.0f, 0.1f},
                      OptimCase{(1u << 20) + 1, 0, true, 0.0f, 0.0f}),
    [](const ::testing::TestParamInfo<OptimCase>& info) { return describe(info.param); });

}  // namespace
}  // namespace obccl::device
