// obccl_info as an operator uses it: the parameter listing reflects the environment, flags bad
// values, and never prints the job secret.
#include <gtest/gtest.h>

#include "test_launcher_process.h"

namespace obccl::testing {
namespace {

class InfoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    info_ = builtTool("tools/obccl_info");
    ASSERT_TRUE(isExecutable(info_)) << info_ << " is not built";
  }
  std::string info_;
};

TEST_F(InfoTest, DefaultReportHasVersionBuildAndInterfaces) {
  auto r = runProcess({info_}, 30);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("obccl 0."), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("UCX transport"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("lo "), std::string::npos) << "loopback is always listed\n" << r.output;
}

TEST_F(InfoTest, ParamsShowTypeDefaultCurrentValueAndHelp) {
  auto r = runProcess({info_, "--params"}, 30, {"OBCCL_TIMEOUT_MS=1234", "-OBCCL_DEBUG"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("OBCCL_TIMEOUT_MS=1234\n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("# type int, default '600000', set in the environment"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("OBCCL_DEBUG=WARN\n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("# Log level"), std::string::npos) << "help lines are shown";
}

TEST_F(InfoTest, MalformedValueIsFlaggedAndFails) {
  auto r = runProcess({info_, "--params"}, 30, {"OBCCL_TIMEOUT_MS=soon"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("INVALID: OBCCL_TIMEOUT_MS"), std::string::npos) << r.output;
}

TEST_F(InfoTest, SecretIsNeverPrinted) {
  const std::string secret = "feedfacecafebeef0123456789abcdef";
  auto r = runProcess({info_, "--all"}, 60, {"OBCCL_SECRET=" + secret});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.find(secret), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("OBCCL_SECRET=<set, 32 characters, not shown>"), std::string::npos)
      << r.output;
}

TEST_F(InfoTest, UnknownOptionIsRejected) {
  auto r = runProcess({info_, "--bogus"}, 30);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("usage"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace obccl::testing
