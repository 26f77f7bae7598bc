// A rank stopped with SIGSTOP (alive, connections open, silent): every other rank must fail
// with obcclTimeout within timeoutMs + 1 s of its call's start, with a message that names the
// silent rank and where it is, and must not hang. A rank that is merely slow must not be
// declared dead by the transports (shm's pid check, tcp's open socket).
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdio>
#include <random>
#include <string>

#include "multiproc/support/fault_comm.h"

namespace obccl_fault {
namespace {

constexpr int kTimeoutMs = 1500;

struct StopCase {
  const char* transport;
  int nranks;
  int victim;
  size_t count;
};

class FaultStop : public ::testing::TestWithParam<StopCase> {};

TEST_P(FaultStop, OthersTimeOutNamingTheSilentRank) {
  const StopCase& c = GetParam();
  std::string why;
  if (!transportUsable(c.transport, &why)) GTEST_SKIP() << c.transport << " unusable: " << why;
  Shared<Arena> a;
  ProcSet ps;
  LoopOptions o;
  o.transports = c.transport;
  o.nranks = c.nranks;
  o.timeoutMs = kTimeoutMs;
  o.idRank = c.victim == 0 ? 1 : 0;  // the root stays in a running process
  o.count = c.count;
  o.compressedEvery = 3;
  o.maxRunMs = 30000;
  std::vector<int> idx;
  for (int r = 0; r < c.nranks; ++r)
    idx.push_back(ps.spawn([&a, r, &o] { return runRank(a.get(), r, o); }));
  a->go.store(1);
  RankReport& v = a->rank[c.victim];
  ASSERT_TRUE(waitFor([&] { return v.iters.load() >= 5 || v.stage.load() >= kFailed; }, 30000))
      << "the job never got going: " << v.msg;
  ASSERT_LT(v.stage.load(), kFailed) << v.msg;
  int64_t stopNs = nowNs();
  ps.signal(idx[c.victim], SIGSTOP);
  std::vector<int> survivors;
  for (int r = 0; r < c.nranks; ++r)
    if (r != c.victim) survivors.push_back(r);
  for (int r : survivors) {
    ChildExit e;
    bool ended = ps.waitOne(idx[r], kTimeoutMs + 10000, &e);
    EXPECT_TRUE(ended) << "rank " << r << " hung (stage " << a->rank[r].stage.load() << ")";
    if (ended) {
      EXPECT_TRUE(e.ok()) << "rank " << r << " " << e.describe();
    }
  }
  ps.signal(idx[c.victim], SIGCONT);
  ps.signal(idx[c.victim], SIGKILL);
  ps.waitAll(5000);
  const std::string victimName = "rank " + std::to_string(c.victim);
  for (int r : survivors) {
    const RankReport& s = a->rank[r];
    double fromCall = msBetween(s.callStartNs.load(), s.errNs);
    double fromStop = msBetween(stopNs, s.errNs);
    std::printf("FAULT_STOP transport=%s rank=%d rc=%s from_call_ms=%.1f from_stop_ms=%.1f | %s\n",
                c.transport, r, resultName(s.rc).c_str(), fromCall, fromStop, s.msg);
    ASSERT_GE(s.stage.load(), kFailed) << "rank " << r << " never failed";
    EXPECT_EQ(s.rc, obcclTimeout) << "rank " << r << ": " << s.msg;
    EXPECT_LE(fromCall, kTimeoutMs + 1000.0) << "rank " << r << ": " << s.msg;
    EXPECT_NE(std::string(s.msg).find(victimName), std::string::npos)
        << "rank " << r << " does not name the silent " << victimName << ": " << s.msg;
    if (std::string(c.transport) == "tcp") {
      EXPECT_NE(std::string(s.msg).find(":"), std::string::npos)
          << "rank " << r << " gives no host:port: " << s.msg;
    }
    EXPECT_EQ(s.asyncRc, obcclTimeout) << "rank " << r;
    EXPECT_NE(s.laterRc, obcclSuccess) << "rank " << r;
    EXPECT_EQ(s.destroyRc, obcclSuccess) << "rank " << r;
    EXPECT_LT(s.destroyMs, 1000) << "rank " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, FaultStop,
                         ::testing::Values(StopCase{"tcp", 4, 2, 1000},
                                           StopCase{"tcp", 3, 0, 300000},
                                           StopCase{"shm", 4, 1, 65536},
                                           StopCase{"ucx", 3, 2, 1000}),
                         [](const ::testing::TestParamInfo<StopCase>& info) {
                           return std::string(info.param.transport) + "_" +
                                  std::to_string(info.param.nranks) + "ranks_stop" +
                                  std::to_string(info.param.victim);
                         });

}  // namespace
}  // namespace obccl_fault
