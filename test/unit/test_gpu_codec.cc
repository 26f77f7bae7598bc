// Device codec kernels against the CPU codec's scalar kernels (codec/codec.h): given the same
// scales, packed bits, error buffers and decoded outputs must be bitwise equal; sums of squares
// agree to 1e-12 relative (the GPU combines them in a different fixed order).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <tuple>
#include <vector>

#include "codec/codec.h"
#include "device/device.h"
#include "test_gpu_util.h"

namespace obccl::device {
namespace {

using namespace obccl::device::testing;

const codec::Kernels& cpu() { return *codec::kernelsFor(codec::Variant::kScalar); }

// The codec's block argument for a layout (0: one block per chunk).
size_t codecBlock(const ScaleLayout& l) { return l.blockLen >= l.chunkLen ? 0 : l.blockLen; }

void expectSumsClose(const std::vector<double>& gpu, const std::vector<double>& cpuSums) {
  ASSERT_EQ(gpu.size(), cpuSums.size());
  for (size_t k = 0; k < gpu.size(); ++k) {
    double tol = 1e-12 * std::fabs(cpuSums[k]) + 1e-300;
    EXPECT_NEAR(gpu[k], cpuSums[k], tol) << "scale " << k;
  }
}

// GPU scales must be rmsScale of the GPU sums, bit for bit.
void expectScalesFromSums(const std::vector<float>& scales, const std::vector<double>& sums,
                          const ScaleLayout& l) {
  for (size_t k = 0; k < scales.size(); ++k) {
    EXPECT_EQ(floatBits(scales[k]), floatBits(codec::rmsScale(sums[k], l.scaleLen(k))))
        << "scale " << k;
  }
}

struct WorkerCase {
  obcclDataType_t type;
  size_t n;
  int nranks;
  size_t block;
  size_t misalign;  // bytes by which x and e are shifted off 16-byte alignment
};

std::string describe(const WorkerCase& c) {
  return std::string(typeName(c.type)) + "_n" + std::to_string(c.n) + "_r" +
         std::to_string(c.nranks) + "_b" + std::to_string(c.block) + "_off" +
         std::to_string(c.misalign);
}
// Short parameter text in test listings (and so in ctest's test names).
void PrintTo(const WorkerCase& c, std::ostream* os) { *os << describe(c); }

class GpuWorker : public ::testing::TestWithParam<WorkerCase> {};

TEST_P(GpuWorker, EncodeAndUpdateMatchCpuCodec) {
  OBCCL_SKIP_WITHOUT_DEVICE();
  const WorkerCase& p = GetParam();
  const size_t unit = 8 * static_cast<size_t>(p.nranks);
  const size_t np = (p.n + unit - 1) / unit * unit;
  const ScaleLayout l = ScaleLayout::worker(np, p.nranks, p.block);
  std::mt19937_64 rng(p.n * 31 + p.block + p.nranks);
  std::vector<uint8_t> x = encodeAs(randomFloats(p.n, 1.0f, rng), p.type);
  std::vector<float> e = randomFloats(np, 0.25f, rng);
  const size_t ns = l.numScales();

  DevMem dx = upload(x, p.misalign), de = upload(e, p.misalign);
  DevMem scratch = devAlloc(normScratchBytes(l));
  DevMem sums = devAlloc(ns * 8), scales = devAlloc(ns * 4), flag = devAlloc(4);
  DevMem bits = devAlloc(np / 8), bits2 = devAlloc(np / 8);
  NormOutputs out{sums.as<double>(), scales.as<float>(), flag.as<int>()};
  OBCCL_ASSERT_OK(workerEncode(dx.at(), p.type, p.n, de.as<float>(), l, scratch.at(),
                               normScratchBytes(l), out, bits.as<uint8_t>(), nullptr));
  std::vector<double> gpuSums = download<double>(sums.at(), ns);
  std::vector<float> gpuScales = download<float>(scales.at(), ns);
  EXPECT_EQ(download<int>(flag.at(), 1)[0], 0);

  // CPU codec, one span per chunk.
  const size_t es = elemSize(p.type), bpc = l.blocksPerChunk();
  std::vector<codec::NormAccumulator> norms(ns);
  std::vector<uint8_t> cpuBits(np / 8);
  std::vector<float> cpuE = e;
  for (size_t c = 0; c < l.chunks(); ++c) {
    size_t off = c * l.chunkLen;
    size_t valid = p.n > off ? std::min(p.n - off, l.chunkLen) : 0;
    const void* xc = valid ? x.data() + off * es : nullptr;
    cpu().workerEncode(xc, p.type, valid, e.data() + off, l.chunkLen, codecBlock(l),
                       cpuBits.data() + off / 8, norms.data() + c * bpc);
    cpu().workerUpdate(xc, p.type, valid, cpuE.data() + off, l.chunkLen, codecBlock(l),
                       gpuScales.data() + c * bpc);
  }
  std::vector<double> cpuSums(ns);
  for (size_t k = 0; k < ns; ++k) cpuSums[k] = norms[k].finish();
  expectSumsClose(gpuSums, cpuSums);
  expectScalesFromSums(gpuScales, gpuSums, l);
  EXPECT_EQ(firstBitDifference(download<uint8_t>(bits.at(), np / 8), cpuBits), -1);
  // The encode pass leaves e alone.
  EXPECT_EQ(firstBitDifference(download<float>(de.at(), np), e), -1);

  OBCCL_ASSERT_OK(workerUpdate(dx.at(), p.type, p.n, de.as<float>(), l, scales.as<float>(),
                               bits2.as<uint8_t>(), nullptr));
  EXPECT_EQ(firstBitDifference(download<float>(de.at(), np), cpuE), -1);
  EXPECT_EQ(firstBitDifference(download<uint8_t>(bits2.at(), np / 8), cpuBits), -1);
}

std::vector<WorkerCase> workerCases() {
  std::vector<WorkerCase> cases;
  for (obcclDataType_t t : {obcclFloat32, obcclFloat16, obcclBfloat16}) {
    for (auto [n, r, b] : std::vector<std::tuple<size_t, int, size_t>>{{1, 1, 0},
                                                                       {7, 1, 0},
                                                                       {8, 2, 0},
                                                                       {1000, 3, 0},
                                                                       {1000, 3, 16},
                                                                       {4097, 4, 64},
                                                                       {5000, 2, 1000},
                                                                       {70001, 1, 0},
                                                                       {300000, 5, 2056},
                                                                       {(1u << 20) + 3, 8, 0},
                                                                       {(1u << 20) + 3, 8, 4096}}) {
      cases.push_back({t, n, r, b, 0});
    }
    cases.push_back({t, 4099, 3, 0, 4});
    cases.push_back({t, 4099, 3, 72, 12});
  }
  return cases;
}

std::string workerName(const ::testing::TestParamInfo<WorkerCase>& info) {
  return describe(info.param);
}

INSTANTIATE_TEST_SUITE_P(Cases, GpuWorker, ::testing::ValuesIn(workerCases()), workerName);

struct ServerCase {
  int nranks;
  size_t c;
  size_t block;
  bool strided;  // per-rank messages [scales | bits] instead of dense arrays
};

std::string describe(const ServerCase& c) {
  return "r" + std::to_string(c.nranks) + "_c" + std::to_string(c.c) + "_b" +
         std::to_string(c.block) + (c.strided ? "_strided" : "");
}
void PrintTo(const ServerCase& c, std::ostream* os) { *os << describe(c); }

class GpuServer : public ::testing::TestWithParam<ServerCase> {};

TEST_P(GpuServer, NormAndEncodeMatchCpuCodec) {
  OBCCL_SKIP_WITHOUT_DEVICE();
  const ServerCase& p = GetParam();
  const ScaleLayout l = ScaleLayout::server(p.c, p.block);
  const size_t bpc = l.blocksPerChunk(), nb = p.c / 8;
  std::mt19937_64 rng(p.c * 7 + p.nranks);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.0f, 2.0f);
  // Rank r's message: bpc scales, then its packed chunk, padded to 16 bytes.
  const size_t msg = p.strided ? (bpc * 4 + nb + 15) / 16 * 16 : 0;
  std::vector<uint8_t> bits(p.strided ? 0 : p.nranks * nb);
  std::vector<float> scales(p.strided ? 0 : p.nranks * bpc);
  std::vector<uint8_t> msgs(p.nranks * msg);
  std::vector<const uint8_t*> bitPtrs(p.nranks);
  std::vector<const float*> scalePtrs(p.nranks);
  for (int r = 0; r < p.nranks; ++r) {
    uint8_t* bp = p.strided ? &msgs[r * msg + bpc * 4] : &bits[r * nb];
    float* sp = p.strided ? reinterpret_cast<float*>(&msgs[r * msg]) : &scales[r * bpc];
    for (size_t k = 0; k < nb; ++k) bp[k] = static_cast<uint8_t>(byte(rng));
    for (size_t k = 0; k < bpc; ++k) sp[k] = k % 5 == 3 ? 0.0f : scale(rng);
    bitPtrs[r] = bp;
    scalePtrs[r] = sp;
  }
  std::vector<float> s = randomFloats(p.c, 0.5f, rng);

