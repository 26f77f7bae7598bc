// The one dispatch point: names, CPU support checks, and the errors for bad or unsupported
// OBCCL_CODEC values.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "codec/codec.h"

namespace obccl::codec {
namespace {

// The CPU flags the kernel reports in /proc/cpuinfo (empty where there is none).
std::set<std::string> procCpuFlags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::set<std::string> flags;
    for (std::string w; words >> w;) flags.insert(w);
    return flags;
  }
  return {};
}

TEST(CodecDispatch, ScalarIsAlwaysThere) {
  ASSERT_TRUE(variantSupported(Variant::kScalar));
  const Kernels* k = kernelsFor(Variant::kScalar);
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->variant, Variant::kScalar);
  EXPECT_STREQ(k->name, "scalar");
  EXPECT_NE(k->workerEncode, nullptr);
  EXPECT_NE(k->workerUpdate, nullptr);
  EXPECT_NE(k->serverNorm, nullptr);
  EXPECT_NE(k->serverEncode, nullptr);
  EXPECT_NE(k->decode, nullptr);
}

TEST(CodecDispatch, SupportAgreesWithTheCpuFlags) {
  std::set<std::string> f = procCpuFlags();
  if (f.empty()) GTEST_SKIP() << "no /proc/cpuinfo flags to compare with";
  bool avx2 = f.count("avx2") && f.count("fma") && f.count("f16c");
  bool avx512 = avx2 && f.count("avx512f") && f.count("avx512bw") && f.count("avx512vl");
  EXPECT_EQ(variantSupported(Variant::kAvx2), avx2);
  EXPECT_EQ(variantSupported(Variant::kAvx512), avx512);
  EXPECT_EQ(bestVariant(), avx512 ? Variant::kAvx512 : avx2 ? Variant::kAvx2 : Variant::kScalar);
}

TEST(CodecDispatch, NamesSelectVariants) {
  for (int i = 0; i < kNumVariants; ++i) {
    Variant v = static_cast<Variant>(i);
    Result<const Kernels*> r = kernelsByName(variantName(v));
    if (variantSupported(v)) {
      ASSERT_TRUE(r.isOk()) << r.status().message();
      EXPECT_EQ(r.value()->variant, v);
      EXPECT_EQ(r.value(), kernelsFor(v));
    } else {
      // Forcing a variant the CPU cannot run is an error that says which and why.
      ASSERT_FALSE(r.isOk());
      EXPECT_EQ(r.status().code(), obcclInvalidArgument);
      EXPECT_NE(r.status().message().find(variantName(v)), std::string::npos);
      EXPECT_EQ(kernelsFor(v), nullptr);
    }
  }
  for (const char* automatic : {"auto", "", "AUTO"}) {
    Result<const Kernels*> r = kernelsByName(automatic);
    ASSERT_TRUE(r.isOk()) << automatic;
    EXPECT_EQ(r.value()->variant, bestVariant());
  }
  Result<const Kernels*> upper = kernelsByName("Scalar");
  ASSERT_TRUE(upper.isOk());
  EXPECT_EQ(upper.value()->variant, Variant::kScalar);
}

TEST(CodecDispatch, UnknownNameIsAnError) {
  Result<const Kernels*> r = kernelsByName("sse9");
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), obcclInvalidArgument);
  EXPECT_NE(r.status().message().find("OBCCL_CODEC=sse9"), std::string::npos);
  EXPECT_NE(r.status().message().find("avx512"), std::string::npos);  // lists the choices
}

// The process-wide choice comes from OBCCL_CODEC, read once on first use: this test must be the
// first user in its process, which holds when ctest runs each test alone and in file order here.
TEST(CodecDispatch, EnvironmentSelectsOnce) {
  ::setenv("OBCCL_CODEC", "scalar", 1);
  Result<const Kernels*> r = selectKernels();
  ::unsetenv("OBCCL_CODEC");
  ASSERT_TRUE(r.isOk()) << r.status().message();
  EXPECT_EQ(r.value()->variant, Variant::kScalar);
  EXPECT_EQ(&kernels(), r.value());
  EXPECT_EQ(selectKernels().value(), r.value());  // not re-read
}

}  // namespace
}  // namespace obccl::codec
