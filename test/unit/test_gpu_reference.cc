// device/reference.h (the host reference perf/gpu checks the GPU against) must agree bit for bit
// with the CPU codec's scalar kernels. CPU only: runs without a device.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "codec/codec.h"
#include "device/device.h"
#include "device/reference.h"
#include "test_gpu_util.h"

namespace obccl::device {
namespace {

using namespace obccl::device::testing;

const codec::Kernels& cpu() { return *codec::kernelsFor(codec::Variant::kScalar); }

TEST(GpuReference, WorkerMatchesCodec) {
  for (obcclDataType_t t : {obcclFloat32, obcclFloat16, obcclBfloat16}) {
    for (size_t block : {size_t{0}, size_t{40}}) {
      const size_t n = 1001, nranks = 3, np = 1008, es = elemSize(t);
      const ScaleLayout l = ScaleLayout::worker(np, nranks, block);
      std::mt19937_64 rng(block + t);
      std::vector<uint8_t> x = encodeAs(randomFloats(n, 1.0f, rng), t);
      std::vector<float> e = randomFloats(np, 0.3f, rng);
      std::vector<double> sums = ref::workerSums(x.data(), t, n, e.data(), l);
      std::vector<float> scales(sums.size());
      for (size_t k = 0; k < sums.size(); ++k) scales[k] = ref::rmsScale(sums[k], l.scaleLen(k));
      std::vector<uint8_t> refBits(np / 8), cpuBits(np / 8);
      ref::workerBits(x.data(), t, n, e.data(), l, refBits.data());
      std::vector<float> refE = e, cpuE = e;
      ref::workerUpdate(x.data(), t, n, refE.data(), l, scales.data());
      const size_t bpc = l.blocksPerChunk(), cb = l.blockLen >= l.chunkLen ? 0 : l.blockLen;
      std::vector<codec::NormAccumulator> norms(l.numScales());
      for (size_t c = 0; c < l.chunks(); ++c) {
        size_t off = c * l.chunkLen, valid = n > off ? std::min(n - off, l.chunkLen) : 0;
        const void* xc = valid ? x.data() + off * es : nullptr;
        cpu().workerEncode(xc, t, valid, e.data() + off, l.chunkLen, cb, cpuBits.data() + off / 8,
                           norms.data() + c * bpc);
        cpu().workerUpdate(xc, t, valid, cpuE.data() + off, l.chunkLen, cb,
                           scales.data() + c * bpc);
      }
      for (size_t k = 0; k < sums.size(); ++k) {
        EXPECT_NEAR(sums[k], norms[k].finish(), 1e-12 * sums[k]);
      }
      EXPECT_EQ(refBits, cpuBits);
      EXPECT_EQ(firstBitDifference(refE, cpuE), -1);
    }
  }
}

TEST(GpuReference, ServerAndDecodeMatchCodec) {
  const int nranks = 3;
  const size_t c = 200, block = 64, bpc = 4;
  const ScaleLayout l = ScaleLayout::server(c, block);
  std::mt19937_64 rng(9);
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<uint8_t> bits(nranks * c / 8);
  for (auto& b : bits) b = static_cast<uint8_t>(byte(rng));
  std::vector<float> scales = randomFloats(nranks * bpc, 1.0f, rng);
  for (auto& s : scales) s = std::fabs(s);
  std::vector<float> s = randomFloats(c, 0.2f, rng);
  RankPacked in;
  in.bits = bits.data();
  in.scales = scales.data();
  in.nranks = nranks;
  std::vector<double> sums = ref::serverSums(in, s.data(), l);
  std::vector<float> b(bpc);
  for (size_t k = 0; k < bpc; ++k) b[k] = ref::rmsScale(sums[k], l.scaleLen(k));
  std::vector<uint8_t> refBits(c / 8), cpuBits(c / 8);
  std::vector<float> refS(c), cpuS(c);
  ref::serverEncode(in, s.data(), l, b.data(), refBits.data(), refS.data());

  std::vector<const uint8_t*> bp;
  std::vector<const float*> sp;
  for (int r = 0; r < nranks; ++r) {
    bp.push_back(&bits[r * c / 8]);
    sp.push_back(&scales[r * bpc]);
  }
  codec::ServerSpan span{static_cast<size_t>(nranks), bp.data(), sp.data(), s.data()};
  std::vector<codec::NormAccumulator> norms(bpc);
  cpu().serverNorm(span, c, block, norms.data());
  for (size_t k = 0; k < bpc; ++k) EXPECT_NEAR(sums[k], norms[k].finish(), 1e-12 * sums[k]);
  cpu().serverEncode(span, c, block, b.data(), cpuBits.data(), cpuS.data());
  EXPECT_EQ(refBits, cpuBits);
  EXPECT_EQ(firstBitDifference(refS, cpuS), -1);

  // Decode the three ranks' chunks as one gathered buffer, cut short.
  const ScaleLayout g = ScaleLayout::gathered(nranks * c, nranks, block);
  for (obcclDataType_t t : {obcclFloat32, obcclFloat16, obcclBfloat16}) {
    const size_t n = nranks * c - 5, es = elemSize(t);
    std::vector<uint8_t> refY(n * es), cpuY(n * es);
    ref::decode(in, g, n, refY.data(), t);
    for (int j = 0; j < nranks; ++j) {
      size_t off = j * c;
      cpu().decode(&bits[off / 8], std::min(c, n - off), block, &scales[j * bpc],
                   cpuY.data() + off * es, t);
    }
    EXPECT_EQ(refY, cpuY) << typeName(t);
  }
}

}  // namespace
}  // namespace obccl::device