  DevMem dm = upload(msgs), db = upload(bits), dsc = upload(scales), ds = upload(s);
  RankPacked in;
  in.nranks = p.nranks;
  if (p.strided) {
    in.bits = dm.as<uint8_t>() + bpc * 4;
    in.scales = dm.as<float>();
    in.bitsStrideBytes = in.scalesStrideBytes = msg;
  } else {
    in.bits = db.as<uint8_t>();
    in.scales = dsc.as<float>();
  }
  DevMem scratch = devAlloc(normScratchBytes(l));
  DevMem sums = devAlloc(bpc * 8), outScales = devAlloc(bpc * 4), flag = devAlloc(4);
  OBCCL_ASSERT_OK(serverNorm(in, ds.as<float>(), l, scratch.at(), normScratchBytes(l),
                             {sums.as<double>(), outScales.as<float>(), flag.as<int>()}, nullptr));
  std::vector<double> gpuSums = download<double>(sums.at(), bpc);
  std::vector<float> gpuScales = download<float>(outScales.at(), bpc);
  EXPECT_EQ(download<int>(flag.at(), 1)[0], 0);

  codec::ServerSpan span;
  span.nranks = static_cast<size_t>(p.nranks);
  span.bits = bitPtrs.data();
  span.scales = scalePtrs.data();
  span.s = s.data();
  std::vector<codec::NormAccumulator> norms(bpc);
  cpu().serverNorm(span, p.c, codecBlock(l), norms.data());
  std::vector<double> cpuSums(bpc);
  for (size_t k = 0; k < bpc; ++k) cpuSums[k] = norms[k].finish();
  expectSumsClose(gpuSums, cpuSums);
  expectScalesFromSums(gpuScales, gpuSums, l);

