// obcclrun as a user sees it: the environment each rank gets, a failing rank ending the job
// with its status, signal forwarding, --timeout, --tag-output. Ranks are small sh scripts.
#include <gtest/gtest.h>
#include <signal.h>

#include <cstring>
#include <map>
#include <set>

#include "test_launcher_process.h"

namespace obccl::testing {
namespace {

class LauncherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    run_ = builtTool("tools/obcclrun");
    ASSERT_TRUE(isExecutable(run_)) << run_ << " is not built (ninja obcclrun)";
  }
  // obcclrun <args> -- sh -c <script>, with the temp dir as $D.
  ProcessResult runSh(std::vector<std::string> args, const std::string& script,
                      double seconds = 20) {
    args.insert(args.begin(), run_);
    for (const auto& a : {std::string("--"), std::string("sh"), std::string("-c"), script})
      args.push_back(a);
    return runProcess(args, seconds, {"D=" + dir_.path()});
  }
  std::map<std::string, std::string> envOf(int rank) {
    std::map<std::string, std::string> env;
    std::istringstream in(readFile(dir_.path() + "/env." + std::to_string(rank)));
    for (std::string line; std::getline(in, line);) {
      auto eq = line.find('=');
      if (eq != std::string::npos) env[line.substr(0, eq)] = line.substr(eq + 1);
    }
    return env;
  }

  std::string run_;
  TempDir dir_;
};

TEST_F(LauncherTest, SetsTheEnvironmentOfEveryRank) {
  auto r = runSh({"-n", "4"}, "env | grep ^OBCCL_ > $D/env.$OBCCL_RANK");
  ASSERT_EQ(r.status, 0) << r.output;
  auto first = envOf(0);
  for (int rank = 0; rank < 4; ++rank) {
    auto env = envOf(rank);
    EXPECT_EQ(env["OBCCL_RANK"], std::to_string(rank));
    EXPECT_EQ(env["OBCCL_LOCAL_RANK"], std::to_string(rank));
    EXPECT_EQ(env["OBCCL_WORLD_SIZE"], "4");
    EXPECT_EQ(env["OBCCL_LOCAL_SIZE"], "4");
    EXPECT_EQ(env["OBCCL_ROOT"], first["OBCCL_ROOT"]) << "every rank must meet at one root";
    EXPECT_EQ(env["OBCCL_SECRET"], first["OBCCL_SECRET"]);
  }
  const std::string root = first["OBCCL_ROOT"];
  ASSERT_EQ(root.rfind("127.0.0.1:", 0), 0u) << root;
  int port = std::stoi(root.substr(10));
  EXPECT_GT(port, 0);
  EXPECT_LT(port, 65536);
  const std::string secret = first["OBCCL_SECRET"];
  EXPECT_EQ(secret.size(), 64u) << "256-bit secret as hex";
  EXPECT_EQ(secret.find_first_not_of("0123456789abcdef"), std::string::npos) << secret;

  // A second job gets a fresh secret.
  auto again = runSh({"-n", "1"}, "env | grep ^OBCCL_ > $D/env.$OBCCL_RANK");
  ASSERT_EQ(again.status, 0) << again.output;
  EXPECT_NE(envOf(0)["OBCCL_SECRET"], secret);
}

