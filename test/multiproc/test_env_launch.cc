// obcclCommInitFromEnv as launchers drive it, one process per rank: obcclrun, mpirun, a
// torchrun-style environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), Slurm's variables,
// the precedence between them, and the refusal to run without a job secret. The ranks run
// obccl_perf with result checking on, so every job also checks the collectives across processes.
#include <gtest/gtest.h>

#include <functional>
#include <memory>

#include "test_launcher_process.h"

namespace obccl::testing {
namespace {

// A secret for jobs started without obcclrun (128 bits or more, hex).
constexpr const char* kSecret = "00112233445566778899aabbccddeeff0123456789abcdef";
constexpr double kJobSeconds = 60;

// Variables a rank must not inherit from whoever runs the tests.
std::vector<std::string> cleanEnv() {
  std::vector<std::string> env;
  for (const char* v :
       {"OBCCL_RANK", "OBCCL_WORLD_SIZE", "OBCCL_ROOT", "OBCCL_SECRET", "RANK", "WORLD_SIZE",
        "MASTER_ADDR", "MASTER_PORT", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK",
        "PMI_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "OBCCL_ALLOW_UNAUTHENTICATED"})
    env.push_back(std::string("-") + v);
  env.push_back("OBCCL_SOCKET_IFNAME=lo");
  env.push_back("OBCCL_TIMEOUT_MS=30000");
  return env;
}

class EnvLaunchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    run_ = builtTool("tools/obcclrun");
    perf_ = builtTool("perf/obccl_perf");
    if (!isExecutable(perf_)) GTEST_SKIP() << perf_ << " is not built (needs libobccl)";
    ASSERT_TRUE(isExecutable(run_)) << run_ << " is not built";
  }
  std::vector<std::string> perfArgs(const std::string& coll) {
    return {perf_, "-t", coll, "-b", "1K", "-e", "96K", "-f",
            "16",  "-n", "2",  "-w", "1",  "-c", "1"};
  }
  // Starts one process per rank with `rankEnv(rank)` added to the clean environment, waits for
  // all, and returns their results.
  std::vector<ProcessResult> runRanks(int n,
                                      const std::function<std::vector<std::string>(int)>& rankEnv,
                                      const std::string& coll = "allreduce") {
    std::vector<std::unique_ptr<Process>> procs;
    for (int r = 0; r < n; ++r) {
      auto env = cleanEnv();
      for (auto& kv : rankEnv(r)) env.push_back(kv);
      procs.push_back(std::make_unique<Process>());
      EXPECT_TRUE(procs.back()->start(perfArgs(coll), env));
    }
    std::vector<ProcessResult> results;
    for (auto& p : procs) results.push_back(p->wait(kJobSeconds));
    return results;
  }

  std::string run_, perf_;
};

void expectChecked(const ProcessResult& r) {
  EXPECT_FALSE(r.timedOut) << r.output;
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("Out of bounds values : 0 OK"), std::string::npos) << r.output;
}

TEST_F(EnvLaunchTest, ObcclrunJobsPassTheirChecksForEveryCollective) {
  for (const char* coll : {"allreduce", "allgather", "reducescatter", "alltoall", "broadcast"}) {
    SCOPED_TRACE(coll);
    auto args = perfArgs(coll);
    args.insert(args.begin(), {run_, "-n", "3", "--"});
    if (std::string(coll) == "broadcast") args.insert(args.end(), {"-r", "2"});
    expectChecked(runProcess(args, kJobSeconds, cleanEnv()));
  }
}

TEST_F(EnvLaunchTest, ObcclrunJobOverTcpOnly) {
  auto env = cleanEnv();
  env.push_back("OBCCL_TRANSPORTS=tcp");
  auto args = perfArgs("allreduce");
  args.insert(args.begin(), {run_, "-n", "2", "--"});
  expectChecked(runProcess(args, kJobSeconds, env));
}

TEST_F(EnvLaunchTest, TorchrunStyleVariables) {
  const std::string port = std::to_string(freeLoopbackPort());
  auto results = runRanks(2, [&](int r) {
    return std::vector<std::string>{"RANK=" + std::to_string(r), "WORLD_SIZE=2",
                                    "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + port,
                                    std::string("OBCCL_SECRET=") + kSecret};
  });
  expectChecked(results[0]);
  EXPECT_EQ(results[1].status, 0) << results[1].output;
}

TEST_F(EnvLaunchTest, SlurmVariables) {
  const std::string root = "127.0.0.1:" + std::to_string(freeLoopbackPort());
  auto results = runRanks(2, [&](int r) {
    return std::vector<std::string>{"SLURM_PROCID=" + std::to_string(r), "SLURM_NTASKS=2",
                                    "OBCCL_ROOT=" + root, std::string("OBCCL_SECRET=") + kSecret};
  });
  expectChecked(results[0]);
  EXPECT_EQ(results[1].status, 0) << results[1].output;
}

TEST_F(EnvLaunchTest, ObcclVariablesTakePrecedence) {
  // RANK and WORLD_SIZE are deliberately wrong: OBCCL_RANK and OBCCL_WORLD_SIZE must win.
  const std::string root = "127.0.0.1:" + std::to_string(freeLoopbackPort());
  auto results = runRanks(2, [&](int r) {
    return std::vector<std::string>{"OBCCL_RANK=" + std::to_string(r),
                                    "OBCCL_WORLD_SIZE=2",
                                    "RANK=" + std::to_string(1 - r),
                                    "WORLD_SIZE=5",
                                    "OBCCL_ROOT=" + root,
                                    std::string("OBCCL_SECRET=") + kSecret};
  });
  expectChecked(results[0]);
  EXPECT_NE(results[0].output.find("2 ranks"), std::string::npos) << results[0].output;
  EXPECT_EQ(results[1].status, 0) << results[1].output;
}

TEST_F(EnvLaunchTest, MissingSecretIsRefusedWithAHint) {
  const std::string root = "127.0.0.1:" + std::to_string(freeLoopbackPort());
  auto env = cleanEnv();
  env.insert(env.end(), {"OBCCL_RANK=0", "OBCCL_WORLD_SIZE=1", "OBCCL_ROOT=" + root});
  auto r = runProcess(perfArgs("allreduce"), kJobSeconds, env);
  EXPECT_FALSE(r.timedOut);
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("OBCCL_SECRET"), std::string::npos)
      << "the message must say how to set a secret:\n"
      << r.output;
}