  std::vector<uint8_t> cpuBits(nb);
  std::vector<float> cpuS(p.c);
  cpu().serverEncode(span, p.c, codecBlock(l), gpuScales.data(), cpuBits.data(), cpuS.data());

  // Separate output, then bits only, then in place.
  DevMem outBits = devAlloc(nb), sOut = devAlloc(p.c * 4);
  OBCCL_ASSERT_OK(serverEncode(in, ds.as<float>(), l, outScales.as<float>(), outBits.as<uint8_t>(),
                               sOut.as<float>(), nullptr));
  EXPECT_EQ(firstBitDifference(download<uint8_t>(outBits.at(), nb), cpuBits), -1);
  EXPECT_EQ(firstBitDifference(download<float>(sOut.at(), p.c), cpuS), -1);
  DevMem bitsOnly = devAlloc(nb);
  OBCCL_ASSERT_OK(serverEncode(in, ds.as<float>(), l, outScales.as<float>(), bitsOnly.as<uint8_t>(),
                               nullptr, nullptr));
  EXPECT_EQ(firstBitDifference(download<uint8_t>(bitsOnly.at(), nb), cpuBits), -1);
  EXPECT_EQ(firstBitDifference(download<float>(ds.at(), p.c), s), -1);
  OBCCL_ASSERT_OK(
      serverEncode(in, ds.as<float>(), l, outScales.as<float>(), nullptr, ds.as<float>(), nullptr));
  EXPECT_EQ(firstBitDifference(download<float>(ds.at(), p.c), cpuS), -1);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, GpuServer,
    ::testing::Values(ServerCase{1, 8, 0, false}, ServerCase{2, 1000, 0, false},
                      ServerCase{3, 1000, 64, true}, ServerCase{5, 65544, 0, false},
                      ServerCase{8, 65544, 1000, true}, ServerCase{8, 300000, 0, true}),
    [](const ::testing::TestParamInfo<ServerCase>& info) { return describe(info.param); });

struct DecodeCase {
  obcclDataType_t type;
  int nranks;
  size_t c;
  size_t block;
  size_t cut;       // n = nranks * c - cut
  size_t misalign;  // bytes
};

std::string describe(const DecodeCase& c) {
  return std::string(typeName(c.type)) + "_r" + std::to_string(c.nranks) + "_c" +
         std::to_string(c.c) + "_b" + std::to_string(c.block) + "_cut" + std::to_string(c.cut) +
         "_off" + std::to_string(c.misalign);
}
void PrintTo(const DecodeCase& c, std::ostream* os) { *os << describe(c); }

class GpuDecode : public ::testing::TestWithParam<DecodeCase> {};

TEST_P(GpuDecode, MatchesCpuCodec) {
  OBCCL_SKIP_WITHOUT_DEVICE();
  const DecodeCase& p = GetParam();
  const size_t np = p.nranks * p.c, n = np - p.cut, es = elemSize(p.type);
  const ScaleLayout l = ScaleLayout::gathered(np, p.nranks, p.block);
  const size_t bpc = l.blocksPerChunk();
  std::mt19937_64 rng(np + p.block);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.0f, 3.0f);
  std::vector<uint8_t> bits(np / 8);
  for (auto& b : bits) b = static_cast<uint8_t>(byte(rng));
  std::vector<float> scales(p.nranks * bpc);
  for (auto& s : scales) s = scale(rng);
  scales[0] = 1e30f;  // overflows fp16 and must become +-inf as on the CPU
  std::vector<uint8_t> cpuY(n * es);
  for (int j = 0; j < p.nranks; ++j) {
    size_t off = j * p.c;
    if (off >= n) break;
    cpu().decode(bits.data() + off / 8, std::min(p.c, n - off), codecBlock(l), &scales[j * bpc],
                 cpuY.data() + off * es, p.type);
  }
  DevMem db = upload(bits), ds = upload(scales), dy = devAlloc(n * es, p.misalign);
  RankPacked in;
  in.bits = db.as<uint8_t>();
  in.scales = ds.as<float>();
  in.nranks = p.nranks;
  OBCCL_ASSERT_OK(decode(in, l, n, dy.at(), p.type, nullptr));
  EXPECT_EQ(firstBitDifference(download<uint8_t>(dy.at(), n * es), cpuY), -1);
}