// The root port is parked in TIME_WAIT: nobody else gets it from bind(port 0) for about a minute,
// but rank 0's listener, which sets SO_REUSEADDR, can bind it.
TEST_F(LauncherTest, RootPortIsReservedForRankZero) {
  auto r = runSh({"-n", "1"}, "echo ${OBCCL_ROOT#*:} > $D/port");
  ASSERT_EQ(r.status, 0) << r.output;
  int port = std::stoi(readFile(dir_.path() + "/port"));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int plain = ::socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_NE(::bind(plain, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0)
      << "port " << port << " was not parked";
  ::close(plain);
  int reuse = ::socket(AF_INET, SOCK_STREAM, 0), one = 1;
  ::setsockopt(reuse, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  EXPECT_EQ(::bind(reuse, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << strerror(errno);
  EXPECT_EQ(::listen(reuse, 4), 0) << strerror(errno);
  ::close(reuse);
}

TEST_F(LauncherTest, AllRanksSucceedingGivesZero) {
  auto r = runSh({"-n", "3"}, "exit 0");
  EXPECT_EQ(r.status, 0) << r.output;
}

TEST_F(LauncherTest, FailingRankEndsTheOthersAndItsStatusIsReturned) {
  // Rank 2 fails once every rank is up; the others would sleep for a minute.
  auto r = runSh({"-n", "3"},
                 "touch $D/up.$OBCCL_RANK; if [ $OBCCL_RANK = 2 ]; then "
                 "while [ ! -e $D/up.0 ] || [ ! -e $D/up.1 ]; do sleep 0.01; done; exit 3; fi; "
                 "exec sleep 60");
  EXPECT_EQ(r.status, 3) << r.output;
  EXPECT_LT(r.seconds, 15) << "the sleeping ranks were not stopped";
  EXPECT_NE(r.output.find("rank 2"), std::string::npos) << r.output;
}

TEST_F(LauncherTest, RankKilledBySignalGives128PlusSignal) {
  auto r = runSh({"-n", "2"}, "if [ $OBCCL_RANK = 1 ]; then kill -SEGV $$; fi; exec sleep 60");
  EXPECT_EQ(r.status, 128 + SIGSEGV) << r.output;
  EXPECT_LT(r.seconds, 15);
}

TEST_F(LauncherTest, RanksIgnoringSigtermAreKilledAfterTheGracePeriod) {
  auto r = runSh({"-n", "2", "--grace", "0.5"},
                 "trap '' TERM; touch $D/up.$OBCCL_RANK; if [ $OBCCL_RANK = 1 ]; then "
                 "while [ ! -e $D/up.0 ]; do sleep 0.01; done; exit 4; fi; "
                 "while :; do sleep 0.05; done");
  EXPECT_EQ(r.status, 4) << r.output;
  EXPECT_LT(r.seconds, 10);
  EXPECT_NE(r.output.find("SIGKILL"), std::string::npos) << r.output;
}

TEST_F(LauncherTest, TimeoutStopsTheJobWithStatus124) {
  auto r = runSh({"-n", "2", "--timeout", "0.5"}, "exec sleep 60");
  EXPECT_EQ(r.status, 124) << r.output;
  EXPECT_LT(r.seconds, 10);
}

TEST_F(LauncherTest, ProgramThatCannotRunGives127) {
  auto r = runProcess({run_, "-n", "2", "/nonexistent/obccl-program"}, 10);
  EXPECT_EQ(r.status, 127) << r.output;
  EXPECT_NE(r.output.find("/nonexistent/obccl-program"), std::string::npos) << r.output;
}

TEST_F(LauncherTest, BadArgumentsAreRejected) {
  for (auto args : std::vector<std::vector<std::string>>{{run_, "-n", "0", "true"},
                                                         {run_, "-n", "x", "true"},
                                                         {run_, "true"},
                                                         {run_, "-n", "2"},
                                                         {run_, "-n", "2", "--bogus", "true"}}) {
    auto r = runProcess(args, 10);
    EXPECT_EQ(r.status, 125) << r.output;
    EXPECT_NE(r.output.find("usage"), std::string::npos) << r.output;
  }
}

TEST_F(LauncherTest, TagOutputPrefixesEveryWholeLine) {
  // Each rank writes a line in three pieces; tagging must keep the pieces together.
  auto r = runSh({"-n", "3", "--tag-output"},
                 "for i in 1 2 3; do printf 'r%s' $OBCCL_RANK; printf ' line'; "
                 "printf ' %s\\n' $i; done; printf 'tail%s' $OBCCL_RANK >&2");
  ASSERT_EQ(r.status, 0) << r.output;
  std::istringstream in(r.output);
  std::multiset<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.insert(line);
  for (int rank = 0; rank < 3; ++rank) {
    std::string tag = "[" + std::to_string(rank) + "] ";
    for (int i = 1; i <= 3; ++i) {
      std::string want = tag + "r" + std::to_string(rank) + " line " + std::to_string(i);
      EXPECT_EQ(lines.count(want), 1u) << "missing '" << want << "' in:\n" << r.output;
    }
    EXPECT_EQ(lines.count(tag + "tail" + std::to_string(rank)), 1u) << r.output;
  }
  EXPECT_EQ(lines.size(), 12u) << r.output;
}

// Starts a 3-rank job whose ranks record which signals they got, waits until all are up, sends
// `sig` to obcclrun and returns its result.
ProcessResult signalJob(const std::string& run, const TempDir& dir, int sig) {
  Process p;
  std::string script =
      "trap 'touch $D/usr1.$OBCCL_RANK' USR1; "
      "trap 'touch $D/term.$OBCCL_RANK; exit 0' TERM; "
      "touch $D/up.$OBCCL_RANK; while :; do sleep 0.05; done";
  if (!p.start({run, "-n", "3", "--", "sh", "-c", script}, {"D=" + dir.path()}))
    return ProcessResult{};
  for (int rank = 0; rank < 3; ++rank)
    if (!waitForFile(dir.path() + "/up." + std::to_string(rank), 10)) return p.wait(0);
  ::kill(p.pid(), sig);
  if (sig == SIGUSR1) {
    for (int rank = 0; rank < 3; ++rank)
      waitForFile(dir.path() + "/usr1." + std::to_string(rank), 10);
    ::kill(p.pid(), SIGTERM);
  }
  return p.wait(20);
}

TEST_F(LauncherTest, ForwardsSigtermToEveryRank) {
  auto r = signalJob(run_, dir_, SIGTERM);
  EXPECT_EQ(r.status, 0) << "every rank handled SIGTERM and exited 0\n" << r.output;
  for (int rank = 0; rank < 3; ++rank)
    EXPECT_TRUE(waitForFile(dir_.path() + "/term." + std::to_string(rank), 1)) << rank;
}

TEST_F(LauncherTest, ForwardsSigusr1WithoutStoppingTheJob) {
  auto r = signalJob(run_, dir_, SIGUSR1);
  EXPECT_EQ(r.status, 0) << r.output;
  for (int rank = 0; rank < 3; ++rank) {
    EXPECT_TRUE(waitForFile(dir_.path() + "/usr1." + std::to_string(rank), 1)) << rank;
    EXPECT_TRUE(waitForFile(dir_.path() + "/term." + std::to_string(rank), 1)) << rank;
  }
}

TEST_F(LauncherTest, SigintEndsRanksThatDoNotHandleIt) {
  Process p;
  ASSERT_TRUE(p.start({run_, "-n", "2", "--", "sh", "-c", "touch $D/up.$OBCCL_RANK; exec sleep 60"},
                      {"D=" + dir_.path()}));
  ASSERT_TRUE(waitForFile(dir_.path() + "/up.0", 10));
  ASSERT_TRUE(waitForFile(dir_.path() + "/up.1", 10));
  ::kill(p.pid(), SIGINT);
  auto r = p.wait(20);
  EXPECT_EQ(r.status, 128 + SIGINT) << r.output;
  EXPECT_LT(r.seconds, 15);
}

}  // namespace
}  // namespace obccl::testing
