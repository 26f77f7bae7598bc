// Every codec variant against the element-by-element reference in test_codec_reference.h, bit for
// bit, on random data full of signed zeros, denormals and huge values, for every span length that
// is a multiple of 8 up to 4096 (decode: every length), several block sizes, partial inputs
// (padding) and pointers that are not vector aligned. Equality with one reference implies the
// variants agree with each other.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "codec/codec.h"
#include "test_codec_reference.h"

namespace obccl::codec {
namespace {

using testref::Gen;

class CodecKernels : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    k_ = kernelsFor(GetParam());
    if (k_ == nullptr) GTEST_SKIP() << variantName(GetParam()) << " is not supported on this CPU";
  }
  const Kernels* k_ = nullptr;
};

std::string variantParamName(const ::testing::TestParamInfo<Variant>& info) {
  return variantName(info.param);
}

const char* typeName(obcclDataType_t dt) {
  return dt == obcclFloat32 ? "fp32" : dt == obcclFloat16 ? "fp16" : "bf16";
}

// Index of the first element whose bytes differ, or -1.
template <typename T>
long firstDifference(const T* a, const T* b, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return static_cast<long>(i);
  return -1;
}

void expectLanes(const std::vector<testref::Lanes>& want, const std::vector<NormAccumulator>& got,
                 const std::string& where) {
  ASSERT_EQ(want.size(), got.size()) << where;
  for (size_t b = 0; b < want.size(); ++b) {
    long d = firstDifference(want[b].data(), got[b].lane, 8);
    EXPECT_EQ(d, -1) << where << " block " << b << " lane " << d << ": want " << want[b][d]
                     << " got " << got[b].lane[d];
  }
}

// A float buffer whose data starts one element past a 64-byte boundary, with guard values around.
struct Floats {
  explicit Floats(const std::vector<float>& v) : store(v.size() + 18, 7.25f) {
    std::memcpy(data(), v.data(), v.size() * 4);
    n = v.size();
  }
  float* data() { return store.data() + 1; }
  std::vector<float> values() const { return {store.begin() + 1, store.begin() + 1 + n}; }
  bool guardsIntact() const {
    if (store[0] != 7.25f) return false;
    for (size_t i = n + 1; i < store.size(); ++i)
      if (store[i] != 7.25f) return false;
    return true;
  }
  std::vector<float> store;
  size_t n;
};

constexpr size_t kBlocks[] = {0, 8, 24, 64, 256, 1024, 0};
constexpr obcclDataType_t kTypes[] = {obcclFloat32, obcclFloat16, obcclBfloat16};

void checkWorker(const Kernels& k, Gen& g, obcclDataType_t dt, size_t len, size_t valid,
                 size_t block, size_t xOffset) {
  std::string where = std::string(typeName(dt)) + " len " + std::to_string(len) + " valid " +
                      std::to_string(valid) + " block " + std::to_string(block);
  std::vector<uint8_t> x = g.raw(dt, valid);
  std::vector<uint8_t> xStore(x.size() + xOffset + 1);
  if (!x.empty()) std::memcpy(xStore.data() + xOffset, x.data(), x.size());  // data() may be null
  const void* xp = xStore.data() + xOffset;
  std::vector<float> e0 = g.values(len);
  Floats e(e0);

  std::vector<float> u = testref::workerU(x.data(), dt, valid, e0.data(), len);
  std::vector<uint8_t> wantBits = testref::pack(u);
  std::vector<uint8_t> bits(len / 8 + 2, 0x5a);
  std::vector<NormAccumulator> norms(testref::numBlocks(len, block));
  k.workerEncode(xp, dt, valid, e.data(), len, block, bits.data() + 1, norms.data());
  EXPECT_EQ(firstDifference(wantBits.data(), bits.data() + 1, len / 8), -1) << where;
  EXPECT_EQ(bits.front(), 0x5a) << where;
  EXPECT_EQ(bits.back(), 0x5a) << where;
  expectLanes(testref::norms(u, block), norms, where);
  EXPECT_EQ(firstDifference(e0.data(), e.data(), len), -1) << where << ": encode wrote e";

  std::vector<float> scales = g.scales(norms.size());
  std::vector<float> wantE = testref::workerUpdate(u, block, scales);
  k.workerUpdate(xp, dt, valid, e.data(), len, block, scales.data());
  long d = firstDifference(wantE.data(), e.data(), len);
  EXPECT_EQ(d, -1) << where << " update index " << d << ": want " << wantE[d] << " got "
                   << e.data()[d];
  EXPECT_TRUE(e.guardsIntact()) << where;
}