std::vector<DecodeCase> decodeCases() {
  std::vector<DecodeCase> cases;
  for (obcclDataType_t t : {obcclFloat32, obcclFloat16, obcclBfloat16}) {
    cases.push_back({t, 1, 8, 0, 1, 0});
    cases.push_back({t, 3, 1000, 0, 7, 0});
    cases.push_back({t, 3, 1000, 64, 5, elemSize(t)});
    cases.push_back({t, 8, 65544, 0, 0, 0});
    cases.push_back({t, 8, 65544, 4096, 13, 4});
    cases.push_back({t, 2, 300000, 0, 299999, 0});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Cases, GpuDecode, ::testing::ValuesIn(decodeCases()),
                         [](const ::testing::TestParamInfo<DecodeCase>& info) {
                           return describe(info.param);
                         });

TEST(GpuCodec, NormsAreReproducible) {
  OBCCL_SKIP_WITHOUT_DEVICE();
  const size_t np = (1u << 22);
  const ScaleLayout l = ScaleLayout::worker(np, 4, 0);
  std::mt19937_64 rng(5);
  std::vector<float> x = randomFloats(np, 3.0f, rng), e = randomFloats(np, 1.0f, rng);
  DevMem dx = upload(x), de = upload(e), scratch = devAlloc(normScratchBytes(l));
  DevMem sums = devAlloc(8), scales = devAlloc(4);
  std::vector<uint64_t> seen;
  for (int rep = 0; rep < 3; ++rep) {
    OBCCL_ASSERT_OK(workerEncode(dx.at(), obcclFloat32, np, de.as<float>(), l, scratch.at(),
                                 normScratchBytes(l), {sums.as<double>(), scales.as<float>()},
                                 nullptr, nullptr));
    seen.push_back(doubleBits(download<double>(sums.at(), 1)[0]));
  }
  EXPECT_EQ(seen[0], seen[1]);
  EXPECT_EQ(seen[0], seen[2]);
}

TEST(GpuCodec, NonFiniteInputSetsTheFlag) {
  OBCCL_SKIP_WITHOUT_DEVICE();
  const size_t n = 10000, np = 10240;
  const ScaleLayout l = ScaleLayout::worker(np, 4, 512);
  for (int where = 0; where < 3; ++where) {
    std::mt19937_64 rng(where);
    std::vector<float> x = randomFloats(n, 1.0f, rng), e = randomFloats(np, 1.0f, rng);
    if (where == 1) x[4321] = std::nanf("");
    if (where == 2) e[np - 3] = -INFINITY;  // in the padding
    DevMem dx = upload(x), de = upload(e), scratch = devAlloc(normScratchBytes(l));
    DevMem scales = devAlloc(l.numScales() * 4), flag = devAlloc(4);
    OBCCL_ASSERT_OK(memsetAsync(flag.at(), 0x7f, 4, nullptr));  // the pass must clear it
    OBCCL_ASSERT_OK(workerEncode(dx.at(), obcclFloat32, n, de.as<float>(), l, scratch.at(),
                                 normScratchBytes(l), {nullptr, scales.as<float>(), flag.as<int>()},
                                 nullptr, nullptr));
    EXPECT_EQ(download<int>(flag.at(), 1)[0], where == 0 ? 0 : 1) << "case " << where;
  }
}

}  // namespace
}  // namespace obccl::device