TEST_F(EnvLaunchTest, UnauthenticatedIsAllowedOnlyWhenAskedFor) {
  const std::string root = "127.0.0.1:" + std::to_string(freeLoopbackPort());
  auto env = cleanEnv();
  env.insert(env.end(), {"OBCCL_RANK=0", "OBCCL_WORLD_SIZE=1", "OBCCL_ROOT=" + root,
                         "OBCCL_ALLOW_UNAUTHENTICATED=1"});
  expectChecked(runProcess(perfArgs("allreduce"), kJobSeconds, env));
}

TEST_F(EnvLaunchTest, MpirunEnvironment) {
  if (runProcess({"sh", "-c", "command -v mpirun"}, 10).status != 0)
    GTEST_SKIP() << "mpirun is not installed";
  const std::string root = "127.0.0.1:" + std::to_string(freeLoopbackPort());
  std::vector<std::string> args = {"mpirun",
                                   "--allow-run-as-root",
                                   "--oversubscribe",
                                   "-np",
                                   "2",
                                   "--mca",
                                   "btl",
                                   "self,tcp",
                                   "--mca",
                                   "btl_tcp_if_include",
                                   "lo",
                                   "--mca",
                                   "oob_tcp_if_include",
                                   "lo",
                                   "-x",
                                   std::string("OBCCL_SECRET=") + kSecret,
                                   "-x",
                                   "OBCCL_ROOT=" + root,
                                   "-x",
                                   "OBCCL_SOCKET_IFNAME=lo"};
  for (auto& a : perfArgs("allreduce")) args.push_back(a);
  expectChecked(runProcess(args, kJobSeconds, cleanEnv()));
}

}  // namespace
}  // namespace obccl::testing