TEST_P(CodecKernels, WorkerMatchesReferenceForEveryLength) {
  Gen g(42 + static_cast<int>(GetParam()));
  for (size_t len = 8, step = 0; len <= 4096; len += 8, ++step) {
    for (obcclDataType_t dt : kTypes) {
      size_t choices[] = {len, len - 1 - step % 7, (step * 37) % len, 0, len / 2 + 3};
      size_t valid = std::min(len, choices[step % 5]);
      size_t block = kBlocks[(step + static_cast<size_t>(dt)) % 7];
      checkWorker(*k_, g, dt, len, valid, block, (step + static_cast<size_t>(dt)) % 4);
      if (HasFailure()) return;
    }
  }
}

TEST_P(CodecKernels, WorkerEveryValidCountInSmallSpans) {
  Gen g(7);
  for (size_t len : {8, 16, 24, 64, 72, 136}) {
    for (size_t valid = 0; valid <= len; ++valid) {
      for (obcclDataType_t dt : kTypes) checkWorker(*k_, g, dt, len, valid, 0, valid % 3);
      if (HasFailure()) return;
    }
  }
}

void checkServer(const Kernels& k, Gen& g, size_t n, size_t len, size_t block) {
  std::string where =
      "n " + std::to_string(n) + " len " + std::to_string(len) + " block " + std::to_string(block);
  size_t nb = testref::numBlocks(len, block);
  std::vector<std::vector<uint8_t>> bitStore(n);
  std::vector<std::vector<float>> scaleStore(n);
  std::vector<const uint8_t*> bits(n);
  std::vector<const float*> scales(n);
  for (size_t r = 0; r < n; ++r) {
    bitStore[r] = g.bytes(len / 8 + 1);
    scaleStore[r] = g.scales(nb + 1);
    bits[r] = bitStore[r].data() + 1;  // not vector aligned
    scales[r] = scaleStore[r].data() + 1;
  }
  std::vector<float> s0 = g.values(len);
  Floats s(s0);
  ServerSpan in{n, bits.data(), scales.data(), s.data()};

  std::vector<float> z = testref::serverZ(bits, scales, s0.data(), len, block);
  std::vector<NormAccumulator> norms(nb);
  k.serverNorm(in, len, block, norms.data());
  expectLanes(testref::norms(z, block), norms, where + " norm");
  EXPECT_EQ(firstDifference(s0.data(), s.data(), len), -1) << where << ": norm wrote s";

  std::vector<float> b = g.scales(nb);
  std::vector<float> wantS = testref::workerUpdate(z, block, b);  // same formula: z - b*sigma(z)
  std::vector<uint8_t> wantBits = testref::pack(z);
  std::vector<uint8_t> out(len / 8 + 2, 0xa5);
  Floats sOut(std::vector<float>(len, 1.5f));
  k.serverEncode(in, len, block, b.data(), out.data() + 1, sOut.data());
  EXPECT_EQ(firstDifference(wantBits.data(), out.data() + 1, len / 8), -1) << where;
  EXPECT_EQ(out.front(), 0xa5) << where;
  EXPECT_EQ(out.back(), 0xa5) << where;
  long d = firstDifference(wantS.data(), sOut.data(), len);
  EXPECT_EQ(d, -1) << where << " s index " << d << ": want " << wantS[d] << " got "
                   << sOut.data()[d];
  EXPECT_TRUE(sOut.guardsIntact()) << where;

  // Bits only, then in place without bits: the two halves of a deferred server update.
  std::vector<uint8_t> out2(len / 8, 0);
  k.serverEncode(in, len, block, b.data(), out2.data(), nullptr);
  EXPECT_EQ(out2, wantBits) << where;
  EXPECT_EQ(firstDifference(s0.data(), s.data(), len), -1) << where;
  k.serverEncode(in, len, block, b.data(), nullptr, s.data());
  EXPECT_EQ(firstDifference(wantS.data(), s.data(), len), -1) << where << " in place";
  EXPECT_TRUE(s.guardsIntact()) << where;
}

