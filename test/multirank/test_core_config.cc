// core::resolveConfig precedence (struct, then environment, then default) and validation, and
// the reduction kernels' rounding and wrap-around semantics.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "core/config.h"
#include "core/reduce.h"
#include "util/half.h"

namespace obccl::core {
namespace {

class EnvVar {
 public:
  EnvVar(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    setenv(name, value, 1);
  }
  ~EnvVar() {
    if (had_) {
      setenv(name_.c_str(), old_.c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

TEST(CoreConfig, DefaultsWithoutStructOrEnvironment) {
  auto c = resolveConfig(nullptr);
  ASSERT_TRUE(c.isOk()) << c.status().message();
  EXPECT_TRUE(c.value().blocking);
  EXPECT_EQ(c.value().timeoutMs, 600000);
  EXPECT_EQ(c.value().transports, (std::vector<std::string>{"shm", "ucx", "tcp"}));
  EXPECT_EQ(c.value().compressBlock, 0);
  EXPECT_EQ(c.value().hierarchical, -1);
}

TEST(CoreConfig, StructBeatsEnvironmentBeatsDefault) {
  EnvVar t("OBCCL_TIMEOUT_MS", "1234");
  EnvVar tr("OBCCL_TRANSPORTS", "tcp, shm");
  EnvVar h("OBCCL_HIERARCHICAL", "1");
  obcclConfig_t cfg = OBCCL_CONFIG_INITIALIZER;
  cfg.timeoutMs = 777;
  auto c = resolveConfig(&cfg);
  ASSERT_TRUE(c.isOk()) << c.status().message();
  EXPECT_EQ(c.value().timeoutMs, 777);                                        // struct
  EXPECT_EQ(c.value().transports, (std::vector<std::string>{"tcp", "shm"}));  // environment
  EXPECT_EQ(c.value().hierarchical, 1);                                       // environment
  EXPECT_EQ(c.value().compressBlock, 0);                                      // default
}

TEST(CoreConfig, BadValuesNameTheirSource) {
  {
    EnvVar t("OBCCL_TRANSPORTS", "tcp,smoke-signals");
    auto c = resolveConfig(nullptr);
    ASSERT_FALSE(c.isOk());
    EXPECT_EQ(c.status().code(), obcclInvalidArgument);
    EXPECT_NE(c.status().message().find("OBCCL_TRANSPORTS"), std::string::npos);
    EXPECT_NE(c.status().message().find("smoke-signals"), std::string::npos);
  }
  {
    EnvVar b("OBCCL_COMPRESS_BLOCK", "12");
    auto c = resolveConfig(nullptr);
    ASSERT_FALSE(c.isOk());
    EXPECT_NE(c.status().message().find("OBCCL_COMPRESS_BLOCK"), std::string::npos);
  }
  obcclConfig_t cfg = OBCCL_CONFIG_INITIALIZER;
  cfg.compressBlock = 12;
  auto c = resolveConfig(&cfg);
  ASSERT_FALSE(c.isOk());
  EXPECT_NE(c.status().message().find("config->compressBlock"), std::string::npos);
}

TEST(CoreConfig, OlderCallerStructWithoutLaterFieldsUsesDefaults) {
  obcclConfig_t cfg = OBCCL_CONFIG_INITIALIZER;
  cfg.hierarchical = 1;
  cfg.size = offsetof(obcclConfig_t, hierarchical);  // as if built before hierarchical existed
  auto c = resolveConfig(&cfg);
  ASSERT_TRUE(c.isOk()) << c.status().message();
  EXPECT_EQ(c.value().hierarchical, -1);
}

TEST(CoreReduce, HalfRoundsToNearestEvenAndF16cMatchesScalar) {
  // 1 + 2^-11 is halfway between two halves: it rounds to even (1.0).
  const size_t n = 1000;
  std::vector<uint16_t> a(n), b(n), d(n);
  for (size_t i = 0; i < n; ++i) {
    a[i] = floatToHalf(1.0f);
    b[i] = floatToHalf(std::ldexp(1.0f, -11));
  }
  reduce(d.data(), a.data(), b.data(), n, obcclFloat16, obcclSum);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(d[i], floatToHalf(1.0f)) << i;
  // Every pair of a grid of halves: the vector path agrees with util/half.h bit for bit.
  for (size_t i = 0; i < n; ++i) {
    a[i] = static_cast<uint16_t>((i * 2654435761u) & 0x7bff);
    b[i] = static_cast<uint16_t>((i * 40503u) & 0xfbff);
  }
  for (obcclRedOp_t op : {obcclSum, obcclProd, obcclMax, obcclMin}) {
    reduce(d.data(), a.data(), b.data(), n, obcclFloat16, op);
    for (size_t i = 0; i < n; ++i) {
      float x = halfToFloat(a[i]), y = halfToFloat(b[i]);
      float r = op == obcclSum    ? x + y
                : op == obcclProd ? x * y
                : op == obcclMax  ? (x < y ? y : x)
                                  : (y < x ? y : x);
      ASSERT_EQ(d[i], floatToHalf(r)) << "op " << op << " element " << i;
    }
  }
}

TEST(CoreReduce, IntegersWrapAndAverageDividesOnce) {
  int32_t a[3] = {std::numeric_limits<int32_t>::max(), -5, 7}, b[3] = {1, 3, -9}, d[3];
  reduce(d, a, b, 3, obcclInt32, obcclSum);
  EXPECT_EQ(d[0], std::numeric_limits<int32_t>::min());
  EXPECT_EQ(d[1], -2);
  uint8_t u[2] = {200, 16}, v[2] = {100, 16}, w[2];
  reduce(w, u, v, 2, obcclUint8, obcclProd);
  EXPECT_EQ(w[0], static_cast<uint8_t>(20000 % 256));
  EXPECT_EQ(w[1], 0);
  uint16_t h1 = floatToBf16(3.0f), h2 = floatToBf16(4.0f), out;
  reduceDivide(&out, &h1, &h2, 1, obcclBfloat16, 7);
  EXPECT_EQ(out, floatToBf16(7.0f / 7.0f));
}

}  // namespace
}  // namespace obccl::core
