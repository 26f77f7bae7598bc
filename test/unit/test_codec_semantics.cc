// Hand-worked examples of the codec semantics (DESIGN.md section 4) for every variant: bit order,
// signed zeros, NaN and infinities, the norm's fixed summation order, scales and block layout.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "codec/codec.h"
#include "util/half.h"

namespace obccl::codec {
namespace {

class CodecSemantics : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    k_ = kernelsFor(GetParam());
    if (k_ == nullptr) GTEST_SKIP() << variantName(GetParam()) << " is not supported on this CPU";
  }
  const Kernels* k_ = nullptr;
};

const float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

float denormal() {
  float f;
  uint32_t bits = 5;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint32_t bitsOf(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

TEST_P(CodecSemantics, WorkerExampleByHand) {
  // 10 valid elements, 6 of padding whose error is zero.
  std::vector<float> x = {1, -2, 3, -4, 0.0f, -0.0f, 5, -6, 0.5f, -0.5f};
  std::vector<float> e(16, 0.0f);
  uint8_t bits[2];
  NormAccumulator acc;
  k_->workerEncode(x.data(), obcclFloat32, x.size(), e.data(), 16, 0, bits, &acc);
  EXPECT_EQ(bits[0], 0xAE);  // 1 0 1 0 1 1 1 0: both zeros are +1
  EXPECT_EQ(bits[1], 0xBF);  // 1 0 then padding (+0) is +1
  const double lanes[8] = {1.25, 4.25, 9, 16, 0, 0, 25, 36};
  for (int j = 0; j < 8; ++j) EXPECT_EQ(acc.lane[j], lanes[j]) << j;
  EXPECT_EQ(acc.finish(), 91.5);
  float a = rmsScale(acc, 16);
  EXPECT_EQ(a, static_cast<float>(std::sqrt(91.5 / 16)));

  k_->workerUpdate(x.data(), obcclFloat32, x.size(), e.data(), 16, 0, &a);
  EXPECT_EQ(e[0], 1 - a);
  EXPECT_EQ(e[1], -2 + a);
  EXPECT_EQ(e[4], -a);
  EXPECT_EQ(e[5], -a);
  EXPECT_EQ(e[9], -0.5f + a);
  for (int i = 10; i < 16; ++i) EXPECT_EQ(e[i], -a) << i;
}

TEST_P(CodecSemantics, SignsOfZerosDenormalsNaNAndInfinities) {
  std::vector<float> x = {0.0f, -0.0f, kNaN, -kNaN, denormal(), -denormal(), kInf, -kInf};
  std::vector<float> e(8, 0.0f);
  // x + 0.0f would turn -0.0 into +0.0; with e = -0.0 every value passes through unchanged.
  for (float& v : e) v = -0.0f;
  uint8_t bits = 0;
  NormAccumulator acc;
  k_->workerEncode(x.data(), obcclFloat32, 8, e.data(), 8, 0, &bits, &acc);
  EXPECT_EQ(bits, 0xFA);  // + + + + + - + -
  EXPECT_TRUE(std::isnan(acc.finish()));
}

TEST_P(CodecSemantics, NonFiniteInputMakesTheNormNonFinite) {
  for (obcclDataType_t dt : {obcclFloat32, obcclFloat16, obcclBfloat16}) {
    for (int where = 0; where < 3; ++where) {
      for (float bad : {kInf, -kInf, kNaN}) {
        const size_t len = 200, valid = 190;
        std::vector<float> xf(valid, 0.25f), e(len, -0.125f);
        if (where == 0) xf[77] = bad;  // in the data
        if (where == 1) e[131] = bad;  // in the error
        if (where == 2) e[195] = bad;  // in the padding's error
        std::vector<uint16_t> xh(valid);
        for (size_t i = 0; i < valid; ++i)
          xh[i] = dt == obcclFloat16 ? floatToHalf(xf[i]) : floatToBf16(xf[i]);
        const void* x = dt == obcclFloat32 ? static_cast<const void*>(xf.data()) : xh.data();
        std::vector<uint8_t> bits(len / 8);
        NormAccumulator acc;
        k_->workerEncode(x, dt, valid, e.data(), len, 0, bits.data(), &acc);
        EXPECT_FALSE(std::isfinite(acc.finish())) << dt << " " << where << " " << bad;
      }
    }
  }
}

TEST_P(CodecSemantics, HugeValuesDoNotOverflowTheNorm) {
  std::vector<float> x(64, 3.0e38f), e(64, 0.0f);
  std::vector<uint8_t> bits(8);
  NormAccumulator acc;
  k_->workerEncode(x.data(), obcclFloat32, 64, e.data(), 64, 0, bits.data(), &acc);
  double sq = static_cast<double>(3.0e38f) * static_cast<double>(3.0e38f);
  EXPECT_EQ(acc.lane[3], 8 * sq);
  EXPECT_TRUE(std::isfinite(acc.finish()));
  EXPECT_EQ(rmsScale(acc, 64), 3.0e38f);
}

TEST_P(CodecSemantics, ZeroScaleKeepsTheErrorExactly) {
  std::vector<float> x = {-0.0f, 1.5f};
  std::vector<float> e = {-0.0f, 0.0f, -0.0f, denormal(), -denormal(), 2, -2, 0};
  std::vector<float> want = {-0.0f, 1.5f, -0.0f, denormal(), -denormal(), 2, -2, 0};
  float a = 0.0f;
  k_->workerUpdate(x.data(), obcclFloat32, 2, e.data(), 8, 0, &a);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(bitsOf(e[i]), bitsOf(want[i])) << i;
}

TEST_P(CodecSemantics, ServerExampleByHand) {
  const uint8_t r0 = 0xF0, r1 = 0xCC;  // rank 0: + + + + - - - -, rank 1: + + - - + + - -
  const float a0 = 2.0f, a1 = 1.0f;
  const uint8_t* bits[] = {&r0, &r1};
  const float* scales[] = {&a0, &a1};
  std::vector<float> s(8, 0.0f);
  s[7] = 0.25f;
  ServerSpan in{2, bits, scales, s.data()};
  const float z[8] = {1.5f, 1.5f, 0.5f, 0.5f, -0.5f, -0.5f, -1.5f, -1.25f};
  NormAccumulator acc;
  k_->serverNorm(in, 8, 0, &acc);
  for (int j = 0; j < 8; ++j) EXPECT_EQ(acc.lane[j], static_cast<double>(z[j]) * z[j]) << j;
  EXPECT_EQ(acc.finish(), 9.3125);
  float b = rmsScale(acc, 8);
  uint8_t out = 0;
  k_->serverEncode(in, 8, 0, &b, &out, s.data());
  EXPECT_EQ(out, 0xF0);
  for (int j = 0; j < 8; ++j) EXPECT_EQ(s[j], z[j] - (z[j] < 0 ? -b : b)) << j;
}

TEST_P(CodecSemantics, ServerAveragesInRankOrderThenAddsTheError) {
  // Rank order matters in fp32: 1e8 - 1e8 + 1 = 1, but 1e8 + 1 - 1e8 = 0.
  const uint8_t plus = 0xFF, minus = 0x00;
  const float big = 1e8f, one = 1.0f;
  const uint8_t* bits[] = {&plus, &minus, &plus};
  const float* scales[] = {&big, &big, &one};
  std::vector<float> s(8, 0.0f);
  ServerSpan in{3, bits, scales, s.data()};
  float b = 1.0f;
  std::vector<float> sOut(8);
  k_->serverEncode(in, 8, 0, &b, nullptr, sOut.data());
  EXPECT_EQ(sOut[0], 1.0f * (1.0f / 3.0f) - 1.0f);
}

TEST_P(CodecSemantics, BlocksUseTheirOwnScales) {
  // Blocks of 8: [0, 8), [8, 16) and the short last one [16, 20).
  const uint8_t bits[3] = {0xFF, 0x00, 0xF0};
  const float scales[3] = {1.0f, 2.0f, 4.0f};
  std::vector<float> y(20);
  k_->decode(bits, 20, 8, scales, y.data(), obcclFloat32);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(y[i], 1.0f);
  for (int i = 8; i < 16; ++i) EXPECT_EQ(y[i], -2.0f);
  for (int i = 16; i < 20; ++i) EXPECT_EQ(y[i], 4.0f);
}

TEST_P(CodecSemantics, DecodeRoundsToHalfTypes) {
  const uint8_t bits = 0xA0;  // + - + ...
  const float b = 1.0f / 3.0f;
  uint16_t h[3], bf[3];
  k_->decode(&bits, 3, 0, &b, h, obcclFloat16);
  k_->decode(&bits, 3, 0, &b, bf, obcclBfloat16);
  EXPECT_EQ(h[0], floatToHalf(b));
  EXPECT_EQ(h[1], floatToHalf(-b));
  EXPECT_EQ(h[2], floatToHalf(b));
  EXPECT_EQ(bf[0], floatToBf16(b));
  EXPECT_EQ(bf[1], floatToBf16(-b));
  EXPECT_EQ(halfToFloat(h[0]), 0.333251953125f);
}

INSTANTIATE_TEST_SUITE_P(AllVariants, CodecSemantics,
                         ::testing::Values(Variant::kScalar, Variant::kAvx2, Variant::kAvx512),
                         [](const ::testing::TestParamInfo<Variant>& info) {
                           return std::string(variantName(info.param));
                         });

TEST(NormAccumulator, FinishUsesTheFixedTree) {
  // Left to right, 1 + 2^-53 + 2^-53 rounds to 1 twice; the tree adds the two small lanes first.
  NormAccumulator acc;
  acc.lane[0] = 1.0;
  acc.lane[2] = std::ldexp(1.0, -53);
  acc.lane[3] = std::ldexp(1.0, -53);
  EXPECT_EQ(acc.finish(), 1.0 + std::ldexp(1.0, -52));
}

TEST(NormAccumulator, ScalesAndBlockCounts) {
  EXPECT_EQ(rmsScale(8.0, 2), 2.0f);
  EXPECT_EQ(rmsScale(0.0, 5), 0.0f);
  EXPECT_EQ(rmsScale(2.0, 1), static_cast<float>(std::sqrt(2.0)));
  EXPECT_EQ(blockCount(0, 0), 0u);
  EXPECT_EQ(blockCount(24, 0), 1u);
  EXPECT_EQ(blockCount(24, 8), 3u);
  EXPECT_EQ(blockCount(24, 16), 2u);
  EXPECT_EQ(blockCount(24, 256), 1u);
}

}  // namespace
}  // namespace obccl::codec