TEST_P(CodecKernels, ServerMatchesReferenceForEveryLength) {
  Gen g(99 + static_cast<int>(GetParam()));
  size_t step = 0;
  for (size_t n : {1, 2, 3, 4, 5, 8, 16}) {
    size_t maxLen = n <= 4 ? 4096 : 1600;
    for (size_t len = 8; len <= maxLen; len += 8, ++step) {
      checkServer(*k_, g, n, len, kBlocks[step % 7]);
      if (HasFailure()) return;
    }
  }
}

TEST_P(CodecKernels, DecodeMatchesReferenceForEveryLength) {
  Gen g(5 + static_cast<int>(GetParam()));
  const size_t blocks[] = {0, 8, 16, 40, 256};
  for (size_t len = 1, step = 0; len <= 4100; ++len, ++step) {
    for (obcclDataType_t dt : kTypes) {
      size_t block = blocks[step % 5];
      std::vector<uint8_t> bits = g.bytes((len + 7) / 8 + 1);
      std::vector<float> scales = g.scales(testref::numBlocks(len, block), 3e38f);
      std::vector<uint8_t> want = testref::decode(bits.data() + 1, len, block, scales, dt);
      size_t offset = step % 3;
      std::vector<uint8_t> y(want.size() + offset + 4, 0xee);
      k_->decode(bits.data() + 1, len, block, scales.data(), y.data() + offset, dt);
      long d = firstDifference(want.data(), y.data() + offset, want.size());
      EXPECT_EQ(d, -1) << typeName(dt) << " len " << len << " block " << block << " byte " << d;
      for (size_t i = 0; i < offset; ++i) EXPECT_EQ(y[i], 0xee);
      for (size_t i = offset + want.size(); i < y.size(); ++i) EXPECT_EQ(y[i], 0xee);
      if (HasFailure()) return;
    }
  }
}

// A vector cut into arbitrary spans (multiples of 8), each handled by a different variant, gives
// the same bits and the same norm as one call: callers may segment freely.
TEST_P(CodecKernels, SegmentationAndVariantMixingDoNotChangeResults) {
  Gen g(1234);
  const size_t len = 8 * 1531;
  std::vector<const Kernels*> all;
  for (int v = 0; v < kNumVariants; ++v)
    if (const Kernels* k = kernelsFor(static_cast<Variant>(v))) all.push_back(k);
  for (obcclDataType_t dt : kTypes) {
    size_t valid = len - 13;
    std::vector<uint8_t> x = g.raw(dt, valid);
    std::vector<float> e = g.values(len);
    std::vector<uint8_t> wholeBits(len / 8), bits(len / 8);
    NormAccumulator whole, pieces;
    k_->workerEncode(x.data(), dt, valid, e.data(), len, 0, wholeBits.data(), &whole);
    size_t es = testref::elemBytes(dt);
    for (size_t begin = 0, i = 0; begin < len; ++i) {
      size_t span = std::min(len - begin, 8 * (1 + g.below(100)));
      size_t v = valid > begin ? std::min(valid - begin, span) : 0;
      all[i % all.size()]->workerEncode(x.data() + begin * es, dt, v, e.data() + begin, span, 0,
                                        bits.data() + begin / 8, &pieces);
      begin += span;
    }
    EXPECT_EQ(bits, wholeBits) << typeName(dt);
    EXPECT_EQ(firstDifference(whole.lane, pieces.lane, 8), -1) << typeName(dt);
    EXPECT_EQ(whole.finish(), pieces.finish());
  }
}

INSTANTIATE_TEST_SUITE_P(AllVariants, CodecKernels,
                         ::testing::Values(Variant::kScalar, Variant::kAvx2, Variant::kAvx512),
                         variantParamName);

}  // namespace
}  // namespace obccl::codec
